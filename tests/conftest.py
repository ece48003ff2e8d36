"""Shared test set-up: W&B never reaches the network, and every test writes under its own tmp folder."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

FMNIST_SYSTEM = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
needs_fmnist = pytest.mark.skipif(not os.path.exists(FMNIST_SYSTEM),
                                  reason="Debian's dataset-fashion-mnist is not installed (make setup installs it)")


def coord_dh_slopes(*overrides: str):
    """The coordinate check's slopes of log2 RMS Δh against log2 width (the readout's Δh is Δf), one row per
    (layer, role, step), for the config composed from ``overrides``, fitted from ``coord.fit_from`` (default 4×
    the base width), as ``muso coord-check`` fits them."""
    from muso_cli import coord
    from muso_cli.config import compose

    cfg = compose(list(overrides))
    s = coord.slopes(coord.measure(cfg), coord.fit_from_width(cfg))
    return s[s.metric == "dh"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Run each test from its own folder, with W&B files, muso's download cache and its state kept inside it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("MUSO_DATA", str(tmp_path / "muso-data"))
    monkeypatch.setenv("MUSO_STATE_DIR", str(tmp_path / "muso-state"))  # this test's own list of own studies
    yield
