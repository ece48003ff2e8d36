"""Muon: torch.optim.Muon's update for the weights of Linear/Conv2d layers, torch.optim.AdamW's for the rest, as one
torch optimizer whose width scaling is the table's alone (adjust_lr_fn="none"), built from the config like every
other optimizer, with its state in torch's state_dict."""
from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from muso_cli import parametrize
from muso_cli.config import compose
from muso_cli.errors import HyperparameterError
from muso_cli.models.mlp import MLP
from muso_cli.optim import build, check
from muso_cli.optim.muon import Muon


def batches(n: int, seed: int = 0, size: int = 6) -> list:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 10, generator=g), torch.randint(0, 4, (size,), generator=g)) for _ in range(n)]


def train(model, opts, data) -> None:
    for x, y in data:
        for o in opts:
            o.zero_grad()
        F.cross_entropy(model(x), y).backward()
        for o in opts:
            o.step()


def twins(seed: int = 0) -> tuple[MLP, MLP]:
    """MLP 10 → 16 → 16 → 4: a tall input matrix [16, 10], a square hidden one, a wide readout [4, 16]."""
    torch.manual_seed(seed)
    a, b = MLP((10,), 4, width=16), MLP((10,), 4, width=16)
    b.load_state_dict(a.state_dict())
    return a, b


def split(model: nn.Module) -> tuple[list, list]:
    return ([p for p in model.parameters() if p.dim() >= 2], [p for p in model.parameters() if p.dim() < 2])


@pytest.mark.parametrize("adjust", ["original", "match_rms_adamw"])
def test_the_update_is_torchs_muon_for_matrices_and_adamw_for_the_rest(adjust):
    """Bit for bit what torch.optim.Muon and torch.optim.AdamW do side by side, for each of torch's shape rules
    (Newton–Schulz in bfloat16, as torch runs it)."""
    a, b = twins(1)
    options = dict(lr=0.05, momentum=0.9, weight_decay=0.1)
    ours = Muon(a, adjust_lr_fn=adjust, ns_dtype="bfloat16", adamw_lr=3e-3, beta1=0.8, beta2=0.99, eps=1e-6, **options)
    matrices, vectors = split(b)
    theirs = [torch.optim.Muon(matrices, adjust_lr_fn=adjust, **options),
              torch.optim.AdamW(vectors, lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)]
    train(a, [ours], batches(4))
    train(b, theirs, batches(4))
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_adjust_none_takes_the_group_lr_as_the_layers_lr():
    """none: no shape factor. torch's original rule multiplies the tall input matrix [16, 10] by √(16/10) and
    leaves the square and the wide ones alone; giving torch lr/√1.6 there reproduces ours."""
    a, b = twins(2)
    lr = 0.05
    ours = Muon(a, lr=lr, ns_dtype="bfloat16")
    first, *others = split(b)[0]
    theirs = torch.optim.Muon([{"params": [first], "lr": lr / math.sqrt(16 / 10)}, {"params": others}], lr=lr,
                              weight_decay=0.0, adjust_lr_fn="original")
    train(a, [ours], batches(1))
    train(b, [theirs], batches(1))  # one step: the matrices' update does not depend on the vectors
    for p, q in zip(split(a)[0], split(b)[0]):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7)


def test_a_conv_weight_is_updated_as_its_flattened_matrix():
    """A conv weight [8, 3, 3, 3] moves exactly as torch's Muon moves the matrix [8, 27] with the same gradient."""
    torch.manual_seed(3)
    conv = nn.Conv2d(3, 8, 3, bias=False)
    flat = nn.Parameter(conv.weight.detach().flatten(1).clone())
    ours = Muon(conv, lr=0.1, momentum=0.9, ns_dtype="bfloat16")
    theirs = torch.optim.Muon([flat], lr=0.1, momentum=0.9, weight_decay=0.0, adjust_lr_fn="original")
    for step in range(3):
        x = torch.randn(4, 3, 6, 6)
        ours.zero_grad()
        conv(x).square().mean().backward()
        flat.grad = conv.weight.grad.flatten(1).clone()
        ours.step()
        theirs.step()
    assert theirs.param_groups[0]["params"][0].shape == (8, 27)  # square-or-wide: torch's factor is 1 here
    assert torch.equal(conv.weight.flatten(1), flat)
    assert ours.state[conv.weight]["momentum_buffer"].shape == conv.weight.shape


