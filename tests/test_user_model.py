"""Your own model and data, the Hydra way, with the example project of examples/ (its package tinyproj and its
configs in examples/conf, found through the config search path).

What must hold: muso builds the project's model from ``model._target_`` and reads roles from its shapes; the
project's data come from ``data._target_`` as tensors or torch Datasets, and streamed batches give the same run
as data on the device; what muso cannot parameterize is refused before any work, naming the parameter; the
whole workflow (params, coord-check, sweep, transfer, report) runs on the project (slow test).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from muso_cli import data
from muso_cli.cli import main
from muso_cli.config import compose, search_path_override
from muso_cli.errors import UsageError
from muso_cli.setup import build_model_and_plan
from muso_cli.validate import validate

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
PROJECT = ["model=tinyresmlp", "data=digits_vec", "device=cpu"]


@pytest.fixture(autouse=True)
def _project_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))


def project(*overrides: str):
    return compose([*PROJECT, *overrides], config_dirs=[EXAMPLES / "conf"])


def usage_error(cfg) -> UsageError:
    with pytest.raises(UsageError) as e:
        validate(cfg, check_data=False)
    return e.value


# ---------------------------------------------------------------------------------------------------------
# The project's model and data

def test_the_projects_model_and_data_through_the_search_path():
    cfg = validate(project("param=somup", "optimizer=kfac", "model.width=128"))
    model, plan = build_model_and_plan(cfg, *data.spec(cfg.data))
    assert type(model).__name__ == "ResidualMLP" and model.readout.out_features == 10
    roles = {n: (s.role, s.width_mult) for n, s in plan.specs.items()}
    assert roles["embed.weight"] == ("input", 4.0) and roles["mixers.0.weight"] == ("hidden", 4.0)
    assert roles["readout.weight"] == ("output", 4.0) and roles["norms.1.weight"] == ("vector", 4.0)
    assert plan.lr_mult["readout.weight"] == 1.0 and plan.lr_mult["norm.weight"] == 4.0  # K-FAC / its SGD part
    assert data.load(cfg.data).x_train.shape == (1348, 64)


def test_params_on_the_projects_model(capsys):
    conf = search_path_override([EXAMPLES / "conf"])
    assert main(["params", conf, *PROJECT, "param=mup", "optimizer=adam", "model.width=64"]) == 0
    out = capsys.readouterr().out
    assert "model=tinyresmlp width=64 base_width=32" in out
    assert next(line for line in out.splitlines() if line.startswith("mixers.0.weight")).split()[2] == "hidden"


def test_config_dir_is_the_search_path_override_a_study_records(tmp_path, capsys):
    args = ["--config-dir", str(EXAMPLES / "conf"), *PROJECT, "study.lr=[0.5]", "study.params=[somup]",
            "train.steps=2", f"study.root={tmp_path}", "study.name=cd", "--no-launch"]
    assert main(["sweep", *args]) == 0
    recorded = OmegaConf.load(tmp_path / "cd" / "study.yaml").overrides
    assert search_path_override([EXAMPLES / "conf"]) in recorded
    twice = ["params", "--config-dir", str(EXAMPLES / "conf"), search_path_override([EXAMPLES / "conf"]), *PROJECT]
    assert main(twice) == 2 and "hydra.searchpath: is given twice" in capsys.readouterr().err


def test_an_option_of_your_own_needs_its_folder_in_the_search_path():
    with pytest.raises(UsageError, match="has no option 'tinyresmlp'") as e:
        compose(["model=tinyresmlp"])
    assert "hydra.searchpath" in e.value.fix
    with pytest.raises(UsageError, match="not a folder"):
        compose(PROJECT, config_dirs=[EXAMPLES / "no-such-conf"])


def test_datasets_are_the_same_data_as_tensors():
    tensors = data.load(project().data)
    datasets = data.load(project("data._target_=tinyproj.data.digits_datasets").data)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(tensors, field), getattr(datasets, field)), field
    assert datasets.num_classes == 10


def test_streaming_changes_where_the_data_sit_not_the_run(tmp_path):
    """The same seed, steps and batches: data on the device and data streamed from a Dataset give one run."""
    from muso_cli import train

    runs = {}
    for stream in ("false", "true"):
        cfg = project("data._target_=tinyproj.data.digits_datasets", f"data.stream={stream}", "data.num_classes=10",
                      "model.width=64", "optimizer=sgd", "optimizer.lr=0.1", "train.steps=30",
                      "train.batch_size=32", "train.eval_every=15", "train.eval_train_samples=200",
                      "train.progress=false")
        assert train.run(cfg, tmp_path / stream)["status"] == "ok"
        runs[stream] = [json.loads(line) for line in (tmp_path / stream / "metrics.jsonl").read_text().splitlines()]
    assert isinstance(data.load(cfg.data).x_test, data.Streamed)
    for resident, streamed in zip(runs["false"], runs["true"]):
        for key in ("train_loss", "test_loss", "test_acc"):
            assert resident[key] == pytest.approx(streamed[key], rel=1e-5), key


def test_streamed_datasets_need_the_number_of_classes():
    cfg = project("data._target_=tinyproj.data.digits_datasets", "data.stream=true")
    with pytest.raises(UsageError) as e:
        data.load(cfg.data)
    assert e.value.key == "data.num_classes"


def three_tensors():
    return torch.zeros(3), torch.zeros(3), torch.zeros(3)


def test_a_loader_returning_something_else_is_refused():
    e = usage_error(project("data=custom", f"data._target_={__name__}.three_tensors"))
    assert e.key == "data._target_" and "returned a tuple of Tensor, Tensor, Tensor" in e.problem


# ---------------------------------------------------------------------------------------------------------
# What muso refuses, naming the key or the parameter

@pytest.mark.parametrize("overrides, key, words", [
    (["model=custom", "model._target_=nopkg.nets.Net"], "model._target_", "pip install -e"),
    (["+model.depthh=3"], "model.depthh", "takes no argument 'depthh'"),
    (["model.width_arg=size"], "model.width_arg", "takes no argument 'size'"),
    (["model.name=null"], "model.name", "needs a short name"),
    (["data.splitseed=1"], "data.splitseed", "not a config key"),
    (["+data.seed=1"], "data.seed", "takes no argument 'seed'"),
])
def test_bad_model_and_data_keys_name_themselves(overrides, key, words):
    try:
        e = usage_error(project(*overrides))
    except UsageError as composed:  # refused while composing (an unknown key without +)
        e = composed
    errors = getattr(e, "errors", [e])
    assert any(err.key == key and words in str(err) for err in errors), [str(err) for err in errors]


def test_muso_models_and_targets_do_not_mix():
    e = usage_error(compose(["+model._target_=tinyproj.nets.ResidualMLP"]))
    assert e.key == "model.width_arg" and "model=custom" in e.fix


class Fixed(nn.Module):
    """A width argument that sizes nothing."""

    def __init__(self, width: int):
        super().__init__()
        self.layer = nn.Linear(64, 10)

    def forward(self, x):
        return self.layer(x)


class RawReadout(nn.Module):
    """A readout as a bare [width, classes] matrix: is it width → classes or classes → width?"""

    def __init__(self, width: int):
        super().__init__()
        self.embed = nn.Linear(64, width)
        self.w = nn.Parameter(torch.randn(width, 10))

    def forward(self, x):
        return self.embed(x).relu() @ self.w


class TorchAttention(nn.Module):
    """torch's own nn.MultiheadAttention: its q/k/v projections are one bare [3·width, width] matrix."""

    def __init__(self, width: int):
        super().__init__()
        self.embed = nn.Linear(64, width)
        self.attn = nn.MultiheadAttention(width, 4, batch_first=True)
        self.readout = nn.Linear(width, 10)

    def forward(self, x):
        h = self.embed(x)[:, None]
        return self.readout(self.attn(h, h, h)[0][:, 0])


