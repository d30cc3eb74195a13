"""Run folders: one process per folder (a lock), which checkpoint a run continues from, and
the refusal of a used folder or of changed settings on resume."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from neuralode.train.config import ConfigError, flatten, upgrade_stored_config

log = logging.getLogger(__name__)


#: Files that make a run directory a run (Hydra's own .hydra/ and train.log do not).
#: A run folder holds a run once it holds a checkpoint to resume from; an attempt that died
#: before its first last.pt (an empty metrics.jsonl, perhaps a best.pt) may be started afresh.
RUN_FILES = ("last.pt", "summary.json")


#: Settings a resumed run may change without saying so: they do not change what is computed.
RESUMABLE_CHANGES = ("resume", "ckpt_path", "allow_changes", "device", "trainer.max_epochs", "trainer.max_steps",
                     "trainer.progress_bar", "trainer.limit_eval_batches", "logger.", "paths.", "data.data_dir",
                     "data.root", "data.num_workers")


def lock_run_dir(run_dir: Path):
    """An exclusive lock on ``run_dir`` for as long as the returned file stays open, so that two
    processes never write one run."""
    import fcntl

    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / ".lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError(f"{run_dir} is in use by {holder}; wait for it to finish, or train in another "
                          "folder (hydra.run.dir=...)") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()}\n")
    handle.flush()
    return handle


def resume_point(cfg: DictConfig, run_dir: Path) -> Path | None:
    """Where a run starts: None (afresh, in a folder that holds no run) or the checkpoint it
    continues (ckpt_path=, resume=true, or the last.pt of a SLURM job that was requeued), whose
    settings must match. Raises a UserError naming what is wrong."""
    ckpt_path = _checkpoint_to_resume(cfg, run_dir)
    if ckpt_path is None and requeued() and (run_dir / "last.pt").is_file():
        # SLURM started this job again (preempted, or requeued by submitit after a timeout):
        # continue the run it had begun rather than refuse its folder.
        log.info("requeued job (SLURM_RESTART_COUNT=%s): resuming from %s", os.environ["SLURM_RESTART_COUNT"],
                 run_dir / "last.pt")
        ckpt_path = run_dir / "last.pt"
    if ckpt_path is None:
        _refuse_used_run_dir(run_dir)
    else:
        _refuse_changed_settings(cfg, ckpt_path)
    return ckpt_path


def _refuse_used_run_dir(run_dir: Path) -> None:
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if found:
        raise ConfigError(f"{run_dir} already holds a run ({', '.join(found)}); continue it with resume=true, "
                          "or train into a new folder (leave hydra.run.dir out, or name another)")


def _refuse_changed_settings(cfg: DictConfig, ckpt_path: Path) -> None:
    """A resume trains on with the stored settings: refuse changed ones unless named in
    ``allow_changes`` (a half-applied change, e.g. a new batch size with the old learning rate
    kept in the optimiser state, would be recorded as if it had been the run's all along)."""
    from neuralode.train.checkpoint import load_checkpoint

    stored = upgrade_stored_config(load_checkpoint(ckpt_path).get("config") or {})
    if not stored:
        return
    now = flatten(OmegaConf.to_container(cfg, resolve=True))
    before = flatten(stored)
    allowed = tuple(RESUMABLE_CHANGES) + tuple(cfg.get("allow_changes") or ())
    changed = sorted(key for key in set(now) & set(before)
                     if now[key] != before[key] and not any(key == a or key.startswith(a.rstrip(".") + ".")
                                                             or (a.endswith(".") and key.startswith(a)) for a in allowed))
    if changed:
        shown = "; ".join(f"{key}: {before[key]!r} -> {now[key]!r}" for key in changed[:6])
        more = f" (and {len(changed) - 6} more)" if len(changed) > 6 else ""
        raise ConfigError(f"resuming {ckpt_path} with changed settings: {shown}{more}. Resume with the run's "
                          f"settings, or accept the change: allow_changes=[{','.join(changed)}]")


def _checkpoint_to_resume(cfg: DictConfig, run_dir: Path) -> Path | None:
    if cfg.resume and cfg.ckpt_path:
        raise ConfigError("set either resume=true (continue this run dir) or ckpt_path=<file>, not both")
    if cfg.ckpt_path:
        return Path(cfg.ckpt_path)
    if cfg.resume:
        last = run_dir / "last.pt"
        if not last.is_file():
            started = run_dir.is_dir() and any(run_dir.iterdir())
            hint = ("it died before its first checkpoint: start it afresh (the same command without resume=true)"
                    if started else f"name the run to continue: resume=true hydra.run.dir=outputs/{cfg.name}/<run>")
            raise ConfigError(f"resume=true but {last} does not exist; {hint}")
        return last
    return None


def checkpoint_file(path: Path) -> Path:
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise ConfigError(f"{path} holds no best.pt or last.pt")
    return path


def requeued() -> bool:
    """Whether SLURM has restarted this job (it counts restarts in SLURM_RESTART_COUNT)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0

