"""Checkpoints verified on load (a digest of the contents), old files still read, a full disk
reported in one line with the previous file kept, and interrupted saves' temporary files cleaned."""

from __future__ import annotations

import errno
import os
import tempfile
import warnings

import pytest
import torch

from neuralode.files import TEMP_NAME
from neuralode.train.checkpoint import (
    FORMAT,
    CheckpointError,
    CheckpointWarning,
    clean_stale_temp_files,
    load_checkpoint,
    payload_digest,
    save_checkpoint,
)
from tests.blobs import make_trainer


def state(weight: float = 1.0) -> dict:
    """A complete (if small) training state: every key load_checkpoint requires."""
    return {
        "model": {"w": torch.full((64, 32), weight), "b": torch.arange(5, dtype=torch.float64)},
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
        "progress": {"epoch": 1, "step": 7, "best": 0.25},
        "rng": {"torch": torch.get_rng_state(), "python": (3, tuple(range(5)), None)},
        "history": [{"step": 7, "loss": 2.21}],
        "config": {"name": "x", "model": {"_target_": "neuralode.models.mlp.MLP"}},
    }


def test_saved_checkpoint_carries_a_digest_and_round_trips(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, state())
    raw = torch.load(path, weights_only=True)  # still a plain dict: torch.load and the keys as before
    assert raw["format"] == FORMAT and raw["version"] == 2 and len(raw["sha256"]) == 64
    loaded = load_checkpoint(path)
    assert "sha256" not in loaded and torch.equal(loaded["model"]["w"], state()["model"]["w"])
    save_checkpoint(tmp_path / "again.pt", loaded)  # loading and saving again gives the same digest
    assert torch.load(tmp_path / "again.pt", weights_only=True)["sha256"] == raw["sha256"]


def test_flipped_bytes_in_the_middle_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "best.pt"
    save_checkpoint(path, state())
    data = bytearray(path.read_bytes())
    middle = len(data) // 2  # inside the 64x32 weight: the file still loads, with a wrong weight
    data[middle : middle + 4] = bytes(b ^ 0xFF for b in data[middle : middle + 4])
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert str(path) in message and "is corrupt" in message and "do not match the digest" in message
    assert "\n" not in message


def test_a_flipped_byte_anywhere_is_refused_or_changes_nothing(tmp_path):
    """Whichever byte is damaged, a load either refuses the file or returns what was written."""
    path, damaged = tmp_path / "last.pt", tmp_path / "damaged.pt"
    save_checkpoint(path, state())
    good = path.read_bytes()
    expected = torch.load(path, weights_only=True)["sha256"]
    for position in range(0, len(good), max(1, len(good) // 97)):
        data = bytearray(good)
        data[position] ^= 0x10
        damaged.write_bytes(bytes(data))
        try:
            loaded = load_checkpoint(damaged)
        except CheckpointError as error:
            assert str(damaged) in str(error)
        else:
            assert payload_digest(loaded) == expected, position


def test_reported_case_trainer_checkpoint_with_flipped_bytes(tmp_path):
    make_trainer(tmp_path, max_steps=2, logging=None).fit()
    path = tmp_path / "last.pt"
    before = path.read_bytes()
    # find the first weight's bytes in the file and damage them (what the reported file had)
    weight = load_checkpoint(path)["model"]["inp.weight"]
    offset = before.index(weight.numpy().tobytes())
    data = bytearray(before)
    data[offset + 5] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="is corrupt"):
        load_checkpoint(path)


def test_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, state())
    data = path.read_bytes()
    for keep in (len(data) - 10, len(data) // 2, 100):
        path.write_bytes(data[:keep])
        with pytest.raises(CheckpointError, match="truncated, corrupt") as error:
            load_checkpoint(path)
        assert str(path) in str(error.value)


def test_version_1_checkpoint_still_loads_with_one_warning(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"format": FORMAT, "version": 1, **state()}, path)  # as written before the digest
    with pytest.warns(CheckpointWarning, match="version-1 checkpoint.*cannot be verified"):
        loaded = load_checkpoint(path)
    assert loaded["progress"]["step"] == 7
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the warning comes once per file
        load_checkpoint(path)


def test_digest_missing_from_a_version_2_file_is_refused(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"format": FORMAT, "version": 2, **state()}, path)
    with pytest.raises(CheckpointError, match="no digest"):
        load_checkpoint(path)


