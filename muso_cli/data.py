"""Datasets as tensors on the run's device; batches are drawn by index (no DataLoader workers). Your own data
(``data._target_``) too, or streamed one batch at a time when it does not fit on the device (:class:`Streamed`);
and a byte-level text corpus (``data=pystdlib``, :mod:`muso_cli.corpus`).

File-backed datasets (Fashion-MNIST, MNIST: IDX files; CIFAR-10/100: python pickle batches) are found in this
order: an explicit ``data.root`` (then the only place looked at); the system copy (Debian's dataset-fashion-mnist);
muso's download cache; a torchvision download; else the error says how to get them. CIFAR training batches can
be augmented on the device (random crop with padding, horizontal flip).
"""
from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import corpus, targets
from .errors import UsageError, check_bool, check_one_of, check_positive, is_int, is_number

SYSTEM_ROOTS = {"fashion_mnist": Path("/usr/share/datasets/fashion-mnist")}
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Per-channel mean/std of the training images (pixel values in [0, 1]).
NORMALIZATION = {
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "digits": ((0.3051,), (0.3751,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


@dataclass
class Dataset:
    """A dataset held as tensors (or as :class:`Streamed` views, which index like them).

    x_train: [N, *input_shape] inputs (float32 normalised images, int64 tokens, ...); y_train: [N] int64 classes,
    [N, T] int64 classes per position (a sequence: each position one term of the loss), or float targets [N, C]
    (train.loss=mse); likewise x_test/y_test. num_classes: the model's output size C. bytes_per_token: bytes of
    text per token of a text corpus (loss in nats / (ln 2 · bytes_per_token) is bits per byte), else None.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    source: str
    bytes_per_token: float | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device | str) -> "Dataset":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return replace(self, x_train=move(self.x_train), y_train=move(self.y_train), x_test=move(self.x_test),
                       y_test=move(self.y_test))

    def subset(self, n_train: int | None, n_test: int | None) -> "Dataset":
        first = lambda t, n: t.head(n) if isinstance(t, Streamed) else t[:n]  # noqa: E731
        return replace(self, x_train=first(self.x_train, n_train), y_train=first(self.y_train, n_train),
                       x_test=first(self.x_test, n_test), y_test=first(self.y_test, n_test))


# ------------------------------------------------------------------------------------------------------
# Streaming: data that stays off the device (host memory, or a torch Dataset) and comes one batch at a time.

class _Split:
    """One split: CPU tensors (x, y) or a map-style torch Dataset of (x, y); keeps the last batch fetched (once)."""

    def __init__(self, data):
        self.data = data
        self._positions: Tensor | None = None
        self._batch: tuple[Tensor, Tensor] | None = None

    def __len__(self) -> int:
        return len(self.data[0]) if isinstance(self.data, tuple) else len(self.data)

    def fetch(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """(x, y) of the examples at ``positions`` (int64 [B], CPU), on the CPU: indexed tensors, or the Dataset's
        items collated by torch's default_collate (as a DataLoader collates them)."""
        if self._positions is None or not torch.equal(positions, self._positions):
            if isinstance(self.data, tuple):
                batch = (self.data[0][positions], self.data[1][positions])
            else:
                from torch.utils.data import default_collate

                batch = tuple(default_collate([self.data[i] for i in positions.tolist()]))
            self._positions, self._batch = positions, batch
        return self._batch


class Streamed:
    """The inputs (field 0) or targets (field 1) of a split that stays off the device, indexed like a tensor:
    ``view[idx]`` (int64 indices [B] on any device, or a slice) is that batch as a tensor on ``device``, so the
    training loop's ``data.x_train[idx]`` works unchanged. ``len(view)`` and ``view.shape`` are the split's.

    Cost: per step B examples gathered on the CPU in the training process (a Dataset's ``__getitem__`` B times,
    collated; no workers), then copied to the device; evaluations stream the same way (docs/own-code.md, "Your own data").
    """

    def __init__(self, split: _Split, field: int, device: torch.device | str = "cpu", positions: Tensor | None = None):
        self.split, self.field, self.device = split, field, torch.device(device)
        self.positions = torch.arange(len(split)) if positions is None else positions

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.split.fetch(self.positions[:1])[self.field].shape[1:])

    def __getitem__(self, idx: Tensor | slice) -> Tensor:
        positions = self.positions[idx.cpu() if isinstance(idx, Tensor) else idx]
        return self.split.fetch(positions)[self.field].to(self.device, non_blocking=True)

    def head(self, n: int | None) -> "Streamed":
        """The view of the first ``n`` examples (all for None)."""
        return Streamed(self.split, self.field, self.device, self.positions[:n])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Streamed":
        return Streamed(self.split, self.field, device, self.positions)


def streamed(train, test) -> tuple[Streamed, Streamed, Streamed, Streamed]:
    """(x_train, y_train, x_test, y_test) views of two splits (CPU tensor pairs or torch Datasets)."""
    a, b = _Split(train), _Split(test)
    return Streamed(a, 0), Streamed(a, 1), Streamed(b, 0), Streamed(b, 1)


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
    return next((c for c in (root / stem, root / f"{stem}.gz", root / "raw" / stem, root / "raw" / f"{stem}.gz")
                 if c.is_file()), None)


def _idx_holds(name: str, folder: Path) -> bool:
    """Whether ``folder`` holds all four IDX files (plain or .gz, directly or under raw/)."""
    return all(_find_idx(folder, s) for pair in IDX_FILES.values() for s in pair)


def _read_idx_dataset(name: str, folder: Path) -> Dataset:
    arrays = {}
    for split, (img, lab) in IDX_FILES.items():
        images = read_idx(_find_idx(folder, img)).astype(np.float32) / 255.0
        labels = read_idx(_find_idx(folder, lab)).astype(np.int64)
        arrays[split] = (torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels))
    (xtr, ytr), (xte, yte) = arrays["train"], arrays["test"]
    return _normalised(name, xtr, ytr, xte, yte, 10, source=str(folder))


# ------------------------------------------------------------------------------------------------------
# CIFAR python batches: Python 2 pickles of dicts with "data" (uint8 [N, 3072]: per image the 1024 red, green, then
# blue values of the 32×32 pixels, row-major) and "labels" (CIFAR-10) or "fine_labels" (CIFAR-100: 100 classes).

@dataclass(frozen=True)
class CifarLayout:
    """The batch files of one CIFAR distribution (all in one folder) and the key of its labels."""

    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: str
    num_classes: int


CIFAR = {
    "cifar10": CifarLayout(tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "labels", 10),
    "cifar100": CifarLayout(("train",), ("test",), "fine_labels", 100),
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only: a pickle names any callable, and a dataset file is not
    trusted to run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not a CIFAR batch")
        return super().find_class(module, name)


def read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 3, 32, 32] and labels int64 [N] of one pickled CIFAR batch file."""
    with open(path, "rb") as f:  # latin1 reads Python 2 str (keys, raw bytes) as text; bytes keys are folded below
        batch = _CifarUnpickler(f, encoding="latin1").load()
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or label_key not in batch:
        raise ValueError(f"{path} is not a CIFAR batch: no 'data' or {label_key!r} ({', '.join(map(str, batch))})")
    images = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if images.ndim != 2 or images.shape[1] != 3 * 32 * 32 or len(labels) != len(images):
        raise ValueError(f"{path} is not a CIFAR batch: data {images.shape}, {len(labels)} labels")
    return images.reshape(-1, 3, 32, 32), labels


def _cifar_holds(name: str, folder: Path) -> bool:
    layout = CIFAR[name]
    return all((folder / f).is_file() for f in layout.train + layout.test)


def _read_cifar_dataset(name: str, folder: Path) -> Dataset:
    layout = CIFAR[name]

    def split(files: tuple[str, ...]) -> tuple[Tensor, Tensor]:
        images, labels = zip(*(read_cifar_batch(folder / f, layout.label_key) for f in files))
        x = torch.from_numpy(np.concatenate(images)).float().div_(255.0)
        return x, torch.from_numpy(np.concatenate(labels))

    (xtr, ytr), (xte, yte) = split(layout.train), split(layout.test)
    return _normalised(name, xtr, ytr, xte, yte, layout.num_classes, source=str(folder))


def random_crop_flip(x: Tensor, generator: torch.Generator, pad: int = 4) -> Tensor:
    """CIFAR augmentation of a batch on its device, x: [B, C, H, W] normalised (zero padding = the mean colour) →
    [B, C, H, W]: each image shifted by up to ±pad pixels (the H×W crop at a uniform offset of the image padded by
    ``pad``), then mirrored left–right with probability 1/2; one gather, ``generator`` on x's device."""
    b, c, h, w = x.shape
    dev = x.device
    offsets = torch.randint(0, 2 * pad + 1, (2, b, 1), generator=generator, device=dev)  # (rows, cols)
    flip = torch.rand(b, 1, generator=generator, device=dev) < 0.5
    cols = torch.arange(w, device=dev).expand(b, w)
    cols = torch.where(flip, w - 1 - cols, cols) + offsets[1]  # [B, W]: a flipped crop reads columns backwards
    rows = torch.arange(h, device=dev) + offsets[0]  # [B, H]
    padded = F.pad(x, (pad, pad, pad, pad))
    batch = torch.arange(b, device=dev).view(b, 1, 1, 1)
    channel = torch.arange(c, device=dev).view(1, c, 1, 1)
    return padded[batch, channel, rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]


# ------------------------------------------------------------------------------------------------------
# File-backed datasets: where their files live, how to read them and how to get them.

@dataclass(frozen=True)
class Files:
    """How one file-backed dataset is found, read and obtained. torchvision: its class in torchvision.datasets.
    folder: where its files sit below a data root in torchvision's layout (a download's; muso's cache too).
    holds(name, folder): whether ``folder`` has every file. read(name, folder) → Dataset. get: how to obtain them."""

    torchvision: str
    folder: str
    holds: Callable[[str, Path], bool]
    read: Callable[[str, Path], Dataset]
    get: str


_IDX_GET = f"put {', '.join(s + '.gz' for pair in IDX_FILES.values() for s in pair)} in a folder"
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/{}-python.tar.gz"
FILES: dict[str, Files] = {
    "fashion_mnist": Files("FashionMNIST", "FashionMNIST/raw", _idx_holds, _read_idx_dataset, _IDX_GET),
    "mnist": Files("MNIST", "MNIST/raw", _idx_holds, _read_idx_dataset, _IDX_GET),
    "cifar10": Files("CIFAR10", "cifar-10-batches-py", _cifar_holds, _read_cifar_dataset,
                     f"extract {_CIFAR_URL.format('cifar-10')} in a folder (it unpacks to cifar-10-batches-py/: "
                     f"data_batch_1…5, test_batch)"),
    "cifar100": Files("CIFAR100", "cifar-100-python", _cifar_holds, _read_cifar_dataset,
                      f"extract {_CIFAR_URL.format('cifar-100')} in a folder (it unpacks to cifar-100-python/: "
                      f"train, test)"),
}


def _normalised(name, xtr, ytr, xte, yte, num_classes, source) -> Dataset:
    mean, std = NORMALIZATION[name]
    shape = (1, -1) + (1,) * (xtr.dim() - 2)
    mean, std = torch.tensor(mean).view(shape), torch.tensor(std).view(shape)
    return Dataset(name, (xtr - mean) / std, ytr, (xte - mean) / std, yte, num_classes, source)


def _download_root() -> Path:
    return Path(os.environ.get("MUSO_DATA", Path.home() / ".cache" / "muso" / "data"))


def _torchvision_download(name: str, root: Path) -> Path:
    """Download both splits of ``name`` below ``root``; the folder that then holds its files."""
    try:
        import torchvision.datasets as tvd
    except Exception as e:  # not installed, or a broken build (e.g. the CUDA wheel on a CPU machine)
        raise RuntimeError(f"torchvision does not import ({type(e).__name__}: {e})") from None
    for train in (True, False):
        getattr(tvd, FILES[name].torchvision)(str(root), train=train, download=True)
    return root / FILES[name].folder


# Each file-backed dataset locates its files (a UsageError when it cannot) and loads them.

def _locate(cfg) -> Path | None:
    """The folder holding ``cfg.name``'s files, or None when only a download could provide them: data.root alone
    when given (the files' folder, or a root in torchvision's layout), else the system copy, then muso's cache."""
    files = FILES[cfg.name]
    if cfg.root:
        root = Path(os.path.expanduser(str(cfg.root)))
        candidates = [root, root / files.folder]
    else:
        candidates = [SYSTEM_ROOTS.get(cfg.name), _download_root() / files.folder]
    return next((c for c in candidates if c is not None and files.holds(cfg.name, c)), None)


def _missing_files_error(cfg, detail: str = "") -> UsageError:
    where = f" data.root={cfg.root} does not hold them," if cfg.root else " no system copy,"
    system = SYSTEM_ROOTS.get(cfg.name)
    ways = [f"on Debian/Ubuntu `apt-get install dataset-{cfg.name.replace('_', '-')}` (files land in {system})"
            ] if system else []
    ways += [f"{FILES[cfg.name].get} and pass data.root=<folder>", "`pip install torchvision` to download"]
    return UsageError("data.root", f"{cfg.name} files not found:{where} and no download possible{detail}.",
                      "; or ".join(ways) + ".")


def _check_files(cfg) -> None:
    if _locate(cfg) is not None:
        return
    if not cfg.download:
        raise _missing_files_error(cfg, " (data.download=false)")
    try:
        import torchvision.datasets  # noqa: F401
    except Exception as e:
        raise _missing_files_error(cfg, f" (torchvision does not import: {type(e).__name__})") from None


def _load_files(cfg) -> Dataset:
    folder = _locate(cfg)
    if folder is None:
        try:
            folder = _torchvision_download(cfg.name, Path(cfg.root or _download_root()))
        except Exception as e:
            raise _missing_files_error(cfg, f" ({e})") from None
    return FILES[cfg.name].read(cfg.name, folder)


DIGITS = 1797  # images in scikit-learn's digits


def _digits_keys(cfg) -> list[UsageError | None]:
    tf = cfg.get("test_fraction")  # both splits need an image
    return [] if is_number(tf) and 1 <= round(tf * DIGITS) < DIGITS else [UsageError(
        "data.test_fraction", f"must leave at least one of the {DIGITS} images in each split (a number in (0, 1)), "
        f"got {tf!r}.", "e.g. data.test_fraction=0.2.")]


def _load_digits(cfg) -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)  # [1797, 1, 8, 8]
    y = torch.from_numpy(digits.target.astype(np.int64))
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    n_test = round(cfg.test_fraction * len(y))
    te, tr = perm[:n_test], perm[n_test:]
    return _normalised("digits", x[tr], y[tr], x[te], y[te], 10, source="sklearn.datasets.load_digits")


