"""Out-of-distribution image sets for the MNIST models' uncertainty (SDE-Net, ``make sdenet``).

- ``animal_mnist`` (the offline default): Animal-MNIST, 10,000 white-on-black 28x28 silhouettes
  of ten animals in MNIST's format (MIT licence), shipped inside the ``animal-mnist`` wheel.
  The wheel is fetched with ``pip download`` (wherever a package index or mirror is reachable)
  and never installed or imported: its two gzip'd pickles are checked against their SHA-256,
  loaded by the unpickler that rebuilds only numpy arrays (:mod:`neuralode.data.mnist`) and
  written once as idx files under ``<root>/AnimalMNIST/raw/``, under a file lock, atomically.
- ``svhn``: the paper's choice, SVHN's 26,032 test images through torchvision's download (online
  only), made grey and 28x28 as the reference code does (Grayscale, Resize(28), ToTensor).
- ``synthetic``: generated non-digit images (random boxes and stripes), no data needed (tests).

Every set yields ``(image, label)`` with images (1, 28, 28) in [0, 1] like MNIST's; labels are
the set's own and unused. Prepare a set once with ``python -m neuralode.data.ood --root data``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from neuralode.data.mnist import load_numpy_pickle, write_idx
from neuralode.errors import UserError

OOD_SETS = ("animal_mnist", "svhn", "synthetic")

ANIMAL_PACKAGE = "animal-mnist==0.4"
ANIMAL_MEMBERS = {  # wheel member -> SHA-256 of its bytes
    "images": ("animal_mnist/data/Animal_MNIST/animal_data_version_3.gz",
               "68a30346781a0984f839463a4615d2decb899d1ce65091bb92586311754a34ce"),
    "labels": ("animal_mnist/data/Animal_MNIST/animal_label_version_3.gz",
               "dec8dba7c469830989fbab46825021a08a38470753a512f27ada847eced97b57"),
}
ANIMAL_FILES = {"images": "animal-mnist-images-idx3-ubyte", "labels": "animal-mnist-labels-idx1-ubyte"}
ANIMAL_SIZE = 10_000
PREPARE_COMMAND = "python -m neuralode.data.ood --root {root} --name {name}"


class OODUnavailableError(UserError, RuntimeError):
    """The out-of-distribution set is neither on disk nor obtainable; the message says how to get it."""


def animal_dir(root: str | Path) -> Path:
    return Path(root) / "AnimalMNIST" / "raw"


def _how_to_get(root: str | Path, name: str, why: str) -> str:
    command = PREPARE_COMMAND.format(root=root, name=name)
    where = {"animal_mnist": f"where `pip download --no-deps {ANIMAL_PACKAGE}` works",
             "svhn": "with internet (torchvision downloads SVHN's test_32x32.mat)"}[name]
    return (f"the out-of-distribution set {name!r} is not available under {Path(root).resolve()}: {why}\n"
            f"To get it: run `{command}` {where}, and copy the folder over if that is another machine; "
            f"or pick another set (--ood {', --ood '.join(s for s in OOD_SETS if s != name)}).")


# --------------------------------------------------------------------------- Animal-MNIST
def read_idx(path: Path, ndim: int) -> np.ndarray:
    """A uint8 idx file (magic 0 0 8 ndim, big-endian dims, bytes), checked against its size."""
    data = path.read_bytes()
    if len(data) < 4 + 4 * ndim or data[:4] != bytes([0, 0, 8, ndim]):
        raise OODUnavailableError(f"{path} is not a {ndim}-dimensional uint8 idx file; delete it and prepare again")
    dims = tuple(int(d) for d in np.frombuffer(data[4:4 + 4 * ndim], dtype=">u4"))
    body = data[4 + 4 * ndim:]
    if len(body) != int(np.prod(dims)):
        raise OODUnavailableError(f"{path} holds {len(body)} bytes for shape {dims}: truncated; delete it and prepare again")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def animal_arrays_from_wheel(wheel: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) from the wheel, checksums and shapes checked."""
    arrays = {}
    with zipfile.ZipFile(wheel) as archive:
        for kind, (member, sha256) in ANIMAL_MEMBERS.items():
            data = archive.read(member)
            if hashlib.sha256(data).hexdigest() != sha256:
                raise OODUnavailableError(f"{member} in {wheel.name} is not the known file (SHA-256 differs); "
                                          f"the data set was changed upstream: fetch {ANIMAL_PACKAGE} again")
            arrays[kind] = np.asarray(load_numpy_pickle(data))
    images, labels = arrays["images"], arrays["labels"]
    if images.shape != (ANIMAL_SIZE, 28, 28) or images.dtype != np.uint8 or labels.shape != (ANIMAL_SIZE,):
        raise OODUnavailableError(f"{wheel.name} holds images {images.shape} {images.dtype} and labels {labels.shape}; "
                                  f"expected ({ANIMAL_SIZE}, 28, 28) uint8 and ({ANIMAL_SIZE},)")
    return images, labels.astype(np.uint8)


