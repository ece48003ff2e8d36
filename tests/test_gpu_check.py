"""The prepared GPU check (scripts/gpu_check.sh → scripts/gpu_check.py) keeps working on machines without a GPU.

No GPU has been lent to this project, so the check must run right the first time someone runs it on one. Its smoke
mode runs every part on the CPU: the CPU's step against the CPU's own step must be exact, the check must see a
step that differs (and the differences a GPU really makes: Muon's bfloat16 Newton–Schulz), its tolerances must
cover what another eigensolver may legitimately return (eigenvector signs, any basis of a numerically degenerate
eigenspace), and a whole smoke run must write every figure.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
gc = sys.modules["gpu_check"] = importlib.util.module_from_spec(_spec)  # registered first: dataclasses look it up
_spec.loader.exec_module(gc)

SMOKE = gc.PRESETS["cpu"]


def test_every_registered_optimizer_is_compared_with_a_tolerance():
    from muso_cli.optim import REGISTRY

    assert set(gc.OPTIMIZERS) == set(REGISTRY) == set(gc.TOLERANCES)


def test_cpu_against_cpu_is_exact_and_the_control_is_far_above_the_tolerance():
    """Two CPU runs of the same steps agree to the bit; the control (last batch replaced) is ≥ 10× the tolerance,
    and every optimizer moved its parameters: the comparison could see a wrong step."""
    rows = gc.step_equality(gc.OPTIMIZERS, SMOKE, "cpu")
    assert [r["optimizer"] for r in rows] == list(gc.OPTIMIZERS)
    for r in rows:
        assert isinstance(r["param_diff"], float) and r["param_diff"] <= 1e-6, r
        assert r["param_diff"] <= r["tolerance"] == gc.TOLERANCES[r["optimizer"]]
        assert r["control_diff"] > gc.CONTROL_MARGIN * r["tolerance"], r
        assert 0 < r["update_size"] < float("inf"), r
        assert r["verdict"] == "PASS"


def test_a_step_that_differs_on_the_device_fails(monkeypatch):
    """The device's run stands in as "cpu:0"; when it steps on another last batch (the control's steps: that every
    optimizer's control reads ≥ 10× its tolerance is the test above), the comparison FAILs, and so does the verdict,
    also when an optimizer's comparison is missing."""
    run_steps = gc.run_steps

    def wrong_on_device(case, device, batches=None):
        if device == "cpu:0":
            batches = case.batches[:-2] + case.batches[-1:]
        return run_steps(case, device, batches)

    monkeypatch.setattr(gc, "run_steps", wrong_on_device)
    rows = gc.step_equality(["sgd", "adam"], SMOKE, "cpu:0")
    assert [r["verdict"] for r in rows] == ["FAIL", "FAIL"]
    assert all(r["param_diff"] > gc.CONTROL_MARGIN * r["tolerance"] for r in rows)
    assert gc.verdict({"step_equality": rows}, parts=["equality"], optimizers=["sgd", "adam"]).startswith("FAIL")
    passed = [{**r, "verdict": "PASS"} for r in rows]
    assert gc.verdict({"step_equality": passed}, parts=["equality"], optimizers=["sgd", "adam"]) == "PASS"
    assert gc.verdict({"step_equality": passed}, parts=["equality"]) == "FAIL: " + "; ".join(
        f"{name}: no comparison" for name in ("kfac", "shampoo", "muon", "soap"))


def test_muons_bfloat16_newton_schulz_is_seen():
    """ns_dtype=auto runs Newton–Schulz in bfloat16 on CUDA: the reason the check sets float32. Against the float32
    step its difference is hundreds of times Muon's tolerance."""
    case = gc.equality_case("muon", SMOKE)
    assert "optimizer.ns_dtype=float32" in gc.EQUALITY_OVERRIDES["muon"] and case.cfg.optimizer.ns_dtype == "float32"
    bf16 = copy.copy(case)
    bf16.cfg = OmegaConf.merge(case.cfg, {"optimizer": {"ns_dtype": "bfloat16"}})
    assert gc.relative_difference(gc.run_steps(bf16, "cpu"), gc.run_steps(case, "cpu")) > 100 * gc.TOLERANCES["muon"]


def _eigh_another_solver_may_return(generator):
    """torch.linalg.eigh, then what another eigensolver is free to return instead: every eigenvector's sign flipped
    at random, and any orthonormal basis of the eigenspace of eigenvalues within d·ε_mach·λ_max of 0 (the
    numerically degenerate null space of rank-deficient statistics)."""
    eigh = torch.linalg.eigh

    def other(matrix, *args, **kwargs):
        lam, q = eigh(matrix, *args, **kwargs)
        q = q * (torch.randint(0, 2, (q.shape[-1],), generator=generator) * 2 - 1).to(q)
        null = lam <= lam.shape[-1] * torch.finfo(lam.dtype).eps * lam.max().clamp_min(0)
        k = int(null.sum())
        if k > 1:
            rotation, _ = torch.linalg.qr(torch.randn(k, k, generator=generator, dtype=torch.float64))
            q[:, null] = q[:, null] @ rotation.to(q)
        return torch.return_types.linalg_eigh((lam, q))

    return other


