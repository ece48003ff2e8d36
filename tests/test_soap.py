"""SOAP: Adam in the eigenbasis of Shampoo's statistics, a layer of the house protocol. Its first step is G's
orthogonal factor U Vᵀ (Muon's update), its later steps Adam's in a rotating basis; its ε decides whether the
directions the statistics do not span stay still (Shampoo-like) or get Adam's ±1 (see docs/parameterization.md)."""
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
from muso_cli.optim.soap import SOAP


def augmented(layer: nn.Linear, grad: bool = False) -> torch.Tensor:
    """[W | b] (or its gradient) in float64."""
    w, b = (layer.weight.grad, layer.bias.grad) if grad else (layer.weight, layer.bias)
    return torch.cat([w, b[:, None]], 1).detach().double()


def one_step(dtype: torch.dtype, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """(the first update −ΔW/lr, G's orthogonal factor U Vᵀ) of SOAP on a Linear layer 64 → 32, batch 8."""
    torch.manual_seed(0)
    layer = nn.Linear(64, 32).to(dtype)
    opt = SOAP(layer, lr=1.0, **options)
    x, y = torch.randn(8, 64, dtype=dtype), torch.randint(0, 32, (8,))
    F.cross_entropy(layer(x), y).backward()
    u, _, vh = torch.linalg.svd(augmented(layer, grad=True), full_matrices=False)
    before = augmented(layer)
    opt.step()
    return before - augmented(layer), u[:, :8] @ vh[:8]


def test_the_first_step_is_the_orthogonal_factor_of_the_gradient():
    """Adam in the eigenbasis of G Gᵀ and Gᵀ G: the rotated gradient is diagonal (G's singular values), Adam's
    first step maps each to 1: U Vᵀ, as Muon (and ε-free Shampoo). Exact to rounding in float64."""
    d, uv = one_step(torch.float64, damping=1e-8)
    assert (d - uv).norm() / uv.norm() < 1e-5


def test_in_float32_a_tiny_absolute_eps_turns_rounding_into_adams_signs():
    """In float32 the rotated gradient's zero block holds rounding (~1e-7 of G's scale): an ε of 1e-8 lets Adam
    normalise it to ±1, and the update is mostly noise over every coordinate (‖D‖ 24 against ‖U Vᵀ‖ = √8 here).
    ε relative to G's largest singular value (1e-4) keeps it at U Vᵀ."""
    d, uv = one_step(torch.float32, damping=1e-8)
    assert d.norm() > 4 * uv.norm()
    d, uv = one_step(torch.float32, damping=1e-4, damping_rule="relative")
    assert (d - uv).norm() / uv.norm() < 0.05


def reference(layer: nn.Linear, data, *, lr, b1, b2, decay, eps, interval) -> torch.Tensor:
    """SOAP written out in float64 from its definition (module docstring), for one Linear layer [W | b] fitted
    by least squares to ``data``."""
    w = augmented(layer).clone()
    L = R = M = V = ql = qr = None
    for t, (x, y) in enumerate(data, start=1):
        xa, y = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1), y.double()
        wt = w.clone().requires_grad_(True)
        F.mse_loss(xa @ wt.T, y).backward()
        g = wt.grad
        L = g @ g.T if L is None else decay * L + (1 - decay) * g @ g.T
        R = g.T @ g if R is None else decay * R + (1 - decay) * g.T @ g
        if (t - 1) % interval == 0:
            ql, qr = torch.linalg.eigh(L)[1], torch.linalg.eigh(R)[1]
        M = (1 - b1) * g if M is None else b1 * M + (1 - b1) * g
        rotated = ql.T @ g @ qr
        V = (1 - b2) * rotated ** 2 if V is None else b2 * V + (1 - b2) * rotated ** 2
        ratio = (ql.T @ M @ qr / (1 - b1 ** t)) / ((V / (1 - b2 ** t)).sqrt() + eps)
        w = w - lr * (ql @ ratio @ qr.T)
    return w