def own(target: str, *overrides: str):
    return project("model=custom", f"model._target_={__name__}.{target}", "model.base_width=16", *overrides)


def test_a_width_that_sizes_nothing_is_refused():
    e = usage_error(own("Fixed"))
    assert e.key == "model.width_arg" and "nothing scales with the width" in e.problem


def test_a_matrix_of_unknown_layout_is_refused_by_name():
    e = usage_error(own("RawReadout", "optimizer=adam"))
    assert e.key == "w" and "cannot tell its fan-in from its fan-out" in e.problem


@pytest.mark.parametrize("optimizer", ["kfac", "shampoo"])
def test_a_matrix_the_optimizer_cannot_precondition_is_refused_by_name(optimizer):
    e = usage_error(own("TorchAttention", f"optimizer={optimizer}"))
    assert e.key == "attn.in_proj_weight" and "MultiheadAttention" in e.problem and "nn.Linear" in e.fix
    validate(own("TorchAttention", "optimizer=adam"), check_data=False)  # Adam needs no layer structure


def test_torchs_attention_is_warned_about_where_the_plan_gets_it_wrong():
    """nn.MultiheadAttention keeps SP's 1/√d_head logits: a warning under µP and second-order µP, whatever the
    optimizer; under Muon its packed q|k|v matrix gets AdamW's step, not Muon's: a warning under every param. SP
    with SGD or Adam gets it right: no warning. (K-FAC, Shampoo and SOAP refuse it: the test above.)"""
    for param, optimizer, words in [("mup", "adam", "1/d_head"), ("somup", "sgd", "1/d_head"),
                                    ("sp", "muon", "packed q|k|v"), ("mup", "muon", "packed q|k|v")]:
        with pytest.warns(UserWarning, match="MultiheadAttention") as caught:
            validate(own("TorchAttention", f"param={param}", f"optimizer={optimizer}"), check_data=False)
        message = " ".join(str(w.message) for w in caught)
        assert words in message and "WidthMultiplier('attention', d_head)" in message, (param, optimizer, message)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        validate(own("TorchAttention", "param=sp", "optimizer=adam"), check_data=False)


