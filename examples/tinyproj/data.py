"""The project's own data: scikit-learn's 1,797 handwritten digits as 64-feature vectors, standardised, with a
fixed split. Two ways to hand them to muso: tensors (``digits``) or torch Datasets (``digits_datasets``)."""
from __future__ import annotations

import torch
from torch.utils.data import TensorDataset


def digits(test_fraction: float = 0.25, split_seed: int = 0) -> dict[str, torch.Tensor]:
    """x_train [N, 64] float32 (each feature standardised on the training split), y_train [N] int64 in 0..9;
    likewise x_test, y_test."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(split_seed))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-3)
    x = (x - mean) / std
    return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}


def digits_datasets(test_fraction: float = 0.25, split_seed: int = 0) -> dict[str, TensorDataset]:
    """The same split as torch Datasets of (x [64], y) pairs (streamed by muso with data.stream=true)."""
    t = digits(test_fraction, split_seed)
    return {"train": TensorDataset(t["x_train"], t["y_train"]), "test": TensorDataset(t["x_test"], t["y_test"])}
