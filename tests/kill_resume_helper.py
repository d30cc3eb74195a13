"""``python -m neuralode train`` that sends itself a signal at a chosen point (for test_kill_resume.py).

    python tests/kill_resume_helper.py SIGNAL POINT N [train overrides ...]

POINT and N say when the signal (SIGKILL, SIGINT or SIGTERM) is sent, once:

- ``step``: as optimiser step N (1-based, counted over the run) begins: SIGKILL dies there
  (after step N-1); SIGINT and SIGTERM arrive while step N runs, like a Ctrl-C in that step.
- ``eval``: as this process's N-th evaluation begins.
- ``record``: right after this process appends its N-th record to metrics.jsonl (before
  that evaluation's checkpoints are written).
- ``save``: right after this process's N-th checkpoint file (best.pt or last.pt) is written.
- ``rename``: during this process's N-th checkpoint save, after its temporary file is written
  and before it is renamed over the checkpoint.

Everything else is the command line itself, run in this process; only the first process of a
trial goes through here, the resumes are plain ``python -m neuralode train ... resume=true``.
"""

from __future__ import annotations

import os
import signal
import sys


def install(signum: int, point: str, n: int) -> None:
    from neuralode.files import TEMP_NAME
    import neuralode.train.loggers as loggers
    import neuralode.train.trainer as trainer

    counts: dict[str, int] = {}
    fired = []

    def fire() -> None:
        if not fired:
            fired.append(True)
            os.kill(os.getpid(), signum)

    def reached(kind: str) -> bool:
        counts[kind] = counts.get(kind, 0) + 1
        return kind == point and counts[kind] == n

    training_step = trainer.Trainer._training_step

    def _training_step(self, batch):
        if point == "step" and self.progress.step + 1 == n:
            fire()
        return training_step(self, batch)

    trainer.Trainer._training_step = _training_step

    evaluate = trainer.evaluate

    def _evaluate(*args, **kwargs):
        if reached("eval"):
            fire()
        return evaluate(*args, **kwargs)

    trainer.evaluate = _evaluate

    append = loggers.MetricsFile.append

    def _append(self, record):
        append(self, record)
        if reached("record"):
            fire()

    loggers.MetricsFile.append = _append

    save_checkpoint = trainer.save_checkpoint

    def _save_checkpoint(path, state):
        save_checkpoint(path, state)
        if reached("save"):
            fire()

    trainer.save_checkpoint = _save_checkpoint

    replace = os.replace

    def _replace(src, dst, *args, **kwargs):
        temp = TEMP_NAME.fullmatch(os.path.basename(str(src)))
        if temp and temp["name"].endswith(".pt") and reached("rename"):  # a checkpoint's rename
            fire()
        return replace(src, dst, *args, **kwargs)

    os.replace = _replace


def main() -> None:
    name, point, n, *overrides = sys.argv[1:]
    if point not in ("step", "eval", "record", "save", "rename"):
        sys.exit(f"unknown point {point!r}")
    install(signal.Signals[name], point, int(n))
    from neuralode.__main__ import main as neuralode_main

    neuralode_main(["train", *overrides])


if __name__ == "__main__":
    main()
