"""The coordinate check over depth decides the depth rules (docs/parameterization.md, "Depth").

Physics checked, on the residual MLP (pre-LayerNorm blocks, width 32) with synthetic data, one batch of 32, 2 steps,
the embedding and readout frozen (coord.blocks_only) so that the stream and Δf carry the blocks' updates alone, base
depth 1, depths 1 → 16, slopes of log2 RMS Δh against log2 depth fitted from 4:
- under the derived rules (param.depth_alpha 1 or ½ with parametrize.DEPTH_LR / DEPTH_DAMPING) the residual stream
  and Δf are flat; under α = 1 the layers inside the blocks are flat and each block's contribution moves as L^-1;
  under α = ½ they lie between their own update's term and their input's (assert_on_rule);
- α = 0 (no branch multiplier, no depth rule): the stream grows with depth (L blocks of Θ(1) updates);
- the width-only table (α = 1, the depth exponents 0): SGD's and K-FAC's block updates shrink (∝ L^-2 per block,
  the stream ∝ L^-1: K-FAC with constant damping degenerates into SGD, B ∝ L^-2 far below ρ_B); K-FAC with its
  damping rule but a constant lr grows instead (the natural gradient undoes the multiplier, each block moves by Θ(η)).
"""
from __future__ import annotations

import pandas as pd
import pytest

from conftest import coord_dh_slopes
from muso_cli import parametrize

COMMON = ["model=resmlp", "model.width=32", "model.base_width=32", "model.base_depth=1", "data=synthetic",
          "data.n_train=256", "coord.depths=[1,2,4,8,16]", "coord.blocks_only=true", "coord.steps=2",
          "train.threads=1"]
SGD = ["optimizer=sgd", "optimizer.lr=0.05"]
ADAM = ["optimizer=adam", "optimizer.lr=0.0001"]
KFAC = ["optimizer=kfac", "optimizer.lr=0.05", "optimizer.damping=0.1", "optimizer.curvature_interval=1",
        "optimizer.inverse_interval=1", "optimizer.kl_clip=null"]
SHAMPOO = ["optimizer=shampoo", "optimizer.lr=0.01", "optimizer.damping=0.1", "optimizer.statistics_interval=1",
           "optimizer.inverse_interval=1"]
MUON = ["optimizer=muon", "optimizer.lr=0.002", "optimizer.adamw_lr=0.0001"]
SOAP = ["optimizer=soap", "optimizer.lr=0.0003", "optimizer.statistics_interval=1", "optimizer.inverse_interval=1"]


def slopes(*overrides: str) -> pd.Series:
    s = coord_dh_slopes(*COMMON, *overrides)
    return s.set_index(["role", "step"])["slope"]


def assert_on_rule(slope: pd.Series, alpha: float, tolerance: float = 0.2) -> None:
    """The stream and Δf flat; a block's layers and its contribution between the two terms of their change: the
    block's own update (Δh ∝ L^(α−1) inside the block under the rules, its contribution ∝ L^-1) and what the earlier
    blocks' updates do through it (Θ(1) inside, L^-α for its contribution). Under α = 1 both are the same power; under
    α = ½ the own update's term fades as L^-½ and at these depths still pulls the slopes below the asymptote (measured:
    hidden −0.24…−0.26, branch −0.74…−0.76 for K-FAC, Shampoo and Muon)."""
    for step in (1, 2):
        for role in ("stream", "output"):
            assert abs(slope[role, step]) <= tolerance, (role, step, slope.to_dict())
        hidden = slope.loc[[("hidden", step)]]  # the blocks' fc1 and fc2, a row each
        assert ((hidden >= alpha - 1 - tolerance) & (hidden <= tolerance)).all(), (step, hidden.tolist())
        assert -1 - tolerance <= slope["branch", step] <= -alpha + tolerance, ("branch", step, slope.to_dict())


def width_only(monkeypatch, lr: bool = True, damping: bool = True) -> None:
    """The table before depth: every depth exponent of the lr (and of the damping) 0; the branch multiplier kept."""
    if lr:
        for key, row in parametrize.DEPTH_LR.items():
            if isinstance(row, dict):
                monkeypatch.setitem(parametrize.DEPTH_LR, key, {a: 0.0 for a in row})
    if damping:
        for key, factors in parametrize.DEPTH_DAMPING.items():
            monkeypatch.setitem(parametrize.DEPTH_DAMPING, key, {f: {a: 0.0 for a in row} for f, row in factors.items()})


@pytest.mark.parametrize("optimizer, alpha", [
    pytest.param(ADAM, 1.0, id="adam-completep"),
    pytest.param(KFAC, 1.0, id="kfac-alpha1"),
    pytest.param(SGD, 1.0, id="sgd-alpha1", marks=pytest.mark.slow),
    pytest.param(KFAC, 0.5, id="kfac-alpha-half", marks=pytest.mark.slow),
    pytest.param(SHAMPOO, 0.5, id="shampoo-alpha-half", marks=pytest.mark.slow),
    pytest.param(MUON, 0.5, id="muon-alpha-half", marks=pytest.mark.slow),
    pytest.param(SOAP, 1.0, id="soap-alpha1", marks=pytest.mark.slow),
])
def test_the_depth_rules_keep_the_stream_flat_and_each_block_moving_as_l_to_the_minus_alpha(optimizer, alpha):
    assert_on_rule(slopes(*optimizer, "param=somup", f"param.depth_alpha={alpha}"), alpha)


def test_without_the_branch_multiplier_the_stream_grows_with_depth():
    slope = slopes(*ADAM, "param=sp")  # α = 0: each block moves by Θ(η), L of them
    assert slope["stream", 2] >= 0.4 and slope["branch", 2] >= -0.15


@pytest.mark.parametrize("optimizer", [pytest.param(SGD, id="sgd"), pytest.param(KFAC, id="kfac")])
def test_without_the_depth_rules_sgd_and_kfac_blocks_freeze(monkeypatch, optimizer):
    width_only(monkeypatch)
    slope = slopes(*optimizer, "param=somup", "param.depth_alpha=1")
    assert slope["stream", 2] <= -0.6 and slope["branch", 2] <= -1.6  # per block ∝ L^-2, the stream ∝ L^-1


def test_kfac_with_its_damping_rule_but_a_depth_free_lr_grows():
    """ρ_B ∝ L^-2 keeps K-FAC preconditioned: it undoes the multiplier and each block moves the stream by Θ(η), so
    without lr ∝ 1/L the stream grows ∝ L (the prototype: +1.25)."""
    with pytest.MonkeyPatch.context() as mp:
        width_only(mp, lr=True, damping=False)
        slope = slopes(*KFAC, "param=somup", "param.depth_alpha=1")
    assert slope["stream", 2] >= 0.5 and slope["branch", 2] >= -0.4
