"""The README leads (short, the first command early, its links alive), its Python snippets run as written, and the
demo output it shows is what `make demo` prints (scripts/readme_demo.py generates it)."""
from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
REPO = README.parent
_spec = importlib.util.spec_from_file_location("readme_demo", REPO / "scripts" / "readme_demo.py")
readme_demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(readme_demo)


def test_the_readme_is_short_and_its_first_command_comes_early():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; the references belong in docs/"
    first = next(i for i, line in enumerate(lines, 1) if line.startswith("make demo"))
    assert first <= 40 and lines[first - 2] == "```bash"  # runnable as written, before the reader scrolls far


def test_every_link_of_the_readme_leads_somewhere():
    text = README.read_text()
    for target in re.findall(r"\]\(([^)#]+?)(?:#[^)]*)?\)", text):
        if not target.startswith("http"):
            assert (REPO / target).exists(), target
    assert "docs/results.md#10-depth" in text and "## 10. Depth" in (REPO / "docs" / "results.md").read_text()


def test_the_demo_block_is_generated_output_shortened_only_in_its_progress_lines():
    shown = readme_demo.shown_lines(README.read_text())
    assert shown, "README.md has no generated demo block (python scripts/readme_demo.py)"
    commands = [line.split()[2] for line in shown if line.startswith("$ muso ")]
    assert commands == ["coord-check", "coord-check", "sweep", "transfer", "refine", "report"]
    assert any(line.startswith("  somup: transfers") for line in shown)
    assert any(line.startswith("  sp: fails") for line in shown)
    progress = [i for i, line in enumerate(shown) if readme_demo.PROGRESS.match(line)]
    assert all(shown[i + 1].startswith("… ") for i in progress)  # one progress line per run, then the count


def test_condense_keeps_everything_but_the_progress_lines_and_counts_those():
    log = "\n".join(["echo setup", ".venv/bin/muso sweep a=1", "plan", *(f"[{k}/5] trial {k}: ok" for k in range(1, 6)),
                     "study: 5 runs: 5 ok", ".venv/bin/muso report s", "[1/1] one: ok", "verdict:"])
    assert readme_demo.condense(log) == ["$ muso sweep a=1", "plan", "[1/5] trial 1: ok", "… 4 more trials …",
                                         "study: 5 runs: 5 ok", "$ muso report s", "[1/1] one: ok", "verdict:"]


@pytest.mark.slow
def test_make_demo_prints_what_the_readme_shows(tmp_path):
    """A fresh `make demo` (into a temporary root): its condensed output is the README's block line for line, the
    numbers aside (another CPU may round a last digit differently) and the verdicts included."""
    done = subprocess.run(["make", "--no-print-directory", "demo", f"DEMO_ROOT={tmp_path}"], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:]

    def shape(lines: list[str]) -> list[str]:
        kept = [line.replace(str(tmp_path), "outputs/demo") for line in lines if not readme_demo.PROGRESS.match(line)]
        return [re.sub(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?", "#", line) for line in kept]

    assert shape(readme_demo.condense(done.stdout)) == shape(readme_demo.shown_lines(README.read_text()))


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
    "repro-mlp-lr-soap": ("mlp-lr-soap", "soap", "144 trials (126 runs"),  # widths 64 … 512, sp / somup
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
