"""The bad-input battery: each command line, its exit status, the key the error names, and whether anything was
written. Prints a Markdown table (the figures of issue 15; tests/test_bad_input.py asserts the same cases).

    .venv/bin/python scripts/bad_inputs.py
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")

from muso_cli.cli import main  # noqa: E402

FAST = ["data=synthetic", "data.n_train=512", "data.n_test=256", "model.base_width=16", "train.steps=30",
        "train.eval_every=10", "train.progress=false"]

CASES = [
    ["sweep", "launcher=pool", "launcher.workers=abc"], ["sweep", "launcher=pool", "launcher.workers=-1"],
    ["sweep", "launcher=pool", "launcher.workers=0"], ["sweep", "launcher=pool", "launcher.per_gpu=0"],
    ["sweep", "study.lr=log10:300:400"], ["sweep", "study.lr=log2:-10:10:0.001"], ["sweep", "data.dim=0"],
    ["sweep", "study.widths=[8,16]"], ["sweep", "model.bias=maybe"], ["sweep", "+model.dropout=0.1"],
    ["sweep", "+foo=1"], ["sweep", "study.root="], ["sweep", "study.name=../x"], ["sweep", "study.name=/abs/x"],
    ["sweep", "data.n_train=64", "train.batch_size=128"], ["sweep", "study.lr=0.1,0.2", "optimizer.lr=0.1"],
    ["sweep", "model.width=256"], ["sweep", "seed=3"], ["sweep", "hydra/launcher=joblib"],
    ["sweep", "hydra.run.dir=/tmp/x"], ["sweep", "model.depth=2,3"], ["sweep", "study.max_trials=3"],
    ["sweep", "study.name=étude"], ["sweep", "optimizer.lr=-1"], ["sweep", "optimizer=kfac", "optimizer.damping=0"],
    ["sweep", "optimizer=kfac", "optimizer.ema_decay=1.5"], ["sweep", "optimizer=kfac", "optimizer.lrr=1"],
    ["run", "launcher=slurm"], ["run", "optimizer.lr=("], ["status", "{root}/nowhere"],
    ["status", "{root}/s", "extra=1"], ["run-trial"], ["run-trial", "{root}/s", "99"],
    ["report", "{root}/nowhere"],
]



def main_() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert main(["sweep", *FAST, f"study.root={root}", "study.name=s", "study.params=[sp]",
                         "study.lr=[0.1]", "--no-launch"]) == 0
        before = sorted(str(p) for p in root.rglob("*"))
        print("| command | exit | error names | written |\n|---|---|---|---|")
        for case in CASES:
            argv = [a.replace("{root}", str(root)) for a in case]
            if argv[0] in ("sweep", "run"):
                argv = [argv[0], *FAST, f"study.root={root}", f"hydra.run.dir={root}/run", *argv[1:]] \
                    if argv[0] == "run" else [argv[0], *FAST, f"study.root={root}", *argv[1:]]
            err = io.StringIO()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                code = main(argv)
            text = err.getvalue()
            key = text.split("error: ", 1)[1].split(":", 1)[0] if "error: " in text else "-"
            after = sorted(str(p) for p in root.rglob("*"))
            shown = " ".join("<no study>" if a == "{root}/nowhere" else "<study>" if a.startswith("{root}") else a
                             for a in case)
            print(f"| `muso {shown}` | {code} | `{key}` | {'yes' if after != before else 'no'} |")
            before = after


if __name__ == "__main__":
    sys.exit(main_())
