"""K-FAC and Shampoo behave as torch optimizers: one signature, per-group hyperparameters, add_param_group,
state in torch's state_dict, argument errors by key, and a layer protocol a new preconditioner fits into (with a
rest update of its own for the parameters outside layers). The registry says what muso prints about each."""
from __future__ import annotations

import io
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from muso_cli import parametrize
from muso_cli.config import compose
from muso_cli.errors import HyperparameterError, UsageError
from muso_cli.models.mlp import MLP
from muso_cli.optim import build, check, params_note, pitfalls
from muso_cli.optim.base import LayerwiseOptimizer
from muso_cli.optim.kfac import KFAC
from muso_cli.optim.layer import Layer, layer_groups
from muso_cli.optim.shampoo import Shampoo

OPTIMIZERS = [pytest.param(KFAC, id="kfac"), pytest.param(Shampoo, id="shampoo")]


def batches(n: int, seed: int = 0, size: int = 6, dtype=torch.float32) -> list:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 10, generator=g).to(dtype), torch.randint(0, 4, (size,), generator=g)) for _ in range(n)]


def train(model, opt, data) -> None:
    for x, y in data:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def twins(seed: int = 0, **kw) -> tuple[MLP, MLP]:
    torch.manual_seed(seed)
    a = MLP((10,), 4, width=16, **kw)
    b = MLP((10,), 4, width=16, **kw)
    b.load_state_dict(a.state_dict())
    return a, b


def layer_group(model: MLP, i: int, **options) -> dict:
    layer = model.layers[i]
    return {"params": [layer.weight, layer.bias], "layer": f"layers.{i}", **options}