def test_newer_version_is_refused(tmp_path):
    path = tmp_path / "last.pt"
    payload = {"format": FORMAT, "version": 3, **state()}
    payload["sha256"] = payload_digest(payload)
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="version 3; this code reads versions 1, 2"):
        load_checkpoint(path)


# --------------------------------------------------------------------------- disk full


def _raise(code):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return fail


@pytest.mark.parametrize(
    "target, code",
    [
        ("os.fsync", errno.ENOSPC),  # the data did not fit
        ("torch.save", errno.ENOSPC),
        ("tempfile.mkstemp", errno.ENOSPC),  # no room for even an empty file
        ("os.replace", getattr(errno, "EDQUOT", errno.ENOSPC)),  # over quota
    ],
)
def test_disk_full_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, target, code):
    path = tmp_path / "last.pt"
    save_checkpoint(path, state(1.0))
    module, name = target.split(".")
    monkeypatch.setattr({"os": os, "torch": torch, "tempfile": tempfile}[module], name, _raise(code))
    with pytest.raises(CheckpointError) as error:
        save_checkpoint(path, state(2.0))
    monkeypatch.undo()
    message = str(error.value)
    assert message == (f"no space left on device writing {path}; the previous last.pt is kept; "
                       "free space and resume with resume=true")
    assert error.value.__suppress_context__  # reported as one line, no chained traceback
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((64, 32), 1.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


def test_disk_full_on_the_first_save_says_nothing_was_written(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", _raise(errno.ENOSPC))
    with pytest.raises(CheckpointError, match="no best.pt was written; free space"):
        save_checkpoint(tmp_path / "best.pt", state())
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_other_write_errors_are_not_reported_as_disk_full(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, state(1.0))
    monkeypatch.setattr(os, "fsync", _raise(errno.EIO))
    with pytest.raises(OSError) as error:
        save_checkpoint(path, state(2.0))
    monkeypatch.undo()
    assert error.value.errno == errno.EIO and not isinstance(error.value, CheckpointError)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((64, 32), 1.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


# --------------------------------------------------------------------------- stale temporary files


def test_clean_stale_temp_files_removes_only_interrupted_saves(tmp_path):
    save_checkpoint(tmp_path / "last.pt", state())
    stale = []
    for name in ("last.pt", "best.pt"):  # what a save killed before its rename leaves
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=tmp_path)
        os.write(fd, b"half a checkpoint")
        os.close(fd)
        stale.append(tmp)
    stale.append(str(tmp_path / ".summary.json.ab_12xyz.tmp"))  # a summary.json write killed likewise
    (tmp_path / ".summary.json.ab_12xyz.tmp").write_text("{")
    kept = [".lock", ".other.tmp", "notes.tmp", ".hydra", "last.pt"]
    for name in kept[:3]:
        (tmp_path / name).write_text("x")
    (tmp_path / ".hydra").mkdir()
    removed = clean_stale_temp_files(tmp_path)
    assert sorted(map(str, removed)) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
    assert clean_stale_temp_files(tmp_path) == []
    assert clean_stale_temp_files(tmp_path / "missing") == []
    load_checkpoint(tmp_path / "last.pt")


def test_temp_name_pattern_matches_what_save_checkpoint_writes(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def replace(src, dst):
        seen.append(os.path.basename(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    save_checkpoint(tmp_path / "best.pt", state())
    assert len(seen) == 1 and TEMP_NAME.fullmatch(seen[0])


def test_a_file_size_limit_is_one_line_naming_ulimit(tmp_path):
    """A real RLIMIT_FSIZE (ulimit -f) in a training process: EFBIG from the checkpoint, the
    metrics or TensorBoard's thread ends the run with one error line (and at most one warning
    line from the event writer's thread), exit status 2, no traceback."""
    import resource
    import subprocess
    import sys

    script = ("import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (20 * 1024, 20 * 1024)); "
              "sys.argv = ['neuralode', 'train', 'experiment=latent_ode_spiral', 'scale=smoke', 'trainer.max_epochs=1', "
              f"'hydra.run.dir={tmp_path}/run', 'paths.output_dir={tmp_path}/outputs']; "
              "from neuralode.__main__ import main; main()")
    assert resource.RLIMIT_FSIZE  # Linux and macOS have it
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert lines[-1].startswith("error: the file size limit (ulimit -f) was reached")
    assert "raise the limit (ulimit -f unlimited)" in lines[-1]
    assert len(lines) <= 2, done.stderr
