"""The parameterization core: roles from shapes, and every cell of the SP / µP / second-order µP table.

Expected values are written out here from docs/parameterization.md, independently of the table in
muso_cli/parametrize.py, with m = 4 (width 256 over base width 64).
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from muso_cli import parametrize as P
from muso_cli.config import compose
from muso_cli.validate import validate
from muso_cli.models.mlp import MLP

M = 4.0
IN, HID, OUT, VEC = "input", "hidden", "output", "vector"


def mlp(width, device="cpu"):
    with torch.device(device):
        return MLP((1, 28, 28), 10, width, depth=3)


def plan_for(param, optimizer, **kw):
    return P.make_plan(mlp(256), mlp(64, "meta"), param, optimizer, **kw)


def by_role(plan, values):
    """{role: value} over weights (and hidden biases as the vector role) of the MLP."""
    name = {IN: "layers.0.weight", HID: "layers.1.weight", OUT: "layers.2.weight", VEC: "layers.1.bias"}
    return {role: values[n] for role, n in name.items()}


# ---------------------------------------------------------------------------------------------------------
# Roles and width multipliers

def test_mlp_roles_and_width_multipliers():
    specs = P.infer_roles(mlp(256), mlp(64, "meta"))
    assert {n: (s.role, s.width_mult) for n, s in specs.items()} == {
        "layers.0.weight": (IN, 4.0), "layers.0.bias": (VEC, 4.0),
        "layers.1.weight": (HID, 4.0), "layers.1.bias": (VEC, 4.0),
        "layers.2.weight": (OUT, 4.0), "layers.2.bias": ("fixed", 1.0),
    }
    assert specs["layers.1.weight"].fan_in == 256 and specs["layers.0.weight"].fan_in == 784


class ConvNet(nn.Module):
    """Conv + BatchNorm + LayerNorm + a tied embedding/readout: roles must still come from shapes alone."""

    def __init__(self, k):
        super().__init__()
        self.stem = nn.Conv2d(3, 8 * k, 3)          # input: out channels grow
        self.bn = nn.BatchNorm2d(8 * k)             # vector gains/biases
        self.body = nn.Conv2d(8 * k, 16 * k, 3)     # hidden
        self.norm = nn.LayerNorm(16 * k)
        self.head = nn.Linear(16 * k, 10)           # output
        self.embed = nn.Embedding(10, 16 * k)       # tied to the head: [10, 16k]
        self.embed.weight = self.head.weight
        self.scale = nn.Parameter(torch.ones(3))    # fixed

    def forward(self, x):
        return self.head(self.norm(self.body(self.bn(self.stem(x))).mean((2, 3))))


def test_conv_norm_and_tied_roles_from_shapes():
    specs = P.infer_roles(ConvNet(4), ConvNet(1).to("meta"))
    roles = {n: s.role for n, s in specs.items()}
    assert roles["stem.weight"] == IN and roles["body.weight"] == HID and roles["head.weight"] == OUT
    assert roles["bn.weight"] == roles["bn.bias"] == roles["norm.weight"] == VEC
    assert roles["scale"] == "fixed" and roles["head.bias"] == "fixed"
    assert "embed.weight" not in specs  # a tied parameter appears once, as the readout
    assert specs["stem.weight"].fan_in == 27 and specs["body.weight"].fan_in == 32 * 9
    assert specs["stem.weight"].layer == "stem" and specs["stem.bias"].is_bias


def test_embedding_layout_is_fan_in_first():
    class Emb(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.e = nn.Embedding(100, 8 * k)
            self.out = nn.Linear(8 * k, 3)

    specs = P.infer_roles(Emb(2), Emb(1).to("meta"))
    assert specs["e.weight"].role == IN and specs["e.weight"].fan_in == 1 and specs["e.weight"].width_mult == 2


def test_rows_of_features_whose_last_dimension_alone_scales_are_input_like_an_embeddings_rows():
    """A position embedding (1, T, d) or a class token (1, 1, d), the timm/ViT layout: one d-vector per row, added
    to the features, as an nn.Embedding(T, d)'s rows are. Input role, fan-in 1. A 3-D tensor scaling elsewhere is
    refused; a Conv1d's 3-D weight keeps the layer's reading."""
    class Tokens(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.pos_embed = nn.Parameter(torch.zeros(1, 5, 8 * k))
            self.cls_token = nn.Parameter(torch.zeros(1, 1, 8 * k))
            self.conv = nn.Conv1d(8 * k, 8 * k, 3)
            self.out = nn.Linear(8 * k, 3)

    specs = P.infer_roles(Tokens(4), Tokens(1).to("meta"), Tokens(2).to("meta"))
    for name in ("pos_embed", "cls_token"):
        s = specs[name]
        assert (s.role, s.width_mult, s.fan_in, s.layout) == (IN, 4.0, 1, "rows")
    assert (specs["conv.weight"].role, specs["conv.weight"].layout) == (HID, "out_first")
    plan = P.make_plan(Tokens(4), Tokens(1).to("meta"), "mup", "sgd", delta=Tokens(2).to("meta"))
    assert plan.lr_mult["pos_embed"] == 4.0 and plan.init_std["pos_embed"] == 1.0  # SGD-µP's input cell, σ/√1

    class Odd(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(8 * k, 3, 8 * k))

    with pytest.raises(ValueError, match="or the last one alone"):
        P.infer_roles(Odd(2), Odd(1).to("meta"))


def test_mismatched_base_model_is_refused():
    with pytest.raises(ValueError, match="not in the base"):
        P.infer_roles(MLP((784,), 10, 64, depth=4), mlp(64, "meta"))
    with pytest.raises(ValueError, match="only the first two dimensions"):
        P.infer_roles(nn.Conv2d(3, 8, 5), nn.Conv2d(3, 8, 3).to("meta"))


# ---------------------------------------------------------------------------------------------------------
# The learning-rate table: every (param, optimizer) cell, every role.

LR_EXPECTED = {
    ("sp", "sgd"): {IN: 1, HID: 1, OUT: 1, VEC: 1},
    ("sp", "adam"): {IN: 1, HID: 1, OUT: 1, VEC: 1},
    ("sp", "kfac"): {IN: 1, HID: 1, OUT: 1, VEC: 1},
    ("sp", "shampoo"): {IN: 1, HID: 1, OUT: 1, VEC: 1},
    ("mup", "sgd"): {IN: M, HID: 1, OUT: 1 / M, VEC: M},
    ("mup", "adam"): {IN: 1, HID: 1 / M, OUT: 1 / M, VEC: 1},
    ("mup", "kfac"): {IN: M, HID: 1, OUT: 1 / M, VEC: M},        # the naive practice: SGD rules
    ("mup", "shampoo"): {IN: M, HID: 1, OUT: 1 / M, VEC: M},
    ("somup", "sgd"): {IN: M, HID: 1, OUT: 1 / M, VEC: M},       # same as mup for first-order optimizers
    ("somup", "adam"): {IN: 1, HID: 1 / M, OUT: 1 / M, VEC: 1},
    ("somup", "kfac"): {IN: 1, HID: 1, OUT: 1, VEC: 1},          # K-FAC: width-free lr
    ("somup", "shampoo"): {IN: M ** 0.5, HID: 1, OUT: M ** -0.5, VEC: 1},
    # Muon: Linear/Conv weights orthogonalised (U Vᵀ = (G Gᵀ)^-¼ G (Gᵀ G)^-¼: Shampoo's power ½), biases by AdamW
    ("sp", "muon"): {IN: 1, HID: 1, OUT: 1, VEC: 1},
    ("mup", "muon"): {IN: 1, HID: 1 / M, OUT: 1 / M, VEC: 1},          # the naive practice: Adam's µP rules
    ("somup", "muon"): {IN: M ** 0.5, HID: 1, OUT: M ** -0.5, VEC: 1},  # biases: AdamW's µP (vector: 1)
    # SOAP: Adam in Shampoo's eigenbasis; its steady state is Adam's in a rotated basis, so Adam's µP rules (its
    # first step alone is U Vᵀ, Shampoo-like: docs/parameterization.md, "SOAP's steady state")
    ("sp", "soap"): {IN: 1, HID: 1, OUT: 1, VEC: 1},
    ("mup", "soap"): {IN: 1, HID: 1 / M, OUT: 1 / M, VEC: 1},
    ("somup", "soap"): {IN: 1, HID: 1 / M, OUT: 1 / M, VEC: 1},
}


@pytest.mark.parametrize("param, optimizer", sorted(LR_EXPECTED))
def test_lr_multipliers(param, optimizer):
    plan = plan_for(param, optimizer)
    got = by_role(plan, plan.lr_mult)
    if optimizer in P.LAYERWISE:
        del got[VEC]  # a layer's bias is preconditioned with its weight and takes its lr (next test)
    for role, value in got.items():
        assert value == pytest.approx(LR_EXPECTED[param, optimizer][role]), role


def test_second_order_groups_give_biases_their_weights_lr():
    plan = plan_for("somup", "shampoo")
    groups = plan.param_groups(mlp(256), lr=0.1)
    layer0 = next(g for g in groups if g.get("layer") == "layers.0")
    assert layer0["param_names"] == ["layers.0.weight", "layers.0.bias"]
    assert layer0["lr"] == pytest.approx(0.1 * M ** 0.5)


@pytest.mark.parametrize("exponent, expected_input", [(0.25, M ** 0.5), (0.5, 1.0), (0.125, M ** 0.75)])
def test_general_shampoo_rule_lr_proportional_to_fan_ratio_power_1_minus_2e(exponent, expected_input):
    """Shampoo with exponent e per side: lr ∝ (fan_out/fan_in)^(1-2e) (input: fan_out grows; output: fan_in)."""
    plan = plan_for("somup", "shampoo", power=2 * exponent)
    assert plan.lr_mult["layers.0.weight"] == pytest.approx(expected_input)
    assert plan.lr_mult["layers.2.weight"] == pytest.approx(1 / expected_input)
    assert plan.lr_mult["layers.1.weight"] == pytest.approx(1.0)


# Grafting: the step takes the grafted optimizer's per-layer norm, so the weights take that optimizer's µP rule under
# somup (sp and the naive mup practice unchanged); Shampoo's own rule without grafting.
GRAFTED_EXPECTED = {
    ("somup", "none"): {IN: M ** 0.5, HID: 1, OUT: M ** -0.5},
    ("somup", "sgd"): {IN: M, HID: 1, OUT: 1 / M},
    ("somup", "adagrad"): {IN: 1, HID: 1 / M, OUT: 1 / M},
    ("somup", "adam"): {IN: 1, HID: 1 / M, OUT: 1 / M},
    ("mup", "adam"): {IN: M, HID: 1, OUT: 1 / M},
    ("sp", "adam"): {IN: 1, HID: 1, OUT: 1},
}


@pytest.mark.parametrize("param, grafting", sorted(GRAFTED_EXPECTED))
def test_grafted_shampoo_takes_the_grafted_optimizers_lr_rule(param, grafting):
    plan = plan_for(param, "shampoo", grafting=grafting)
    got = by_role(plan, plan.lr_mult)
    for role in (IN, HID, OUT):
        assert got[role] == pytest.approx(GRAFTED_EXPECTED[param, grafting][role]), role
    assert plan.lr_mult["layers.1.bias"] == got[HID]  # the bias still moves with its weight
    # the grafted rule does not depend on Shampoo's exponent (the step's size is the grafted optimizer's)
    other = plan_for(param, "shampoo", grafting=grafting, power=1.0)
    if grafting != "none" and param == "somup":
        assert other.lr_mult == plan.lr_mult


# ---------------------------------------------------------------------------------------------------------
# Init: std = σ·k/√fan_in with k = m^-1/2 at the readout under mup/somup.

INIT_K = {"sp": {IN: 1, HID: 1, OUT: 1}, "mup": {IN: 1, HID: 1, OUT: M ** -0.5},
          "somup": {IN: 1, HID: 1, OUT: M ** -0.5}}
FAN_IN = {IN: 784, HID: 256, OUT: 256}


@pytest.mark.parametrize("param", P.PARAMS)
@pytest.mark.parametrize("optimizer", P.OPTIMIZERS)
def test_init_std(param, optimizer):
    plan = plan_for(param, optimizer, sigma=1.5)
    got = by_role(plan, plan.init_std)
    for role in (IN, HID, OUT):
        assert got[role] == pytest.approx(1.5 * INIT_K[param][role] / math.sqrt(FAN_IN[role]))
    assert got[VEC] == 0.0  # biases start at zero


def test_init_draws_match_the_plan_and_zero_readout():
    model = mlp(256)
    plan = P.make_plan(model, mlp(64, "meta"), "mup", "sgd")
    plan.init_(model, torch.Generator().manual_seed(0))
    for name, p in model.named_parameters():
        std = plan.init_std[name]
        if std:
            assert p.std().item() == pytest.approx(std, rel=0.05), name
        else:
            assert torch.all(p == 0), name
    zero = P.make_plan(model, mlp(64, "meta"), "mup", "sgd", readout_zero_init=True)
    zero.init_(model)
    assert torch.all(model.layers[2].weight == 0) and model.layers[1].weight.abs().sum() > 0


def test_readout_zero_init_warns_with_kfac_only():
    with pytest.warns(UserWarning, match="NNGP"):
        validate(compose(["param=somup", "param.readout_zero_init=true", "optimizer=kfac"]), check_data=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate(compose(["param=somup", "param.readout_zero_init=true", "optimizer=sgd"]), check_data=False)


# ---------------------------------------------------------------------------------------------------------
# Damping multipliers (relative to the base width) per rule.

DAMPING_EXPECTED = {
    ("kfac", "constant"): {"A": {IN: 1, HID: 1, OUT: 1}, "B": {IN: 1, HID: 1, OUT: 1}},
    ("kfac", "somup"): {"A": {IN: 1, HID: M, OUT: M}, "B": {IN: 1 / M, HID: 1 / M, OUT: 1}},
    ("kfac", "trace"): {"A": {IN: 1, HID: 1, OUT: 1}, "B": {IN: 1, HID: 1, OUT: 1}},  # adaptive at run time
    ("kfac", "pi"): {"A": {IN: 1, HID: 1, OUT: 1}, "B": {IN: 1, HID: 1, OUT: 1}},
    # SP's eigenvalue scales (|x|² = Θ(fan-in), |δ|² = Θ(1)): the paper's code's SP baseline
    ("kfac", "fanin"): {"A": {IN: 1, HID: M, OUT: M}, "B": {IN: 1, HID: 1, OUT: 1}},
    ("shampoo", "constant"): {"eps": {IN: 1, HID: 1, OUT: 1}},
    ("shampoo", "somup"): {"eps": {IN: 1 / M, HID: 1, OUT: M}},
    ("shampoo", "relative"): {"eps": {IN: 1, HID: 1, OUT: 1}},
    ("soap", "constant"): {"eps": {IN: 1, HID: 1, OUT: 1}},
    ("soap", "somup"): {"eps": {IN: 1 / M, HID: 1 / M, OUT: 1}},  # Adam's µP ε: the rotated gradient's entries
    ("soap", "relative"): {"eps": {IN: 1, HID: 1, OUT: 1}},
}


@pytest.mark.parametrize("optimizer, rule", sorted(DAMPING_EXPECTED))
def test_damping_multipliers(optimizer, rule):
    plan = plan_for("somup", optimizer, damping_rule=rule)
    layer = {IN: "layers.0", HID: "layers.1", OUT: "layers.2"}
    for factor, expected in DAMPING_EXPECTED[optimizer, rule].items():
        for role, value in expected.items():
            assert plan.damping_mult[layer[role]][factor] == pytest.approx(value), (factor, role)
    groups = {g.get("layer"): g for g in plan.param_groups(mlp(256), lr=1.0)}
    for factor in DAMPING_EXPECTED[optimizer, rule]:
        assert groups["layers.1"][f"damping_{factor}"] == plan.damping_mult["layers.1"][factor]


@pytest.mark.parametrize("optimizer, param, rule", [
    ("kfac", "sp", "constant"), ("kfac", "mup", "constant"), ("kfac", "somup", "somup"),
    ("shampoo", "sp", "relative"), ("shampoo", "somup", "relative"), ("sgd", "somup", None),
    ("soap", "sp", "relative"), ("soap", "somup", "relative"), ("muon", "somup", None)])
def test_auto_damping_rule(optimizer, param, rule):
    assert P.resolve_damping_rule(optimizer, param) == rule


def test_everything_is_one_at_the_base_width():
    for param in P.PARAMS:
        for optimizer in P.OPTIMIZERS:
            plan = P.make_plan(mlp(64), mlp(64, "meta"), param, optimizer, delta=mlp(128, "meta"))
            assert plan.specs["layers.1.weight"].role == HID  # the delta model tells the roles apart
            assert set(plan.lr_mult.values()) == {1.0}
            assert all(v == 1.0 for d in plan.damping_mult.values() for v in d.values())


def test_base_width_without_a_delta_model_warns():
    with pytest.warns(UserWarning, match="no delta model"):
        plan = P.make_plan(mlp(64), mlp(64, "meta"), "somup", "kfac")
    assert {s.role for s in plan.specs.values()} == {"fixed"}


@pytest.mark.parametrize("optimizer", P.OPTIMIZERS)
def test_identity_at_the_base_width_is_the_same_for_every_parameterization(optimizer):
    """At m = 1 the parameterizations coincide: one run serves them all (an adaptive damping rule still counts)."""
    ids = {param: P.identity(optimizer, param, at_base_width=True) for param in P.PARAMS}
    assert len({tuple(i.items()) for i in ids.values()}) == 1
    wider = {param: P.identity(optimizer, param, at_base_width=False) for param in P.PARAMS}
    assert len({tuple(i.items()) for i in wider.values()}) == 3
    if P.is_damped(optimizer):
        rule = "trace" if optimizer == "kfac" else "relative"
        assert P.identity(optimizer, "somup", damping_rule=rule, at_base_width=True)["damping_rule"] == rule


# ---------------------------------------------------------------------------------------------------------
# Weight decay: λ_layer = λ·m^(c·e_lr); decoupled (c = −1) keeps lr_layer·λ_layer = η·λ, coupled (c = 0) keeps λ.

@pytest.mark.parametrize("param, optimizer", sorted(LR_EXPECTED))
def test_decoupled_weight_decay_keeps_lr_times_decay_fixed(param, optimizer):
    plan = plan_for(param, optimizer)
    groups = plan.param_groups(mlp(256), lr=0.1, weight_decay=0.01)
    for g in groups:
        if g["params"][0].dim() >= 2:
            assert g["lr"] * g["weight_decay"] == pytest.approx(0.1 * 0.01), g["param_names"]
        else:  # biases outside layer groups: not decayed by default
            assert g["weight_decay"] == 0.0, g["param_names"]
        assert g.get("bias_weight_decay", 0.0) == 0.0


def test_coupled_weight_decay_and_decayed_vectors():
    plan = plan_for("mup", "adam", weight_decay_rule="coupled", decay_vectors=True)
    groups = {g["param_names"][0]: g for g in plan.param_groups(mlp(256), lr=0.1, weight_decay=0.01)}
    assert {g["weight_decay"] for g in groups.values()} == {0.01}
    assert groups["layers.1.weight"]["lr"] == pytest.approx(0.1 / M)
    layer = {g["layer"]: g for g in plan_for("mup", "kfac", decay_vectors=True).param_groups(
        mlp(256), lr=0.1, weight_decay=0.01) if "layer" in g}
    assert layer["layers.0"]["bias_weight_decay"] == pytest.approx(0.01 / M)  # the bias moves with its weight
    assert "weight_decay" not in plan.param_groups(mlp(256), lr=0.1)[0]  # no λ given: the optimizer's own


def test_layer_groups_carry_the_damping_rule():
    groups = [g for g in plan_for("somup", "kfac").param_groups(mlp(256), lr=0.1) if "layer" in g]
    assert {g["damping_rule"] for g in groups} == {"somup"}
    assert all("damping_rule" not in g for g in plan_for("somup", "sgd").param_groups(mlp(256), lr=0.1))


def test_first_order_param_groups_one_per_parameter():
    plan = plan_for("mup", "sgd")
    groups = plan.param_groups(mlp(256), lr=0.5, weight_decay=0.0)
    assert len(groups) == 6 and all(len(g["params"]) == 1 for g in groups)
    lrs = {g["param_names"][0]: g["lr"] for g in groups}
    assert lrs["layers.0.weight"] == pytest.approx(0.5 * M) and lrs["layers.2.weight"] == pytest.approx(0.5 / M)
    opt = torch.optim.SGD(groups, lr=0.5)  # torch accepts the extra keys
    assert opt.param_groups[0]["role"] == IN


def test_rows_for_muso_params():
    rows = {r["name"]: r for r in plan_for("somup", "kfac").rows()}
    assert rows["layers.1.weight"]["damping_A_mult"] == M and rows["layers.1.weight"]["damping_B_mult"] == 1 / M
    assert rows["layers.1.bias"]["damping_A_mult"] is None  # the bias shares its weight's factors
    assert rows["layers.0.weight"]["shape"] == [256, 784] and rows["layers.0.weight"]["role"] == IN


# ---------------------------------------------------------------------------------------------------------
# Muon: a layer's weight is Muon's, everything else AdamW's (UPDATED_LIKE), with AdamW's own column of the table.

class Embedded(nn.Module):
    """An embedding (input role, fan-in first), a bare hidden matrix, a LayerNorm and a Linear readout."""

    def __init__(self, k):
        super().__init__()
        self.embed = nn.Embedding(50, 8 * k)
        self.mix = nn.Parameter(torch.zeros(8 * k, 8 * k))
        self.norm = nn.LayerNorm(8 * k)
        self.head = nn.Linear(8 * k, 5)

    def forward(self, tokens):
        return self.head(self.norm(self.embed(tokens) @ self.mix))


def test_muon_orthogonalises_layer_weights_and_gives_the_rest_adams_rule():
    plan = P.make_plan(Embedded(4), Embedded(1).to("meta"), "somup", "muon")
    assert {n: plan.algorithm(n) for n in plan.specs} == {
        "embed.weight": "adam", "mix": "adam", "norm.weight": "adam", "norm.bias": "adam",
        "head.weight": "muon", "head.bias": "adam"}
    lr = {n: plan.lr_mult[n] for n in plan.specs}
    assert lr["head.weight"] == pytest.approx(M ** -0.5)            # Muon's readout: the preconditioned rule
    assert lr["embed.weight"] == 1.0 and lr["norm.weight"] == 1.0    # AdamW µP: input and vector 1
    assert lr["mix"] == pytest.approx(1 / M)                         # AdamW µP: hidden 1/m


def test_muon_groups_carry_the_algorithm_and_the_rests_own_base_lr():
    plan = plan_for("somup", "muon")
    groups = {g["param_names"][0]: g for g in plan.param_groups(mlp(256), lr=0.02, weight_decay=0.1, rest_lr=1e-3)}
    assert groups["layers.0.weight"]["algorithm"] == "muon" and groups["layers.0.bias"]["algorithm"] == "adam"
    assert groups["layers.0.weight"]["lr"] == pytest.approx(0.02 * M ** 0.5)
    assert groups["layers.2.weight"]["lr"] == pytest.approx(0.02 * M ** -0.5)
    assert groups["layers.1.bias"]["lr"] == pytest.approx(1e-3)
    assert groups["layers.0.weight"]["lr"] * groups["layers.0.weight"]["weight_decay"] == pytest.approx(0.02 * 0.1)
    assert groups["layers.1.bias"]["weight_decay"] == 0.0
    same = {g["param_names"][0]: g["lr"] for g in plan.param_groups(mlp(256), lr=0.02)}  # no rest_lr: lr for all
    assert same["layers.1.bias"] == pytest.approx(0.02)


def test_rows_show_which_optimizer_updates_each_parameter():
    rows = {r["name"]: r for r in plan_for("somup", "muon").rows()}
    assert rows["layers.0.weight"]["algorithm"] == "muon" and rows["layers.2.bias"]["algorithm"] == "adam"
    kfac = {r["name"]: r for r in plan_for("somup", "kfac").rows()}
    assert "algorithm" not in kfac["layers.0.weight"]


def test_soap_groups_are_layers_with_the_somup_eps_multipliers():
    groups = {g.get("layer"): g for g in plan_for("somup", "soap", damping_rule="somup").param_groups(mlp(256), lr=3e-3)}
    assert groups["layers.0"]["param_names"] == ["layers.0.weight", "layers.0.bias"]
    assert groups["layers.1"]["lr"] == pytest.approx(3e-3 / M)
    assert [groups[f"layers.{i}"]["damping_eps"] for i in range(3)] == pytest.approx([1 / M, 1 / M, 1])
# Transformers: what a layerwise optimizer does not precondition (UPDATED_LIKE), forward multipliers (FORWARD)
# and zero-initialised weights (ZERO_INIT), on the GPT of muso_cli/models/gpt.py at d_model 256 over base 64.

from omegaconf import OmegaConf  # noqa: E402

from muso_cli.models.gpt import GPT  # noqa: E402

GPT_CFG = dict(layers=1, heads=4, head_size=None, mlp_ratio=4, positions="learned", tie=False, bias=True,
               zero_query=False)


def gpt(width, device="cpu", **options):
    with torch.device(device):
        return GPT(256, 32, width, OmegaConf.create({**GPT_CFG, **options}))


def gpt_plan(param, optimizer, **options):
    return P.make_plan(gpt(256, **options), gpt(64, "meta", **options), param, optimizer,
                       delta=gpt(128, "meta", **options))


EMBEDDING, GAIN, QUERY, HEAD = "tok_emb.weight", "blocks.0.ln1.weight", "blocks.0.attn.q.weight", "head.weight"


PRECONDITIONED = {  # (query lr, unembedding lr): hidden and output cells of LR_EXPECTED
    ("sp", "kfac"): (1, 1), ("mup", "kfac"): (1, 1 / M), ("somup", "kfac"): (1, 1),
    ("sp", "shampoo"): (1, 1), ("mup", "shampoo"): (1, 1 / M), ("somup", "shampoo"): (1, M ** -0.5)}


@pytest.mark.parametrize("param", P.PARAMS)
@pytest.mark.parametrize("optimizer", ["kfac", "shampoo"])
def test_what_a_layerwise_optimizer_does_not_precondition_takes_sgds_rule(param, optimizer):
    """Embeddings and LayerNorm gains get K-FAC's / Shampoo's plain SGD update, so SGD's cell: under µP an
    input-role embedding lr m and a gain lr m; the Linear layers keep the preconditioned rule."""
    plan, sgd = gpt_plan(param, optimizer), gpt_plan(param, "sgd")
    assert plan.specs[EMBEDDING].role == IN and plan.specs[GAIN].role == VEC
    for name in (EMBEDDING, GAIN, "pos_emb.weight", "ln_f.bias"):
        assert plan.lr_mult[name] == pytest.approx(sgd.lr_mult[name]), name
    expected_sgd = {"sp": 1.0, "mup": M, "somup": M}[param]
    assert plan.lr_mult[EMBEDDING] == pytest.approx(expected_sgd)
    assert (plan.lr_mult[QUERY], plan.lr_mult[HEAD]) == pytest.approx(PRECONDITIONED[param, optimizer])


@pytest.mark.parametrize("param, head_size_scaling, expected", [
    ("sp", True, 1.0), ("mup", True, M ** -0.5), ("somup", True, M ** -0.5),
    ("mup", False, 1.0), ("somup", False, 1.0),   # a fixed head size: 1/√d_head is µP's 1/d_head up to a constant
])
def test_attention_logit_multiplier(param, head_size_scaling, expected):
    """Logits q·kᵀ/√d_head × m^e, m of d_head: 1/√d_head under SP, ∝ 1/d_head under µP and second-order µP."""
    options = {} if head_size_scaling else {"heads": None, "head_size": 16}
    plan = gpt_plan(param, "adam", **options)
    kind, m, value = plan.forward_mult["blocks.0.attn.logit_scale"]
    assert kind == "attention" and m == (M if head_size_scaling else 1.0) and value == pytest.approx(expected)
    model = gpt(256, **options)
    plan.init_(model)
    assert model.blocks[0].attn.logit_scale.value == pytest.approx(expected)


@pytest.mark.parametrize("param, expected", [("sp", 1.0), ("mup", M ** 0.5), ("somup", M ** 0.5)])
def test_tied_unembedding_keeps_the_output_role_and_the_embedding_its_scale(param, expected):
    """A tied weight is the readout (output role, init m^-½/√d under µP); the embedding's output × √d × m^½ has
    Θ(1) entries at every width, as an untied input-role embedding's."""
    plan = gpt_plan(param, "kfac", tie=True)
    shared = plan.specs[EMBEDDING]
    assert shared.role == OUT and shared.layer == "head" and "head.weight" not in plan.specs
    assert plan.forward_mult["tied_scale"][2] == pytest.approx(expected)
    model = gpt(256, tie=True)
    plan.init_(model, torch.Generator().manual_seed(0))
    embedded = model.tied_scale(model.tok_emb(torch.arange(256)) * 256 ** 0.5)
    assert embedded.std().item() == pytest.approx(1.0, rel=0.05)


