"""K-FAC against dense float64 oracles built from independently captured layer inputs and output gradients."""
from __future__ import annotations

import gc
import io
import math
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from muso_cli import parametrize
from muso_cli.config import compose
from muso_cli.models.mlp import MLP
from muso_cli.optim import build
from muso_cli.optim.kfac import KFAC

D = torch.float64


def record(module: nn.Module) -> dict:
    """Hooks of the test's own: the module's last input and the gradient of the loss w.r.t. its output."""
    seen: dict = {}

    def hook(m, inputs, output):
        seen["x"] = inputs[0].detach().to(D)
        output.register_hook(lambda g: seen.__setitem__("g", g.detach().to(D)))

    module.register_forward_hook(hook)
    return seen


def matrix(layer: nn.Module) -> torch.Tensor:
    """[weight.flatten(1) | bias] in float64."""
    w = layer.weight.detach().flatten(1).to(D)
    return w if layer.bias is None else torch.cat([w, layer.bias.detach().to(D)[:, None]], 1)


def ones_column(rows: torch.Tensor, bias: bool) -> torch.Tensor:
    return torch.cat([rows, torch.ones(len(rows), 1, dtype=D)], 1) if bias else rows


def kfac_oracle(x_rows: torch.Tensor, g_rows: torch.Tensor, n: int) -> tuple:
    """(A, B, G) of one batch: A = mean of x xᵀ over rows, B = (1/N) Σ δ δᵀ with δ = N g, G = Σ g xᵀ."""
    delta = n * g_rows
    return x_rows.T @ x_rows / len(x_rows), delta.T @ delta / n, g_rows.T @ x_rows


def damped_inv(f: torch.Tensor, rho: float) -> torch.Tensor:
    return torch.linalg.inv(f + rho * torch.eye(len(f), dtype=D))


def train_step(model, opt, x, y, loss=F.cross_entropy):
    out = loss(model(x), y)
    opt.zero_grad()
    out.backward()
    opt.step()
    return out


@pytest.mark.parametrize("n, factored, path", [(3, True, "factored"), (3, False, "dense"), (40, True, "dense")])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_steps_match_dense_oracle(n, factored, path, bias):
    """Two steps (factor EMA, momentum, weight decay after preconditioning) equal the float64 formula."""
    torch.manual_seed(0)
    layer = nn.Linear(8, 6, bias=bias)
    model = nn.Sequential(layer)
    seen = record(layer)
    lr, rho, decay, mom, wd = 0.2, 0.1, 0.7, 0.5, 0.01
    opt = KFAC(model, lr=lr, damping=rho, ema_decay=decay, momentum=mom, weight_decay=wd, factored=factored)
    A = B = buf = None
    for _ in range(2):
        x, y = torch.randn(n, 8), torch.randint(0, 6, (n,))
        before = matrix(layer)
        train_step(model, opt, x, y)
        a, b, g = kfac_oracle(ones_column(seen["x"], bias), seen["g"], n)
        A = a if A is None else decay * A + (1 - decay) * a
        B = b if B is None else decay * B + (1 - decay) * b
        d = damped_inv(B, rho) @ g @ damped_inv(A, rho) + wd * before
        buf = d if buf is None else mom * buf + d
        torch.testing.assert_close(matrix(layer) - before, -lr * buf, rtol=1e-5, atol=1e-5)
        assert opt.layers["0"].path == path


@pytest.mark.parametrize("spatial, padding_mode, path", [(5, "zeros", "dense"), (5, "reflect", "dense"),
                                                          (3, "zeros", "factored")])