def test_the_plan_decides_which_part_updates_each_parameter_and_its_lr():
    """Built from the config: somup's per-layer lr on Muon's matrices (m^½ / 1 / m^-½ at m = 4) and AdamW's µP
    lr (adamw_lr) on the biases."""
    cfg = compose(["optimizer=muon", "param=somup", "optimizer.lr=0.02", "optimizer.adamw_lr=0.001",
                   "optimizer.weight_decay=0.1"])
    model = MLP((784,), 10, width=256)
    with torch.device("meta"):
        base = MLP((784,), 10, width=64)
    opt = build(cfg.optimizer, model, parametrize.make_plan(model, base, "somup", "muon"))
    groups = {g["param_names"][0]: g for g in opt.param_groups}
    assert [(groups[f"layers.{i}.weight"]["algorithm"], groups[f"layers.{i}.weight"]["lr"]) for i in range(3)] == \
        [("muon", pytest.approx(0.04)), ("muon", pytest.approx(0.02)), ("muon", pytest.approx(0.01))]
    assert {groups[f"layers.{i}.bias"]["algorithm"] for i in range(3)} == {"adam"}
    assert groups["layers.1.bias"]["lr"] == pytest.approx(0.001) and groups["layers.1.bias"]["weight_decay"] == 0
    assert groups["layers.0.weight"]["adjust_lr_fn"] == "none"
    for i in range(3):  # decoupled decay: lr·λ the same for every layer
        assert groups[f"layers.{i}.weight"]["lr"] * groups[f"layers.{i}.weight"]["weight_decay"] == \
            pytest.approx(0.02 * 0.1)


def test_decoupled_weight_decay_shrinks_the_weight_by_lr_times_lambda():
    torch.manual_seed(4)
    layer = nn.Linear(6, 5, bias=False)
    opt = Muon(layer, lr=0.1, weight_decay=0.5, momentum=0.0)
    w0 = layer.weight.detach().clone()
    layer.weight.grad = torch.zeros_like(w0)  # a zero gradient orthogonalises to zero
    opt.step()
    torch.testing.assert_close(layer.weight, (1 - 0.1 * 0.5) * w0)


def test_state_round_trips_through_a_weights_only_checkpoint_and_resumes_bit_identically():
    a, b = twins(5)
    options = dict(lr=0.05, momentum=0.9, weight_decay=0.01)
    opt = Muon(a, **options)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    data = batches(6)
    for x, y in data[:3]:
        opt.zero_grad()
        F.cross_entropy(a(x), y).backward()
        opt.step()
        scheduler.step()
    buffer = io.BytesIO()
    torch.save({"model": a.state_dict(), "opt": opt.state_dict(), "sched": scheduler.state_dict()}, buffer)
    train(a, [opt], data[3:])
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    b.load_state_dict(saved["model"])
    reloaded = Muon(b, **options)
    reloaded.load_state_dict(saved["opt"])
    assert [g["lr"] for g in reloaded.param_groups] == [g["lr"] for g in saved["opt"]["param_groups"]]
    assert {g["algorithm"] for g in reloaded.param_groups} == {"muon", "adam"}
    assert set(reloaded.state[b.layers[0].weight]) == {"momentum_buffer"}
    assert set(reloaded.state[b.layers[0].bias]) == {"step", "exp_avg", "exp_avg_sq"}
    train(b, [reloaded], data[3:])
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_a_scheduler_scales_both_parts():
    model = twins()[0]
    opt = Muon(model, lr=0.02, adamw_lr=1e-3)
    torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    assert {g["algorithm"]: g["lr"] for g in opt.param_groups} == {"muon": 0.01, "adam": 5e-4}


