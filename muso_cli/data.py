"""Datasets as tensors on the run's device; batches are drawn by index (no DataLoader workers).

Sources, in order: the files under ``data.root``; the system copy (Debian's ``dataset-fashion-mnist`` installs
Fashion-MNIST under /usr/share/datasets/fashion-mnist); a torchvision download when torchvision imports. Each
source failing gives a clear error that says how to get the files.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from .config import UsageError

SYSTEM_ROOTS = {"fashion_mnist": Path("/usr/share/datasets/fashion-mnist")}
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Per-channel mean/std of the training images (pixel values in [0, 1]).
NORMALIZATION = {"fashion_mnist": ((0.2860,), (0.3530,)), "digits": ((0.3051,), (0.3751,))}
TORCHVISION_CLASS = {"fashion_mnist": "FashionMNIST"}


@dataclass
class Dataset:
    """A classification dataset held as tensors.

    x_train: [N, *input_shape] float32, normalised; y_train: [N] int64 class indices; likewise x_test/y_test.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    source: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device | str) -> "Dataset":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return Dataset(self.name, move(self.x_train), move(self.y_train), move(self.x_test), move(self.y_test),
                       self.num_classes, self.source)

    def subset(self, n_train: int | None, n_test: int | None) -> "Dataset":
        return Dataset(self.name, self.x_train[:n_train], self.y_train[:n_train], self.x_test[:n_test],
                       self.y_test[:n_test], self.num_classes, self.source)


# ------------------------------------------------------------------------------------------------------
# IDX files (MNIST-style): big-endian magic 0x0000080{1,3}, dims, then uint8 data.

