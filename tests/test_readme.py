"""The README's Python snippets run as written."""
from __future__ import annotations

import re
from pathlib import Path

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


def test_the_demo_plans_what_the_readme_says(tmp_path, capsys):
    """`make demo`'s commands as make would run them (make -n), planned in a temporary root: the sweep is valid
    and has the two widths and two seeds the README describes, and transfer and report take its folder."""
    import shlex
    import subprocess

    from muso_cli.cli import main

    lines = subprocess.run(["make", "-n", "demo"], cwd=README.parent, capture_output=True, text=True,
                           check=True).stdout.splitlines()
    sweep = next(shlex.split(line) for line in lines if " sweep " in line)
    args = [a if not a.startswith("study.root=") else f"study.root={tmp_path}" for a in sweep[2:]]
    assert main(["sweep", *args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "40 trials (30 runs: a base-width run serves every parameterization)" in out
    assert "sp width   256: 5 lr" in out and "× 2 seeds" in out
    assert any(" transfer outputs/demo/mlp-kfac transfer.widths=[512]" in line for line in lines)