def test_groups_added_later_and_plain_tensors_take_their_part_from_their_shape():
    model = twins()[0]
    opt = Muon(list(model.layers[0].parameters()), lr=0.02, adamw_lr=1e-3)
    assert [(g["algorithm"], g["lr"]) for g in opt.param_groups] == [("muon", 0.02), ("adam", 1e-3)]
    opt.add_param_group({"params": [model.layers[1].weight]})
    opt.add_param_group({"params": model.layers[1].bias, "lr": 0.3})
    assert [(g["algorithm"], g["lr"]) for g in opt.param_groups[2:]] == [("muon", 0.02), ("adam", 0.3)]
    train(model, [opt], batches(1))
    assert set(opt.state[model.layers[1].weight]) == {"momentum_buffer"}


@pytest.mark.parametrize("options, key", [
    ({"lr": -1.0}, "lr"), ({"momentum": 1.0}, "momentum"), ({"ns_steps": 0}, "ns_steps"),
    ({"ns_steps": 100}, "ns_steps"), ({"adjust_lr_fn": "sqrt"}, "adjust_lr_fn"), ({"weight_decay": -1}, "weight_decay"),
    ({"adamw_lr": -1e-3}, "adamw_lr"), ({"beta1": 1.0}, "beta1"), ({"beta2": -0.1}, "beta2"), ({"eps": -1.0}, "eps"),
    ({"nesterov": "yes"}, "nesterov"),
])
def test_bad_arguments_name_their_key(options, key):
    model = twins()[0]
    with pytest.raises(HyperparameterError) as e:
        Muon(model, **options)
    assert e.value.key == key and e.value.fix
    with pytest.raises(HyperparameterError) as e:  # the same fact, set by a param group
        Muon([{"params": [model.layers[0].weight], **options}])
    assert e.value.key == key and "param group 0" in str(e.value)


def test_groups_muon_cannot_update_are_refused():
    model = twins()[0]
    for group, key in (({"params": [model.layers[0].bias], "algorithm": "muon"}, "params"),
                       ({"params": list(model.layers[0].parameters())}, "params"),
                       ({"params": [model.layers[0].weight], "algorithm": "sgd"}, "algorithm")):
        with pytest.raises(HyperparameterError) as e:
            Muon([group])
        assert e.value.key == key


def _check(*overrides: str):
    cfg = compose(["optimizer=muon", *overrides])
    model = MLP((12,), 3, width=32)
    with torch.device("meta"):
        base = MLP((12,), 3, width=8)
    return check(cfg.optimizer, model, parametrize.make_plan(model, base, "somup", "muon"))


@pytest.mark.parametrize("overrides, key, needle", [
    (["optimizer.adjust_lr_fn=sqrt"], "optimizer.adjust_lr_fn", "none, original, match_rms_adamw"),
    (["optimizer.momentum=1.5"], "optimizer.momentum", "[0, 1)"),
    (["optimizer.adamw_lr=-1"], "optimizer.adamw_lr", "≥ 0"),
    (["+optimizer.algorithm=muon"], "optimizer.algorithm", "per layer"),
    (["+optimizer.foo=1"], "optimizer.foo", "not an option"),
])
def test_the_registry_reports_refusals_by_config_key(overrides, key, needle):
    errors = _check(*overrides)
    assert len(errors) == 1 and errors[0].key == key and needle in errors[0].problem
    assert _check() == []


def test_float32_newton_schulz_is_the_bfloat16_one_to_bfloat16_precision():
    """The CPU default (float32, 35× faster here) orthogonalises as torch's bfloat16 iteration does, within
    bfloat16's rounding; both are ≈ U S' Vᵀ with S' ∈ (0.5, 1.5) (torch's quintic does not converge to 1)."""
    from muso_cli.optim.muon import orthogonalize
    g = torch.randn(48, 20, generator=torch.Generator().manual_seed(6))
    o32, o16 = orthogonalize(g, 5, torch.float32), orthogonalize(g, 5, torch.bfloat16).float()
    assert (o32 - o16).norm() / o32.norm() < 0.02
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    s = u.T @ o32 @ vh.T  # diagonal: g's singular vectors, each singular value mapped into (0.5, 1.5)
    assert torch.allclose(s, torch.diag(torch.diagonal(s)), atol=0.02)
    assert torch.diagonal(s).min() > 0.5 and torch.diagonal(s).max() < 1.5
