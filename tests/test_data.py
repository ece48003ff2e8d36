"""Data sources: IDX files from data.root or the Debian copy, scikit-learn digits, synthetic teacher–student."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import needs_fmnist
from muso_cli import data
from muso_cli.config import compose
from muso_cli.errors import UsageError, raise_all


def write_idx(path, array: np.ndarray, gz: bool) -> None:
    header = (0x0800 | array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(payload)


def fake_fmnist(root, n_train=50, n_test=20, gz=True):
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{split}-images-idx3-ubyte{ext}", rng.integers(0, 256, (n, 28, 28)), gz)
        write_idx(root / f"{split}-labels-idx1-ubyte{ext}", rng.integers(0, 10, (n,)), gz)


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path, gz):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("x.gz" if gz else "x")
    write_idx(path, a, gz)
    np.testing.assert_array_equal(data.read_idx(path), a)


def test_read_idx_rejects_truncated_and_foreign_files(tmp_path):
    write_idx(tmp_path / "t", np.zeros((4, 5), np.uint8), gz=False)
    (tmp_path / "t").write_bytes((tmp_path / "t").read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(tmp_path / "t")
    (tmp_path / "f").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(16))
    with pytest.raises(ValueError, match="not an IDX"):
        data.read_idx(tmp_path / "f")


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_data_root(tmp_path, gz):
    fake_fmnist(tmp_path, gz=gz)
    cfg = compose([f"data.root={tmp_path}"]).data
    raise_all(data.check(cfg))
    ds = data.load(cfg)
    assert ds.source == str(tmp_path)
    assert ds.x_train.shape == (50, 1, 28, 28) and ds.x_test.shape == (20, 1, 28, 28)
    assert ds.y_train.dtype == torch.int64 and ds.input_shape == (1, 28, 28) and ds.num_classes == 10


def test_missing_files_name_data_root_and_the_fix(tmp_path):
    cfg = compose([f"data.root={tmp_path}", "data.download=false"]).data
    with pytest.raises(UsageError) as e:
        raise_all(data.check(cfg))
    assert e.value.key == "data.root" and "data.root=<folder>" in e.value.fix


def test_download_impossible_without_torchvision_is_reported_up_front(tmp_path):
    try:
        import torchvision.datasets  # noqa: F401
        pytest.skip("torchvision imports here: a download would be attempted")
    except Exception:
        pass
    with pytest.raises(UsageError, match="torchvision does not import"):
        raise_all(data.check(compose([f"data.root={tmp_path}"]).data))


@needs_fmnist
def test_fashion_mnist_from_the_debian_files():
    ds = data.load(compose(["data.n_train=1000"]).data)
    assert ds.source == "/usr/share/datasets/fashion-mnist"
    assert ds.x_train.shape == (1000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(ds.y_test).tolist() == [1000] * 10  # the real test set is balanced
    full = data.load(compose([]).data)
    assert len(full.y_train) == 60000
    assert abs(full.x_train.mean().item()) < 0.01 and abs(full.x_train.std().item() - 1) < 0.01  # normalised


def test_digits_split_is_fixed_and_disjoint():
    ds = data.load(compose(["data=digits"]).data)
    assert ds.x_train.shape[1:] == (1, 8, 8) and len(ds.y_train) + len(ds.y_test) == 1797
    assert len(ds.y_test) == round(0.2 * 1797)
    again = data.load(compose(["data=digits"]).data)
    assert torch.equal(ds.y_test, again.y_test)


def test_synthetic_teacher_student_is_deterministic_and_learnable_shapes():
    cfg = compose(["data=synthetic", "data.n_train=300", "data.n_test=100", "data.dim=16"]).data
    a, b = data.load(cfg), data._load_synthetic(cfg)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert a.x_train.shape == (300, 16) and a.x_test.shape == (100, 16)
    assert len(torch.unique(a.y_train)) > 3  # the teacher uses several classes
    other = data._load_synthetic(OmegaConf.merge(cfg, {"data_seed": 7}))
    assert not torch.equal(a.x_train, other.x_train)


def test_subsets_and_spec_without_loading():
    cfg = compose(["data=digits", "data.n_train=100", "data.n_test=30"]).data
    ds = data.load(cfg)
    assert len(ds.y_train) == 100 and len(ds.y_test) == 30
    assert data.spec(cfg) == ((1, 8, 8), 10)
    assert data.spec(compose(["data=synthetic", "data.dim=5"]).data) == ((5,), 10)


@pytest.mark.parametrize("fraction", [0, 1.5, -0.1, 0.0001, "abc"])
def test_the_digits_split_must_leave_an_image_on_each_side(fraction):
    problems = [p for p in data.check(OmegaConf.merge(compose(["data=digits"]).data, {"test_fraction": fraction}))
                if p]
    assert [p.key for p in problems] == ["data.test_fraction"]


@pytest.mark.parametrize("classes", [0, 1, 1.5])
def test_synthetic_data_need_two_classes_or_more(classes):
    problems = [p for p in data.check(compose(["data=synthetic", f"data.num_classes={classes}"]).data) if p]
    assert [p.key for p in problems] == ["data.num_classes"]


def test_the_training_examples_and_the_kind_of_inputs_are_known_without_loading(monkeypatch):
    """What validation compares train.batch_size with, and whether the inputs are tokens: from the facts of each
    dataset (its files are never opened: the loaders are replaced by ones that fail)."""
    monkeypatch.setattr(data, "_load_files", lambda cfg: pytest.fail("loaded"))
    assert data.train_size(compose(["data=fashion_mnist"]).data) == 60000
    assert data.train_size(compose(["data=cifar10", "data.n_train=100"]).data) == 100
    assert data.train_size(compose(["data=digits"]).data) == 1797 - round(0.2 * 1797)
    assert data.train_size(compose(["data=synthetic", "data.n_train=300"]).data) == 300
    assert data.train_size(compose(["data=pystdlib"]).data) is None  # its files decide
    assert data.token_inputs(compose(["data=pystdlib"]).data)
    assert not data.token_inputs(compose(["data=fashion_mnist"]).data)
