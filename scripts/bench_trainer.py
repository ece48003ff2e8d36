"""What muso adds per trial when it runs your own training code (trainer=command, trainer=python), measured in one run.

    .venv/bin/python scripts/bench_trainer.py              # 16 trials each way, best of 2 launches
    .venv/bin/python scripts/bench_trainer.py --trials 32 --repeats 3

Four ways to run 16 trials, each launched by launcher=local in a fresh process and timed from the first trial
started to the last result written (planning left out, as in scripts/bench_pool.py):

  direct          an empty training script (plain Python: it appends one metrics line and exits), run 16 times
                  by subprocess outside muso: the interpreter's start alone, the floor of any command
  trainer=command the same script as ``trainer.command``: muso's share is the difference to direct (the trial's
                  config written, the process group, metrics.jsonl read and judged, result.json, the store)
  trainer=python  an empty training function (``trainer._target_``): its process imports muso and omegaconf
                  to hand your function the config, so its floor is higher than a plain script's
  builtin         muso's own loop on the demo's trial (K-FAC, MLP width 64, 50 steps of Fashion-MNIST): what a
                  real trial costs, to put the overheads in proportion

Printed: seconds per trial (best of --repeats launches) and each overhead as a share of the builtin trial.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EMPTY_SCRIPT = """\
import json, os, sys
lr = float(sys.argv[1])
with open(os.path.join(os.environ.get("MUSO_TRIAL_DIR", "."), "metrics.jsonl"), "a") as f:
    f.write(json.dumps({"step": 0, "train_loss": 1.0 + lr, "test_loss": 1.0 + lr, "test_acc": 0.5}) + "\\n")
"""


def empty_fit(cfg, folder) -> None:
    """trainer=python's empty training function: one metrics line."""
    from muso_cli.api import Metrics

    lr = float(cfg.optimizer.lr)
    Metrics(folder).log(0, train_loss=1.0 + lr, test_loss=1.0 + lr, test_acc=0.5)


def time_launch(study_path: str) -> float:
    """In this fresh process: seconds to run every trial of the study with launcher=local."""
    from omegaconf import OmegaConf

    from muso_cli.launch import launch
    from muso_cli.study.store import Study

    study = Study(study_path)
    shutil.rmtree(study.path / "trials", ignore_errors=True)
    trials = study.trials()
    start = time.perf_counter()
    counts = launch(study, trials, OmegaConf.create({"name": "local"}))
    seconds = time.perf_counter() - start
    assert counts["ok"] == len(trials), counts
    return seconds


def time_direct(script: Path, lrs: list[float], folder: Path) -> float:
    """Seconds to run ``script`` once per lr by subprocess, each in a folder of its own (no muso)."""
    start = time.perf_counter()
    for i, lr in enumerate(lrs):
        run_dir = folder / f"run{i}"
        run_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(script), str(lr)], check=True, cwd=run_dir,
                       env={**os.environ, "MUSO_TRIAL_DIR": str(run_dir)})
    return time.perf_counter() - start


def plan(root: Path, name: str, n: int, extra: list[str], env: dict) -> str:
    """Plan a study of ``n`` learning rates with ``muso sweep --no-launch``; its folder."""
    subprocess.run([sys.executable, "-m", "muso_cli", "sweep", f"study.lr=log2:-{n}:-1", "study.params=[sp]",
                    "study.seeds=[0]", f"study.root={root}", f"study.name={name}", "--no-launch", *extra],
                   check=True, stdout=subprocess.DEVNULL, env=env)
    return str(root / name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2, help="launches per way (the fastest counts)")
    ap.add_argument("--time-launch", metavar="STUDY", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.time_launch:
        print(json.dumps(time_launch(args.time_launch)))
        return

    n = args.trials
    root = Path(tempfile.mkdtemp(prefix="muso-bench-trainer-"))
    here = Path(__file__).resolve().parent
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": f"{here}:{os.environ.get('PYTHONPATH', '')}"}
    try:
        script = root / "empty_train.py"
        script.write_text(EMPTY_SCRIPT)
        lrs = [2.0 ** -k for k in range(1, n + 1)]
        studies = {
            "trainer=command": plan(root, "command", n, ["trainer=command",
                                                         f"trainer.command='{sys.executable} {script} ${{optimizer.lr}}'"], env),
            "trainer=python": plan(root, "python", n, ["trainer=python", "trainer._target_=bench_trainer.empty_fit"], env),
            "builtin": plan(root, "builtin", n, ["optimizer=kfac", "data=fashion_mnist", "model.width=64",
                                                 "model.base_width=64", "train.steps=50"], env),
        }
        seconds = {"direct": min(time_direct(script, lrs, root / f"direct{r}") for r in range(args.repeats))}
        for label, study in studies.items():
            seconds[label] = min(json.loads(subprocess.run([sys.executable, __file__, "--time-launch", study], check=True,
                                                           env=env, capture_output=True, text=True).stdout)
                                 for _ in range(args.repeats))
        per = {k: v / n for k, v in seconds.items()}
        print(f"{n} trials per way, launcher=local, {os.cpu_count()} CPU cores, best of {args.repeats}; seconds per trial")
        print(f"  {'way':<18} {'s/trial':>8}   {'over direct':>11}   {'overhead / builtin trial':>24}")
        for label in ("direct", "trainer=command", "trainer=python", "builtin"):
            over = per[label] - per["direct"]
            share = f"{over / per['builtin']:23.1%}" if label.startswith("trainer=") else f"{'':>23}"
            print(f"  {label:<18} {per[label]:8.3f}   {over:+10.3f}s   {share}")
        print(f"  muso's own share under trainer=command: {per['trainer=command'] - per['direct']:.3f} s per trial")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
