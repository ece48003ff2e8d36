#!/usr/bin/env python
"""The prepared GPU check's figures; scripts/gpu_check.sh runs it (how to run it and what it writes: see there).

    .venv/bin/python scripts/gpu_check.py --out outputs/gpu_check/now              # on a CUDA machine
    .venv/bin/python scripts/gpu_check.py --out /tmp/smoke --device cpu            # smoke: the plumbing, on CPU

Three parts on ``--device`` (cuda; cpu runs every part at tiny sizes, to test this script without a GPU):

1. step equality. Each optimizer of muso_cli.optim.REGISTRY is built as the training loop builds it (compose,
   build_model_and_plan, optim.build) for the MLP on synthetic data, param=somup, and takes the same steps from the
   same init on the same batches twice: on the CPU (the reference) and on the device, in float32 with TF32 off.
   Figure: ``param_diff``, the largest over parameter tensors of max|p_dev − p_cpu| / max|p_cpu| after the steps
   (``update_diff`` beside it: the same for the change from the init, the steps alone). PASS when param_diff ≤
   the optimizer's tolerance (TOLERANCES) and the control, the same comparison between two CPU runs whose last
   batch differs, exceeds the tolerance tenfold (a check that could not see a wrong step passes nothing).
2. step time: scripts/bench_step.py on the device; its ratios to SGD per width, interval and optimizer.
3. pool: one `muso sweep` (K-FAC lr grid) per launcher, launcher=pool launcher.per_gpu=2, =1 and launcher=local;
   the wall time of each command, its trial counts (muso status) and the ratios of the wall times.

Writes <out>/gpu_check.json (every figure, after each part, so a killed run keeps what it measured),
<out>/gpu_check.md (the tables), <out>/nvidia-smi.txt, and the commands' output: <out>/bench_step.txt and
<out>/<study>.txt per sweep (pool-per-gpu-2, pool-per-gpu-1, local), the studies under <out>/studies.
Exit status: 0 all passed, 1 a FAIL or a part that failed, 2 CUDA asked for and not available.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
OPTIMIZERS = ("sgd", "adam", "kfac", "shampoo", "muon", "soap")

# Device against CPU, float32, TF32 off: PASS when param_diff ≤ the tolerance. Measured on the CPU at the cuda sizes
# below (width 256, 5 steps; tests/test_gpu_check.py keeps the smoke sizes honest), the float32 rounding each
# optimizer passes on: an init perturbed by one float32 ulp, 1 against 2 threads, float32 against float64, and an
# eigensolver that flips eigenvector signs and rotates numerically degenerate eigenspaces (what another device's
# eigh may do) moved param_diff by at most: SGD 5e-7, Adam 9e-6, K-FAC 3e-6, Muon 2e-6, Shampoo 1e-4 (the eigensolver),
# SOAP 4e-4. The tolerances are 10–30 times those; the control (last batch replaced) reads 0.1–0.6.
TOLERANCES = {"sgd": 1e-5, "adam": 3e-4, "kfac": 1e-4, "shampoo": 1e-3, "muon": 1e-4, "soap": 5e-3}
# Overrides that make a step's result unique, so that two correct devices agree:
# - muon: Newton–Schulz in float32 (ns_dtype=auto is bfloat16 on CUDA: a different, coarser orthogonalisation);
# - soap: its eigenbasis every step (inverse_interval=1) and ε = 0.1 relative (damping=0.1). Adam in an eigenbasis is
#   not invariant to the basis of a degenerate eigenspace, and the statistics of the first steps are
#   rank-deficient (rank ≤ batch; the readout's ≤ classes): with inverse_interval=10 the later gradients have
#   components in the first step's null space, whose basis each eigensolver picks freely (two float64 CPU runs on
#   1 and 2 threads differ by 4e-2). Recomputed every step, the gradients lie in the statistics' range (float64:
#   1e-8). In float32 the eigenvectors of L = G Gᵀ for small singular values of G carry errors ~ 1e-7·σ_max²/σ²,
#   which the default ε = 1e-4 passes on at O(1) (float32 against float64: 0.9); ε = 0.1 brings it to 3e-4. The
#   code paths are SOAP's own either way.
EQUALITY_OVERRIDES = {"muon": ["optimizer.ns_dtype=float32"],
                      "soap": ["optimizer.inverse_interval=1", "optimizer.damping=0.1"]}
CONTROL_MARGIN = 10.0  # the control must exceed the tolerance this many times
MIN_LEFT_S = 20.0  # a command that would have less of the budget (--budget-s) left is skipped


@dataclass(frozen=True)
class Sizes:
    """The sizes of every part for one kind of device."""

    width: int              # step equality: MLP hidden width M (32 → M → M → 10 on synthetic data)
    base_width: int
    steps: int              # steps per run
    batch: int
    bench_args: list[str]   # scripts/bench_step.py's arguments (besides --device)
    pool_data: list[str]    # data overrides of the pool sweeps (Fashion-MNIST, or synthetic when it is absent)
    pool_grid: list[str]    # the rest of the sweep's overrides
    pool_launchers: list[list[str]] = field(default_factory=list)  # one sweep per entry
    bench_timeout_s: float = 300.0
    pool_timeout_s: float = 150.0  # per sweep


# bench_step.py's optimizers but kfac-noclip and shampoo-f64 (float64 eigh of 4097² matrices: time the budget lacks)
BENCH_OPTIMIZERS = ["--optimizers", "sgd", "kfac", "shampoo", "muon", "soap"]
# The GPU sizes fit 8 minutes on one H100 by estimate (none was ever lent to measure): step equality < 30 s, the
# benchmark 12 worker processes (~2–3 min), each sweep 10 runs of 200 K-FAC steps at width 64 (< 1 min each).
PRESETS = {
    "cuda": Sizes(
        width=256, base_width=64, steps=5, batch=128,
        bench_args=["--widths", "1024", "4096", "--intervals", "10", *BENCH_OPTIMIZERS],
        pool_data=["data=fashion_mnist", "data.n_train=10000"],
        pool_grid=["optimizer=kfac", "train.steps=200", "study.params=[sp,somup]", "study.lr=log2:-6:-2",
                   "study.seeds=[0,1]"],
        pool_launchers=[["launcher=pool", "launcher.per_gpu=2"], ["launcher=pool", "launcher.per_gpu=1"],
                        ["launcher=local"]]),
    # smoke: the same parts and code paths at sizes that take seconds on a laptop. On a CPU launcher.per_gpu means
    # nothing, so each pool gets as many workers (launcher.workers) as the GPU run packs per GPU.
    "cpu": Sizes(
        width=64, base_width=16, steps=5, batch=32,
        bench_args=["--widths", "64", "--intervals", "2", "--batch", "32", "--cycles", "1", "--min-steps", "2",
                    "--warmup", "1", "--threads", "1", *BENCH_OPTIMIZERS],
        pool_data=["data=synthetic", "data.n_train=256", "data.n_test=64"],
        pool_grid=["optimizer=kfac", "train.steps=10", "train.eval_every=10", "study.params=[sp,somup]",
                   "study.lr=log2:-6:-5", "study.seeds=[0]", "train.threads=1"],
        pool_launchers=[["launcher=pool", "launcher.per_gpu=2", "launcher.workers=2"],
                        ["launcher=pool", "launcher.per_gpu=1", "launcher.workers=1"], ["launcher=local"]],
        bench_timeout_s=120.0, pool_timeout_s=60.0),
}


def say(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ----------------------------------------------------------------------------------------------------------
# Environment.

def environment(device: str, out: Path) -> dict:
    """Versions, the devices torch sees, TF32 settings, and nvidia-smi (its full output goes to nvidia-smi.txt)."""
    import torch

    env = {"python": platform.python_version(), "host": platform.node(), "torch": torch.__version__,
           "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available()
           else None, "device": device, "cuda_available": torch.cuda.is_available(),
           "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"), "cpu_count": os.cpu_count(),
           "gpus": [{"name": torch.cuda.get_device_name(i),
                     "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2 ** 30, 1)}
                    for i in range(torch.cuda.device_count())],
           # as step equality runs (main turns TF32 off); the benchmark and the sweeps run torch's defaults
           "equality_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
           "equality_cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}
    try:
        git = ["git", "-C", str(REPO)]
        env["git_commit"] = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                                           timeout=10).stdout.strip() or None
        env["git_changed_files"] = len(subprocess.run([*git, "status", "--porcelain"], capture_output=True,
                                                      text=True, timeout=30).stdout.splitlines())
    except (OSError, subprocess.TimeoutExpired):
        env["git_commit"] = env["git_changed_files"] = None
    smi = shutil.which("nvidia-smi")
    if smi:
        full = subprocess.run([smi], capture_output=True, text=True, timeout=60)
        query = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total,memory.used,utilization.gpu,"
                                "clocks.max.sm,power.limit", "--format=csv"], capture_output=True, text=True,
                               timeout=60)
        (out / "nvidia-smi.txt").write_text(full.stdout + full.stderr + "\n" + query.stdout + query.stderr)
        env["nvidia_smi"] = query.stdout.strip() or query.stderr.strip()
    else:
        (out / "nvidia-smi.txt").write_text("nvidia-smi not found on PATH\n")
        env["nvidia_smi"] = None
    return env


# ----------------------------------------------------------------------------------------------------------
# Part 1: step equality, device against CPU.

@dataclass
class Case:
    """One optimizer's comparison: its config, the initial parameters and buffers, the batches (on the CPU)."""

    name: str
    cfg: object
    init: dict
    batches: list
    input_shape: tuple
    num_classes: int


