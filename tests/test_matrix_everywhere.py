"""Muon and SOAP work wherever SGD, Adam, K-FAC and Shampoo do: `muso params` (the lr each layer is stepped with),
`muso run` interrupted and resumed from its checkpoint, `muso sweep` through the pool launcher with the W&B
mirror, `muso transfer`, `muso report` and `muso coord-check`, on synthetic data at small widths."""
from __future__ import annotations

import json
import math

import pytest
import torch

from handmade import FAST
from muso_cli import optim, stop, track, train
from muso_cli.cli import main
from muso_cli.config import compose
from muso_cli.setup import build_model_and_plan
from muso_cli.study.store import Study
from wandb_records import offline_run

MATRIX = [pytest.param(["optimizer=muon"], id="muon"),
          pytest.param(["optimizer=soap", "optimizer.inverse_interval=5"], id="soap")]


def params_json(capsys, *overrides) -> dict[str, dict]:
    capsys.readouterr()
    assert main(["params", "--json", *overrides]) == 0
    return {r["name"]: r for r in json.loads(capsys.readouterr().out)["rows"]}


def test_params_shows_the_lr_muon_steps_each_layer_with(capsys):
    """somup at m = 4 (MLP 784 → 256 → 256 → 10, base 64): Muon's lr 0.02 × m^½ / 1 / m^-½ for the input / hidden /
    readout weights, AdamW's 1e-3 for the biases (vectors: 1; the readout bias fixed). With adjust_lr_fn=none
    torch's shape factor is 1; with original it is √max(1, d_out/d_in), here √(2048/784) on the input of width
    2048 (m = 32) and 1 elsewhere: the column says what the step does, not what the table alone says."""
    rows = params_json(capsys, "optimizer=muon", "param=somup", "model.width=256")
    assert {n: r["lr"] for n, r in rows.items()} == pytest.approx({
        "layers.0.weight": 0.04, "layers.1.weight": 0.02, "layers.2.weight": 0.01,
        "layers.0.bias": 1e-3, "layers.1.bias": 1e-3, "layers.2.bias": 1e-3})
    assert rows["layers.0.weight"]["algorithm"] == "muon" and rows["layers.0.bias"]["algorithm"] == "adam"
    wide = params_json(capsys, "optimizer=muon", "param=somup", "model.width=2048", "optimizer.adjust_lr_fn=original")
    assert wide["layers.0.weight"]["lr"] == pytest.approx(0.02 * math.sqrt(32) * math.sqrt(2048 / 784))
    assert wide["layers.1.weight"]["lr"] == pytest.approx(0.02)
    assert wide["layers.2.weight"]["lr"] == pytest.approx(0.02 / math.sqrt(32))


@pytest.mark.parametrize("name", ["adam", "muon", "soap"])
def test_decoupled_weight_decay_shrinks_every_matrix_by_one_minus_lr_times_lambda_at_any_width(name):
    """The table's weight-decay row (decoupled: λ_layer = λ·m^-e_lr) through each optimizer's own decay: with zero
    gradients a step is the decay alone, and every weight matrix shrinks by 1 − η·λ, whatever its layer's lr
    multiplier (somup at m = 4: Muon's m^½ / 1 / m^-½, Adam's 1 / m⁻¹ / m⁻¹); biases are not decayed."""
    lr = {"adam": 1e-3, "muon": 0.02, "soap": 3e-3}[name]
    cfg = compose([f"optimizer={name}", f"optimizer.lr={lr}", "optimizer.weight_decay=0.5", "param=somup",
                   "model.width=256", "data=synthetic"])
    model, plan = build_model_and_plan(cfg, (1, 28, 28), 10)
    opt = optim.build(cfg.optimizer, model, plan)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert {n for n in before if plan.lr_mult[n] != 1.0 and before[n].dim() == 2}  # the multipliers differ
    for n, p in model.named_parameters():
        shrink = 1 - lr * 0.5 if p.dim() == 2 else 1.0
        torch.testing.assert_close(p.detach(), before[n] * shrink, rtol=1e-6, atol=0, msg=n)