class PositionsAndClassToken(nn.Module):
    """The timm/ViT layout: a class token (1, 1, d) and a position embedding (1, T, d), bare parameters."""

    def __init__(self, width: int):
        super().__init__()
        self.embed = nn.Linear(16, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, width))
        self.readout = nn.Linear(width, 10)

    def forward(self, x):
        tokens = self.embed(x.view(len(x), 4, 16))
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], 1) + self.pos_embed
        return self.readout(tokens.relu()[:, 0])


@pytest.mark.parametrize("optimizer", ["adam", "kfac", "muon"])
def test_a_position_embedding_and_class_token_are_rows_of_features_with_the_input_role(optimizer):
    """(1, T, d) and (1, 1, d), whose last dimension alone scales, are an embedding's rows in another layout: input
    role, fan-in 1 (init σ, as nn.Embedding's), the input cell of the lr table (K-FAC: SGD's, as for embeddings)."""
    cfg = validate(own("PositionsAndClassToken", "model.width=64", "param=mup", f"optimizer={optimizer}"),
                   check_data=False)
    _, plan = build_model_and_plan(cfg, *data.spec(cfg.data), device="meta")
    for name in ("pos_embed", "cls_token"):
        s = plan.specs[name]
        assert (s.role, s.width_mult, s.fan_in, s.layout) == ("input", 4.0, 1, "rows")
        assert plan.init_std[name] == 1.0
    expected = {"adam": 1.0, "kfac": 4.0, "muon": 1.0}[optimizer]  # mup.adam input: m^0; mup.sgd input: m^1
    assert plan.lr_mult["pos_embed"] == expected and plan.lr_mult["cls_token"] == expected


class OddTensor(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.embed = nn.Linear(64, width)
        self.w = nn.Parameter(torch.zeros(width, 3, width))
        self.readout = nn.Linear(width, 10)

    def forward(self, x):
        return self.readout(self.embed(x))


class DepthFromWidth(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(64, 64) for _ in range(width // 16))
        self.readout = nn.Linear(64, 10)

    def forward(self, x):
        return self.readout(x)


def test_shapes_whose_roles_cannot_be_read_are_refused_by_name():
    e = usage_error(own("OddTensor"))
    assert e.key == "w" and "the last one alone" in e.problem and "position embedding" in e.fix
    e = usage_error(own("DepthFromWidth", "model.width=32"))
    assert e.key == "layers.1.weight" and "not in the base" in e.problem


def test_the_coordinate_check_lists_what_it_cannot_observe(tmp_path, capsys):
    """Parameters with a role whose output no hook sees are listed (printed and in verdict.csv), never dropped:
    MultiheadAttention's packed q|k|v (held by no Linear) and its out_proj (a Linear whose forward never runs: its
    weight is read directly), a position embedding and a class token (bare tensors)."""
    import pandas as pd

    common = [*PROJECT, "model=custom", "model.base_width=16", "coord.widths=[16,32,64]", "coord.fit_from=16",
              "coord.steps=1", "param=mup", "optimizer=adam", "optimizer.lr=0.001"]
    for target, missed in [("TorchAttention", {"attn.in_proj_weight", "attn.out_proj.weight"}),
                           ("PositionsAndClassToken", {"pos_embed", "cls_token"})]:
        out = tmp_path / target
        args = ["coord-check", "--config-dir", str(EXAMPLES / "conf"), *common,
                f"model._target_={__name__}.{target}", f"coord.out={out}"]
        assert main(args) == 0
        printed = capsys.readouterr().out
        verdict = pd.read_csv(out / "verdict.csv")
        assert set(verdict[verdict.verdict == "not observed"].layer) == missed
        assert all(f"not observed: {name}" in printed for name in missed)
        assert (verdict[verdict.verdict != "not observed"].verdict.isin(["flat", "grows", "shrinks"])).all()


def test_a_zero_readout_tied_to_the_embedding_is_refused():
    e = usage_error(compose(["model=gpt", "data=pystdlib", "model.tie=true", "param=mup",
                             "param.readout_zero_init=true"]))
    assert e.key == "param.readout_zero_init" and "model.tie=false" in e.fix


# ---------------------------------------------------------------------------------------------------------
# The example project end to end, as its README walks through it

@pytest.mark.slow
def test_the_example_project_end_to_end(tmp_path):
    env = {**os.environ, "MUSO": f"{sys.executable} -m muso_cli",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(["bash", str(EXAMPLES / "run.sh"), str(tmp_path)], env=env, capture_output=True, text=True,
                         timeout=1500)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert next(line for line in lines if line.startswith("mixers.0.weight")).split()[2] == "hidden"
    verdicts = [line.split() for line in lines if line.split()[-1:] in (["flat"], ["grows"], ["shrinks"])]
    assert {v[0] for v in verdicts} == {"embed", "mixers.0", "mixers.1", "readout"}
    assert all(v[-1] == "flat" for v in verdicts), verdicts
    transfers = json.loads((tmp_path / "resmlp" / "transfer.json").read_text())
    assert set(transfers) >= {"sp", "somup"}
    assert (tmp_path / "resmlp" / "report" / "report.md").is_file()