def test_conv_step_matches_unfold_oracle(spatial, padding_mode, path):
    """KFC: patches by unfold, A averaged over examples and positions, B summed over positions."""
    torch.manual_seed(1)
    padding = 1 if spatial == 5 else 0
    conv = nn.Conv2d(2, 8, 3, stride=2 if spatial == 5 else 1, padding=padding, padding_mode=padding_mode)
    model = nn.Sequential(conv, nn.Flatten(), nn.LazyLinear(4))
    n = 2
    x, y = torch.randn(n, 2, spatial, spatial), torch.randint(0, 4, (n,))
    model(x)  # materialise the lazy head
    seen = record(conv)
    lr, rho = 0.1, 0.05
    opt = KFAC(model, lr=lr, damping=rho)
    before = matrix(conv)
    train_step(model, opt, x, y)
    padded = F.pad(seen["x"], (padding,) * 4, mode="constant" if padding_mode == "zeros" else padding_mode)
    patches = F.unfold(padded, 3, stride=conv.stride).transpose(1, 2).reshape(-1, 2 * 9)
    g_rows = seen["g"].permute(0, 2, 3, 1).reshape(-1, 8)
    a, b, g = kfac_oracle(ones_column(patches, True), g_rows, n)
    torch.testing.assert_close(matrix(conv) - before, -lr * damped_inv(b, rho) @ g @ damped_inv(a, rho),
                               rtol=1e-5, atol=1e-5)
    assert opt.layers["0"].path == path


def test_factored_form_is_refused_when_the_gradient_was_changed():
    """Clipping after backward: the step uses the clipped .grad (dense path), not the captured rows."""
    torch.manual_seed(2)
    layer = nn.Linear(8, 6)
    model = nn.Sequential(layer)
    seen = record(layer)
    opt = KFAC(model, lr=0.1, damping=0.1)
    x, y = torch.randn(3, 8), torch.randint(0, 6, (3,))
    before = matrix(layer)
    F.cross_entropy(model(x), y).backward()
    for p in layer.parameters():
        p.grad.mul_(0.5)
    opt.step()
    a, b, g = kfac_oracle(ones_column(seen["x"], True), seen["g"], 3)
    torch.testing.assert_close(matrix(layer) - before, -0.1 * damped_inv(b, 0.1) @ (0.5 * g) @ damped_inv(a, 0.1),
                               rtol=1e-5, atol=1e-5)
    assert opt.layers["0"].path == "dense"


@pytest.mark.parametrize("inverse", ["cholesky", "eigh"])
def test_trace_and_pi_damping_follow_their_formulas(inverse):
    torch.manual_seed(3)
    layer = nn.Linear(7, 5)
    model = nn.Sequential(layer)
    seen = record(layer)
    x, y = torch.randn(16, 7), torch.randint(0, 5, (16,))
    rho = 0.05
    for rule in ("trace", "pi"):
        opt = KFAC(model, lr=0.0, damping=rho, damping_rule=rule, inverse=inverse)
        train_step(model, opt, x, y)
        a, b, _ = kfac_oracle(ones_column(seen["x"], True), seen["g"], 16)
        got = opt.damping()["0"]
        if rule == "trace":
            expected = {"A": rho * a.trace().item(), "B": rho * b.trace().item()}
        else:
            pi = math.sqrt((a.trace().item() / 8) / (b.trace().item() / 5))
            expected = {"A": math.sqrt(rho) * pi, "B": math.sqrt(rho) / pi}
        assert got == pytest.approx(expected, rel=1e-5)


def test_damping_per_layer_follows_the_plan_multipliers():
    """somup: ρ_A, ρ_B = ρ × the plan's multipliers (in / hidden / out: A 1, m, m; B 1/m, 1/m, 1)."""
    torch.manual_seed(4)
    model = MLP((12,), 3, width=32)
    with torch.device("meta"):
        base = MLP((12,), 3, width=8)
    plan = parametrize.make_plan(model, base, "somup", "kfac")
    plan.init_(model)
    rho = 0.02
    opt = KFAC(plan.param_groups(model, lr=0.1), model=model, damping=rho)
    train_step(model, opt, torch.randn(10, 12), torch.randint(0, 3, (10,)))
    got = opt.damping()
    assert set(got) == {"layers.0", "layers.1", "layers.2"}
    for layer, mult in plan.damping_mult.items():
        assert got[layer] == pytest.approx({k: rho * v for k, v in mult.items()}, rel=1e-12)
    assert got["layers.1"] == pytest.approx({"A": rho * 4, "B": rho / 4})