def _synthetic_keys(cfg) -> list[UsageError | None]:
    return [None if is_int(cfg.num_classes) and cfg.num_classes >= 2 else UsageError("data.num_classes", f"must be an "
            f"integer ≥ 2 (a label is an argmax over them), got {cfg.num_classes!r}.", "e.g. data.num_classes=10."),
            *(check_positive(f"data.{k}", cfg[k], integer=True) for k in ("n_train", "n_test", "dim", "teacher_width"))]


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


# ------------------------------------------------------------------------------------------------------
# The byte-level text corpus (muso_cli.corpus): sequences of data.context bytes and the next byte of each.

def _load_corpus(cfg) -> Dataset:
    folder = corpus.locate(cfg.root, cfg.verify)
    train, test = corpus.read(folder)
    train = train[:cfg.corpus_bytes]
    (xtr, ytr), (xte, yte) = corpus.sequences(train, cfg.context), corpus.sequences(test, cfg.context)
    source = (f"python-stdlib-text {folder}: train {len(train)} bytes sha256 {corpus.digest(train)}, test "
              f"{len(test)} bytes sha256 {corpus.digest(test)}")
    return Dataset("pystdlib", xtr, ytr, xte, yte, corpus.VOCAB, source, bytes_per_token=1.0)


def _corpus_keys(cfg) -> list[UsageError | None]:
    return [check_positive("data.context", cfg.context, integer=True),
            check_positive("data.corpus_bytes", cfg.corpus_bytes, integer=True, optional=True),
            None if cfg.corpus_bytes is None or not isinstance(cfg.context, int) or cfg.corpus_bytes > cfg.context
            else UsageError("data.corpus_bytes", f"{cfg.corpus_bytes} bytes hold no sequence of data.context="
                            f"{cfg.context} tokens and its next token.", f"use more than {cfg.context} bytes."),
            check_bool("data.verify", cfg.verify)]


