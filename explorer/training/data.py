"""The image data the search trains on: Fashion-MNIST (default), MNIST and CIFAR-10.

A dataset is read once from its original files (IDX for the MNIST family, LeCun et al. 1998 and
Xiao et al. 2017; the python or binary batches for CIFAR-10, Krizhevsky 2009) into uint8 tensors,
with a seeded validation split held out from the training set. The search optimises validation
accuracy; the test split is for finished designs only.

For training, the whole dataset is copied to the device once (`Dataset.on`) and batches are taken
by index; random crops, flips and normalisation run there as batched tensor operations, with no
per-sample Python (as in airbench's whole-dataset-on-GPU CIFAR-10 loop).

Files are looked for, in order, in the ``data_dir`` argument (the CLIs' ``--data-dir``), the
``EXPLORER_DATA`` environment variable, the system data packages (Debian's
``dataset-fashion-mnist``), and the user cache, where torchvision downloads them when the network
allows. When none has them, `DataError` says where it looked and the command that fixes it.
"""

from __future__ import annotations

import functools
import gzip
import os
import pickle
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy
import torch

ENV_VAR = "EXPLORER_DATA"
DEFAULT_DATASET = "fashion-mnist"
DEFAULT_VAL_SIZE = 5000


class DataError(Exception):
    """A dataset that cannot be found or read; the message is one line saying how to fix it."""


@dataclass(frozen=True)
class DatasetInfo:
    """What the loaders and the network need to know about a named dataset."""

    name: str
    channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]  # per channel, on the [0, 1] scale
    std: tuple[float, ...]
    flip: bool  # horizontal flips keep the class (clothes, objects) or not (digits)
    pad: int  # random-crop padding, in pixels
    torchvision_name: str  # the torchvision.datasets class that downloads it
    system_dirs: tuple[str, ...] = ()  # where a distribution package installs the files
    package: str | None = None  # that package's name


_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_CIFAR_PY_DIR = "cifar-10-batches-py"
_CIFAR_BIN_DIR = "cifar-10-batches-bin"

DATASETS: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(
        "fashion-mnist",
        1,
        28,
        10,
        (0.2860,),
        (0.3530,),
        flip=True,
        pad=2,
        torchvision_name="FashionMNIST",
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        package="dataset-fashion-mnist",
    ),
    "mnist": DatasetInfo(
        "mnist",
        1,
        28,
        10,
        (0.1307,),
        (0.3081,),
        flip=False,
        pad=2,
        torchvision_name="MNIST",
        system_dirs=("/usr/share/datasets/mnist",),
    ),
    "cifar10": DatasetInfo(
        "cifar10",
        3,
        32,
        10,
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        flip=True,
        pad=4,
        torchvision_name="CIFAR10",
        system_dirs=("/usr/share/datasets/cifar10",),
    ),
}


def dataset_info(name: str) -> DatasetInfo:
    """The `DatasetInfo` of a dataset name; `DataError` names the known ones otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None


def cache_dir() -> Path:
    """Where downloaded datasets are kept: ``$XDG_CACHE_HOME/inception-explorer`` or ~/.cache/..."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "inception-explorer"


# --- finding the files -------------------------------------------------------------------------


