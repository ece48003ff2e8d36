"""Shared test set-up: W&B never reaches the network, and every test writes under its own tmp folder."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

FMNIST_SYSTEM = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
needs_fmnist = pytest.mark.skipif(not os.path.exists(FMNIST_SYSTEM),
                                  reason="Debian's dataset-fashion-mnist is not installed (make setup installs it)")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Run each test from its own folder, with W&B files and muso's download cache kept inside it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("MUSO_DATA", str(tmp_path / "muso-data"))
    yield