def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a uint8 array of its stored shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[:4], "big")
    if magic >> 8 != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (magic {magic:#x})")
    ndim = magic & 0xFF
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: {data.size} bytes for shape {dims}")
    return data.reshape(dims)


def _find_idx(root: Path, stem: str) -> Path | None:
    for candidate in (root / stem, root / f"{stem}.gz", root / "raw" / stem, root / "raw" / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _idx_root(root: Path) -> Path | None:
    """``root`` if it holds all four IDX files (plain or .gz, directly or under raw/)."""
    stems = [s for pair in IDX_FILES.values() for s in pair]
    return root if all(_find_idx(root, s) for s in stems) else None


def _load_idx_dataset(name: str, root: Path) -> Dataset:
    arrays = {}
    for split, (img, lab) in IDX_FILES.items():
        images = read_idx(_find_idx(root, img)).astype(np.float32) / 255.0
        labels = read_idx(_find_idx(root, lab)).astype(np.int64)
        arrays[split] = (torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels))
    (xtr, ytr), (xte, yte) = arrays["train"], arrays["test"]
    return _normalised(name, xtr, ytr, xte, yte, 10, source=str(root))


def _normalised(name, xtr, ytr, xte, yte, num_classes, source) -> Dataset:
    mean, std = NORMALIZATION[name]
    shape = (1, -1) + (1,) * (xtr.dim() - 2)
    mean, std = torch.tensor(mean).view(shape), torch.tensor(std).view(shape)
    return Dataset(name, (xtr - mean) / std, ytr, (xte - mean) / std, yte, num_classes, source)


def _download_root() -> Path:
    return Path(os.environ.get("MUSO_DATA", Path.home() / ".cache" / "muso" / "data"))


def _torchvision_download(name: str, root: Path) -> Path:
    try:
        import torchvision.datasets as tvd
    except Exception as e:  # not installed, or a broken build (e.g. the CUDA wheel on a CPU machine)
        raise RuntimeError(f"torchvision does not import ({type(e).__name__}: {e})") from None
    cls = getattr(tvd, TORCHVISION_CLASS[name])
    for train in (True, False):
        ds = cls(str(root), train=train, download=True)
    return Path(ds.raw_folder)


# ------------------------------------------------------------------------------------------------------
# Dataset registry: each entry locates its files (raising UsageError when it cannot) and loads them.

def _locate_idx(cfg) -> Path | None:
    """The folder holding ``cfg.name``'s IDX files, or None when only a download could provide them.

    An explicit data.root is the only place looked at; otherwise the system copy, then muso's download cache.
    """
    if cfg.root:
        root = Path(os.path.expanduser(str(cfg.root)))
        return _idx_root(root) or _idx_root(root / TORCHVISION_CLASS[cfg.name] / "raw")
    for root in (SYSTEM_ROOTS.get(cfg.name), _download_root() / TORCHVISION_CLASS[cfg.name] / "raw"):
        if root is not None and _idx_root(root):
            return root
    return None


def _missing_idx_error(cfg, detail: str = "") -> UsageError:
    where = f" data.root={cfg.root} does not hold them," if cfg.root else " no system copy,"
    system = SYSTEM_ROOTS.get(cfg.name)
    hint = (f"on Debian/Ubuntu `apt-get install dataset-{cfg.name.replace('_', '-')}` (files land in {system}); "
            if system else "")
    return UsageError("data.root", f"{cfg.name} files not found:{where} and no download possible{detail}.",
                      f"{hint}or put {', '.join(s + '.gz' for pair in IDX_FILES.values() for s in pair)} in a "
                      f"folder and pass data.root=<folder>; or `pip install torchvision` to download.")


def _check_idx(cfg) -> None:
    if _locate_idx(cfg) is not None:
        return
    if not cfg.download:
        raise _missing_idx_error(cfg, " (data.download=false)")
    try:
        import torchvision.datasets  # noqa: F401
    except Exception as e:
        raise _missing_idx_error(cfg, f" (torchvision does not import: {type(e).__name__})") from None


def _load_idx(cfg) -> Dataset:
    root = _locate_idx(cfg)
    if root is None:
        try:
            root = _torchvision_download(cfg.name, Path(cfg.root or _download_root()))
        except Exception as e:
            raise _missing_idx_error(cfg, f" ({e})") from None
    return _load_idx_dataset(cfg.name, root)


def _load_digits(cfg) -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)  # [1797, 1, 8, 8]
    y = torch.from_numpy(digits.target.astype(np.int64))
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    n_test = int(round(cfg.test_fraction * len(y)))
    te, tr = perm[:n_test], perm[n_test:]
    return _normalised("digits", x[tr], y[tr], x[te], y[te], 10, source="sklearn.datasets.load_digits")


def _load_synthetic(cfg) -> Dataset:
    """Teacher–student: x ~ N(0, I_dim), label = argmax of a random two-layer tanh teacher."""
    g = torch.Generator().manual_seed(int(cfg.data_seed))
    n = cfg.n_train + cfg.n_test
    x = torch.randn(n, cfg.dim, generator=g)
    w1 = torch.randn(cfg.dim, cfg.teacher_width, generator=g) / cfg.dim ** 0.5
    w2 = torch.randn(cfg.teacher_width, cfg.num_classes, generator=g) / cfg.teacher_width ** 0.5
    y = (torch.tanh(x @ w1) @ w2).argmax(1)
    return Dataset("synthetic", x[:cfg.n_train], y[:cfg.n_train], x[cfg.n_train:], y[cfg.n_train:],
                   int(cfg.num_classes), source=f"teacher-student(seed={cfg.data_seed})")


def _always_available(cfg) -> None:
    return None


@dataclass(frozen=True)
class Source:
    """How to check, load and describe one dataset.

    spec(cfg) → (input_shape, num_classes) without loading. augment (optional): training-batch augmentation
    on the device, (x [B, *input_shape], generator on x's device) → x; used when data.augment=true.
    """

    check: Callable[[Any], None]
    load: Callable[[Any], Dataset]
    spec: Callable[[Any], tuple[tuple[int, ...], int]]
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None


REGISTRY: dict[str, Source] = {
    "fashion_mnist": Source(_check_idx, _load_idx, lambda cfg: ((1, 28, 28), 10)),
    "digits": Source(_always_available, _load_digits, lambda cfg: ((1, 8, 8), 10)),
    "synthetic": Source(_always_available, _load_synthetic, lambda cfg: ((int(cfg.dim),), int(cfg.num_classes))),
}


def check_available(cfg) -> None:
    """Raise UsageError (naming the key and how to get the files) when ``cfg`` cannot be loaded."""
    REGISTRY[cfg.name].check(cfg)
    if cfg.get("augment") and REGISTRY[cfg.name].augment is None:
        raise UsageError("data.augment", f"{cfg.name} has no augmentation.", "set data.augment=false.")


def spec(cfg) -> tuple[tuple[int, ...], int]:
    """(input shape, number of classes) of the dataset of ``cfg``, without loading it."""
    return REGISTRY[cfg.name].spec(cfg)


def augmenter(cfg) -> Callable[[Tensor, torch.Generator], Tensor] | None:
    """The on-device batch augmentation of ``cfg`` when data.augment=true, else None."""
    return REGISTRY[cfg.name].augment if cfg.get("augment") else None


_CACHE: dict[tuple, Dataset] = {}  # datasets on the CPU, per data config: a sweep loads its data once


def load(cfg, device: torch.device | str = "cpu") -> Dataset:
    """The dataset of ``cfg`` (a data config node) on ``device``, cut to data.n_train / data.n_test."""
    key = tuple(sorted((k, str(v)) for k, v in cfg.items() if k != "augment"))
    if key not in _CACHE:
        _CACHE[key] = REGISTRY[cfg.name].load(cfg).subset(cfg.get("n_train"), cfg.get("n_test"))
    return _CACHE[key].to(device)