# ------------------------------------------------------------------------------------------------------
# Your own data: data._target_ names a function (or class) returning the two splits (docs/own-code.md, "Your own data").

USER_KEYS = ("name", "n_train", "n_test", "num_classes", "stream", "augment")  # read by muso, not passed on
_SPLITS_FIX = ("return dict(x_train=…, y_train=…, x_test=…, y_test=…) of tensors (x [N, *input_shape], y [N] or "
               "[N, T] int64 classes, or float [N, C] targets), or dict(train=…, test=…) of torch Datasets whose "
               "items are (x, y) pairs (docs/own-code.md, \"Your own data\").")


def _splits(cfg) -> tuple[Any, Any]:
    """What the target returns, as (train, test): each a pair of tensors (x, y) or a torch Dataset."""
    from torch.utils.data import Dataset as TorchDataset

    out = targets.call("data", cfg, USER_KEYS)
    if isinstance(out, dict):
        keys = ("x_train", "y_train", "x_test", "y_test") if "x_train" in out else ("train", "test")
        out = tuple(out.get(k) for k in keys)
    if isinstance(out, (tuple, list)) and len(out) == 4 and all(isinstance(t, Tensor) for t in out):
        return (out[0], out[1]), (out[2], out[3])
    if isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(d, TorchDataset) for d in out):
        return out[0], out[1]
    shown = type(out).__name__ + (f" of {', '.join(type(t).__name__ for t in out)}"
                                  if isinstance(out, (tuple, list)) else "")
    raise UsageError("data._target_", f"{cfg._target_} returned a {shown}.", _SPLITS_FIX)


