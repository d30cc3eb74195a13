"""Kill and resume, end to end: a run stopped by SIGKILL, SIGINT or SIGTERM at some point and
continued with ``resume=true`` (as often as it takes) must leave exactly the files of a run
that was never interrupted: metrics.jsonl, summary.json, best.pt and last.pt, compared value
by value and bit for bit, except for the fields listed in the MASKED_* constants below.

Each trial runs the real command line in subprocesses on a tiny latent ODE (generated spirals,
5 steps an epoch, 12 steps, an evaluation every 3 steps and at each epoch's end: evaluations at
steps 3, 5, 6, 9, 10 and 12; the monitored test_rmse_extrap is best at step 6, so best.pt and
last.pt differ). The model samples z0 in training *and* in evaluation, so every evaluation
depends on the random state being exactly restored.

Two kinds of trial:

- hooked: the first process is tests/kill_resume_helper.py, which sends itself the signal at
  a chosen point (a given step, evaluation, metrics record, checkpoint file, or between a
  checkpoint's temporary file and its rename), so that the edge cases of the issue are hit
  every time;
- timed: the first process is plain ``python -m neuralode train``; the test waits for the
  k-th record of metrics.jsonl, then a random delay, then sends the signal (k and the delay
  drawn from a seeded generator), so the signal lands anywhere.

A SIGKILL before the first checkpoint leaves nothing to resume: the trial then starts the run
afresh in the same folder, as a user would.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from neuralode.train.checkpoint import load_checkpoint
from neuralode.train.loggers import read_metrics

# One xdist worker runs the whole module (make test: --dist loadgroup): its module fixture runs
# every trial, so on each worker that ran any of its tests it ran them all (207 s and 203 s).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("kill_resume")]

HELPER = Path(__file__).with_name("kill_resume_helper.py")

#: The tiny run every trial repeats: 100 training spirals in batches of 20 (5 steps an epoch),
#: 12 steps, an evaluation every 3 steps (and at each epoch's end), no TensorBoard.
OVERRIDES = [
    "experiment=latent_ode_spiral", "scale=smoke", "device=cpu",
    "data.n_spirals=120", "data.n_eval=20", "data.batch_size=20", "data.eval_batch_size=20", "data.n_obs=30",
    "trainer.max_steps=12", "trainer.eval_every_n_steps=3", "trainer.progress_bar=false", "logger=none",
]
EVAL_STEPS = (3, 5, 6, 9, 10, 12)
MONITOR = "test_rmse_extrap"  # LatentODETask.monitor, mode "min"

#: metrics.jsonl fields that differ between two runs of the same settings, interrupted or not:
#: wall-clock times (epoch_time_s is the training time of the epoch so far, which a resume
#: carries on from the checkpoint; eval_time_s that of the evaluation) and the process's
#: peak resident memory (a resumed process has its own). Everything else, the memory saved for
#: backward (peak_saved_tensors_mb) included, is compared exactly.
MASKED_METRICS = ("epoch_time_s", "eval_time_s", "peak_rss_mb")
#: summary.json fields besides those of its records: the wall time of the last fit() call and
#: the run folder (each trial trains in its own).
MASKED_SUMMARY = ("elapsed_s", "run_dir")
#: A checkpoint's progress: the wall time of the epoch so far (MASKED_METRICS' epoch_time_s).
MASKED_PROGRESS = ("train_time_s",)
#: A checkpoint's stored config: resume=true is how a process was started, not a setting of
#: the run (run_dirs.RESUMABLE_CHANGES lets it change); a checkpoint written by a resumed process
#: records resume=true. The config holds no run-folder paths (hydra.run.dir is not in it).
MASKED_CONFIG = ("resume",)

EXIT_STATUS = {signal.SIGKILL: -signal.SIGKILL, signal.SIGINT: 130, signal.SIGTERM: 143}
RUN_TIMEOUT_S = 300
#: Trials run this many at a time (each process spends most of its ~10 s of CPU importing).
WORKERS = 2


@dataclass(frozen=True)
class Trial:
    id: str
    signum: signal.Signals
    point: str  # a kill_resume_helper.py point, or "timed"
    n: int  # the helper's N, or (timed) the metrics.jsonl record to wait for
    delay_s: float = 0.0  # timed: after that record

    def __str__(self) -> str:
        return self.id


def _timed_trials(seed: int = 2026) -> list[Trial]:
    """One per signal: after the 2nd or 3rd record (step 5 or 6), 0 to 0.25 s later. (After the
    1st, a SIGKILL may land before the first last.pt; in the last step a stop lets the run finish.)"""
    rng = random.Random(seed)
    trials = []
    for signum in (signal.SIGKILL, signal.SIGINT, signal.SIGTERM):
        k, delay = rng.randint(2, 3), round(rng.uniform(0.0, 0.25), 3)
        trials.append(Trial(f"timed-{signum.name}-after-record{k}+{delay}s", signum, "timed", k, delay))
    return trials


#: The run's last step: a stop asked for there lets the run finish (final evaluation, summary).
LAST_STEP = 12


TRIALS = [
    # SIGKILL: the process dies on the spot.
    Trial("SIGKILL-before-step1", signal.SIGKILL, "step", 1),  # no last.pt yet: started afresh
    Trial("SIGKILL-after-first-best.pt", signal.SIGKILL, "save", 1),  # best.pt but no last.pt: afresh
    Trial("SIGKILL-between-best.pt-and-last.pt", signal.SIGKILL, "save", 5),  # best.pt at step 6, last.pt at 5
    Trial("SIGKILL-before-rename-of-last.pt", signal.SIGKILL, "rename", 4),  # a temporary file left behind
    # SIGINT / SIGTERM: finish the step, run the evaluation due at it, save last.pt, exit 130 / 143.
    Trial("SIGINT-in-step6", signal.SIGINT, "step", 6),  # an evaluation due at the stopping step
    Trial("SIGTERM-in-step5", signal.SIGTERM, "step", 5),  # the end of epoch 1
    Trial("SIGINT-in-step12", signal.SIGINT, "step", LAST_STEP),  # the last step: the run just finishes (exit 0)
    Trial("SIGTERM-in-evaluation4", signal.SIGTERM, "eval", 4),  # during the evaluation of step 9
    *_timed_trials(),
]


def _trial(param) -> Trial:
    return param.values[0] if hasattr(param, "values") else param


#: Each trial's outcome, for test_tally: id -> (identical, what happened).
RESULTS: dict[str, tuple[bool, str]] = {}


# -- running ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    story: list[str]  # one line per process
    first: subprocess.CompletedProcess | None = None  # the interrupted process
    first_last_step: int | None = None  # last.pt's step after it
    first_records: list[dict] | None = None  # metrics.jsonl after it
    error: BaseException | None = None  # raised while running the trial


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "WORLD_SIZE", "RANK", "LOCAL_"))}
    # One thread in every process (the numbers must not depend on how a run was split into
    # processes); runs and data under the trial's root, never the repository's outputs/ or data/.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NEURALODE_ROOT=str(root), PYTHONUNBUFFERED="1")
    return env


def _train_command(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "neuralode", "train", *OVERRIDES, f"hydra.run.dir={run_dir}", *extra]


def _run(command: list[str], root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=root, env=_env(root), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


def _start_timed(trial: Trial, run_dir: Path, root: Path) -> subprocess.CompletedProcess:
    """Start the run, wait for its ``trial.n``-th metrics record and ``trial.delay_s``, signal it."""
    command = _train_command(run_dir)
    process = subprocess.Popen(command, cwd=root, env=_env(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        metrics = run_dir / "metrics.jsonl"
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while process.poll() is None and time.monotonic() < deadline:
            if metrics.is_file() and metrics.read_text().count("\n") >= trial.n:
                time.sleep(trial.delay_s)
                process.send_signal(trial.signum)
                break
            time.sleep(0.002)
        else:
            raise AssertionError(f"the run ended (exit {process.returncode}) before its record {trial.n}")
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _last_step(run_dir: Path) -> int | None:
    path = run_dir / "last.pt"
    return load_checkpoint(path)["progress"]["step"] if path.is_file() else None


def run_trial(trial: Trial, run_dir: Path, root: Path) -> Outcome:
    """Interrupt the run as ``trial`` says, then continue it (resume=true, or afresh when no
    last.pt was written) until it finishes."""
    outcome = Outcome(story=[])
    try:
        if trial.point == "timed":
            result = _start_timed(trial, run_dir, root)
            if result.returncode == -trial.signum and (run_dir / "summary.json").is_file():
                # The run finished within the delay and the signal met the interpreter's shutdown,
                # after every file was written: nothing to resume, and the files are still compared.
                outcome.story.append("the run finished before the signal landed")
                result = subprocess.CompletedProcess(result.args, 0, result.stdout, result.stderr)
        else:
            command = [sys.executable, str(HELPER), trial.signum.name, trial.point, str(trial.n),
                       *_train_command(run_dir)[4:]]
            result = _run(command, root)
        outcome.first, outcome.first_last_step = result, _last_step(run_dir)
        metrics = run_dir / "metrics.jsonl"
        outcome.first_records = read_metrics(metrics) if metrics.is_file() else []
        outcome.story.append(f"signalled: exit {result.returncode}, last.pt at step {outcome.first_last_step}")
        if trial.point != "timed":  # the helper always signals before the run can finish
            expected = 0 if (trial.point == "step" and trial.n == LAST_STEP) else EXIT_STATUS[trial.signum]
            assert result.returncode == expected, (outcome.story, result.stderr[-3000:])
        for _ in range(4):
            if result.returncode == 0:
                break
            assert result.returncode == EXIT_STATUS[trial.signum], (outcome.story, result.stderr[-3000:])
            resume = (run_dir / "last.pt").is_file()
            result = _run(_train_command(run_dir, *(["resume=true"] if resume else [])), root)
            outcome.story.append(f"{'resume' if resume else 'fresh start'}: exit {result.returncode}")
            assert result.returncode == 0, (outcome.story, result.stderr[-3000:])
    except BaseException as error:  # noqa: BLE001  re-raised by the trial's test
        outcome.error = error
    return outcome


def stop_checks(trial: Trial, outcome: Outcome, run_dir: Path, reference: Path) -> list[str]:
    """SIGINT / SIGTERM in step k (hooked): the process exits having saved last.pt at step k,
    with the evaluation due at step k (every 3 steps, at an epoch's end, at the last step)
    already in metrics.jsonl, and prints the command that continues the run."""
    if trial.point != "step" or trial.signum == signal.SIGKILL:
        return []
    found = []
    if outcome.first_last_step != trial.n:
        found.append(f"stopped in step {trial.n}: last.pt is at step {outcome.first_last_step}")
    if trial.n in EVAL_STEPS:
        due = [masked_record(r) for r in read_metrics(reference) if r["step"] == trial.n]
        written = [masked_record(r) for r in outcome.first_records if r["step"] == trial.n]
        if written != due:
            found.append(f"stopped in step {trial.n}: the evaluation due at it is not in metrics.jsonl (steps "
                         f"{[r['step'] for r in outcome.first_records]})")
    if trial.n == LAST_STEP:  # nothing to continue: the run finished
        if not (run_dir / "summary.json").is_file():
            found.append("stopped at the last step: the run did not finish (no summary.json)")
    elif f"resume=true hydra.run.dir={run_dir}" not in outcome.first.stderr:
        found.append("stopped: the command that continues the run is not printed")
    return found


# -- comparing ----------------------------------------------------------------------------------


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Where ``a`` and ``b`` differ: tensors bit for bit (dtype, shape, bytes), floats by their
    bits, containers by keys, lengths and items (and by type: a tuple is not a list)."""
    if type(a) is not type(b):
        return [f"{where}: {type(a).__name__} != {type(b).__name__}"]
    if isinstance(a, torch.Tensor):
        if a.dtype != b.dtype or a.shape != b.shape:
            return [f"{where}: tensor {a.dtype}{tuple(a.shape)} != {b.dtype}{tuple(b.shape)}"]
        same = torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))
        return [] if same else [f"{where}: tensors differ (max |diff| {_max_diff(a, b)})"]
    if isinstance(a, dict):
        if list(a) != list(b):
            return [f"{where}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"]
        return [d for key in a for d in differences(a[key], b[key], f"{where}.{key}" if where else str(key))]
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    if isinstance(a, float):
        same = a.hex() == b.hex() if math.isfinite(a) and math.isfinite(b) else repr(a) == repr(b)
        return [] if same else [f"{where}: {a!r} != {b!r}"]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    try:
        return float((a.double() - b.double()).abs().max())
    except RuntimeError:
        return float("nan")