def _mnist_file(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _candidate_folders(info: DatasetInfo, root: Path) -> list[Path]:
    """The folders under one root that may hold the files: itself, a named subfolder, and
    torchvision's layout (``FashionMNIST/raw``, ``cifar-10-batches-py``)."""
    if info.name == "cifar10":
        return [
            root,
            root / _CIFAR_PY_DIR,
            root / _CIFAR_BIN_DIR,
            root / info.name / _CIFAR_PY_DIR,
            root / info.name / _CIFAR_BIN_DIR,
        ]
    return [
        root,
        root / info.name,
        root / info.torchvision_name / "raw",
        root / info.name / info.torchvision_name / "raw",
    ]


def _holds_files(info: DatasetInfo, folder: Path) -> bool:
    if info.name == "cifar10":
        if (folder / "test_batch").is_file():
            return all((folder / f"data_batch_{i}").is_file() for i in range(1, 6))
        if (folder / "test_batch.bin").is_file():
            return all((folder / f"data_batch_{i}.bin").is_file() for i in range(1, 6))
        return False
    return all(_mnist_file(folder, stem) is not None for stem in _MNIST_FILES.values())


def _find_in(info: DatasetInfo, root: Path) -> Path | None:
    for folder in _candidate_folders(info, root):
        if _holds_files(info, folder):
            return folder
    return None


def _fix_command(info: DatasetInfo) -> str:
    if info.package:
        return f"sudo apt-get install {info.package}"
    return (
        f'python -c "import torchvision; torchvision.datasets.{info.torchvision_name}('
        f"'{cache_dir()}', download=True)\" on a machine with network access"
    )


def _download(info: DatasetInfo, root: Path) -> None:
    import torchvision.datasets  # imported here: the download path is rarely taken

    root.mkdir(parents=True, exist_ok=True)
    getattr(torchvision.datasets, info.torchvision_name)(str(root), train=True, download=True)
    getattr(torchvision.datasets, info.torchvision_name)(str(root), train=False, download=True)


def find_dataset(
    name: str = DEFAULT_DATASET, data_dir: str | os.PathLike | None = None, download: bool = True
) -> Path:
    """The folder holding a dataset's files, searched in the documented order.

    Raises `DataError` (one line) saying where it looked and what command fixes it.
    """
    info = dataset_info(name)
    looked: list[str] = []
    roots: list[tuple[str, Path]] = []
    if data_dir is not None:
        roots.append(("--data-dir", Path(data_dir).expanduser()))
    env = os.environ.get(ENV_VAR)
    if env:
        roots.append((f"${ENV_VAR}", Path(env).expanduser()))
    else:
        looked.append(f"${ENV_VAR} (unset)")
    roots += [("system package", Path(d)) for d in info.system_dirs]
    roots.append(("cache", cache_dir()))
    for label, root in roots:
        found = _find_in(info, root)
        if found is not None:
            return found
        looked.append(f"{label} {root}")
    why = "download not attempted"
    if download:
        try:
            _download(info, cache_dir())
        except Exception as exc:  # no network, a proxy, a full disk: all end in the same advice
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            why = f"download failed: {first}"
        else:
            found = _find_in(info, cache_dir())
            if found is not None:
                return found
            why = "download left no usable files"
    want = (
        "the four IDX files (train-images-idx3-ubyte.gz, ...)"
        if info.name != "cifar10"
        else (f"{_CIFAR_PY_DIR}/ (data_batch_1..5, test_batch)")
    )
    raise DataError(
        f"{name} not found; looked in {', '.join(looked)} ({why}). Fix: {_fix_command(info)}, "
        f"or pass --data-dir DIR (or set {ENV_VAR}) to a folder with {want}"
    )


# --- reading the files -------------------------------------------------------------------------


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """An IDX file (optionally gzipped) of unsigned bytes as a uint8 tensor of its shape."""
    path = Path(path)
    with _open(path) as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number)")
    if data[2] != 0x08:
        raise DataError(
            f"{path} holds IDX type 0x{data[2]:02x}; only unsigned bytes (0x08) are read"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header])
    count = 1
    for s in shape:
        count *= s
    if len(data) - header != count:
        raise DataError(
            f"{path} is truncated: {len(data) - header} bytes of data for shape {shape}"
        )
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).reshape(shape)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only what the CIFAR python batches hold: numpy arrays, lists, bytes, numbers."""

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "numpy" and name in (
            "_reconstruct",
            "ndarray",
            "dtype",
            "scalar",
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def _read_cifar_py(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    with open(path, "rb") as f:
        try:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
        except Exception as exc:
            raise DataError(f"{path} is not a CIFAR-10 python batch: {exc}") from None
    images = torch.from_numpy(numpy.array(batch[b"data"], dtype=numpy.uint8)).reshape(-1, 3, 32, 32)
    labels = torch.tensor(list(batch[b"labels"]), dtype=torch.int64)
    return images, labels


def _read_cifar_bin(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    raw = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
    if raw.numel() % 3073:
        raise DataError(f"{path} is not a CIFAR-10 binary batch (size not a multiple of 3073)")
    rows = raw.reshape(-1, 3073)
    return rows[:, 1:].reshape(-1, 3, 32, 32).clone(), rows[:, 0].to(torch.int64)


def _read_split(info: DatasetInfo, folder: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if info.name == "cifar10":
        binary = (folder / "test_batch.bin").is_file() and not (folder / "test_batch").is_file()
        names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
        read = _read_cifar_bin if binary else _read_cifar_py
        parts = [read(folder / (n + ".bin" if binary else n)) for n in names]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    prefix = "train" if train else "test"
    images = read_idx(_mnist_file(folder, _MNIST_FILES[f"{prefix}_images"]))
    labels = read_idx(_mnist_file(folder, _MNIST_FILES[f"{prefix}_labels"]))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(
            f"{folder}: {prefix} images {tuple(images.shape)} do not match labels {tuple(labels.shape)}"
        )
    return images.unsqueeze(1), labels.to(torch.int64)


# --- the loaded dataset ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset in memory: uint8 images (N x C x H x W) and int64 labels for each split."""

    info: DatasetInfo
    source: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    seed: int = 0
    _on_device: dict = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.info.channels, self.info.image_size, self.info.image_size)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {name!r}")
        return getattr(self, f"{name}_images"), getattr(self, f"{name}_labels")

    def on(self, device: torch.device | str) -> DeviceData:
        """The dataset copied to `device` (once; later calls return the same copy)."""
        device = torch.device(device)
        key = str(device)
        if key not in self._on_device:
            self._on_device.clear()  # keep one device copy: a search uses one device
            self._on_device[key] = DeviceData(self, device)
        return self._on_device[key]

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={len(self.train_labels)}, val={len(self.val_labels)}, "
            f"test={len(self.test_labels)}, source={self.source!r})"
        )


