"""MNIST, CIFAR-10 and CIFAR-100 read from small files written in the real on-disk formats; the clear error when
the files are missing; CIFAR augmentation on whole batches."""
from __future__ import annotations

import io
import pickle
import struct
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from muso_cli import data
from muso_cli.cli import main
from muso_cli.config import compose
from muso_cli.validate import validate
from muso_cli.errors import UsageError, raise_all
from muso_cli.track import read_json
from test_data import write_idx

# ---------------------------------------------------------------------------------------------------------
# Writers of the real formats


class Python2Pickler(pickle._Pickler):
    """Pickles ``bytes`` as Python 2 ``str`` (SHORT_BINSTRING / BINSTRING), as the CIFAR files, written by Python 2,
    do: loaded with encoding="bytes" their keys read b"data", b"labels"."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_str(self, obj: bytes) -> None:
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256 else
                   pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_str


def write_cifar_batch(path, images: np.ndarray, labels: dict[bytes, list[int]], python2: bool = True) -> None:
    """One CIFAR batch file: {b"batch_label", b"data" (uint8 [N, 3072]), b"filenames", *labels}."""
    batch = {b"batch_label": b"training batch 1 of 5", b"data": images.reshape(len(images), -1), **labels,
             b"filenames": [b"img_%d.png" % i for i in range(len(images))]}
    if python2:
        f = io.BytesIO()
        Python2Pickler(f, protocol=2).dump(batch)
        # numpy 1.x, which wrote the real files, lived at numpy.core (numpy 2 reads that name too)
        path.write_bytes(f.getvalue().replace(b"numpy._core.", b"numpy.core."))
    else:
        path.write_bytes(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))


def fake_cifar(root, name="cifar10", n=6, n_test=8, python2=True, seed=0):
    """The distribution's folder under ``root`` with n images per training file; returns {file: (images, labels)}."""
    rng = np.random.default_rng(seed)
    layout = data.CIFAR[name]
    folder = root / data.FILES[name].folder
    folder.mkdir(parents=True)
    written = {}
    for file in layout.train + layout.test:
        size = n_test if file in layout.test else n
        images = rng.integers(0, 256, (size, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, layout.num_classes, size).tolist()
        keys = {b"labels": labels} if name == "cifar10" else {b"fine_labels": labels,
                                                               b"coarse_labels": [y // 5 for y in labels]}
        write_cifar_batch(folder / file, images, keys, python2)
        written[file] = (images, labels)
    return written


def normalised(name, images: np.ndarray) -> torch.Tensor:
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in data.NORMALIZATION[name])
    return (torch.from_numpy(images).float() / 255 - mean) / std


# ---------------------------------------------------------------------------------------------------------
# CIFAR readers


@pytest.mark.parametrize("python2", [True, False], ids=["python2-str-keys", "bytes-keys"])
def test_read_cifar_batch(tmp_path, python2):
    images = np.random.default_rng(0).integers(0, 256, (5, 3, 32, 32), dtype=np.uint8)
    write_cifar_batch(tmp_path / "b", images, {b"labels": [3, 1, 4, 1, 5]}, python2)
    assert set(pickle.loads((tmp_path / "b").read_bytes(), encoding="bytes")) >= {b"data", b"labels"}
    x, y = data.read_cifar_batch(tmp_path / "b", "labels")
    np.testing.assert_array_equal(x, images)  # rows are R, G, B planes of 32×32, row-major
    assert y.dtype == np.int64 and y.tolist() == [3, 1, 4, 1, 5]
    with pytest.raises(ValueError, match="fine_labels"):
        data.read_cifar_batch(tmp_path / "b", "fine_labels")


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))  # any callable: the reader must not call it

    (tmp_path / "b").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": []}))
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        data.read_cifar_batch(tmp_path / "b", "labels")


@pytest.mark.parametrize("where", ["parent", "folder"])
def test_cifar10_from_data_root(tmp_path, where):
    written = fake_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    cfg = compose(["data=cifar10", f"data.root={tmp_path if where == 'parent' else folder}"])
    validate(cfg)
    ds = data.load(cfg.data)
    assert ds.source == str(folder) and ds.num_classes == 10 and ds.input_shape == (3, 32, 32)
    assert ds.x_train.shape == (30, 3, 32, 32) and ds.x_test.shape == (8, 3, 32, 32)
    train = [written[f"data_batch_{i}"] for i in range(1, 6)]  # concatenated in file order
    assert ds.y_train.dtype == torch.int64 and ds.y_train.tolist() == sum((y for _, y in train), [])
    assert torch.allclose(ds.x_train, normalised("cifar10", np.concatenate([x for x, _ in train])))
    assert torch.allclose(ds.x_test, normalised("cifar10", written["test_batch"][0]))


def test_cifar100_uses_the_fine_labels(tmp_path):
    written = fake_cifar(tmp_path, "cifar100", n=40, python2=False)
    ds = data.load(compose(["data=cifar100", f"data.root={tmp_path}", "data.n_train=25", "data.n_test=5"]).data)
    assert ds.num_classes == 100 and ds.x_train.shape == (25, 3, 32, 32) and ds.x_test.shape == (5, 3, 32, 32)
    assert ds.y_train.tolist() == written["train"][1][:25] and ds.y_test.tolist() == written["test"][1][:5]
    assert data.spec(compose(["data=cifar100"]).data) == ((3, 32, 32), 100)


@pytest.mark.parametrize("name, url", [("cifar10", "cifar-10-python.tar.gz"),
                                       ("cifar100", "cifar-100-python.tar.gz")])
