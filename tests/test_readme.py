"""The README's Python snippets run as written."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python_snippets():
    assert python_blocks()


def test_every_python_snippet_of_the_readme_runs():
    for block in python_blocks():
        namespace: dict = {}
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 (our own README)
        if "opt" in namespace:  # the API snippet: K-FAC trained three steps with the plan's groups
            opt = namespace["opt"]
            assert {g["damping_rule"] for g in opt.param_groups if "layer" in g} == {"somup"}
            assert opt.state_dict()["state"]


def make_commands(target: str) -> list[list[str]]:
    """The muso command lines `make -n target` would run, split as the shell would (continuations joined)."""
    import shlex
    import subprocess

    text = subprocess.run(["make", "-n", target], cwd=README.parent, capture_output=True, text=True,
                          check=True).stdout.replace("\\\n", " ")
    return [shlex.split(line) for line in text.splitlines() if "/muso " in line]


def dry_run_sweep(sweep: list[str], root: Path) -> int:
    """`muso sweep --dry-run` with a make target's sweep arguments, its study.root moved to ``root``."""
    from muso_cli.cli import main

    args = [a if not a.startswith("study.root=") else f"study.root={root}" for a in sweep[2:]]
    return main(["sweep", *args, "--dry-run"])


def test_the_demo_plans_what_the_readme_says(tmp_path, capsys):
    """`make demo`'s commands as make would run them (make -n), planned in a temporary root: the coordinate
    checks of sp and somup, then a sweep at the base width with the half-octave grid and 3 seeds the README
    describes, and transfer, refine and report on its folder, in that order."""
    commands = make_commands("demo")
    assert [c[1] for c in commands] == ["coord-check", "coord-check", "sweep", "transfer", "refine", "report"]
    assert {c[-2] for c in commands[:2]} == {"param=sp", "param=somup"}
    sweep = commands[2]
    assert dry_run_sweep(sweep, tmp_path) == 0
    out = capsys.readouterr().out
    assert "54 trials (27 runs: a base-width run serves every parameterization)" in out
    assert "sp width    64: 9 lr" in out and "× 3 seeds" in out
    assert ["transfer", "outputs/demo/mlp-kfac", "transfer.widths=[256,1024]"] in [c[1:] for c in commands]
    assert all(c[2] == "outputs/demo/mlp-kfac" for c in commands[3:])


MATRIX_TARGETS = {  # target: (study name, optimizer, trials in the sweep's plan)
    "repro-mlp-lr-muon": ("mlp-lr-muon", "muon", "144 trials (126 runs"),  # widths 64 … 512
    "repro-mlp-lr-soap": ("mlp-lr-soap", "soap", "216 trials (180 runs"),  # widths 64 … 512, sp / mup / somup
}


@pytest.mark.parametrize("target", sorted(MATRIX_TARGETS))
def test_the_matrix_lr_targets_plan_a_valid_study_and_refine_transfer_and_report_it(target, tmp_path, capsys):
    """The Muon and SOAP lr-transfer targets: the sweep composes and plans (9 octaves × 2 seeds, a base column
    shared by sp and somup), and refine, transfer and report each take the study's own folder, in that order."""
    name, optimizer, size = MATRIX_TARGETS[target]
    commands = make_commands(target)
    assert [c[1] for c in commands] == ["sweep", "refine", "transfer", "report"]
    sweep = commands[0]
    assert f"optimizer={optimizer}" in sweep and f"study.name={name}" in sweep and "study.seeds=[0,1]" in sweep
    assert dry_run_sweep(sweep, tmp_path) == 0
    assert size in capsys.readouterr().out
    assert all(c[2] == f"outputs/repro/{name}" for c in commands[1:])
    assert "study.refine_to=0.25" in commands[1]