def load_dataset(
    name: str = DEFAULT_DATASET,
    data_dir: str | os.PathLike | None = None,
    val_size: int = DEFAULT_VAL_SIZE,
    seed: int = 0,
    download: bool = True,
) -> Dataset:
    """Load a named dataset once (later calls with the same arguments return the same object).

    `val_size` training images, chosen by a permutation seeded with `seed`, are held out as the
    validation split.
    """
    folder = find_dataset(name, data_dir, download=download)
    return _load(name, str(folder.resolve()), int(val_size), int(seed))


@functools.lru_cache(maxsize=4)
def _load(name: str, folder: str, val_size: int, seed: int) -> Dataset:
    info = dataset_info(name)
    path = Path(folder)
    train_x, train_y = _read_split(info, path, train=True)
    test_x, test_y = _read_split(info, path, train=False)
    for what, x in (("train", train_x), ("test", test_x)):
        expect = (info.channels, info.image_size, info.image_size)
        if tuple(x.shape[1:]) != expect:
            raise DataError(f"{path}: {what} images are {tuple(x.shape[1:])}, expected {expect}")
    if not 0 <= val_size < len(train_y):
        raise DataError(f"val_size must be in [0, {len(train_y)}), got {val_size}")
    perm = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:val_size].sort().values, perm[val_size:].sort().values
    return Dataset(
        info=info,
        source=folder,
        train_images=train_x[train_idx].contiguous(),
        train_labels=train_y[train_idx].contiguous(),
        val_images=train_x[val_idx].contiguous(),
        val_labels=train_y[val_idx].contiguous(),
        test_images=test_x.contiguous(),
        test_labels=test_y.contiguous(),
        seed=seed,
    )


