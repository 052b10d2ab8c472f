"""explorer.training.data: reading IDX and CIFAR files made here, the search order, device batches."""

from __future__ import annotations

import dataclasses
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from explorer.training import DataError, find_dataset, load_dataset
from explorer.training import data as D
from explorer.training.data import random_crop_flip, read_idx


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def make_mnist_files(
    folder: Path, n_train: int = 60, n_test: int = 20, seed: int = 0, compress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    train_x = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    train_y = np.arange(n_train, dtype=np.uint8) % 10
    write_idx(folder / "train-images-idx3-ubyte", train_x, compress)
    write_idx(folder / "train-labels-idx1-ubyte", train_y, compress)
    write_idx(folder / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, 28, 28)), compress)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.arange(n_test) % 10, compress)
    return train_x, train_y


def make_cifar_files(folder: Path, per_batch: int = 12, binary: bool = False) -> np.ndarray:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    first = None
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        first = images if first is None else first
        if binary:
            rows = np.concatenate([np.array(labels, dtype=np.uint8)[:, None], images], axis=1)
            (folder / f"{name}.bin").write_bytes(rows.tobytes())
        else:
            with open(folder / name, "wb") as f:
                pickle.dump({b"data": images, b"labels": labels, b"batch_label": b"x"}, f)
    return first


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No real data, environment or cache leaks into these tests."""
    monkeypatch.delenv(D.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name, info in D.DATASETS.items():
        monkeypatch.setitem(D.DATASETS, name, dataclasses.replace(info, system_dirs=()))
    D._load.cache_clear()


def test_read_idx_gz_and_plain(tmp_path):
    x = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a", x, compress=True)
    write_idx(tmp_path / "b", x, compress=False)
    for path in (tmp_path / "a.gz", tmp_path / "b"):
        got = read_idx(path)
        assert got.dtype == torch.uint8 and torch.equal(got, torch.from_numpy(x))


@pytest.mark.parametrize(
    "payload, words",
    [
        (b"\x01\x02\x08\x01", "magic"),
        (b"\x00\x00\x0d\x01\x00\x00\x00\x01", "type"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05ab", "truncated"),
    ],
)
def test_read_idx_rejects_bad_files(tmp_path, payload, words):
    (tmp_path / "bad").write_bytes(payload)
    with pytest.raises(DataError, match=words):
        read_idx(tmp_path / "bad")


def test_load_fashion_mnist_splits(tmp_path):
    train_x, train_y = make_mnist_files(tmp_path / "fm")
    ds = load_dataset("fashion-mnist", tmp_path / "fm", val_size=10, seed=3, download=False)
    assert ds.train_images.shape == (50, 1, 28, 28) and ds.train_images.dtype == torch.uint8
    assert ds.val_images.shape == (10, 1, 28, 28) and ds.test_images.shape == (20, 1, 28, 28)
    assert ds.train_labels.dtype == torch.int64 and ds.input_shape == (1, 28, 28)
    # The two splits partition the training file, pairing each image with its own label.
    both = torch.cat([ds.train_images, ds.val_images]).flatten(1)
    original = torch.from_numpy(train_x).flatten(1)
    assert sorted(map(bytes, both.numpy())) == sorted(map(bytes, original.numpy()))
    lookup = {bytes(img): int(lbl) for img, lbl in zip(original.numpy(), train_y)}
    for img, lbl in zip(ds.val_images.flatten(1).numpy(), ds.val_labels):
        assert lookup[bytes(img)] == int(lbl)
    assert load_dataset("fashion-mnist", tmp_path / "fm", val_size=10, seed=3) is ds  # once
    other = load_dataset("fashion-mnist", tmp_path / "fm", val_size=10, seed=4)
    assert not torch.equal(other.val_images, ds.val_images)


def test_torchvision_layout_and_plain_files(tmp_path):
    make_mnist_files(tmp_path / "MNIST" / "raw", compress=False)
    ds = load_dataset("mnist", tmp_path, val_size=5, download=False)
    assert ds.source == str((tmp_path / "MNIST" / "raw").resolve()) and ds.name == "mnist"


@pytest.mark.parametrize("binary", [False, True])
def test_load_cifar10(tmp_path, binary):
    folder = tmp_path / ("cifar-10-batches-bin" if binary else "cifar-10-batches-py")
    first = make_cifar_files(folder, binary=binary)
    ds = load_dataset("cifar10", tmp_path, val_size=6, seed=0, download=False)
    assert ds.input_shape == (3, 32, 32)
    assert len(ds.train_labels) + len(ds.val_labels) == 60 and len(ds.test_labels) == 12
    all_train = torch.cat([ds.train_images, ds.val_images]).flatten(1).numpy()
    assert bytes(first[0]) in {bytes(row) for row in all_train}  # channel-major, as stored


def test_search_order(tmp_path, monkeypatch):
    for name in ("arg", "env", "system", "cache"):
        make_mnist_files(tmp_path / name, n_train=20 + len(name))
    info = D.DATASETS["fashion-mnist"]
    monkeypatch.setitem(
        D.DATASETS,
        "fashion-mnist",
        dataclasses.replace(info, system_dirs=(str(tmp_path / "system"),)),
    )
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    make_mnist_files(tmp_path / "xdg" / "inception-explorer" / "FashionMNIST" / "raw")
    monkeypatch.setenv(D.ENV_VAR, str(tmp_path / "env"))
    assert find_dataset("fashion-mnist", tmp_path / "arg", download=False) == tmp_path / "arg"
    assert find_dataset("fashion-mnist", None, download=False) == tmp_path / "env"
    monkeypatch.delenv(D.ENV_VAR)
    assert find_dataset("fashion-mnist", None, download=False) == tmp_path / "system"
    monkeypatch.setitem(D.DATASETS, "fashion-mnist", dataclasses.replace(info, system_dirs=()))
    found = find_dataset("fashion-mnist", None, download=False)
    assert found == tmp_path / "xdg" / "inception-explorer" / "FashionMNIST" / "raw"


def test_missing_dataset_is_one_line_with_the_fix(tmp_path, monkeypatch):
    def offline(info, root):
        raise OSError("network is unreachable\nsecond line")

    monkeypatch.setattr(D, "_download", offline)
    monkeypatch.setenv(D.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as err:
        find_dataset("fashion-mnist", tmp_path / "empty")
    msg = str(err.value)
    assert "\n" not in msg
    for part in (
        str(tmp_path / "empty"),
        str(tmp_path / "nowhere"),
        "download failed",
        "network is unreachable",
        "sudo apt-get install dataset-fashion-mnist",
        "--data-dir",
    ):
        assert part in msg
    with pytest.raises(DataError, match="torchvision.datasets.CIFAR10") as err:
        find_dataset("cifar10", tmp_path / "empty", download=False)
    assert "\n" not in str(err.value) and "download not attempted" in str(err.value)
    with pytest.raises(DataError, match="unknown dataset 'svhn'"):
        find_dataset("svhn")


def test_random_crop_flip_is_an_exact_shift():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.uint8).reshape(2, 3, 5, 5)
    centre = torch.tensor([2, 2])
    assert torch.equal(random_crop_flip(x, 2, centre, centre, None), x)
    shifted = random_crop_flip(x, 2, torch.tensor([0, 4]), torch.tensor([1, 2]), None)
    assert torch.equal(shifted[0, :, 2:, 1:], x[0, :, :3, :4]) and shifted[0, :, :2].eq(0).all()
    assert torch.equal(shifted[1, :, :3], x[1, :, 2:]) and shifted[1, :, 3:].eq(0).all()
    flipped = random_crop_flip(x, 0, centre, centre, torch.tensor([True, False]))
    assert torch.equal(flipped[0], x[0].flip(2)) and torch.equal(flipped[1], x[1])


@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
def test_train_batches_on_device(tmp_path, name):
    make_mnist_files(tmp_path / name, n_train=70)
    ds = load_dataset(name, tmp_path / name, val_size=6, download=False)
    dev = ds.on("cpu")
    assert ds.on("cpu") is dev and dev.on("cpu") is dev
    batches = list(
        dev.train_batches(
            16,
            100,
            torch.Generator().manual_seed(0),
            augment=True,
            memory_format=torch.channels_last,
        )
    )
    assert len(batches) == 6  # 100 // 16, reaching past one pass over the 64 images
    for x, y in batches:
        assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.is_contiguous(memory_format=torch.channels_last)
        low = (0 - ds.info.mean[0]) / ds.info.std[0]
        high = (1 - ds.info.mean[0]) / ds.info.std[0]
        assert low - 1e-5 <= x.min() and x.max() <= high + 1e-5
    again = list(dev.train_batches(16, 100, torch.Generator().manual_seed(0), augment=True))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    # Rebuild the same batch by hand: the same draws, crops always, flips only where they fit.
    g = torch.Generator().manual_seed(0)
    order = torch.cat([torch.randperm(64, generator=g), torch.randperm(64, generator=g)])
    shifts = torch.randint(0, 5, (2, 96), generator=g)
    flips = torch.rand(96, generator=g) < 0.5
    raw = random_crop_flip(
        ds.train_images[order[:16]],
        2,
        shifts[0, :16],
        shifts[1, :16],
        flips[:16] if name == "fashion-mnist" else None,
    )
    expect = (raw.float() / 255 - ds.info.mean[0]) / ds.info.std[0]
    assert torch.allclose(batches[0][0], expect, atol=1e-6)
    assert torch.equal(batches[0][1], ds.train_labels[order[:16]])


def test_eval_batches_cover_the_split_in_order(tmp_path):
    make_mnist_files(tmp_path / "fm", n_train=40)
    dev = load_dataset("fashion-mnist", tmp_path / "fm", val_size=15, download=False).on("cpu")
    labels = torch.cat([y for _, y in dev.eval_batches("val", 4)])
    assert torch.equal(labels, dev.dataset.val_labels)
    assert sum(len(y) for _, y in dev.eval_batches("test", 8, num_images=10)) == 10
