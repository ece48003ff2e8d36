"""Shampoo against explicit float64 matrix roots (torch.linalg.eigh in the test) of its statistics."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from muso_cli import parametrize
from muso_cli.config import compose
from muso_cli.models.mlp import MLP
from muso_cli.optim import build
from muso_cli.optim.shampoo import Shampoo

D = torch.float64


def matrix(layer: nn.Module, bias: bool = True) -> torch.Tensor:
    """[weight.flatten(1) | bias] in float64 (the bias column only when asked and present)."""
    w = layer.weight.detach().flatten(1).to(D)
    return torch.cat([w, layer.bias.detach().to(D)[:, None]], 1) if bias and layer.bias is not None else w


def grad_matrix(layer: nn.Module, bias: bool = True) -> torch.Tensor:
    w = layer.weight.grad.flatten(1).to(D)
    return torch.cat([w, layer.bias.grad.to(D)[:, None]], 1) if bias and layer.bias is not None else w


def inverse_root(s: torch.Tensor, eps: float, e: float, relative: bool) -> tuple[torch.Tensor, float]:
    lam, q = torch.linalg.eigh(s)
    lam = lam.clamp(min=0)
    eps = eps * lam.max().item() if relative else eps
    return q @ torch.diag((lam + eps) ** -e) @ q.T, eps


def backward(model, x, y):
    loss = F.cross_entropy(model(x), y)
    for p in model.parameters():
        p.grad = None
    loss.backward()
    return loss


@pytest.mark.parametrize("n, factored, path", [(2, True, "factored"), (2, False, "dense"), (40, True, "dense")])
@pytest.mark.parametrize("statistics, rule, exponent", [("ema", "relative", 0.25), ("sum", "constant", 0.25),
                                                        ("ema", "constant", 0.5)])
def test_linear_steps_match_explicit_roots(n, factored, path, statistics, rule, exponent):
    """Two steps: L, R statistics (EMA or sum), ε rule, D = L^-e G R^-e, momentum, weight decay after."""
    torch.manual_seed(0)
    layer = nn.Linear(7, 5)
    model = nn.Sequential(layer)
    lr, eps, decay, mom, wd = 0.1, 0.01, 0.6, 0.5, 0.02
    opt = Shampoo(model, lr=lr, damping=eps, damping_rule=rule, exponent=exponent, statistics=statistics,
                  ema_decay=decay, momentum=mom, weight_decay=wd, factored=factored)
    L = R = buf = None
    for _ in range(2):
        x, y = torch.randn(n, 7), torch.randint(0, 5, (n,))
        before = matrix(layer)
        backward(model, x, y)
        g = grad_matrix(layer)
        opt.step()
        if L is None:
            L, R = g @ g.T, g.T @ g
        elif statistics == "sum":
            L, R = L + g @ g.T, R + g.T @ g
        else:
            L, R = decay * L + (1 - decay) * g @ g.T, decay * R + (1 - decay) * g.T @ g
        left, eps_l = inverse_root(L, eps, exponent, rule == "relative")
        right, eps_r = inverse_root(R, eps, exponent, rule == "relative")
        d = left @ g @ right + wd * before
        buf = d if buf is None else mom * buf + d
        torch.testing.assert_close(matrix(layer) - before, -lr * buf, rtol=1e-5, atol=1e-5)
        assert opt.damping()["0"] == pytest.approx({"L": eps_l, "R": eps_r}, rel=1e-6)
        assert opt.layers["0"].path == path


def test_conv_weight_is_out_by_in_k_k_with_bias_column():
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(4 * 16, 2))
    opt = Shampoo(model, lr=0.1, damping=1e-3)
    before = matrix(conv)
    backward(model, torch.randn(5, 3, 4, 4), torch.randint(0, 2, (5,)))
    g = grad_matrix(conv)
    assert g.shape == (4, 3 * 9 + 1)
    opt.step()
    left, _ = inverse_root(g @ g.T, 1e-3, 0.25, True)
    right, _ = inverse_root(g.T @ g, 1e-3, 0.25, True)
    torch.testing.assert_close(matrix(conv) - before, -0.1 * left @ g @ right, rtol=1e-5, atol=1e-5)


def test_plain_tensors_precondition_each_matrix_alone():
    """Shampoo(model.parameters()): each ≥2-D tensor on its own (no bias column), 1-D tensors SGD."""
    torch.manual_seed(2)
    layer = nn.Linear(6, 4)
    opt = Shampoo(layer.parameters(), lr=0.1, damping=1e-2)
    w0, b0 = matrix(layer, bias=False), layer.bias.detach().to(D).clone()
    backward(layer, torch.randn(9, 6), torch.randint(0, 4, (9,)))
    g, gb = grad_matrix(layer, bias=False), layer.bias.grad.to(D)
    opt.step()
    left, _ = inverse_root(g @ g.T, 1e-2, 0.25, True)
    right, _ = inverse_root(g.T @ g, 1e-2, 0.25, True)
    torch.testing.assert_close(matrix(layer, bias=False) - w0, -0.1 * left @ g @ right, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.bias.detach().to(D) - b0, -0.1 * gb)


def test_somup_eps_follows_the_plan_multipliers():
    """Absolute ε under somup: ε × m^-1, 1, m for input / hidden / output (the plan's damping_eps)."""
    torch.manual_seed(3)
    model = MLP((12,), 3, width=32)
    with torch.device("meta"):
        base = MLP((12,), 3, width=8)
    plan = parametrize.make_plan(model, base, "somup", "shampoo", damping_rule="somup")
    plan.init_(model)
    opt = Shampoo(plan.param_groups(model, lr=0.05), model=model, damping=0.01)
    backward(model, torch.randn(10, 12), torch.randint(0, 3, (10,)))
    opt.step()
    got = opt.damping()
    for layer, mult in plan.damping_mult.items():
        assert got[layer] == pytest.approx({"L": 0.01 * mult["eps"], "R": 0.01 * mult["eps"]})
    assert [got[f"layers.{i}"]["L"] for i in range(3)] == pytest.approx([0.01 / 4, 0.01, 0.01 * 4])


def test_builder_passes_config_and_plan():
    cfg = compose(["optimizer=shampoo", "param=somup", "optimizer.grafting=sgd", "optimizer.exponent=0.5"])
    model = MLP((12,), 3, width=32)
    with torch.device("meta"):
        base = MLP((12,), 3, width=8)
    plan = parametrize.make_plan(model, base, "somup", "shampoo", power=2 * cfg.optimizer.exponent)
    opt = build(cfg.optimizer, model, plan, "xent")
    assert isinstance(opt, Shampoo) and all(g["exponent"] == 0.5 and g["grafting"] == "sgd" for g in opt.param_groups)
    backward(model, torch.randn(10, 12), torch.randint(0, 3, (10,)))
    opt.step()
    assert set(opt.damping()) == {"layers.0", "layers.1", "layers.2"}


@pytest.mark.parametrize("grafting", ["sgd", "adagrad"])
def test_grafting_keeps_the_direction_and_takes_the_grafted_norm(grafting):
    torch.manual_seed(4)
    layer = nn.Linear(6, 5)
    model = nn.Sequential(layer)
    opt = Shampoo(model, lr=0.1, damping=1e-2, grafting=grafting, graft_eps=1e-8)
    before = matrix(layer)
    backward(model, torch.randn(8, 6), torch.randint(0, 5, (8,)))
    g = grad_matrix(layer)
    opt.step()
    left, _ = inverse_root(g @ g.T, 1e-2, 0.25, True)
    right, _ = inverse_root(g.T @ g, 1e-2, 0.25, True)
    shampoo = left @ g @ right
    grafted = g if grafting == "sgd" else g / (g.abs() + 1e-8)   # AdaGrad's first step: G / (√(G²) + ε)
    expected = shampoo * torch.linalg.matrix_norm(grafted) / torch.linalg.matrix_norm(shampoo)
    torch.testing.assert_close(matrix(layer) - before, -0.1 * expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rule", ["relative", "constant"])
def test_no_nan_from_zero_inputs_or_small_batches(rule):
    torch.manual_seed(5)
    for bias in (True, False):
        model = MLP((20,), 4, width=64, bias=bias)
        opt = Shampoo(model, lr=0.05, damping=1e-6, damping_rule=rule)
        for x in (torch.zeros(8, 20), torch.randn(2, 20), torch.zeros(2, 20)):
            backward(model, x, torch.randint(0, 4, (len(x),)))
            opt.step()
            assert all(torch.isfinite(p).all() for p in model.parameters())
            for layer in opt.layers.values():
                state = opt.state[layer.weight]
                assert torch.isfinite(state["L_root"]).all() and torch.isfinite(state["R_root"]).all()


@pytest.mark.parametrize("grafting", ["none", "adagrad"])
def test_state_dict_round_trip_continues_identically(grafting):
    """k steps, save (weights_only-loadable), load into a fresh optimizer on a fresh model, continue:
    bit-identical to the uninterrupted run."""
    torch.manual_seed(6)
    model = MLP((10,), 4, width=24)
    kwargs = dict(lr=0.02, damping=1e-2, momentum=0.9, weight_decay=1e-3, statistics_interval=2, inverse_interval=3,
                  grafting=grafting)
    opt = Shampoo(model, **kwargs)
    batches = [(torch.randn(6, 10), torch.randint(0, 4, (6,))) for _ in range(9)]

    def steps(m, o, part):
        for x, y in part:
            backward(m, x, y)
            o.step()

    steps(model, opt, batches[:4])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    steps(model, opt, batches[4:])
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    twin = MLP((10,), 4, width=24)
    twin.load_state_dict(saved["model"])
    reloaded = Shampoo(twin, **kwargs)
    reloaded.load_state_dict(saved["opt"])
    steps(twin, reloaded, batches[4:])
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.isfinite(p).all()
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_float32_eigh_matches_explicit_roots():
    """eigh_dtype="float32": the same roots to float32 accuracy."""
    torch.manual_seed(8)
    layer = nn.Linear(9, 6)
    model = nn.Sequential(layer)
    opt = Shampoo(model, lr=0.1, damping=0.01, eigh_dtype="float32")
    before = matrix(layer)
    backward(model, torch.randn(12, 9), torch.randint(0, 6, (12,)))
    g = grad_matrix(layer)
    opt.step()
    left, _ = inverse_root(g @ g.T, 0.01, 0.25, True)
    right, _ = inverse_root(g.T @ g, 0.01, 0.25, True)
    torch.testing.assert_close(matrix(layer) - before, -0.1 * left @ g @ right, rtol=1e-4, atol=1e-5)
