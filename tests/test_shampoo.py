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
                  ema_decay=decay, ema_warmup=False, momentum=mom, weight_decay=wd, factored=factored,
                  eigh_dtype="float64")
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


# -- grafting as the field does it, a late start, float32 roots, non-finite statistics ------------------------

@pytest.mark.parametrize("grafting", ["adagrad", "adam"])
def test_grafting_statistics_over_three_steps(grafting):
    """AdaGrad: H = Σ G⊙G; Adam: V ← β₂V + (1 − β₂)G⊙G from 0, bias-corrected, direction G / (√V̂ + ε) (no first
    moment). The step: Shampoo's direction at the grafted direction's Frobenius norm."""
    torch.manual_seed(9)
    layer = nn.Linear(6, 5)
    model = nn.Sequential(layer)
    beta2, eps = 0.9, 1e-8
    opt = Shampoo(model, lr=0.1, damping=1e-2, grafting=grafting, graft_beta2=beta2, graft_eps=eps,
                  eigh_dtype="float64")
    L = R = H = None
    for t in range(1, 4):
        before = matrix(layer)
        backward(model, torch.randn(8, 6), torch.randint(0, 5, (8,)))
        g = grad_matrix(layer)
        opt.step()
        k = t  # ema_warmup: the plain mean of the first statistics
        L = g @ g.T if L is None else (1 - 1 / k) * L + g @ g.T / k
        R = g.T @ g if R is None else (1 - 1 / k) * R + g.T @ g / k
        if grafting == "adagrad":
            H = g * g if H is None else H + g * g
            grafted = g / (H.sqrt() + eps)
        else:
            H = (1 - beta2) * g * g if H is None else beta2 * H + (1 - beta2) * g * g
            grafted = g / ((H / (1 - beta2 ** t)).sqrt() + eps)
        shampoo = inverse_root(L, 1e-2, 0.25, True)[0] @ g @ inverse_root(R, 1e-2, 0.25, True)[0]
        expected = shampoo * torch.linalg.matrix_norm(grafted) / torch.linalg.matrix_norm(shampoo)
        torch.testing.assert_close(matrix(layer) - before, -0.1 * expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("grafting", ["sgd", "adam"])
def test_every_layers_step_has_the_grafted_optimizers_frobenius_norm(grafting):
    """Per layer, ‖Δ[W | b]‖_F = lr·‖grafted step‖_F whatever Shampoo's own scale: SGD grafting gives lr·‖G‖_F; Adam
    grafting at step 1 gives G / |G| (bias-corrected V = G⊙G), so lr·√(d_out·(d_in + 1)): the layer's size, not the
    gradient's: a loss × 1000 leaves the Adam-grafted step as it was."""
    lr = 0.01
    deltas = {}
    for scale in (1.0, 1000.0):
        torch.manual_seed(14)  # the same model and batch at both scales
        model = MLP((10,), 3, width=16, activation="tanh")
        opt = Shampoo(model, lr=lr, damping=1e-2, grafting=grafting, graft_eps=0.0)
        layers = list(model.layers)
        before = [matrix(m) for m in layers]
        x, y = torch.randn(8, 10), torch.randint(0, 3, (8,))
        loss = scale * F.cross_entropy(model(x), y)
        loss.backward()
        grads = [grad_matrix(m) for m in layers]
        opt.step()
        deltas[scale] = [matrix(m) - b for m, b in zip(layers, before)]
        steps = [torch.linalg.matrix_norm(d).item() for d in deltas[scale]]
        expected = [lr * (torch.linalg.matrix_norm(g).item() if grafting == "sgd" else g.numel() ** 0.5) for g in grads]
        assert steps == pytest.approx(expected, rel=1e-4)
    if grafting == "adam":
        for small, large in zip(deltas[1.0], deltas[1000.0]):
            torch.testing.assert_close(large, small, rtol=1e-4, atol=1e-7)


def test_grafted_steps_before_start_preconditioning_step():
    """start_preconditioning_step=2 with Adam grafting: steps 0 and 1 are Adam's (β₁ = 0) direction, no root is
    computed, the statistics accumulate; step 2 is preconditioned with the mean of the three G Gᵀ."""
    torch.manual_seed(10)
    layer = nn.Linear(6, 4)
    model = nn.Sequential(layer)
    opt = Shampoo(model, lr=0.05, damping=1e-2, grafting="adam", graft_beta2=0.99, start_preconditioning_step=2,
                  eigh_dtype="float64")
    grads, v = [], None
    for t in range(1, 4):
        before = matrix(layer)
        backward(model, torch.randn(5, 6), torch.randint(0, 4, (5,)))
        g = grad_matrix(layer)
        grads.append(g)
        opt.step()
        v = 0.01 * g * g if v is None else 0.99 * v + 0.01 * g * g
        adam = g / ((v / (1 - 0.99 ** t)).sqrt() + 1e-8)
        state = opt.state[layer.weight]
        if t < 3:
            torch.testing.assert_close(matrix(layer) - before, -0.05 * adam, rtol=1e-5, atol=1e-7)
            assert "L_root" not in state and state["statistics_updates"] == t
        else:
            L = sum(x @ x.T for x in grads) / 3
            R = sum(x.T @ x for x in grads) / 3
            shampoo = inverse_root(L, 1e-2, 0.25, True)[0] @ g @ inverse_root(R, 1e-2, 0.25, True)[0]
            expected = shampoo * torch.linalg.matrix_norm(adam) / torch.linalg.matrix_norm(shampoo)
            torch.testing.assert_close(matrix(layer) - before, -0.05 * expected, rtol=1e-5, atol=1e-7)
            assert "L_root" in state


def test_a_late_start_without_grafting_is_refused():
    from muso_cli.errors import HyperparameterError

    with pytest.raises(HyperparameterError) as e:
        Shampoo(MLP((4,), 2, width=8), start_preconditioning_step=10)
    assert e.value.key == "start_preconditioning_step" and "grafting" in e.value.fix


def test_float32_roots_are_the_default_and_fall_back_to_float64(monkeypatch):
    """eigh in float32 first; a float32 eigh that fails (LinAlgError) is redone in float64."""
    torch.manual_seed(11)
    layer = nn.Linear(9, 6)
    model = nn.Sequential(layer)
    opt = Shampoo(model, lr=0.1, damping=0.01)
    assert opt.defaults["eigh_dtype"] == "float32"
    eigh, dtypes = torch.linalg.eigh, []

    def flaky(a, *args, **kw):
        dtypes.append(a.dtype)
        if a.dtype == torch.float32:
            raise torch.linalg.LinAlgError("did not converge")
        return eigh(a, *args, **kw)

    monkeypatch.setattr(torch.linalg, "eigh", flaky)
    before = matrix(layer)
    backward(model, torch.randn(12, 9), torch.randint(0, 6, (12,)))
    g = grad_matrix(layer)
    opt.step()
    assert dtypes == [torch.float32, torch.float64] * 2
    left, _ = inverse_root(g @ g.T, 0.01, 0.25, True)
    right, _ = inverse_root(g.T @ g, 0.01, 0.25, True)
    torch.testing.assert_close(matrix(layer) - before, -0.1 * left @ g @ right, rtol=1e-5, atol=1e-6)


def test_a_nonfinite_statistic_refuses_the_step_and_says_why():
    """Inputs of 1e25: G (1e25) is finite, G Gᵀ (1e50) is not; nothing changes and ``diverged`` says why."""
    torch.manual_seed(12)
    layer = nn.Linear(5, 3)
    model = nn.Sequential(layer)
    opt = Shampoo(model, lr=0.1, damping=0.01, factored=False)
    backward(model, torch.randn(4, 5), torch.randint(0, 3, (4,)))
    opt.step()
    L = opt.state[layer.weight]["L"].clone()
    before = matrix(layer)
    backward(model, torch.full((4, 5), 1e25), torch.randint(0, 3, (4,)))
    assert torch.isfinite(layer.weight.grad).all()
    with pytest.warns(RuntimeWarning, match="statistic L is not finite"):
        opt.step()
    assert torch.equal(matrix(layer), before) and torch.equal(opt.state[layer.weight]["L"], L)
    assert "layer '0'" in opt.diverged


def test_batch_size_one_trains():
    torch.manual_seed(13)
    model = MLP((10,), 3, width=16)
    opt = Shampoo(model, lr=0.01, grafting="adam", start_preconditioning_step=2, statistics_interval=3,
                  inverse_interval=3)
    for _ in range(8):
        backward(model, torch.randn(1, 10), torch.randint(0, 3, (1,)))
        opt.step()
    assert opt.diverged is None and all(torch.isfinite(p).all() for p in model.parameters())