def masked_record(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in MASKED_METRICS}


def masked_summary(summary: dict) -> dict:
    out = {key: value for key, value in summary.items() if key not in MASKED_SUMMARY}
    for key in ("best", "final"):
        if isinstance(out.get(key), dict):
            out[key] = masked_record(out[key])
    return out


def masked_checkpoint(state: dict) -> dict:
    state = dict(state)
    state["progress"] = {k: v for k, v in state["progress"].items() if k not in MASKED_PROGRESS}
    state["history"] = [masked_record(record) for record in state["history"]]
    state["config"] = {k: v for k, v in state["config"].items() if k not in MASKED_CONFIG}
    return state


def run_files(run_dir: Path) -> set[str]:
    """The folder's files, Hydra's own (.hydra/, train.log) and the lock aside."""
    return {p.name for p in run_dir.iterdir()} - {".hydra", "train.log", ".lock"}


def compare_runs(reference: Path, run_dir: Path) -> list[str]:
    found = []
    if run_files(run_dir) != run_files(reference):
        found.append(f"files: {sorted(run_files(run_dir))} != {sorted(run_files(reference))}")
    expected, got = read_metrics(reference), read_metrics(run_dir)
    found += differences([masked_record(r) for r in got], [masked_record(r) for r in expected], "metrics.jsonl")
    found += differences(masked_summary(json.loads((run_dir / "summary.json").read_text())),
                         masked_summary(json.loads((reference / "summary.json").read_text())), "summary.json")
    for name in ("best.pt", "last.pt"):
        found += differences(masked_checkpoint(load_checkpoint(run_dir / name)),
                             masked_checkpoint(load_checkpoint(reference / name)), name)
    # best.pt and summary.json's best are the best evaluation of metrics.jsonl (the first, on a tie).
    best = min(got, key=lambda r: r[MONITOR])
    best_pt = load_checkpoint(run_dir / "best.pt")
    if best_pt["progress"]["step"] != best["step"] or best_pt["history"][-1]["step"] != best["step"]:
        found.append(f"best.pt is at step {best_pt['progress']['step']}, the best evaluation at step {best['step']}")
    summary_best = json.loads((run_dir / "summary.json").read_text())["best"]
    if summary_best is None or summary_best["step"] != best["step"]:
        found.append(f"summary.json's best is {summary_best and summary_best['step']}, not step {best['step']}")
    return found


