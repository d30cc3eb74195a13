"""Stopping a run cleanly on Ctrl-C or a cluster's SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

log = logging.getLogger(__name__)


class Interrupted(KeyboardInterrupt):
    """Training stopped on a signal after saving last.pt; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class StopOnSignal:
    """The first Ctrl-C (SIGINT) or SIGTERM (a cluster's preemption notice) asks the loop to
    stop after the current step, run the evaluation due at that step and save last.pt; a
    second one interrupts at once. ``enabled=False``: signals keep their default effect."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def __enter__(self) -> "StopOnSignal":
        self.requested: int | None = None  # the signal received
        self._previous: dict[int, Any] = {}
        if self.enabled and threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested is not None:
            raise Interrupted(signum)
        self.requested = signum
        log.warning("%s: stopping after this step and saving last.pt (send it again to abort at once)",
                    signal.Signals(signum).name)

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