def same_parameters(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


# -- one signature ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_the_model_its_groups_and_its_parameters_give_the_same_optimizer(cls):
    """cls(model), cls(layer groups, model=model) and cls(model.parameters(), model=model) for K-FAC (grouped
    by layer) take identical steps; Shampoo on plain tensors preconditions each weight alone (no bias column)."""
    models = [*twins(1), twins(1)[0]]
    groups = lambda m: [layer_group(m, i) for i in range(3)]  # noqa: E731
    opts = [cls(models[0], lr=0.1, damping=0.1), cls(groups(models[1]), model=models[1], lr=0.1, damping=0.1),
            cls(models[2].parameters(), model=models[2], lr=0.1, damping=0.1)]
    for m, o in zip(models, opts):
        train(m, o, batches(3))
    assert same_parameters(models[0], models[1])
    if cls is KFAC:
        assert [g["layer"] for g in opts[2].param_groups] == ["layers.0", "layers.1", "layers.2"]
        assert same_parameters(models[0], models[2])
    else:
        assert [g.get("layer") for g in opts[2].param_groups] == ["tensor0", None, "tensor2", None, "tensor4", None]
        assert opts[2].layers["tensor0"].d_in == 10 and not same_parameters(models[0], models[2])


def test_named_tensors_name_the_layers_and_the_groups():
    model = twins()[0]
    opt = Shampoo(model.named_parameters(), lr=0.1)
    assert sorted(opt.layers) == ["layers.0.weight", "layers.1.weight", "layers.2.weight"]
    assert opt.param_groups[1]["param_names"] == ["layers.0.bias"]
    kfac = KFAC(model.named_parameters(), model=model)
    assert kfac.param_groups[0]["param_names"] == ["layers.0.weight", "layers.0.bias"]


def test_kfac_needs_the_model_unless_it_is_the_params():
    model = twins()[0]
    for params in ([layer_group(model, 0)], model.parameters()):
        with pytest.raises(HyperparameterError) as e:
            KFAC(params)
        assert e.value.key == "model"
    with pytest.raises(HyperparameterError) as e:
        KFAC(model, model=MLP((10,), 4, width=16))
    assert e.value.key == "model"
    Shampoo([layer_group(model, 0)])  # Shampoo works from .grad alone


def test_default_groups_cover_only_the_given_tensors():
    model = twins()[0]
    head = [model.layers[2].weight, model.layers[0].bias]
    groups = layer_groups(model, head)
    assert [(g.get("layer"), [n for n, _ in g["params"]]) for g in groups] == [
        ("layers.2", ["layers.2.weight"]), (None, ["layers.0.bias"])]
    with pytest.raises(HyperparameterError) as e:
        layer_groups(model, [torch.zeros(3, requires_grad=True)])
    assert e.value.key == "params"


# -- every hyperparameter in the groups -------------------------------------------------------------------

def test_kfac_groups_override_damping_rule_decay_and_schedule():
    """Layer 0's group: trace damping, curvature every 2 steps; the others: the constant default, every step."""
    model = twins(2)[0]
    rho = 0.05
    groups = [layer_group(model, 0, damping_rule="trace", curvature_interval=2, inverse_interval=2),
              layer_group(model, 1), layer_group(model, 2)]
    opt = KFAC(groups, model=model, lr=0.1, damping=rho, factored=False, warmup_steps=0)
    data = batches(2, seed=3)
    train(model, opt, data[:1])
    assert not opt.layers["layers.0"].capture and opt.layers["layers.1"].capture  # step 1: only interval-1 layers
    A0 = {i: opt.state[model.layers[i].weight]["A"].clone() for i in range(3)}
    tr_A = A0[0].trace().item()
    assert opt.damping()["layers.0"]["A"] == pytest.approx(rho * tr_A)
    assert opt.damping()["layers.1"] == {"A": rho, "B": rho}
    train(model, opt, data[1:])
    assert torch.equal(opt.state[model.layers[0].weight]["A"], A0[0])       # step 1: not layer 0's curvature step
    assert not torch.equal(opt.state[model.layers[1].weight]["A"], A0[1])
    assert opt.layers["layers.0"].capture  # step 2 is layer 0's next curvature step
    assert [opt.state[model.layers[i].weight]["step"] for i in range(3)] == [2, 2, 2]


def test_shampoo_groups_override_the_eps_rule():
    model = twins(3)[0]
    opt = Shampoo([layer_group(model, 0, damping_rule="constant"), layer_group(model, 1), layer_group(model, 2)],
                  model=model, lr=0.05, damping=0.01)
    train(model, opt, batches(1))
    assert opt.damping()["layers.0"] == {"L": 0.01, "R": 0.01}
    lam = torch.linalg.eigvalsh(opt.state[model.layers[1].weight]["L"].double())[-1].item()
    assert opt.damping()["layers.1"]["L"] == pytest.approx(0.01 * lam, rel=1e-5)


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_bias_weight_decay_none_decays_the_bias_like_the_weight(cls):
    """None (the default): torch's semantics, the bias decays by weight_decay; 0 leaves it undecayed and
    changes nothing else."""
    a, b = twins(4)
    with torch.no_grad():
        for la, lb in zip(a.layers, b.layers):
            lb.bias.copy_(la.bias.uniform_(-1, 1))
    lr, wd = 0.1, 0.2
    opt_a = cls(a, lr=lr, damping=0.1, weight_decay=wd)
    opt_b = cls(b, lr=lr, damping=0.1, weight_decay=wd, bias_weight_decay=0.0)
    bias0 = [layer.bias.detach().clone() for layer in a.layers]
    for m, o in ((a, opt_a), (b, opt_b)):
        train(m, o, batches(1))
    for la, lb, b0 in zip(a.layers, b.layers, bias0):
        assert torch.equal(la.weight, lb.weight)
        torch.testing.assert_close(la.bias - lb.bias, -lr * wd * b0, rtol=1e-5, atol=1e-7)


def test_the_plan_leaves_biases_undecayed_through_the_builder():
    cfg = compose(["optimizer=kfac", "param=somup", "optimizer.weight_decay=0.01"])
    model = MLP((12,), 3, width=32)
    with torch.device("meta"):
        base = MLP((12,), 3, width=8)
    plan = parametrize.make_plan(model, base, "somup", "kfac")
    opt = build(cfg.optimizer, model, plan, "xent")
    layers = [g for g in opt.param_groups if "layer" in g]
    assert all(g["bias_weight_decay"] == 0.0 and g["weight_decay"] > 0 for g in layers)


# -- add_param_group ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_a_layer_group_added_before_the_first_step_equals_one_given_at_construction(cls):
    a, b = twins(5)
    opt_a = cls([layer_group(a, i) for i in range(3)], model=a, lr=0.1, damping=0.1, momentum=0.5)
    opt_b = cls([layer_group(b, i) for i in range(2)], model=b, lr=0.1, damping=0.1, momentum=0.5)
    opt_b.add_param_group(layer_group(b, 2))
    assert "layers.2" in opt_b.layers and len(b.layers[2]._forward_hooks) == 1
    for m, o in ((a, opt_a), (b, opt_b)):
        train(m, o, batches(4))
    assert same_parameters(a, b)


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_a_layer_group_added_later_is_preconditioned_on_its_own_schedule(cls):
    """Added after 3 steps with statistics every 10: its step 0 updates its statistics and inverses at once, so
    its first update equals that of a fresh optimizer over that layer alone."""
    interval = {"curvature_interval" if cls is KFAC else "statistics_interval": 10, "inverse_interval": 10}
    a, b = twins(6)
    opt = cls([layer_group(a, i) for i in range(2)], model=a, lr=0.1, damping=0.1, **interval)
    train(a, opt, batches(3))
    b.load_state_dict(a.state_dict())
    opt.add_param_group(layer_group(a, 2))
    fresh = cls([layer_group(b, 2)], model=b, lr=0.1, damping=0.1, **interval)
    data = batches(1, seed=1)
    train(a, opt, data)
    train(b, fresh, data)
    torch.testing.assert_close(a.layers[2].weight, b.layers[2].weight, rtol=0, atol=0)
    state = opt.state[a.layers[2].weight]
    assert state["step"] == 1 and opt.state[a.layers[0].weight]["step"] == 4
    assert opt.layers["layers.2"].has_statistics(state) and opt.layers["layers.2"].has_inverse(state)


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_a_group_added_without_layer_gets_sgd(cls):
    torch.manual_seed(7)
    norm = nn.LayerNorm(6)
    model = nn.Sequential(nn.Linear(5, 6), norm, nn.ReLU(), nn.Linear(6, 3))
    opt = cls([{"params": [model[0].weight, model[0].bias], "layer": "0"},
               {"params": [model[3].weight, model[3].bias], "layer": "3"}], model=model, lr=0.1, damping=0.1)
    opt.add_param_group({"params": [norm.weight, norm.bias], "lr": 0.3, "weight_decay": 0.01})
    assert sorted(opt.layers) == ["0", "3"]
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    before = [p.detach().clone() for p in norm.parameters()]
    F.cross_entropy(model(torch.randn(9, 5)), torch.randint(0, 3, (9,))).backward()
    grads = [p.grad.clone() for p in norm.parameters()]
    opt.step()
    for p, p0, g in zip(norm.parameters(), before, grads):
        torch.testing.assert_close(p.detach(), p0 - 0.3 * (g + 0.01 * p0))


def test_a_module_added_to_the_model_later_can_be_added_as_a_layer():
    """Fine-tuning: a new readout appended to the model, then to K-FAC; its hook records from the next step."""
    torch.manual_seed(12)
    model = nn.Sequential(nn.Linear(10, 8), nn.Tanh())
    opt = KFAC(model, lr=0.1, damping=0.1)
    model.append(nn.Linear(8, 4))
    head = model[2]
    opt.add_param_group({"params": [("2.weight", head.weight), ("2.bias", head.bias)], "layer": "2"})
    train(model, opt, batches(1))
    assert opt.state[head.weight]["A"].shape == (9, 9) and opt.state[head.weight]["B"].shape == (4, 4)


def test_a_refused_group_is_not_added():
    model = twins()[0]
    opt = KFAC([layer_group(model, 0)], model=model)
    for group, key in (({"params": [model.layers[1].weight], "layer": "nope"}, "params"),
                       (layer_group(model, 1, ema_decay=2.0), "ema_decay"),
                       ({"params": [model.layers[1].bias, model.layers[1].weight], "layer": "layers.1"}, "params")):
        with pytest.raises(HyperparameterError) as e:
            opt.add_param_group(group)
        assert e.value.key == key
        assert len(opt.param_groups) == 1 and list(opt.layers) == ["layers.0"]


# -- state --------------------------------------------------------------------------------------------------

def _plain(value) -> bool:
    """Made of what torch.load(weights_only=True) reads back: tensors, numbers, strings, lists, dicts, None."""
    if isinstance(value, dict):
        return all(isinstance(k, (int, str)) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (torch.Tensor, bool, int, float, str))


@pytest.mark.parametrize("cls, options, keys", [
    (KFAC, {"fisher": "mc", "momentum": 0.9},
     {"A", "B", "A_inv", "B_inv", "damping", "step", "statistics_updates", "momentum_buffer"}),
    (Shampoo, {"grafting": "adagrad", "momentum": 0.9},
     {"L", "R", "L_root", "R_root", "graft_sq", "damping", "step", "statistics_updates", "momentum_buffer"})],
    ids=["kfac", "shampoo"])
def test_curvature_lives_in_torchs_state(cls, options, keys):
    model = twins(8)[0]
    opt = cls(model, lr=0.1, damping=0.1, **options)
    train(model, opt, batches(2))
    saved = opt.state_dict()
    assert set(saved) == {"state", "param_groups"} and _plain(saved)
    weight = opt.state[model.layers[1].weight]
    assert set(weight) == keys and weight["step"] == 2
    assert set(opt.state[model.layers[1].bias]) == {"momentum_buffer"}


def test_a_state_for_other_layers_is_refused():
    model = twins()[0]
    opt = KFAC([layer_group(model, 0), layer_group(model, 1)], model=model)
    other = KFAC([layer_group(model, 1), layer_group(model, 0)], model=model)
    train(model, other, batches(1))
    with pytest.raises(ValueError, match="layers"):
        opt.load_state_dict(other.state_dict())


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_a_bfloat16_model_resumes_bit_identically(cls):
    """Statistics are kept in float32 for a bfloat16 model, and load_state_dict keeps them so (torch alone would
    cast them to the parameters' dtype)."""
    a, b = twins(9)
    a, b = a.to(torch.bfloat16), b.to(torch.bfloat16)
    options = dict(lr=0.1, damping=0.1, momentum=0.9, inverse_interval=2)
    opt = cls(a, **options)
    data = batches(6, dtype=torch.bfloat16)
    train(a, opt, data[:3])
    buffer = io.BytesIO()
    torch.save({"model": a.state_dict(), "opt": opt.state_dict()}, buffer)
    train(a, opt, data[3:])
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    b.load_state_dict(saved["model"])
    reloaded = cls(b, **options)
    reloaded.load_state_dict(saved["opt"])
    state = reloaded.state[b.layers[0].weight]
    assert state["A" if cls is KFAC else "L"].dtype == torch.float32
    assert state["momentum_buffer"].dtype == torch.bfloat16
    train(b, reloaded, data[3:])
    assert same_parameters(a, b)


# -- arguments ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls, options, key", [
    (KFAC, {"lr": -1.0}, "lr"), (KFAC, {"momentum": 1.0}, "momentum"), (KFAC, {"weight_decay": -1}, "weight_decay"),
    (KFAC, {"bias_weight_decay": -1}, "bias_weight_decay"), (KFAC, {"damping": 0.0}, "damping"),
    (KFAC, {"damping_rule": "relative"}, "damping_rule"), (KFAC, {"ema_decay": 1.0}, "ema_decay"),
    (KFAC, {"curvature_interval": 0}, "curvature_interval"), (KFAC, {"inverse_interval": 1.5}, "inverse_interval"),
    (KFAC, {"fisher": "true"}, "fisher"), (KFAC, {"inverse": "lu"}, "inverse"), (KFAC, {"loss": "hinge"}, "loss"),
    (KFAC, {"factored": "yes"}, "factored"), (KFAC, {"kl_clip": -0.1}, "kl_clip"),
    (KFAC, {"warmup_steps": 2.5}, "warmup_steps"), (KFAC, {"ema_warmup": "on"}, "ema_warmup"),
    (Shampoo, {"damping": -1e-3}, "damping"), (Shampoo, {"damping_rule": "trace"}, "damping_rule"),
    (Shampoo, {"exponent": 0}, "exponent"), (Shampoo, {"statistics": "max"}, "statistics"),
    (Shampoo, {"ema_decay": -0.1}, "ema_decay"), (Shampoo, {"statistics_interval": 0}, "statistics_interval"),
    (Shampoo, {"grafting": "rmsprop"}, "grafting"), (Shampoo, {"graft_eps": -1.0}, "graft_eps"),
    (Shampoo, {"eigh_dtype": "float16"}, "eigh_dtype"), (Shampoo, {"graft_beta2": 1.0}, "graft_beta2"),
    (Shampoo, {"start_preconditioning_step": -1}, "start_preconditioning_step"),
    (Shampoo, {"warmup_steps": -1}, "warmup_steps"),
])
def test_bad_arguments_name_their_key(cls, options, key):
    model = twins()[0]
    with pytest.raises(HyperparameterError) as e:
        cls(model, **options)
    assert e.value.key == key and e.value.fix
    groups = [layer_group(model, 0, **options)] if key not in ("loss", "kl_clip") else None  # whole-model keys
    if groups:  # the same fact, set by a param group
        with pytest.raises(HyperparameterError) as e:
            cls(groups, model=model)
        assert e.value.key == key and "param group of layer 'layers.0'" in str(e.value)


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_lowrank_is_a_deprecated_alias_of_factored(cls):
    a, b = twins(10)
    with pytest.warns(FutureWarning, match="lowrank"):
        old = cls(a, lr=0.1, damping=0.1, lowrank=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = cls(b, lr=0.1, damping=0.1, factored=False)
    assert old.defaults["factored"] is False
    for m, o in ((a, old), (b, new)):
        train(m, o, batches(2, size=3))
    assert same_parameters(a, b) and {layer.path for layer in old.layers.values()} == {"dense"}


def _check(*overrides: str) -> list[UsageError]:
    cfg = compose(list(overrides))
    model = MLP((12,), 3, width=32)
    with torch.device("meta"):
        base = MLP((12,), 3, width=8)
    plan = parametrize.make_plan(model, base, "somup", cfg.optimizer.name)
    return check(cfg.optimizer, model, plan)


@pytest.mark.parametrize("overrides, key, needle", [
    (["optimizer=kfac", "optimizer.ema_decay=1.5"], "optimizer.ema_decay", "[0, 1)"),
    (["optimizer=kfac", "optimizer.fisher=exact"], "optimizer.fisher", "empirical, mc"),
    (["optimizer=shampoo", "optimizer.exponent=-1"], "optimizer.exponent", "> 0"),
    (["optimizer=shampoo", "+optimizer.damping_eps=2"], "optimizer.damping_eps", "per layer"),
    (["optimizer=kfac", "+optimizer.model=1"], "optimizer.model", "not an option"),
    (["optimizer=kfac", "+optimizer.foo=1"], "optimizer.foo", "not an option"),
])
def test_the_registry_reports_refusals_by_config_key(overrides, key, needle):
    errors = _check(*overrides)
    assert len(errors) == 1 and errors[0].key == key and needle in errors[0].problem


def test_the_registry_passes_every_config_key_to_the_constructor():
    assert _check("optimizer=kfac") == [] and _check("optimizer=shampoo", "optimizer.graft_eps=0.001") == []
    with pytest.warns(FutureWarning, match="lowrank"):
        assert _check("optimizer=kfac", "optimizer.lowrank=false") == []


# -- the layer protocol ------------------------------------------------------------------------------------

class Identity(Layer):
    """A preconditioner without statistics: D = G."""

    def precondition(self, state: dict, group: dict) -> torch.Tensor:
        return self.grad_matrix()


class Plain(LayerwiseOptimizer):
    """The smallest layerwise optimizer: no damping, no statistics."""

    def __init__(self, params, *, model=None, lr=0.1, momentum=0.0, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "bias_weight_decay": None, "statistics_interval": 1, "inverse_interval": 1,
                                  "factored": False}, model=model)

    def make_layer(self, name, weight, bias, module):
        return Identity(name, weight, bias, module)