def _checked_pair(cfg, split: str, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    if len(x) != len(y) or len(x) == 0:
        raise UsageError("data._target_", f"{cfg._target_}: the {split} split has {len(x)} inputs and {len(y)} "
                         f"targets.", "return as many targets as inputs, at least one of each.")
    if not (y.is_floating_point() or y.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8)):
        raise UsageError("data._target_", f"{cfg._target_}: y_{split} has dtype {y.dtype}.", _SPLITS_FIX)
    return x, (y if y.is_floating_point() else y.long())  # cross-entropy takes int64 classes


def _num_classes(cfg, y_train: Tensor, y_test: Tensor | None) -> int:
    if cfg.num_classes is not None:
        return int(cfg.num_classes)
    if y_train.is_floating_point():
        return int(y_train.shape[-1])
    if y_test is None:
        raise UsageError("data.num_classes", "is needed for streamed data (muso does not read it all to find the "
                         "largest class).", "set data.num_classes=<the model's number of outputs>.")
    return int(max(y_train.max(), y_test.max())) + 1


def _load_user(cfg) -> Dataset:
    train, test = _splits(cfg)
    if isinstance(train, tuple):
        train, test = _checked_pair(cfg, "train", *train), _checked_pair(cfg, "test", *test)
    if isinstance(train, tuple) and not cfg.stream:
        (xtr, ytr), (xte, yte) = train, test
        return Dataset(cfg.name, xtr, ytr, xte, yte, _num_classes(cfg, ytr, yte), source=str(cfg._target_))
    if isinstance(train, tuple):
        train, test = tuple(t.cpu() for t in train), tuple(t.cpu() for t in test)
    xtr, ytr, xte, yte = streamed(train, test)
    if not cfg.stream:  # a Dataset that fits: collate it once and hold it as tensors
        xtr, ytr, xte, yte = (view[:] for view in (xtr, ytr, xte, yte))
        return Dataset(cfg.name, xtr, ytr, xte, yte, _num_classes(cfg, ytr, yte), source=str(cfg._target_))
    return Dataset(cfg.name, xtr, ytr, xte, yte, _num_classes(cfg, ytr[:1], None), source=f"{cfg._target_} (streamed)")