def test_missing_cifar_files_name_data_root_and_where_to_get_them(tmp_path, name, url):
    fake_cifar(tmp_path, name)
    next((tmp_path / data.FILES[name].folder).iterdir()).unlink()  # one file short
    with pytest.raises(UsageError) as e:
        validate(compose([f"data={name}", f"data.root={tmp_path}", "data.download=false"]))
    assert e.value.key == "data.root" and f"data.root={tmp_path}" in e.value.problem
    assert url in e.value.fix and "data.root=<folder>" in e.value.fix


def test_muso_run_on_missing_cifar_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # as here: no download possible
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    (tmp_path / "empty").mkdir()
    assert main(["run", "data=cifar10", f"data.root={tmp_path / 'empty'}", f"hydra.run.dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "data.root" in err and "cifar-10-python.tar.gz" in err
    assert not (tmp_path / "run").exists()  # refused before any work


def test_cnn_trains_on_augmented_cifar_files(tmp_path):
    fake_cifar(tmp_path, n=20)
    out = tmp_path / "run"
    assert main(["run", "model=cnn", "model.width=1", "data=cifar10", f"data.root={tmp_path}", "data.augment=true",
                 "train.steps=3", "train.batch_size=16", "train.progress=false", f"hydra.run.dir={out}"]) == 0
    assert read_json(out / "result.json")["status"] == "ok"


# ---------------------------------------------------------------------------------------------------------
# MNIST: the IDX reader shared with Fashion-MNIST


@pytest.mark.parametrize("gz, layout", [(True, "folder"), (False, "torchvision")])
def test_mnist_from_data_root(tmp_path, gz, layout):
    folder = tmp_path / "MNIST" / "raw" if layout == "torchvision" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    ext = ".gz" if gz else ""
    for split in ("train", "t10k"):
        write_idx(folder / f"{split}-images-idx3-ubyte{ext}", images, gz)
        write_idx(folder / f"{split}-labels-idx1-ubyte{ext}", np.arange(12) % 10, gz)
    cfg = compose(["data=mnist", f"data.root={tmp_path}"])
    validate(cfg)
    ds = data.load(cfg.data)
    assert ds.source == str(folder) and ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert torch.allclose(ds.x_train, normalised("mnist", images[:, None]))
    assert ds.y_test.tolist() == (np.arange(12) % 10).tolist()


def test_missing_mnist_lists_the_idx_files(tmp_path):
    with pytest.raises(UsageError) as e:
        validate(compose(["data=mnist", f"data.root={tmp_path}", "data.download=false"]))
    assert e.value.key == "data.root" and "mnist files not found" in e.value.problem
    assert "train-images-idx3-ubyte.gz" in e.value.fix and "apt-get" not in e.value.fix  # no Debian package


# ---------------------------------------------------------------------------------------------------------
# CIFAR augmentation


def crop(image: torch.Tensor, oy: int, ox: int, pad: int = 4) -> torch.Tensor:
    """Reference crop: [C, H, W] zero-padded by ``pad``, H×W window at (oy, ox)."""
    h, w = image.shape[1:]
    return F.pad(image, (pad,) * 4)[:, oy:oy + h, ox:ox + w]


def explain(out: torch.Tensor, image: torch.Tensor, pad: int = 4) -> list[tuple[int, int, bool]]:
    """Every (oy, ox, flipped) under which ``out`` is a crop (then flip) of ``image``."""
    return [(oy, ox, flip) for oy in range(2 * pad + 1) for ox in range(2 * pad + 1) for flip in (False, True)
            if torch.equal(out, crop(image, oy, ox, pad).flip(-1) if flip else crop(image, oy, ox, pad))]


def test_augmentation_is_a_shifted_crop_then_maybe_a_flip_per_image():
    x = torch.randn(64, 3, 32, 32)
    before = x.clone()
    out = data.random_crop_flip(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype and torch.equal(x, before)  # not in place
    found = [explain(out[i], x[i]) for i in range(len(x))]
    assert all(len(f) == 1 for f in found)  # every image: exactly one crop offset and flip explain it
    offsets = {(oy, ox) for (oy, ox, _), in found}
    flips = [flip for (_, _, flip), in found]
    assert len(offsets) > 20 and 16 < sum(flips) < 48  # offsets spread over the 9×9 grid, about half flipped


def test_without_padding_it_only_flips():
    x = torch.randn(32, 1, 8, 8)
    out = data.random_crop_flip(x, torch.Generator().manual_seed(1), pad=0)
    flipped = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)]
    assert all(f or torch.equal(o, xi) for f, o, xi in zip(flipped, out, x)) and 0 < sum(flipped) < 32


def test_augmentation_is_reproducible_and_fresh_on_each_call():
    x = torch.randn(16, 3, 32, 32)
    g = torch.Generator().manual_seed(3)
    first, second = data.random_crop_flip(x, g), data.random_crop_flip(x, g)
    assert not torch.equal(first, second)
    assert torch.equal(first, data.random_crop_flip(x, torch.Generator().manual_seed(3)))


def test_augment_switch():
    assert data.augmenter(compose(["data=cifar10"]).data) is data.random_crop_flip  # on by default for CIFAR
    assert data.augmenter(compose(["data=cifar100", "data.augment=false"]).data) is None
    with pytest.raises(UsageError) as e:  # the other datasets have no augmentation
        raise_all(data.check(compose(["data=digits", "data.augment=true"]).data))
    assert e.value.key == "data.augment"