# -- tests --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kill_resume")


@pytest.fixture(scope="module")
def outcomes(request, root) -> dict[str, Outcome]:
    """The uninterrupted reference run, a second one, and every selected trial, WORKERS at a time."""
    selected = {item.callspec.params["trial"].id for item in request.session.items
                if getattr(item, "module", None) is sys.modules[__name__] and getattr(item, "callspec", None) is not None
                and "trial" in item.callspec.params}
    trials = [t for t in map(_trial, TRIALS) if t.id in selected]

    def plain(name: str) -> Outcome:
        result = _run(_train_command(root / name), root)
        return Outcome(story=[f"exit {result.returncode}"], first=result)

    started = time.monotonic()
    with ThreadPoolExecutor(WORKERS) as pool:
        jobs = {name: pool.submit(plain, name) for name in ("reference", "reference-again")}
        jobs.update({t.id: pool.submit(run_trial, t, root / t.id, root) for t in trials})
        done = {name: job.result() for name, job in jobs.items()}
    print(f"\nkill and resume: {len(trials)} trials and 2 uninterrupted runs in {time.monotonic() - started:.0f} s")
    return done


@pytest.fixture(scope="module")
def reference(root, outcomes) -> Path:
    """The uninterrupted run every trial must reproduce."""
    result = outcomes["reference"].first
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = root / "reference"
    records = read_metrics(run_dir)
    assert [r["step"] for r in records] == list(EVAL_STEPS)
    # What the trials are designed around: best.pt (step 6) is not last.pt.
    assert min(records, key=lambda r: r[MONITOR])["step"] != EVAL_STEPS[-1]
    return run_dir