def test_later_steps_are_adam_in_a_rotating_eigenbasis():
    """Four steps with the eigenbasis recomputed every second step (V kept, matched by eigenvalue rank), against
    the written-out definition, in float64. The statistics have no repeated eigenvalue (a regression of 16
    examples on [W | b] of 6 × 5: R full rank, L one null direction), so each eigenvector is defined up to its
    sign, which the update does not see. (Where eigenvalues repeat, e.g. the null space of a rank-deficient R,
    eigh's basis is arbitrary there, and so is SOAP's per-coordinate normalisation in it.)"""
    torch.manual_seed(1)
    layer = nn.Linear(4, 6).double()
    g = torch.Generator().manual_seed(2)
    data = [(torch.randn(16, 4, generator=g), torch.randn(16, 6, generator=g)) for _ in range(4)]
    options = dict(lr=0.05, b1=0.9, b2=0.95, decay=0.8, eps=1e-3, interval=2)
    expected = reference(layer, data, **options)
    opt = SOAP(layer, lr=0.05, beta1=0.9, beta2=0.95, ema_decay=0.8, damping=1e-3, damping_rule="constant",
               inverse_interval=2, factored=False)
    for x, y in data:
        opt.zero_grad()
        F.mse_loss(layer(x.double()), y.double()).backward()
        opt.step()
    torch.testing.assert_close(augmented(layer), expected, rtol=1e-9, atol=1e-10)


def test_parameters_outside_layers_get_adamw():
    """A LayerNorm's gain and bias move exactly as torch.optim.AdamW (β₁, β₂, ε = damping, decoupled decay)."""
    torch.manual_seed(3)
    norm = nn.LayerNorm(6)
    model = nn.Sequential(nn.Linear(5, 6), norm, nn.Tanh(), nn.Linear(6, 3))
    twin = nn.LayerNorm(6)
    twin.load_state_dict(norm.state_dict())
    opt = SOAP(model, lr=0.01, beta1=0.9, beta2=0.99, damping=1e-6, weight_decay=0.1)
    adamw = torch.optim.AdamW(twin.parameters(), lr=0.01, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.1)
    for step in range(3):
        x = torch.randn(7, 5)
        opt.zero_grad()
        F.cross_entropy(model(x), torch.randint(0, 3, (7,))).backward()
        for p, q in zip(norm.parameters(), twin.parameters()):
            q.grad = p.grad.clone()
        opt.step()
        adamw.step()
    assert sorted(opt.layers) == ["0", "3"]
    for p, q in zip(norm.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-8)