def test_builder_passes_config_and_plan():
    """optimizer=kfac through muso's builder: groups carry the plan's lr and damping multipliers."""
    cfg = compose(["optimizer=kfac", "param=somup", "optimizer.damping=0.02", "optimizer.momentum=0.9"])
    model = MLP((12,), 3, width=32)
    with torch.device("meta"):
        base = MLP((12,), 3, width=8)
    plan = parametrize.make_plan(model, base, "somup", "kfac", damping_rule=cfg.optimizer.damping_rule)
    opt = build(cfg.optimizer, model, plan, "xent")
    assert isinstance(opt, KFAC)
    groups = {g["layer"]: g for g in opt.param_groups if "layer" in g}
    assert groups["layers.0"]["damping_B"] == pytest.approx(1 / 4) and groups["layers.0"]["momentum"] == 0.9
    train_step(model, opt, torch.randn(10, 12), torch.randint(0, 3, (10,)))
    assert opt.damping()["layers.2"] == pytest.approx({"A": 0.02 * 4, "B": 0.02})


@pytest.mark.parametrize("rule", ["constant", "trace", "pi"])
@pytest.mark.parametrize("inverse", ["cholesky", "eigh"])
def test_no_nan_from_zero_inputs_or_small_batches(rule, inverse):
    torch.manual_seed(5)
    for bias in (True, False):
        model = MLP((20,), 4, width=64, bias=bias)
        opt = KFAC(model, lr=0.1, damping=1e-8 if rule == "constant" else 1e-3, damping_rule=rule, inverse=inverse)
        for x in (torch.zeros(8, 20), torch.randn(2, 20), torch.zeros(2, 20)):
            train_step(model, opt, x, torch.randint(0, 4, (len(x),)))
            assert all(torch.isfinite(p).all() for p in model.parameters())
            for layer in opt.layers.values():
                state = opt.state[layer.weight]
                assert torch.isfinite(state["A_inv"]).all() and torch.isfinite(state["B_inv"]).all()


def test_hooks_capture_only_when_training_with_grad_on_curvature_steps():
    torch.manual_seed(6)
    model = MLP((10,), 3, width=16)
    opt = KFAC(model, lr=0.1, damping=0.1, curvature_interval=2, factored=False)
    layer = opt.layers["layers.0"]
    x, y = torch.randn(4, 10), torch.randint(0, 3, (4,))
    with torch.no_grad():
        model(x)
    model.eval()
    F.cross_entropy(model(x), y).backward()
    assert not layer.inputs and not layer.grads
    model.train()
    train_step(model, opt, x, y)          # step 0: a curvature step
    model(x)                              # step 1 is not: nothing recorded
    assert not layer.inputs
    opt.zero_grad()
    opt.step()
    F.cross_entropy(model(x), y).backward()   # step 2 is
    assert len(layer.inputs) == 1 and len(layer.grads) == 1