# --- batches on the device ---------------------------------------------------------------------


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (or [0, 255] float) N x C x H x W images to float32, standardised per channel."""
    return (images.float() * (1.0 / 255) - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def random_crop_flip(
    images: torch.Tensor, pad: int, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor | None
) -> torch.Tensor:
    """Each image shifted by (dy, dx) in [0, 2 pad] inside a zero-padded frame, and mirrored where
    `flip` is true: the random-crop-with-padding and flip augmentation, for a whole batch at once."""
    n, c, h, w = images.shape
    if pad:
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
        # Every (dy, dx) window of every image as a strided view; indexing it copies one whole
        # window per image instead of computing an index per pixel.
        sn, sc, sh, sw = padded.stride()
        windows = padded.as_strided(
            (n, c, 2 * pad + 1, 2 * pad + 1, h, w), (sn, sc, sh, sw, sh, sw)
        )
        images = windows[torch.arange(n, device=images.device), :, dy, dx]
    if flip is not None:
        images = torch.where(flip.view(n, 1, 1, 1), images.flip(3), images)
    return images


class DeviceData:
    """A `Dataset` on one device, handing out normalised (and augmented) float batches."""

    def __init__(self, dataset: Dataset, device: torch.device) -> None:
        self.dataset = dataset
        self.info = dataset.info
        self.device = device
        self._splits = {
            s: tuple(t.to(device) for t in dataset.split(s)) for s in ("train", "val", "test")
        }
        self.mean = torch.tensor(self.info.mean, device=device)
        self.std = torch.tensor(self.info.std, device=device)

    def on(self, device: torch.device | str) -> DeviceData:
        return self if torch.device(device) == self.device else self.dataset.on(device)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.dataset.input_shape

    def size(self, split: str) -> int:
        return len(self._splits[split][1])

    def train_batches(
        self,
        batch_size: int,
        num_images: int,
        generator: torch.Generator,
        augment: bool = True,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """`num_images` training images in random order (a fresh permutation of the split each
        time it runs out) as batches of `batch_size`; the last partial batch is dropped.

        All random numbers come from the CPU `generator`, so a seed gives the same batches on any
        device; they are drawn for the whole call at once and copied to the device in one go.
        """
        images, labels = self._splits["train"]
        total = len(labels)
        steps = num_images // batch_size
        count = steps * batch_size
        order = torch.cat(
            [torch.randperm(total, generator=generator) for _ in range(-(-count // total))]
        )[:count]
        pad, flip = self.info.pad, self.info.flip
        if augment:
            shifts = torch.randint(0, 2 * pad + 1, (2, count), generator=generator)
            flips = torch.rand(count, generator=generator) < 0.5
        order = order.to(self.device, non_blocking=True)
        if augment:
            shifts = shifts.to(self.device, non_blocking=True)
            flips = flips.to(self.device, non_blocking=True)
        for i in range(steps):
            sl = slice(i * batch_size, (i + 1) * batch_size)
            idx = order[sl]
            x = images[idx]
            if augment:  # on the raw pixels, so the padding is black (0), as in the images' borders
                x = random_crop_flip(
                    x, pad, shifts[0, sl], shifts[1, sl], flips[sl] if flip else None
                )
            x = normalize(x, self.mean, self.std)
            yield x.contiguous(memory_format=memory_format), labels[idx]

    def eval_batches(
        self,
        split: str,
        batch_size: int,
        num_images: int | None = None,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The first `num_images` (all when None) of a split, in order, unaugmented."""
        images, labels = self._splits[split]
        n = len(labels) if num_images is None else min(num_images, len(labels))
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            x = normalize(images[start:stop], self.mean, self.std)
            yield x.contiguous(memory_format=memory_format), labels[start:stop]
