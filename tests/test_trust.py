"""A study folder travels between people, and a study made by someone else is data, never code (issue 27).

What must hold, on a crafted study whose study.yaml and trials.jsonl name code (a data loader that is
``pathlib.Path.write_text`` with arguments of the author's choosing, a model in a module that writes a file when it
is imported, a config search path, Slurm setup lines): `muso report` reads names and results only (it works, and
nothing the study names runs, even where the model's module cannot be imported); `muso transfer`, `muso refine`
and `muso run-trial` refuse with exit 2, naming --trust, before anything runs or is written; with --trust the
study's code does run (the gate is real). A study this user's muso made needs no --trust, wherever it has moved.
"""
from __future__ import annotations

import json
import math
import shutil

import pytest
import yaml

from handmade import make, parabola
from muso_cli.cli import main
from muso_cli.study import trust

LOSS = parabola(math.log2(0.1))
GRID = ("study.lr=[0.025,0.05,0.1,0.2,0.4]", "study.params=[sp]")


def outcome(p, w, lr, d, s):
    return LOSS(lr)


def craft(study_path, section: str, node: dict, recorded: list[str]) -> None:
    """Make the study someone else's: a token that is not ours, and ``node`` as its config's ``section`` in
    study.yaml (the recorded overrides and the base config) and in every trial entry."""
    manifest = yaml.safe_load((study_path / "study.yaml").read_text())
    manifest.update(token="0" * 32, overrides=[*manifest["overrides"], *recorded])
    manifest["base_config"][section] = node
    (study_path / "study.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    rows = [json.loads(line) for line in (study_path / "trials.jsonl").read_text().splitlines()]
    for row in rows:
        row["config"][section] = node
    (study_path / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_text_study(tmp_path, marker):
    """A study whose data loader writes ``marker``: instantiating it calls Path(marker).write_text(...)."""
    study = make(tmp_path, outcome, *GRID)
    node = {"_target_": "pathlib.Path.write_text", "name": "d", "num_classes": None, "stream": False,
            "n_train": None, "n_test": None, "augment": False,
            "_args_": [{"_target_": "pathlib.Path", "_args_": [str(marker)]}, "written by the study's author"]}
    craft(study.path, "data", node, ["data=custom", "data._target_=pathlib.Path.write_text",
                                     f"+data._args_=[{{_target_:pathlib.Path,_args_:['{marker}']}},pwned]"])
    return study


EVIL = """from pathlib import Path
Path({marker!r}).write_text("imported")
from torch import nn


def Net(width):
    return nn.Sequential(nn.Linear(32, width), nn.Linear(width, 10))
"""


def module_study(tmp_path, monkeypatch, marker):
    """A study whose model is in an importable module that writes ``marker`` the moment it is imported."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "evil_target.py").write_text(EVIL.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.delitem(__import__("sys").modules, "evil_target", raising=False)
    study = make(tmp_path, outcome, *GRID)
    node = {"_target_": "evil_target.Net", "name": "evil", "width_arg": "width", "input_shape_arg": None,
            "num_classes_arg": None, "width": 16, "base_width": 16}
    craft(study.path, "model", node, ["model=custom", "model._target_=evil_target.Net"])
    return study


def snapshot(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.fixture(params=["write_text", "module"])
def crafted(request, tmp_path, monkeypatch):
    marker = tmp_path / "MARKER"
    study = (write_text_study(tmp_path, marker) if request.param == "write_text"
             else module_study(tmp_path, monkeypatch, marker))
    return study, marker


def test_report_reads_a_crafted_study_and_runs_nothing(crafted, capsys):
    study, marker = crafted
    assert main(["report", str(study.path)]) == 0
    assert "verdict:" in capsys.readouterr().out
    assert (study.path / "report" / "report.md").is_file()
    assert not marker.exists()


@pytest.mark.parametrize("command", [["transfer", "{study}", "transfer.widths=[32]", "--no-launch"],
                                     ["refine", "{study}", "--no-launch"], ["run-trial", "{study}", "0"]])
def test_commands_that_would_run_a_crafted_study_refuse_without_trust(crafted, capsys, command):
    study, marker = crafted
    if command[0] == "run-trial":  # a trial not finished yet
        shutil.rmtree(study.trial_dir(study.trial(0)))
    before = snapshot(study.path)
    assert main([a.replace("{study}", str(study.path)) for a in command]) == 2
    err = capsys.readouterr().err
    assert "error: --trust:" in err and "Fix:" in err and "Traceback" not in err
    assert "_target_" in err and "muso report" in err  # what it would run, and what reads it safely
    assert not marker.exists() and snapshot(study.path) == before


def test_with_trust_the_crafted_study_runs_what_it_names(tmp_path, capsys):
    """The gate is real: --trust composes and instantiates the study's config, and its loader writes its file."""
    marker = tmp_path / "MARKER"
    study = write_text_study(tmp_path, marker)
    assert main(["transfer", str(study.path), "transfer.widths=[32]", "--dry-run", "--trust"]) == 2
    assert marker.read_text() == "pwned"
    assert "error: data._target_" in capsys.readouterr().err  # write_text returns a count, not data


def test_run_trial_with_trust_runs_the_trials_recorded_config(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    study = write_text_study(tmp_path, marker)
    shutil.rmtree(study.trial_dir(study.trial(0)))
    assert main(["run-trial", str(study.path), "0"]) == 2 and not marker.exists()
    assert main(["run-trial", str(study.path), "0", "--trust"]) == 2
    assert marker.exists() and "data._target_" in capsys.readouterr().err


def test_a_search_path_or_setup_lines_of_someone_else_need_trust(tmp_path, capsys):
    conf = tmp_path / "conf" / "model"
    conf.mkdir(parents=True)
    (conf / "evil.yaml").write_text("_target_: evil_target.Net\nname: evil\nwidth_arg: width\n")
    searched = make(tmp_path, outcome, *GRID, name="searched")
    craft(searched.path, "model", {"name": "evil"}, [f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "model=evil"])
    assert main(["transfer", str(searched.path), "transfer.widths=[32]", "--dry-run"]) == 2
    assert "hydra.searchpath" in capsys.readouterr().err  # refused before the search path is read
    setup = make(tmp_path, outcome, *GRID, name="setup")
    craft(setup.path, "launcher", {"name": "slurm", "setup": [f"touch {tmp_path / 'MARKER'}"]},
          ["launcher=slurm", f"launcher.setup=['touch {tmp_path / 'MARKER'}']"])
    assert main(["refine", str(setup.path), "--dry-run"]) == 2
    assert "launcher.setup" in capsys.readouterr().err and not (tmp_path / "MARKER").exists()


NET = """from torch import nn


def Net(width):
    return nn.Sequential(nn.Linear(32, width), nn.ReLU(), nn.Linear(width, 10))
"""


@pytest.fixture
def own_target_study(tmp_path, monkeypatch):
    """A study this user's muso made, of a model of their own (``model._target_``)."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "mynets.py").write_text(NET)
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.delitem(__import__("sys").modules, "mynets", raising=False)
    return make(tmp_path, outcome, *GRID, "model=custom", "model._target_=mynets.Net"), code


def test_a_study_of_your_own_with_a_target_needs_no_trust(own_target_study, capsys):
    study, _ = own_target_study
    assert trust.code_in(study.trial(0).config)  # it names code ...
    assert main(["transfer", str(study.path), "transfer.widths=[32]", "--dry-run"]) == 0  # ... and it is ours
    assert main(["refine", str(study.path), "--dry-run"]) == 0
    assert "--trust" not in capsys.readouterr().err


def test_a_study_stays_yours_where_it_moves_and_is_someone_elses_for_another_user(own_target_study, tmp_path,
                                                                                   monkeypatch, capsys):
    study, _ = own_target_study
    moved = tmp_path / "elsewhere" / "study"
    shutil.copytree(study.path, moved)
    assert main(["transfer", str(moved), "transfer.widths=[32]", "--dry-run"]) == 0
    monkeypatch.setenv("MUSO_STATE_DIR", str(tmp_path / "another-user"))  # their list of own studies
    assert main(["transfer", str(moved), "transfer.widths=[32]", "--dry-run"]) == 2
    assert "error: --trust" in capsys.readouterr().err


def test_report_works_where_the_models_code_cannot_be_imported(own_target_study, monkeypatch, capsys):
    """A report on a laptop without the model's code: the study's names and results are enough."""
    study, code = own_target_study
    shutil.rmtree(code)
    monkeypatch.delitem(__import__("sys").modules, "mynets", raising=False)
    assert main(["report", str(study.path)]) == 0
    assert (study.path / "report" / "report.md").is_file()
    capsys.readouterr()
    assert main(["transfer", str(study.path), "transfer.widths=[32]", "--dry-run"]) == 2  # this one needs it
    assert "error: model._target_" in capsys.readouterr().err
