"""Tasks: a model together with its loss and metrics, the unit the shared trainer trains."""

from neuralode.tasks.base import Task

__all__ = ["Task"]