def equality_case(name: str, sizes: Sizes, seed: int = 0) -> Case:
    """The config of optimizer ``name`` as the training loop composes it, its model's init and ``sizes.steps``
    batches of ``sizes.batch`` consecutive training examples, all on the CPU."""
    from muso_cli import data as data_mod
    from muso_cli.config import compose
    from muso_cli.setup import build_model_and_plan

    cfg = compose([f"optimizer={name}", "model=mlp", "data=synthetic", "param=somup", f"model.width={sizes.width}",
                   f"model.base_width={sizes.base_width}", "device=cpu", f"seed={seed}",
                   f"train.batch_size={sizes.batch}", *EQUALITY_OVERRIDES.get(name, [])])
    data = data_mod.load(cfg.data, "cpu")
    need = (sizes.steps + 1) * sizes.batch  # one batch more: the control's replacement
    if len(data.y_train) < need:
        raise ValueError(f"synthetic data has {len(data.y_train)} examples; {need} needed")
    cut = [slice(i * sizes.batch, (i + 1) * sizes.batch) for i in range(sizes.steps + 1)]
    batches = [(data.x_train[c], data.y_train[c]) for c in cut]
    model, _ = build_model_and_plan(cfg, data.input_shape, data.num_classes, device="cpu")
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return Case(name, cfg, init, batches, data.input_shape, data.num_classes)