def _user_keys(cfg) -> list[UsageError | None]:
    if targets.missing("data", cfg):
        return [targets.missing("data", cfg)]
    problems = [check_positive("data.num_classes", cfg.get("num_classes"), integer=True, optional=True),
                check_bool("data.stream", cfg.get("stream")),
                None if isinstance(cfg.get("name"), str) and cfg.get("name") else UsageError(
                    "data.name", "data with _target_ need a short name (used in study names).",
                    "add `name: mydata` to its config, or data.name=mydata.")]
    if any(problems):
        return problems
    names = {f"data.{k}": k for k in targets.arguments(cfg, USER_KEYS)}
    return targets.unknown_arguments("data", cfg, names)


def _user_spec(cfg) -> tuple[tuple[int, ...], int]:
    return load(cfg).input_shape, load(cfg).num_classes  # the target runs to tell; load keeps it for the run


def _always_available(cfg) -> None:
    return None


@dataclass(frozen=True)
class Source:
    """How to check, load and describe one dataset.

    check(cfg): raises UsageError when the data cannot be loaded (files missing). keys(cfg): problems with the
    dataset's own keys. spec(cfg) → (input_shape, num_classes), without loading where the facts are known.
    augment (optional): training-batch augmentation on the device, (x [B, *input_shape], generator on x's
    device) → x; used when data.augment=true. size: its training examples (None: known only from its files).
    tokens: whether its inputs are integer tokens (a text corpus) rather than float features.
    """

    check: Callable[[Any], None]
    load: Callable[[Any], Dataset]
    spec: Callable[[Any], tuple[tuple[int, ...], int]]
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None
    keys: Callable[[Any], list[UsageError | None]] = lambda cfg: []
    size: Callable[[Any], int | None] = lambda cfg: None
    tokens: bool = False