def test_zero_initialised_queries_under_every_parameterization():
    for param in P.PARAMS:
        plan = gpt_plan(param, "adam", zero_query=True)
        model = gpt(256, zero_query=True)
        plan.init_(model)
        assert plan.init_std[QUERY] == 0.0 and torch.all(model.blocks[0].attn.q.weight == 0)
        assert model.blocks[0].attn.k.weight.abs().sum() > 0


def test_forward_multipliers_in_rows_and_their_errors():
    rows = {r["name"]: r for r in gpt_plan("mup", "adam").rows()}
    assert rows["blocks.0.attn.logit_scale"]["role"] == "attention"
    assert rows["blocks.0.attn.logit_scale"]["forward_mult"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown forward multiplier"):
        P.WidthMultiplier("readout", 8)
    with pytest.raises(ValueError, match="not in the base model"):
        P.forward_multipliers(nn.Sequential(P.WidthMultiplier("attention", 8)), nn.Sequential(nn.Identity()), "mup")


# ---------------------------------------------------------------------------------------------------------
# Depth: the table's second axis (DEPTH_LR, DEPTH_DAMPING, DEPTH_INIT; docs/parameterization.md "Depth"), on the
# residual MLP of muso_cli/models/resmlp.py at 8 blocks over a base depth of 2 (L/L₀ = 4), at its base width (only
# depth varies). Expected exponents written out from the derivation: a block's gradient scales as (L/L₀)^-α and its
# contribution to the residual stream must move by Θ(1/L).

from muso_cli.models.resmlp import ResMLP  # noqa: E402

D = 4.0  # L/L₀


def resmlp(depth, width=32, device="cpu"):
    with torch.device(device):
        return ResMLP((10,), 4, width, depth)


def depth_plan(optimizer, alpha, depth=8, **kw):
    return P.make_plan(resmlp(depth), resmlp(depth, device="meta"), "somup", optimizer,
                       delta=resmlp(depth, 64, "meta"), depth_base=resmlp(2, device="meta"),
                       depth_delta=resmlp(3, device="meta"), depth_alpha=alpha, **kw)


# exponent of L/L₀ in a block weight's lr, and in a block norm gain's (updated like SGD under K-FAC and Shampoo)
DEPTH_LR_EXPECTED = {
    ("sgd", 1.0): (1, 1), ("sgd", 0.5): (0, 0), ("sgd", 0.0): (0, 0),                 # 2α − 1
    ("adam", 1.0): (0, 0), ("adam", 0.5): (-0.5, -0.5), ("adam", 0.0): (0, 0),        # α − 1: CompleteP
    ("kfac", 1.0): (-1, 1), ("kfac", 0.5): (-1, 0), ("kfac", 0.0): (0, 0),            # −1 whatever α
    ("shampoo", 1.0): (0, 1), ("shampoo", 0.5): (-0.5, 0), ("shampoo", 0.0): (0, 0),  # scale-free: Adam's
    ("muon", 1.0): (0, 0), ("muon", 0.5): (-0.5, -0.5), ("muon", 0.0): (0, 0),
    ("soap", 1.0): (0, 0), ("soap", 0.5): (-0.5, -0.5), ("soap", 0.0): (0, 0),
}


@pytest.mark.parametrize("optimizer, alpha", sorted(DEPTH_LR_EXPECTED))
def test_depth_lr_multipliers_of_block_parameters(optimizer, alpha):
    plan = depth_plan(optimizer, alpha)
    weight, gain = DEPTH_LR_EXPECTED[optimizer, alpha]
    assert plan.lr_mult["blocks.5.fc1.weight"] == pytest.approx(D ** weight)
    assert plan.lr_mult["blocks.0.fc2.weight"] == pytest.approx(D ** weight)  # every block alike
    assert plan.lr_mult["blocks.5.norm.weight"] == pytest.approx(D ** gain)
    for outside in ("embed.weight", "head.weight", "norm.weight"):  # embedding, readout, final norm: no depth rule
        assert plan.lr_mult[outside] == 1.0


@pytest.mark.parametrize("alpha", P.DEPTH_ALPHAS)
def test_branch_multiplier_and_init(alpha):
    plan, base = depth_plan("adam", alpha), depth_plan("adam", alpha, depth=2)
    assert plan.forward_mult["blocks.3.branch"] == ("branch", D, pytest.approx(D ** -alpha))
    assert all(value == 1.0 for _, _, value in base.forward_mult.values())  # the base depth: every rule is 1
    assert set(base.lr_mult.values()) == {1.0}
    assert plan.init_std["blocks.3.fc1.weight"] == pytest.approx(base.init_std["blocks.1.fc1.weight"])
    model = resmlp(8)
    plan.init_(model)
    assert model.blocks[7].branch.value == pytest.approx(D ** -alpha)


@pytest.mark.parametrize("optimizer, rule, factor, exponent", [
    ("kfac", "somup", "B", -2), ("kfac", "somup", "A", 0), ("kfac", "constant", "B", -2), ("kfac", "fanin", "B", -2),
    ("kfac", "trace", "B", 0), ("kfac", "pi", "B", 0),  # adaptive: the factors carry the depth scaling themselves
    ("shampoo", "somup", "eps", -2), ("shampoo", "relative", "eps", 0),
    ("soap", "somup", "eps", -1), ("soap", "relative", "eps", 0)])
def test_depth_damping_of_block_layers_follows_the_gradients_scale(optimizer, rule, factor, exponent):
    """K-FAC's B and Shampoo's statistics ∝ (gradient)² ∝ L^-2α, SOAP's ε meets √v ∝ L^-α; α = 1 here."""
    plan = depth_plan(optimizer, 1.0, damping_rule=rule)
    assert plan.damping_mult["blocks.4.fc2"][factor] == pytest.approx(D ** exponent)
    assert plan.damping_mult["head"][factor] == 1.0 and plan.damping_mult["embed"][factor] == 1.0


def test_blocks_are_found_from_structure_and_counted():
    plan = depth_plan("kfac", 1.0)
    assert plan.depth.containers == ("blocks",) and (plan.depth.blocks, plan.depth.base_blocks) == (8, 2)
    assert plan.depth.block_of("blocks.7.fc1.weight") == ("blocks", 7)
    assert plan.depth.block_of("embed.weight") is None and plan.depth.block_of("norm.weight") is None
    rows = {r["name"]: r for r in plan.rows()}
    assert (rows["blocks.2.fc1.weight"]["block"], rows["blocks.2.fc1.weight"]["depth_mult"]) == ("in", D)
    assert (rows["head.weight"]["block"], rows["head.weight"]["depth_mult"]) == ("out", 1.0)
    assert rows["blocks.2.branch"]["role"] == "branch" and rows["blocks.2.branch"]["forward_mult"] == 1 / D


def test_a_depth_that_adds_no_block_is_refused():
    with pytest.raises(P.DepthStructureError, match="does not add residual blocks"):
        P.infer_depth(resmlp(4), resmlp(2, device="meta"), resmlp(2, device="meta"), 1.0)


def test_depth_alpha_outside_its_values_is_refused():
    with pytest.raises(ValueError, match="depth_alpha"):
        depth_plan("adam", 0.75)


def test_weight_decay_keeps_lr_times_decay_across_depth():
    plan = depth_plan("kfac", 1.0)  # lr ∝ 1/L for K-FAC's block weights: λ ∝ L (decoupled)
    assert plan.weight_decay_mult["blocks.1.fc1.weight"] * plan.lr_mult["blocks.1.fc1.weight"] == pytest.approx(1.0)