def run_steps(case: Case, device: str, batches: list | None = None) -> dict:
    """{parameter name: its value after the case's steps (or ``batches``) on ``device``} (float64, on the CPU): the
    model (float32) and the optimizer built on ``device`` as the training loop builds them, the case's init."""
    import torch

    from muso_cli import optim
    from muso_cli.losses import LOSSES
    from muso_cli.setup import build_model_and_plan

    batches = case.batches[:-1] if batches is None else batches
    model, plan = build_model_and_plan(case.cfg, case.input_shape, case.num_classes, device=device)
    model.load_state_dict(case.init)
    if any(p.device.type != torch.device(device).type for p in model.parameters()):
        raise RuntimeError(f"the model is not on {device}")
    optimizer = optim.build(case.cfg.optimizer, model, plan, case.cfg.train.loss)
    loss_fn = LOSSES[case.cfg.train.loss].value
    model.train()
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if getattr(optimizer, "diverged", None):
        raise RuntimeError(f"{case.name} on {device}: {optimizer.diverged}")
    return {n: p.detach().to("cpu", torch.float64) for n, p in model.named_parameters()}


def relative_difference(a: dict, b: dict, init: dict | None = None) -> float:
    """max over tensors of max|a − b| / max|b|; with ``init``, of the changes a − init and b − init instead.
    A tensor that ``b`` leaves at 0 counts 0 when ``a`` does too, else infinity; NaN anywhere is infinity."""
    worst = 0.0
    for name, ref in b.items():
        other = a[name]
        if init is not None:
            base = init[name].to(ref)
            ref, other = ref - base, other - base
        diff, scale = (other - ref).abs().max().item(), ref.abs().max().item()
        if diff != diff or scale != scale:  # NaN
            return float("inf")
        worst = max(worst, diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf")))
    return worst


def step_equality(names, sizes: Sizes, device: str) -> list[dict]:
    """One row per optimizer (:func:`compare`; an error is that optimizer's FAIL)."""

    rows = []
    for name in names:
        try:
            rows.append(compare(name, sizes, device))
        except Exception as e:  # one optimizer's error (on a first GPU run, say) leaves the others' comparisons
            rows.append({"optimizer": name, "device": device, "param_diff": None, "tolerance": TOLERANCES[name],
                         "overrides": EQUALITY_OVERRIDES.get(name, []), "verdict": f"FAIL ({type(e).__name__}: {e})"})
            say(f"  {name:<8} {rows[-1]['verdict']}")
    return rows


def compare(name: str, sizes: Sizes, device: str) -> dict:
    """param_diff and update_diff of optimizer ``name``'s steps on ``device`` against the CPU's, the control, the
    verdict."""
    import torch

    start = time.perf_counter()
    case = equality_case(name, sizes)
    reference = run_steps(case, "cpu")
    on_device = run_steps(case, device)
    # the control: the last batch replaced by the next one; it must read far above the tolerance
    control = run_steps(case, "cpu", batches=case.batches[:-2] + case.batches[-1:])
    init = {k: v.to(torch.float64) for k, v in case.init.items()}
    tol = TOLERANCES[name]
    row = {"optimizer": name, "device": device, "steps": sizes.steps, "width": sizes.width,
           "base_width": sizes.base_width, "batch": sizes.batch, "overrides": EQUALITY_OVERRIDES.get(name, []),
           "param_diff": relative_difference(on_device, reference),
           "update_diff": relative_difference(on_device, reference, init),
           "update_size": relative_difference(init, reference),  # how far the steps moved the parameters
           "control_diff": relative_difference(control, reference), "tolerance": tol}
    seen = row["control_diff"] > CONTROL_MARGIN * tol and row["update_size"] > 0
    row["verdict"] = ("PASS" if row["param_diff"] <= tol and seen else
                      "FAIL" if seen else "FAIL (the control does not exceed the tolerance: blind)")
    row["seconds"] = round(time.perf_counter() - start, 2)
    say(f"  {name:<8} param_diff {row['param_diff']:.2e}  update_diff {row['update_diff']:.2e}  "
        f"tolerance {tol:.0e}  control {row['control_diff']:.2e}  {row['verdict']}")
    return row


# ----------------------------------------------------------------------------------------------------------
# Subprocesses: streamed to the console and a log file, killed with their children at a deadline.

def run_logged(cmd: list[str], log: Path, timeout_s: float) -> dict:
    """Run ``cmd`` from the repository root with W&B off; every line goes to the console and ``log``.

    Returns {rc, seconds (wall), timed_out, text}. At the deadline the whole process group gets SIGTERM (muso's
    trials checkpoint), then SIGKILL 15 s later."""
    say("$ " + shlex.join(cmd))
    env = {**os.environ, "WANDB_MODE": "disabled", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", start_new_session=True)
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                pass

    timer = threading.Timer(max(1.0, timeout_s), stop)
    timer.start()
    lines = []
    with open(log, "w") as f:
        for line in proc.stdout:
            lines.append(line)
            f.write(line)
            f.flush()
            print("    " + line, end="", flush=True)
        rc = proc.wait()
    timer.cancel()
    seconds = time.perf_counter() - start
    if timed_out.is_set():
        say(f"  timed out after {timeout_s:.0f} s (killed)")
    return {"rc": rc, "seconds": round(seconds, 2), "timed_out": timed_out.is_set(), "text": "".join(lines)}


# ----------------------------------------------------------------------------------------------------------
# Part 2: step time (scripts/bench_step.py).

BENCH_ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+([a-z][\w-]*)\s+(\d+)" + r"\s+([\d.]+)" * 6 + r"\s+(\S+)")
BENCH_FIELDS = ("median_ms", "mean_ms", "robust_ms", "median_ratio", "mean_ratio", "robust_ratio")


def parse_bench(text: str) -> dict:
    """bench_step.py's table → {"rows": [{width, interval, optimizer, steps, median_ms, …, robust_ratio,
    peak_mib}], "failed": [lines of cases that failed]}."""
    rows, failed = [], []
    for line in text.splitlines():
        if re.match(r"^\s*\d+\s+\d+\s+failed:", line):
            failed.append(line.strip())
            continue
        m = BENCH_ROW.match(line)
        if not m:
            continue
        width, k, name, steps, *numbers, peak = m.groups()
        row = {"width": int(width), "interval": int(k), "optimizer": name, "steps": int(steps),
               **{key: float(v) for key, v in zip(BENCH_FIELDS, numbers)},
               "peak_mib": None if peak == "failed" else float(peak),
               "finite": "NON-FINITE" not in line}
        rows.append(row)
    return {"rows": rows, "failed": failed}


def run_bench(sizes: Sizes, device: str, out: Path, deadline: float) -> dict:
    """scripts/bench_step.py on ``device`` at ``sizes.bench_args``: its table parsed, its output in bench_step.txt."""
    args = ["scripts/bench_step.py", "--device", device, *sizes.bench_args]
    left = deadline - time.monotonic()
    if left < MIN_LEFT_S:
        return {"command": shlex.join(["python", *args]), "error": "out of time (--budget-s)", "rows": []}
    run = run_logged([sys.executable, *args], out / "bench_step.txt", min(sizes.bench_timeout_s, left))
    return {"command": shlex.join(["python", *args]), "rc": run["rc"], "seconds": run["seconds"],
            "timed_out": run["timed_out"], **parse_bench(run["text"])}


# ----------------------------------------------------------------------------------------------------------
# Part 3: pool sweeps, their wall time.

STATUS_COUNT = re.compile(r"(\d+) (ok|diverged|failed|running|pending)\b")


def pool_data(sizes: Sizes) -> tuple[list[str], str | None]:
    """The sweep's data overrides, and a note when Fashion-MNIST is absent and synthetic data stands in."""
    if "data=fashion_mnist" in sizes.pool_data and not FMNIST.exists():
        return (["data=synthetic", "data.n_train=2048"],
                f"Fashion-MNIST not found at {FMNIST.parent} (make data installs Debian's dataset-fashion-mnist): "
                "the sweeps ran on data=synthetic")
    return list(sizes.pool_data), None


def study_name(launcher: list[str]) -> str:
    """pool-per-gpu-<k> for launcher=pool, else the launcher's name."""
    options = dict(o.split("=", 1) for o in launcher)
    return (f"pool-per-gpu-{options.get('launcher.per_gpu', 1)}" if options["launcher"] == "pool"
            else options["launcher"])


def run_pool(sizes: Sizes, device: str, out: Path, deadline: float) -> dict:
    """One timed `muso sweep` per launcher of ``sizes.pool_launchers`` (studies under <out>/studies, each command's
    output in <out>/<study>.txt), its counts from `muso status`, and the wall times' ratios to per_gpu=2's."""
    data, note = pool_data(sizes)
    if note:
        say("  note: " + note)
    root = out / "studies"
    runs = []
    for launcher in sizes.pool_launchers:
        name = study_name(launcher)
        study = root / name
        if study.exists():  # a rerun into the same folder would resume, and time nothing
            say(f"  removing the earlier study {study}")
            shutil.rmtree(study)
        cmd = [sys.executable, "-m", "muso_cli", "sweep", *sizes.pool_grid, *data, *launcher, f"device={device}",
               f"study.root={root}", f"study.name={name}"]
        left = deadline - time.monotonic()
        if left < MIN_LEFT_S:
            runs.append({"name": name, "launcher": launcher, "skipped": "out of time (--budget-s)"})
            continue
        run = run_logged(cmd, out / f"{name}.txt", min(sizes.pool_timeout_s, left))
        status = subprocess.run([sys.executable, "-m", "muso_cli", "status", str(study)], cwd=REPO, timeout=120,
                                capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "disabled"})
        first = (status.stdout.splitlines() or [""])[0]
        counts = {k: int(n) for n, k in STATUS_COUNT.findall(first.partition(": ")[2] or first)}
        say(f"  {name}: {run['seconds']:.1f} s wall, {counts or status.stderr.strip()[-200:]}")
        runs.append({"name": name, "launcher": launcher, "command": "muso " + shlex.join(cmd[3:]), "rc": run["rc"],
                     "wall_s": run["seconds"], "timed_out": run["timed_out"], "counts": counts,
                     "status": first})
    walls = {r["name"]: r["wall_s"] for r in runs if "wall_s" in r and r["rc"] == 0}
    base = "pool-per-gpu-2"
    ratios = {f"{name} / {base}": round(wall / walls[base], 3) for name, wall in walls.items()
              if base in walls and name != base}
    return {"data": data, "note": note, "runs": runs, "wall_ratios_to_per_gpu_2": ratios}


# ----------------------------------------------------------------------------------------------------------
# Report.

def markdown(figures: dict) -> str:
    """gpu_check.md: the environment, the verdict and one table per part."""
    env = figures.get("environment", {})
    mode = "smoke mode: every part on the CPU" if figures["smoke"] else "CUDA"
    lines = [f"# GPU check, {figures['started']}", "",
             f"device {figures['device']} ({mode}); torch {env.get('torch')} (CUDA {env.get('torch_cuda')}, "
             f"cuDNN {env.get('cudnn')}); GPUs: {', '.join(g['name'] for g in env.get('gpus', [])) or 'none'}; "
             f"commit {str(env.get('git_commit'))[:12]}; total {figures.get('seconds', '?')} s", "",
             f"Verdict: **{figures.get('verdict', 'unfinished')}**", ""]
    eq = figures.get("step_equality")
    if isinstance(eq, list):
        lines += ["## Step equality: device against CPU (float32, TF32 off)", "",
                  "param_diff: the largest over parameter tensors of max|p_dev − p_cpu| / max|p_cpu| after the "
                  "steps; update_diff: the same for the change from the init; control: param_diff of two CPU "
                  "runs whose last batch differs.", "",
                  "| optimizer | overrides | param_diff | tolerance | update_diff | control | verdict |",
                  "|---|---|---|---|---|---|---|"]
        number = lambda r, key: "–" if r.get(key) is None else f"{r[key]:.2e}"  # noqa: E731 (None: an error)
        lines += [f"| {r['optimizer']} | {' '.join(r['overrides']) or '–'} | {number(r, 'param_diff')} | "
                  f"{r['tolerance']:.0e} | {number(r, 'update_diff')} | {number(r, 'control_diff')} | "
                  f"{r['verdict']} |" for r in eq]
    elif eq is not None:
        lines += ["## Step equality", "", f"error: {eq.get('error')}"]
    bench = figures.get("bench")
    if bench:
        state = ", TIMED OUT" if bench.get("timed_out") else ""
        lines += ["", "## Step time (scripts/bench_step.py)", "",
                  f"`{bench.get('command', '')}`: {bench.get('seconds')} s{state}", "",
                  "| M | k | optimizer | median ms | mean/SGD | median/SGD | robust/SGD | peak MiB |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['width']} | {r['interval']} | {r['optimizer']} | {r['median_ms']:.2f} | "
                  f"{r['mean_ratio']:.2f} | {r['median_ratio']:.2f} | {r['robust_ratio']:.2f} | {r['peak_mib']} |"
                  for r in bench.get("rows", [])]
        lines += [f"- {f}" for f in bench.get("failed", [])]
        lines += [f"error: {bench['error']}"] if "error" in bench else []
    pool = figures.get("pool")
    if pool:
        lines += ["", "## Pool sweeps: wall time per launcher", ""]
        lines += [f"Note: {pool['note']}", ""] if pool.get("note") else []
        lines += ["| study | launcher | wall s | counts | command |", "|---|---|---|---|---|"]
        for r in pool.get("runs", []):
            wall = f"{r['wall_s']}{' (timed out)' if r['timed_out'] else ''}" if "wall_s" in r else r.get("skipped")
            counts = ", ".join(f"{n} {k}" for k, n in r.get("counts", {}).items() if n)
            lines.append(f"| {r['name']} | {' '.join(r['launcher'])} | {wall} | {counts} | `{r.get('command', '')}` |")
        lines += [""] + [f"- wall time {k}: {v}" for k, v in pool.get("wall_ratios_to_per_gpu_2", {}).items()]
        lines += [f"error: {pool['error']}"] if "error" in pool else []
    return "\n".join(lines) + "\n"


def write(figures: dict, out: Path) -> None:
    (out / "gpu_check.json").write_text(json.dumps(figures, indent=2, default=str) + "\n")
    (out / "gpu_check.md").write_text(markdown(figures))


def verdict(figures: dict, parts=("equality", "bench", "pool"), optimizers=OPTIMIZERS) -> str:
    """PASS when every part asked for ran and every optimizer passed; else FAIL and why."""
    problems = []
    if "equality" in parts:
        eq = figures.get("step_equality")
        if not isinstance(eq, list):
            problems.append("step equality did not run")
        else:
            problems += [f"{r['optimizer']} {r['verdict']}" for r in eq if r["verdict"] != "PASS"]
            problems += [f"{n}: no comparison" for n in optimizers if n not in {r["optimizer"] for r in eq}]
    bench = figures.get("bench") or {}
    if "bench" in parts and (bench.get("error") or bench.get("rc") != 0 or not bench.get("rows")
                             or bench.get("failed") or not all(r["finite"] for r in bench["rows"])):
        problems.append("the benchmark failed, timed out or stepped to non-finite weights")
    pool = figures.get("pool") or {}
    if "pool" in parts and (pool.get("error") or not pool.get("runs") or any(
            r.get("rc") != 0 or r.get("timed_out") or not r.get("counts", {}).get("ok")
            or r["counts"].get("failed") or r["counts"].get("pending") for r in pool.get("runs", []))):
        problems.append("a pool sweep failed, timed out or was skipped")
    return "PASS" if not problems else "FAIL: " + "; ".join(problems)


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                   help="cuda (the GPU: CUDA_VISIBLE_DEVICES picks it) | cpu (smoke mode: tiny sizes, no GPU needed)")
    p.add_argument("--parts", nargs="+", default=["equality", "bench", "pool"], choices=["equality", "bench", "pool"])
    p.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=OPTIMIZERS,
                   help="step equality's optimizers")
    p.add_argument("--budget-s", type=float, default=450.0,
                   help="the benchmark and the sweeps are cut (killed, recorded as timed out) past this many seconds")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: CUDA is not available (torch {torch.__version__}, built for CUDA {torch.version.cuda}; "
              f"nvidia-smi {'found' if shutil.which('nvidia-smi') else 'not found'}). A CPU-only torch (the "
              "version.cuda None above) needs a CUDA build: pip install torch==<the same version> from "
              "https://download.pytorch.org/whl/<cuXYZ>. To test this script's plumbing without a GPU, run it "
              "with MUSO_GPU_CHECK_DEVICE=cpu (scripts/gpu_check.sh) or --device cpu.", file=sys.stderr)
        return 2
    # float32 everywhere: no TF32 in matmuls or convolutions (step equality compares float32 results)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sizes = PRESETS[args.device]
    start, deadline = time.monotonic(), time.monotonic() + args.budget_s
    figures: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "device": args.device,
                     "smoke": args.device == "cpu", "sizes": asdict(sizes)}
    say(f"output: {out}; device {args.device}{' (smoke mode: tiny sizes on the CPU)' if args.device == 'cpu' else ''}")
    figures["environment"] = environment(args.device, out)
    env = figures["environment"]
    say(f"torch {env['torch']} CUDA {env['torch_cuda']}; GPUs {[g['name'] for g in env['gpus']] or 'none'}")
    write(figures, out)
    parts = [("equality", "step_equality", lambda: step_equality(args.optimizers, sizes, args.device)),
             ("bench", "bench", lambda: run_bench(sizes, args.device, out, deadline)),
             ("pool", "pool", lambda: run_pool(sizes, args.device, out, deadline))]
    titles = {"equality": f"step equality: {', '.join(args.optimizers)}, {sizes.steps} steps at width {sizes.width} "
                          f"(base {sizes.base_width}), {args.device} against cpu",
              "bench": "step time: scripts/bench_step.py", "pool": "pool sweeps: wall time per launcher"}
    for part, key, run in parts:
        if part not in args.parts:
            continue
        say(f"part {part}: {titles[part]}")
        t0 = time.monotonic()
        try:
            figures[key] = run()
        except Exception as e:  # the next parts still run; the verdict says this one failed
            say(f"  {part} failed: {type(e).__name__}: {e}")
            figures[key] = {"error": f"{type(e).__name__}: {e}"}
        figures.setdefault("part_seconds", {})[part] = round(time.monotonic() - t0, 1)
        write(figures, out)
    figures["seconds"] = round(time.monotonic() - start, 1)
    figures["verdict"] = verdict(figures, args.parts, args.optimizers)
    write(figures, out)
    say(f"verdict: {figures['verdict']}  ({figures['seconds']} s; {out / 'gpu_check.json'}, {out / 'gpu_check.md'})")
    return 0 if figures["verdict"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