@pytest.mark.parametrize("optimizer", MATRIX)
def test_an_interrupted_run_resumes_from_its_checkpoint_to_the_numbers_of_an_uninterrupted_one(
        tmp_path, monkeypatch, optimizer):
    """A stop signal during the step-20 evaluation checkpoints there (weights, the optimizer's state_dict: Muon's
    momentum and AdamW moments, SOAP's statistics, eigenbases and moments); the resumed run ends with the final
    numbers of a run never stopped, to the bit."""
    cfg = compose([*FAST, *optimizer, "param=somup", "model.width=32", "train.steps=40", "train.eval_every=20",
                   "train.threads=1"])
    evaluate, calls = train.evaluate, []

    def evaluate_then_stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # train and test loss of step 20
            stop.STOP.signum = 15
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(train, "evaluate", evaluate_then_stop)
    out = tmp_path / "run"
    with pytest.raises(stop.Interrupted, match="step 20"):
        train.run(cfg, out, quiet=True)
    stop.STOP.signum = None
    monkeypatch.setattr(train, "evaluate", evaluate)
    resumed = train.run(cfg, out, quiet=True)
    assert [r["step"] for r in track.read_json_lines(out / "metrics.jsonl")] == [0, 20, 40]
    fresh = train.run(cfg, tmp_path / "fresh", quiet=True)
    assert resumed["status"] == fresh["status"] == "ok" and resumed["final"] == fresh["final"]
    assert math.isfinite(fresh["final"]["train_loss"])


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", MATRIX)
def test_sweep_transfer_report_and_coord_check(tmp_path, capsys, optimizer):
    """The study commands end to end (pool launcher, W&B offline mirror tagged with the optimizer), then the
    coordinate check's files."""
    name = optimizer[0].split("=")[1]
    root = tmp_path / "studies"
    assert main(["sweep", *FAST, *optimizer, f"study.root={root}", "study.name=s", "study.lr=[0.003,0.01]",
                 "study.params=[sp,somup]", "launcher=pool", "launcher.workers=2", "logger.mode=offline"]) == 0
    study = Study(root / "s")
    assert {study.status(t) for t in study.trials()} == {"ok"}
    run = offline_run(study.path, study.trials()[0].id)
    assert f"optimizer:{name}" in run["run"].tags
    assert main(["transfer", str(study.path), "transfer.widths=[32]", "--allow-edge"]) == 0
    assert main(["report", str(study.path)]) == 0
    saved = json.loads((study.path / "report" / "report.json").read_text())
    assert {p: v["verdict"] for p, v in saved["params"].items()} == {"sp": "undecided", "somup": "undecided"}
    out = tmp_path / "coord"
    assert main(["coord-check", *optimizer, "data=synthetic", "model.base_width=16", "coord.widths=[16,32,64]",
                 "coord.fit_from=16", f"coord.out={out}"]) == 0
    assert {"coord.csv", "slopes.csv", "verdict.csv", "coord.png"} <= {p.name for p in out.iterdir()}


def test_params_of_a_gpt_gives_embeddings_and_gains_adams_step_under_muon(capsys):
    """Under Muon the GPT's embeddings and LayerNorm gains are AdamW's (UPDATED_LIKE), with Adam's µP column (input
    and vector: 1); its attention weights are Muon's (hidden: 1); a forward multiplier's row has no lr."""
    capsys.readouterr()
    assert main(["params", "--json", "optimizer=muon", "param=somup", "model=gpt", "data=pystdlib"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    by_name = {r["name"]: r for r in rows}
    assert by_name["tok_emb.weight"]["algorithm"] == "adam" and by_name["tok_emb.weight"]["lr"] == pytest.approx(1e-3)
    assert by_name["blocks.0.ln1.weight"]["lr"] == pytest.approx(1e-3)
    assert by_name["blocks.0.attn.q.weight"]["algorithm"] == "muon"
    assert by_name["blocks.0.attn.q.weight"]["lr"] == pytest.approx(0.02)
    assert any(r["lr"] is None for r in rows)  # the attention logits' forward multiplier