def test_parameters_outside_layers_get_sgd():
    """A LayerNorm's gain and bias: p ← p − lr_group·(grad + wd·p), with their own lr multiplier."""
    torch.manual_seed(7)
    norm = nn.LayerNorm(6)
    model = nn.Sequential(nn.Linear(5, 6), norm, nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    groups = [{"params": [model[0].weight, model[0].bias], "layer": "0"},
              {"params": [model[3].weight, model[3].bias], "layer": "3"},
              {"params": [norm.weight, norm.bias], "lr": 0.3}]
    opt = KFAC(groups, model=model, lr=0.1, damping=0.1, weight_decay=0.01)
    x, y = torch.randn(9, 5), torch.randint(0, 3, (9,))
    before = [p.detach().clone() for p in norm.parameters()]
    F.cross_entropy(model(x), y).backward()
    grads = [p.grad.clone() for p in norm.parameters()]
    opt.step()
    for p, p0, g in zip(norm.parameters(), before, grads):
        torch.testing.assert_close(p.detach(), p0 - 0.3 * (g + 0.01 * p0))


@pytest.mark.parametrize("fisher", ["empirical", "mc"])
def test_state_dict_round_trip_continues_identically(fisher):
    """k steps, save (weights_only-loadable), load into a fresh optimizer on a fresh model, continue: every
    parameter bit-identical to the uninterrupted run (factors, inverses, damping, momentum and the per-layer
    schedule are in torch's state)."""
    torch.manual_seed(8)
    model = MLP((10,), 4, width=24)
    kwargs = dict(lr=0.1, damping=1.0, momentum=0.9, weight_decay=1e-3, curvature_interval=2, inverse_interval=3,
                  fisher=fisher, damping_rule="trace")
    opt = KFAC(model, **kwargs)
    batches = [(torch.randn(6, 10), torch.randint(0, 4, (6,))) for _ in range(9)]
    for x, y in batches[:4]:
        train_step(model, opt, x, y)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    torch.manual_seed(9)
    for x, y in batches[4:]:
        train_step(model, opt, x, y)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    twin = MLP((10,), 4, width=24)
    twin.load_state_dict(saved["model"])
    reloaded = KFAC(twin, **kwargs)
    reloaded.load_state_dict(saved["opt"])
    torch.manual_seed(9)
    for x, y in batches[4:]:
        train_step(twin, reloaded, x, y)
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.isfinite(p).all()
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def _output_layer_B(fisher: str, loss: str, logits_scale: float = 1.0):
    torch.manual_seed(10)
    model = MLP((6,), 3, width=8)
    with torch.no_grad():
        model.layers[-1].weight.mul_(logits_scale)
    opt = KFAC(model, lr=0.0, damping=0.1, fisher=fisher, loss=loss)
    x, y = torch.randn(4000, 6), torch.randint(0, 3, (4000,))
    loss_fn = F.cross_entropy if loss == "xent" else lambda f, t: 0.5 * (f - F.one_hot(t, 3)).pow(2).sum(1).mean()
    with torch.no_grad():
        p = F.softmax(model(x).double(), 1)
    train_step(model, opt, x, y, loss_fn)
    return opt.state[model.layers[2].weight]["B"].double(), p


def test_mc_fisher_samples_the_predictive_distribution():
    """MC B of the readout: E[δδᵀ] = mean of diag(p) − p pᵀ (xent) and I (mse); the empirical B differs."""
    b_mc, p = _output_layer_B("mc", "xent", logits_scale=3.0)
    expected = torch.diag_embed(p).mean(0) - (p[:, :, None] * p[:, None, :]).mean(0)
    torch.testing.assert_close(b_mc, expected, atol=0.02, rtol=0)
    b_emp, _ = _output_layer_B("empirical", "xent", logits_scale=3.0)
    assert (b_emp - b_mc).abs().max() > 0.05
    b_mse, _ = _output_layer_B("mc", "mse")
    torch.testing.assert_close(b_mse, torch.eye(3, dtype=D), atol=0.1, rtol=0)


def test_mc_fisher_survives_an_inplace_activation():
    torch.manual_seed(11)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(inplace=True), nn.Linear(7, 3))
    opt = KFAC(model, lr=0.1, damping=0.1, fisher="mc")
    train_step(model, opt, torch.randn(6, 5), torch.randint(0, 3, (6,)))
    assert opt.state[model[0].weight]["B"] is not None and torch.isfinite(model[0].weight).all()


def test_a_dropped_optimizer_stops_recording():
    """Hooks hold their layer weakly: a model outlives the optimizers of a sweep without feeding dead ones."""
    torch.manual_seed(13)
    model = MLP((10,), 3, width=16)
    x, y = torch.randn(4, 10), torch.randint(0, 3, (4,))
    old = KFAC(model, lr=0.1, damping=0.1, fisher="mc")
    old_layer = weakref.ref(old.layers["layers.0"])
    del old
    gc.collect()
    assert old_layer() is None
    opt = KFAC(model, lr=0.1, damping=0.1)
    model(x)  # the dead optimizer's hooks remove themselves; the live one's layer hook and output hook remain
    assert len(model.layers[0]._forward_hooks) == 1 and len(model._forward_hooks) == 1
    train_step(model, opt, x, y)
    assert opt.state[model.layers[0].weight]["A"] is not None