def test_uninterrupted_runs_agree(root, outcomes, reference):
    """Two uninterrupted runs agree on everything but MASKED_*: what the trials rely on."""
    result = outcomes["reference-again"].first
    assert result.returncode == 0, result.stderr[-3000:]
    assert compare_runs(reference, root / "reference-again") == []


@pytest.mark.parametrize("trial", TRIALS, ids=str)
def test_killed_and_resumed_run_equals_the_uninterrupted_one(trial: Trial, root, outcomes, reference):
    outcome, run_dir = outcomes[trial.id], root / trial.id
    if outcome.error is not None:
        RESULTS[trial.id] = (False, "; ".join(outcome.story) + f"; did not finish: {str(outcome.error)[:300]!r}")
        raise outcome.error
    found = stop_checks(trial, outcome, run_dir, reference) + compare_runs(reference, run_dir)
    RESULTS[trial.id] = (not found, "; ".join(outcome.story) + (f"; {len(found)} difference(s): {found[:4]}" if found else ""))
    assert not found, f"{trial.id} ({'; '.join(outcome.story)}) differs from the uninterrupted run:\n" + "\n".join(found[:20])


def test_tally():
    """How many trials ended with every file identical (printed; run after the trials)."""
    if not RESULTS:
        pytest.skip("no trial ran")
    identical = sum(ok for ok, _ in RESULTS.values())
    lines = [f"  {'identical' if ok else 'DIFFERENT'}  {tid}: {what}" for tid, (ok, what) in RESULTS.items()]
    print(f"\nkill and resume: every file identical in {identical} of {len(RESULTS)} trials\n" + "\n".join(lines))