REGISTRY: dict[str, Source] = {
    **{name: Source(_check_files, _load_files, lambda cfg, s=shape: s, augment=augment, size=lambda cfg, n=n: n)
       for name, shape, n, augment in [("fashion_mnist", ((1, 28, 28), 10), 60000, None),
                                       ("mnist", ((1, 28, 28), 10), 60000, None),
                                       ("cifar10", ((3, 32, 32), 10), 50000, random_crop_flip),
                                       ("cifar100", ((3, 32, 32), 100), 50000, random_crop_flip)]},
    "digits": Source(_always_available, _load_digits, lambda cfg: ((1, 8, 8), 10), keys=_digits_keys,
                     size=lambda cfg: DIGITS - round(cfg.test_fraction * DIGITS)),
    "synthetic": Source(_always_available, _load_synthetic, lambda cfg: ((int(cfg.dim),), int(cfg.num_classes)),
                         keys=_synthetic_keys, size=lambda cfg: int(cfg.n_train)),
    "pystdlib": Source(lambda cfg: corpus.locate(cfg.root, cfg.verify), _load_corpus,
                       lambda cfg: ((int(cfg.context),), corpus.VOCAB), keys=_corpus_keys, tokens=True),
}
USER = Source(_always_available, _load_user, _user_spec, keys=_user_keys, size=lambda cfg: len(load(cfg).x_train))


def is_user_data(cfg) -> bool:
    """Whether the data node names its own loader (``data._target_``) instead of one of muso's datasets."""
    return targets.has_target(cfg)


def _source(cfg) -> Source:
    return USER if is_user_data(cfg) else REGISTRY[cfg.name]


def check(cfg, *, files: bool = True) -> list[UsageError | None]:
    """Problems with the ``data.*`` keys; with ``files``, also whether the dataset can be loaded (the error names
    the key and how to get the files)."""
    if not is_user_data(cfg) and cfg.name not in REGISTRY:
        return [check_one_of("data.name", cfg.name, REGISTRY)]
    source = _source(cfg)
    problems = [check_positive("data.n_train", cfg.get("n_train"), integer=True, optional=True),
                check_positive("data.n_test", cfg.get("n_test"), integer=True, optional=True), *source.keys(cfg)]
    if cfg.get("augment") and source.augment is None:
        problems.append(UsageError("data.augment", f"{cfg.name} has no augmentation.", "set data.augment=false."))
    if files and not any(problems):
        try:
            source.check(cfg)
        except UsageError as e:
            problems.append(e)
    return problems


def spec(cfg) -> tuple[tuple[int, ...], int]:
    """(input shape, number of classes) of the dataset of ``cfg``; without loading it, except for your own data
    (``data._target_``), whose loader has to run (once per process: :func:`load` keeps its result)."""
    return _source(cfg).spec(cfg)


def train_size(cfg) -> int | None:
    """Training examples a run draws its batches from (data.n_train when fewer), without loading where the facts
    are known (your own data: its loader has run for :func:`spec`); None where only the files know (the corpus)."""
    size, n = _source(cfg).size(cfg), cfg.get("n_train")
    return n if size is None else size if n is None else min(size, n)


def token_inputs(cfg) -> bool:
    """Whether the inputs are integer tokens (a text corpus; your own data when its x is an integer tensor)."""
    return not load(cfg).x_train[:1].is_floating_point() if is_user_data(cfg) else _source(cfg).tokens


def augmenter(cfg) -> Callable[[Tensor, torch.Generator], Tensor] | None:
    """The on-device batch augmentation of ``cfg`` when data.augment=true, else None."""
    return _source(cfg).augment if cfg.get("augment") else None


_CACHE: dict[tuple, Dataset] = {}  # datasets on the CPU, per data config: a sweep loads its data once


def load(cfg, device: torch.device | str = "cpu") -> Dataset:
    """The dataset of ``cfg`` (a data config node) on ``device``, cut to data.n_train / data.n_test."""
    key = tuple(sorted((k, str(v)) for k, v in cfg.items() if k != "augment"))
    if key not in _CACHE:
        _CACHE[key] = _source(cfg).load(cfg).subset(cfg.get("n_train"), cfg.get("n_test"))
    return _CACHE[key].to(device)