@pytest.mark.parametrize("preset", ["cpu", pytest.param("cuda", marks=pytest.mark.slow)])
@pytest.mark.parametrize("name", ["shampoo", "soap"])
def test_the_tolerance_covers_another_eigensolvers_choices(name, preset, monkeypatch):
    """Shampoo's inverse roots and SOAP's eigenbasis (with the check's overrides: every step, ε = 0.1) come from eigh;
    eigenvector signs and null-space bases that another solver picks differently keep param_diff within a third of
    the tolerance, at the smoke sizes and at the sizes the GPU run uses."""
    case = gc.equality_case(name, gc.PRESETS[preset])
    reference = gc.run_steps(case, "cpu")
    monkeypatch.setattr(torch.linalg, "eigh", _eigh_another_solver_may_return(torch.Generator().manual_seed(0)))
    other = gc.run_steps(case, "cpu")
    assert gc.relative_difference(other, reference) <= gc.TOLERANCES[name] / 3


def test_parse_bench_reads_bench_steps_table():
    text = """# torch 2.13.0, device cuda, ...
    M    k optimizer     steps  median ms   mean ms robust ms median/SGD  mean/SGD robust/SGD  peak MiB  path
-------------------------------------------------------------------------------------------------------------
 1024   10 sgd              30       0.50      0.52      0.51       1.00      1.00       1.00      40.5  
 1024   10 kfac             30       2.00      2.60      2.10       4.00      5.00       4.12    failed  dense,factored
 1024   10 muon             30       1.00      1.04      1.02       2.00      2.00       2.00      50.0   NON-FINITE
 4096   10 failed: CUDA out of memory
"""
    parsed = gc.parse_bench(text)
    assert [(r["width"], r["interval"], r["optimizer"]) for r in parsed["rows"]] == [
        (1024, 10, "sgd"), (1024, 10, "kfac"), (1024, 10, "muon")]
    kfac = parsed["rows"][1]
    assert (kfac["steps"], kfac["median_ms"], kfac["mean_ratio"], kfac["robust_ratio"], kfac["peak_mib"]) == (
        30, 2.0, 5.0, 4.12, None)
    assert [r["finite"] for r in parsed["rows"]] == [True, True, False]
    assert parsed["failed"] == ["4096   10 failed: CUDA out of memory"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_the_script_stops_at_once_with_exit_2(tmp_path):
    env = {**os.environ, "MUSO_GPU_CHECK_DEVICE": "cuda", "MUSO_PYTHON": sys.executable}
    out = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), str(tmp_path / "out")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "CUDA is not available" in out.stdout + out.stderr
    assert "MUSO_GPU_CHECK_DEVICE=cpu" in out.stdout + out.stderr
    assert not (tmp_path / "out" / "gpu_check.json").exists()


@pytest.mark.slow
def test_a_smoke_run_writes_every_figure(tmp_path):
    """The whole check on the CPU at tiny sizes (~1–2 min on 2 cores): step equality for every optimizer, the
    benchmark's ratios to SGD, and the pool sweeps' wall times, in gpu_check.json and gpu_check.md."""
    out = tmp_path / "check"
    assert gc.main(["--out", str(out), "--device", "cpu"]) == 0
    figures = json.loads((out / "gpu_check.json").read_text())
    assert figures["verdict"] == "PASS" and figures["smoke"] is True
    assert figures["environment"]["torch"] == torch.__version__ and (out / "nvidia-smi.txt").exists()

    rows = {r["optimizer"]: r for r in figures["step_equality"]}
    assert set(rows) == set(gc.OPTIMIZERS)
    for name, r in rows.items():
        assert isinstance(r["param_diff"], float) and r["param_diff"] <= min(1e-6, gc.TOLERANCES[name])
        assert r["control_diff"] > gc.CONTROL_MARGIN * r["tolerance"] and r["verdict"] == "PASS"

    bench = figures["bench"]
    assert bench["rc"] == 0 and not bench["timed_out"] and not bench["failed"]
    by_name = {r["optimizer"]: r for r in bench["rows"]}
    assert {"sgd", "kfac", "shampoo", "muon", "soap"} <= set(by_name)
    assert by_name["sgd"]["mean_ratio"] == 1.0
    assert all(r["mean_ms"] > 0 and r["mean_ratio"] > 0 and r["peak_mib"] is not None for r in bench["rows"])
    assert (out / "bench_step.txt").read_text().count("\n") >= len(bench["rows"])

    pool = figures["pool"]
    assert [r["name"] for r in pool["runs"]] == ["pool-per-gpu-2", "pool-per-gpu-1", "local"]
    for r in pool["runs"]:
        assert r["rc"] == 0 and r["wall_s"] > 0 and not r["timed_out"]
        assert r["counts"]["ok"] + r["counts"]["diverged"] == 2 and r["counts"]["failed"] == 0  # 2 lr × 1 seed
    assert set(pool["wall_ratios_to_per_gpu_2"]) == {"pool-per-gpu-1 / pool-per-gpu-2", "local / pool-per-gpu-2"}
    assert all(v > 0 for v in pool["wall_ratios_to_per_gpu_2"].values())

    md = (out / "gpu_check.md").read_text()
    assert all(f"| {name} |" in md for name in gc.OPTIMIZERS) and "pool-per-gpu-2" in md and "robust/SGD" in md
