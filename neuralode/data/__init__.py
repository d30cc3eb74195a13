"""Datasets and the DataModule interface the trainer draws batches from."""

from neuralode.data.base import DataModule

__all__ = ["DataModule"]