def download_animal_wheel(directory: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", ANIMAL_PACKAGE, "-d", str(directory)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    wheels = sorted(Path(directory).glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise RuntimeError(f"`{' '.join(cmd[2:])}` failed: {result.stderr.strip()[-500:]}")
    return wheels[0]


@contextlib.contextmanager
def _lock(directory: Path):
    """An exclusive flock on ``directory/.prepare.lock`` (dropped by the kernel if the holder dies)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".prepare.lock", os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def prepare_animal_mnist(root: str | Path, download: bool = True, wheel: Path | None = None) -> Path:
    """Make sure Animal-MNIST's idx files exist under ``<root>/AnimalMNIST/raw/``; return that folder.
    ``wheel``: an ``animal-mnist`` wheel already at hand (else ``pip download`` fetches it)."""
    folder = animal_dir(root)
    files = [folder / ANIMAL_FILES[k] for k in ("labels", "images")]
    if all(f.is_file() for f in files):
        return folder
    if not download and wheel is None:
        raise OODUnavailableError(_how_to_get(root, "animal_mnist", "download=False and the files are not there"))
    try:
        with _lock(folder):
            if all(f.is_file() for f in files):  # another process prepared them meanwhile
                return folder
            with tempfile.TemporaryDirectory() as tmp:
                images, labels = animal_arrays_from_wheel(wheel or download_animal_wheel(Path(tmp)))
            write_idx(files[0], labels)
            write_idx(files[1], images)  # last: the set counts as present once the images exist
    except OODUnavailableError:
        raise
    except Exception as error:  # noqa: BLE001 - pip missing, index unreachable, unwritable folder
        raise OODUnavailableError(_how_to_get(root, "animal_mnist", f"{type(error).__name__}: {error}")) from error
    return folder


def animal_mnist(root: str | Path, download: bool = True) -> TensorDataset:
    folder = prepare_animal_mnist(root, download)
    images = read_idx(folder / ANIMAL_FILES["images"], 3)
    labels = read_idx(folder / ANIMAL_FILES["labels"], 1)
    if len(images) != len(labels):
        raise OODUnavailableError(f"{folder} holds {len(images)} images and {len(labels)} labels; delete it and prepare again")
    x = torch.from_numpy(images.copy()).float().div_(255).unsqueeze(1)
    return TensorDataset(x, torch.from_numpy(labels.astype(np.int64)))


# --------------------------------------------------------------------------- SVHN, generated
def svhn(root: str | Path, download: bool = True) -> Dataset:
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.Grayscale(), transforms.Resize(28), transforms.ToTensor()])
    try:
        return datasets.SVHN(str(Path(root) / "SVHN"), split="test", download=download, transform=transform)
    except Exception as error:  # noqa: BLE001 - offline, missing file, bad checksum
        raise OODUnavailableError(_how_to_get(root, "svhn", f"{type(error).__name__}: {error}")) from error


def synthetic_ood(size: int = 512, seed: int = 0) -> TensorDataset:
    """``size`` 28x28 images in [0, 1] that are no digits: a bright box and stripes each, from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    axis = torch.arange(28).float()
    x0, y0 = torch.randint(0, 14, (2, size, 1, 1), generator=g)
    w, h = torch.randint(6, 14, (2, size, 1, 1), generator=g)
    xx, yy = axis.view(1, 1, 28), axis.view(1, 28, 1)
    box = ((xx >= x0) & (xx < x0 + w) & (yy >= y0) & (yy < y0 + h)).float()
    freq = 0.3 + 1.2 * torch.rand(size, 1, 1, generator=g)
    stripes = 0.5 + 0.5 * torch.sin(freq * (xx + yy))
    images = (0.6 * box + 0.4 * stripes + 0.05 * torch.randn(size, 28, 28, generator=g)).clamp(0, 1)
    return TensorDataset(images.unsqueeze(1), torch.zeros(size, dtype=torch.long))


def ood_dataset(name: str, root: str | Path = "data", download: bool = True, limit: int | None = None,
                synthetic_size: int = 512) -> Dataset:
    """The out-of-distribution set ``name`` (one of :data:`OOD_SETS`), its first ``limit`` images."""
    if name not in OOD_SETS:
        raise OODUnavailableError(f"unknown out-of-distribution set {name!r}; the sets are: {', '.join(OOD_SETS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"the out-of-distribution limit must be a positive number of images or None, got {limit}")
    if name == "animal_mnist":
        dataset = animal_mnist(root, download)
    elif name == "svhn":
        dataset = svhn(root, download)
    else:
        dataset = synthetic_ood(synthetic_size)
    if limit is not None and limit < len(dataset):
        dataset = Subset(dataset, range(limit))
    return dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Prepare an out-of-distribution set for the MNIST models under ROOT.")
    parser.add_argument("--root", default="data", help="data folder (default: data)")
    parser.add_argument("--name", default="animal_mnist", choices=[s for s in OOD_SETS if s != "synthetic"])
    args = parser.parse_args(argv)
    try:
        dataset = ood_dataset(args.name, args.root, download=True)
    except OODUnavailableError as error:
        sys.exit(str(error))
    print(f"{args.name}: {len(dataset)} images ready under {Path(args.root).resolve()}")


if __name__ == "__main__":
    main()