def test_a_preconditioner_without_statistics_is_sgd():
    """The base class alone (layer_direction, the step, the weight-decay split) with D = G is torch's SGD."""
    a, b = twins(11)
    plain = Plain(a, lr=0.1, momentum=0.9, weight_decay=0.01)
    sgd = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    for m, o in ((a, plain), (b, sgd)):
        train(m, o, batches(3))
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert sorted(plain.layers) == ["layers.0", "layers.1", "layers.2"]


class SignedRest(Plain):
    """Plain with its own rest update: the sign of the gradient (signSGD) for parameters outside layers."""

    def rest_direction(self, group, p, state):
        state["rest_steps"] = state.get("rest_steps", 0) + 1
        return p.grad.sign()


def test_the_rest_of_the_parameters_takes_the_subclass_s_direction_through_the_sgd_update():
    """A LayerNorm between two layers: its gain and bias move by lr·(sign(g) + wd·p) (the rest's direction, then the
    base's weight decay), the layers exactly as without the override, and the rest's state is its own."""
    torch.manual_seed(13)
    models = [nn.Sequential(nn.Linear(5, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 3)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [cls(m, lr=0.1, weight_decay=0.01) for cls, m in zip((Plain, SignedRest), models)]
    x, y = torch.randn(9, 5), torch.randint(0, 3, (9,))
    before = [p.detach().clone() for p in models[1][1].parameters()]
    for m, o in zip(models, opts):
        F.cross_entropy(m(x), y).backward()
    grads = [p.grad.clone() for p in models[1][1].parameters()]
    for o in opts:
        o.step()
    assert sorted(opts[1].layers) == ["0", "3"]
    for p, p0, g in zip(models[1][1].parameters(), before, grads):
        torch.testing.assert_close(p.detach(), p0 - 0.1 * (g.sign() + 0.01 * p0))
        assert opts[1].state[p] == {"rest_steps": 1}
    for i in (0, 3):
        assert same_parameters(models[0][i], models[1][i])


def test_a_refused_step_moves_neither_the_layers_nor_the_rest():
    """The rest's update is part of the atomic step: a non-finite input refuses the step, and the LayerNorm's
    gain and bias (whose gradient is as non-finite) stay where they were, their rest update never called."""
    torch.manual_seed(14)
    model = nn.Sequential(nn.Linear(5, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 3))
    opt = SignedRest(model, lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(9, 5)
    x[0, 0] = math.inf
    F.cross_entropy(model(x), torch.randint(0, 3, (9,))).backward()
    with pytest.warns(RuntimeWarning, match="refused"):
        opt.step()
    assert opt.diverged and all(torch.equal(p, p0) for p, p0 in zip(model.parameters(), before))
    assert all("rest_steps" not in opt.state[p] for p in model[1].parameters())


# -- what muso says about each optimizer (the registry) ----------------------------------------------------

@pytest.mark.parametrize("overrides, note", [
    (["optimizer=muon"], "adjust_lr_fn=none"),
    (["optimizer=muon", "optimizer.adjust_lr_fn=match_rms_adamw"], "adjust_lr_fn=match_rms_adamw"),
    (["optimizer=kfac"], ""), (["optimizer=shampoo"], ""), (["optimizer=soap"], ""), (["optimizer=sgd"], ""),
])
def test_muon_s_params_header_says_which_shape_rule_it_applies_outside_the_table(overrides, note):
    """Muon's adjust_lr_fn multiplies the table's lr by a shape factor of torch's: `muso params` must say whether
    it is neutralised (none). No other optimizer has a width rule outside the table."""
    assert params_note(compose(overrides).optimizer) == note


@pytest.mark.parametrize("overrides, warned", [
    (["optimizer=kfac", "param.readout_zero_init=true"], True),
    (["optimizer=kfac", "param=sp", "param.readout_zero_init=true"], True),
    (["optimizer=kfac"], False),
    (["optimizer=shampoo", "param.readout_zero_init=true"], False),
    (["optimizer=muon", "param.readout_zero_init=true"], False),
])
def test_a_zero_readout_with_kfac_is_a_known_pitfall(overrides, warned):
    """A zero readout makes K-FAC's first step kernel (NNGP) ridge regression (Ishikawa & Karakida 2024): warned for
    K-FAC only, naming the key and the fix."""
    found = pitfalls(compose(overrides))
    assert len(found) == warned
    if warned:
        assert "param.readout_zero_init=true with optimizer=kfac" in found[0] and "readout_zero_init=false" in found[0]
