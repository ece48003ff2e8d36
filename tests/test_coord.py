"""The coordinate check decides whether a parameterization is right (docs/parameterization.md).

Physics checked here, on the MLP 784 → M → M → 10 with real Fashion-MNIST, one batch of 32, cross-entropy,
widths 64 → 2048 (base 64), slopes of log2 RMS Δh against log2 width fitted from 4× the base width:
- µP (SGD and Adam): every hidden Δh and the output Δf stay Θ(1): |slope| ≤ 0.15 at every step.
- SP + SGD: the output Δf grows about ∝ width and the input layer's Δh shrinks (∝ width^-1/2).
- SP + Adam: hidden Δh and Δf grow with width.
Cross-entropy rather than MSE: with MSE on one-hot targets the µP output at init (≈ 0.5·m^-1/2 per coordinate)
is not small against the targets (RMS 0.32), so |f0 − y| and every δ still shrink between 4× and 32× the base
width, a finite-size effect of about −0.1 to −0.2 in the slopes (docs/parameterization.md has the numbers).
"""
from __future__ import annotations

import pandas as pd
import pytest

from conftest import coord_dh_slopes, needs_fmnist
from muso_cli import coord
from muso_cli.cli import main
from muso_cli.config import compose

WIDTHS = "[64,128,256,512,1024,2048]"
LR = {"sgd": 0.1, "adam": 1e-3}


def dh_slopes(optimizer: str, param: str, *extra: str) -> pd.Series:
    slopes = coord_dh_slopes(f"optimizer={optimizer}", f"param={param}", f"optimizer.lr={LR[optimizer]}",
                             f"coord.widths={WIDTHS}", "coord.steps=3", "coord.seeds=2", *extra)
    return slopes.set_index(["role", "step"])["slope"]


@needs_fmnist
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mup_keeps_hidden_and_output_updates_flat(optimizer):
    slope = dh_slopes(optimizer, "mup")
    for step in (1, 2, 3):
        assert abs(slope["hidden", step]) <= 0.15, (step, slope.to_dict())
        assert abs(slope["output", step]) <= 0.15, (step, slope.to_dict())


@needs_fmnist
def test_sp_sgd_output_grows_with_width_and_input_shrinks():
    slope = dh_slopes("sgd", "sp")
    assert slope["output", 1] >= 0.6          # Δf ∝ width (a slope of 1 in the limit)
    assert slope["input", 1] <= -0.3          # the input layer's update ∝ width^-1/2
    assert abs(slope["hidden", 1]) <= 0.2     # SP + SGD gets the hidden layer right


@needs_fmnist
def test_sp_adam_hidden_and_output_grow():
    slope = dh_slopes("adam", "sp")
    assert slope["hidden", 1] >= 0.25 and slope["output", 1] >= 0.6


@needs_fmnist
def test_mup_and_sp_coincide_at_the_base_width():
    cfg = {p: compose([f"param={p}", "coord.widths=[64,128]", "coord.steps=2"]) for p in ("sp", "mup")}
    sp, mup = coord.measure(cfg["sp"]), coord.measure(cfg["mup"])
    at_base = lambda df: df[df.width == 64].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(at_base(sp), at_base(mup))
    assert not sp[sp.width == 128].value.equals(mup[mup.width == 128].value.reset_index(drop=True))


def test_cli_writes_tables_plot_and_verdict(tmp_path, capsys):
    out = tmp_path / "cc"
    args = ["coord-check", "data=synthetic", "model.base_width=16", "coord.widths=[16,32,64,128,256]",
            "coord.steps=2", "param=mup", f"coord.out={out}"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "verdict" in printed and "layers.1" in printed and "coord.png" in printed
    assert "not observed" not in printed  # the MLP's every layer is seen
    df = pd.read_csv(out / "coord.csv")
    assert list(df.columns) == ["width", "depth", "layer", "role", "step", "metric", "value"]
    assert df.depth.isna().all()  # the MLP has no depth axis
    assert sorted(df.width.unique()) == [16, 32, 64, 128, 256] and sorted(df.step.unique()) == [0, 1, 2]
    assert set(df[df.step == 0].metric) == {"h"} and set(df[df.step > 0].metric) == {"h", "dh"}
    slopes = pd.read_csv(out / "slopes.csv")
    assert len(slopes) == 3 * (2 * 2 + 1)  # 3 layers × (h and dh at steps 1–2, h at step 0)
    verdict = pd.read_csv(out / "verdict.csv")
    assert list(verdict.role) == ["input", "hidden", "output"]
    assert set(verdict.verdict) <= {"flat", "grows", "shrinks"}
    assert (out / "coord.png").stat().st_size > 10_000 and (out / "config.yaml").exists()


@needs_fmnist
def test_strict_mode_fails_sp_and_passes_mup(tmp_path):
    common = ["coord-check", f"coord.widths={WIDTHS}", "coord.steps=1", "coord.seeds=2", "optimizer.lr=0.1"]
    assert main([*common, "param=sp", "--strict", f"coord.out={tmp_path / 'sp'}"]) == 1
    assert main([*common, "param=mup", "--strict", f"coord.out={tmp_path / 'mup'}"]) == 0


@pytest.mark.parametrize("override, key", [
    ("coord.widths=[64]", "coord.widths"),
    ("coord.widths=[0,64]", "coord.widths"),
    ("coord.steps=0", "coord.steps"),
    ("coord.widths=[64,128]", "coord.fit_from"),  # nothing left to fit from 4 × base width
    ("coord.tolerance=-1", "coord.tolerance"),
    ("coord.widths=[32,64,128,256,512]", "coord.widths"),      # below the base width 64
    ("coord.widths=[64,128,256,512]", "coord.fit_from"),       # two widths from 256: a slope needs three
    ("coord.widths=[64,128,256,512,1024,2048,1048576]", "coord.widths"),  # 10^12 parameters: needs --yes
])
def test_bad_coord_input_exits_2(capsys, override, key):
    assert main(["coord-check", "data=synthetic", override]) == 2
    assert f"error: {key}" in capsys.readouterr().err


def test_slopes_through_two_widths_read_noise_as_a_trend():
    """Why a slope is fitted through three widths or more: a flat layer whose RMS Δh scatters by ±10 % (one seed)
    reads as shrinking or growing by up to ±0.3 from two widths an octave apart, and within tolerance from five."""
    import numpy as np

    rng = np.random.default_rng(0)
    two, five = [], []
    for _ in range(200):
        widths = np.array([64, 128, 256, 512, 1024], float)
        values = 1.0 * (1 + 0.1 * rng.standard_normal(len(widths)))
        df = pd.DataFrame({"width": widths, "layer": "l", "role": "hidden", "step": 1, "metric": "dh",
                           "value": values})
        two.append(coord.slopes(df, 512).slope[0])
        five.append(coord.slopes(df, 64).slope[0])
    assert np.mean(np.abs(two) > 0.15) > 0.25      # two widths: a flat layer is called not flat often
    assert np.mean(np.abs(five) > 0.15) < 0.05     # five: rarely