def test_a_refused_step_moves_no_parameter_outside_layers_either():
    """The Adam update of the parameters outside layers is part of the atomic step: a non-finite input refuses the
    step, and the LayerNorm's gain and bias, like the layers, keep their values and get no Adam moments."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 3))
    opt = SOAP(model, lr=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(7, 5)
    x[0, 0] = math.inf
    F.cross_entropy(model(x), torch.randint(0, 3, (7,))).backward()
    with pytest.warns(RuntimeWarning, match="refused"):
        opt.step()
    assert opt.diverged and all(torch.equal(p, p0) for p, p0 in zip(model.parameters(), before))
    assert all(not opt.state[p] for p in model[1].parameters())


def test_a_conv_layer_is_the_matrix_out_by_in_times_kernel():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 2))
    opt = SOAP(model, lr=0.01)
    F.cross_entropy(model(torch.randn(5, 3, 6, 6)), torch.randint(0, 2, (5,))).backward()
    opt.step()
    state = opt.state[model[0].weight]
    assert state["QL"].shape == (8, 8) and state["QR"].shape == (28, 28)  # 3·3·3 + the bias column
    assert state["exp_avg"].shape == state["exp_avg_sq"].shape == (8, 28)


def test_eps_per_layer_follows_its_rule():
    torch.manual_seed(5)
    model = MLP((10,), 4, width=16)
    groups = [{"params": [model.layers[0].weight, model.layers[0].bias], "layer": "layers.0",
               "damping_rule": "relative"},
              {"params": [model.layers[1].weight, model.layers[1].bias], "layer": "layers.1", "damping_eps": 4.0},
              {"params": [model.layers[2].weight, model.layers[2].bias], "layer": "layers.2"}]
    opt = SOAP(groups, model=model, lr=0.01, damping=1e-3, damping_rule="constant")  # layers.0's group: relative
    F.cross_entropy(model(torch.randn(6, 10)), torch.randint(0, 4, (6,))).backward()
    opt.step()
    lam = torch.linalg.eigvalsh(opt.state[model.layers[0].weight]["L"].double())[-1].item()
    assert opt.damping()["layers.0"]["eps"] == pytest.approx(1e-3 * math.sqrt(lam), rel=1e-5)
    assert opt.damping()["layers.1"] == {"eps": pytest.approx(4e-3)}
    assert opt.damping()["layers.2"] == {"eps": 1e-3}


def test_state_round_trips_through_a_weights_only_checkpoint_and_resumes_bit_identically():
    torch.manual_seed(6)
    a, b = MLP((10,), 4, width=16), MLP((10,), 4, width=16)
    b.load_state_dict(a.state_dict())
    options = dict(lr=0.01, inverse_interval=2, weight_decay=0.01)
    opt = SOAP(a, **options)
    g = torch.Generator().manual_seed(7)
    data = [(torch.randn(6, 10, generator=g), torch.randint(0, 4, (6,), generator=g)) for _ in range(6)]

    def train(model, o, chunk):
        for x, y in chunk:
            o.zero_grad()
            F.cross_entropy(model(x), y).backward()
            o.step()

    train(a, opt, data[:3])
    buffer = io.BytesIO()
    torch.save({"model": a.state_dict(), "opt": opt.state_dict()}, buffer)
    train(a, opt, data[3:])
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    b.load_state_dict(saved["model"])
    reloaded = SOAP(b, **options)
    reloaded.load_state_dict(saved["opt"])
    assert set(reloaded.state[b.layers[0].weight]) == {"L", "R", "QL", "QR", "exp_avg", "exp_avg_sq", "damping",
                                                       "step", "statistics_updates"}
    train(b, reloaded, data[3:])
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_a_bfloat16_model_with_norm_gains_resumes_bit_identically():
    """Adam's moments of the parameters outside layers are kept in float32 like the layers' statistics, and
    load_state_dict keeps them so (torch alone casts them to bfloat16, and the next step could not mix the two)."""
    torch.manual_seed(8)
    a, b = (nn.Sequential(nn.Linear(10, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 4)) for _ in range(2))
    b.load_state_dict(a.state_dict())
    a, b = a.to(torch.bfloat16), b.to(torch.bfloat16)
    opt = SOAP(a, lr=0.01)
    g = torch.Generator().manual_seed(9)
    data = [(torch.randn(6, 10, generator=g).bfloat16(), torch.randint(0, 4, (6,), generator=g)) for _ in range(6)]

    def train(model, o, chunk):
        for x, y in chunk:
            o.zero_grad()
            F.cross_entropy(model(x).float(), y).backward()
            o.step()

    train(a, opt, data[:3])
    buffer = io.BytesIO()
    torch.save({"model": a.state_dict(), "opt": opt.state_dict()}, buffer)
    train(a, opt, data[3:])
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    b.load_state_dict(saved["model"])
    reloaded = SOAP(b, lr=0.01)
    reloaded.load_state_dict(saved["opt"])
    assert reloaded.state[b[1].weight]["exp_avg"].dtype == torch.float32
    train(b, reloaded, data[3:])
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("options, key", [
    ({"lr": -1.0}, "lr"), ({"beta1": 1.0}, "beta1"), ({"beta2": -0.5}, "beta2"), ({"damping": 0.0}, "damping"),
    ({"damping_rule": "trace"}, "damping_rule"), ({"statistics": "max"}, "statistics"),
    ({"ema_decay": 1.5}, "ema_decay"), ({"inverse_interval": 0}, "inverse_interval"),
    ({"weight_decay": -1.0}, "weight_decay"),
])
def test_bad_arguments_name_their_key(options, key):
    with pytest.raises(HyperparameterError) as e:
        SOAP(MLP((10,), 4, width=16), **options)
    assert e.value.key == key and e.value.fix


def test_the_registry_builds_it_from_the_table():
    cfg = compose(["optimizer=soap", "param=somup", "optimizer.damping_rule=somup"])
    model = MLP((784,), 10, width=256)
    with torch.device("meta"):
        base = MLP((784,), 10, width=64)
    plan = parametrize.make_plan(model, base, "somup", "soap", damping_rule="somup")
    opt = build(cfg.optimizer, model, plan)
    # m = 4, Adam's µP (SOAP's steady state): ε m⁻¹ / m⁻¹ / 1, lr 1 / m⁻¹ / m⁻¹ (input / hidden / readout)
    assert [g["damping_eps"] for g in opt.param_groups] == pytest.approx([0.25, 0.25, 1.0])
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([cfg.optimizer.lr * f for f in (1, 0.25, 0.25)])
    assert check(compose(["optimizer=soap", "optimizer.beta2=1"]).optimizer, model, plan)[0].key == "optimizer.beta2"
