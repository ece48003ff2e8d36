"""The transformers: the GPT (muso_cli/models/gpt.py) and the ViT (vit.py), built from real configs.

What they must be: causal where they say so; rotary positions that make attention depend on relative positions
only; roles from shapes alone (every projection hidden, embeddings input, the unembedding output, LayerNorm
vectors), with either heads or the head size scaling; every Linear preconditioned by K-FAC and Shampoo; bad
options refused by key before any work.
"""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from conftest import needs_fmnist
from muso_cli import models, optim
from muso_cli.cli import main
from muso_cli.config import compose
from muso_cli.errors import UsageError
from muso_cli.models.transformer import Rotary
from muso_cli.setup import build_model_and_plan
from muso_cli.validate import validate

GPT = ["model=gpt", "data=pystdlib", "data.context=16", "model.base_width=32", "device=cpu"]
PROJECTIONS = ("attn.q", "attn.k", "attn.v", "attn.out", "mlp.fc_in", "mlp.fc_out")


def gpt_cfg(*overrides):
    return compose([*GPT, *overrides])


def test_gpt_is_causal_and_returns_logits_per_position():
    cfg = gpt_cfg()
    model, _ = build_model_and_plan(cfg, (16,), 256, width=64)
    x = torch.randint(0, 256, (2, 16))
    logits = model(x)
    assert logits.shape == (2, 16, 256)
    changed = x.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 256      # a different future
    torch.testing.assert_close(model(changed)[:, :10], logits[:, :10])
    assert not torch.allclose(model(changed)[:, 10:], logits[:, 10:])


def test_rotary_attention_scores_depend_on_relative_positions_only():
    rotary = Rotary(8, context=12)
    q, k = torch.randn(8), torch.randn(8)
    at = lambda v, t: rotary(v.expand(1, 1, 12, 8))[0, 0, t]  # noqa: E731  (the same vector at position t)
    assert torch.dot(at(q, 5), at(k, 2)).item() == pytest.approx(torch.dot(at(q, 9), at(k, 6)).item(), rel=1e-5)
    assert torch.dot(at(q, 5), at(k, 2)).item() != pytest.approx(torch.dot(at(q, 5), at(k, 4)).item(), rel=1e-3)


@pytest.mark.parametrize("scaling, d_head, m_head", [(["model.heads=4", "model.head_size=null"], 32, 4.0),
                                                    (["model.heads=null", "model.head_size=8"], 8, 1.0)])
def test_gpt_roles_from_shapes_with_heads_or_head_size_scaling(scaling, d_head, m_head):
    """d_model 128 over base 32: with 4 heads the head size grows 8 → 32 (m of d_head 4), with a head size of 8
    the heads grow 4 → 16 (m of d_head 1); the roles are the same either way."""
    cfg = gpt_cfg(*scaling, "param=mup", "optimizer=adam")
    model, plan = build_model_and_plan(cfg, (16,), 256, width=128)
    roles = {n: s.role for n, s in plan.specs.items()}
    assert roles["tok_emb.weight"] == roles["pos_emb.weight"] == "input"
    assert roles["head.weight"] == "output"
    for block in ("blocks.0", "blocks.1"):
        assert all(roles[f"{block}.{p}.weight"] == "hidden" for p in PROJECTIONS)
        assert roles[f"{block}.ln1.weight"] == roles[f"{block}.ln2.bias"] == "vector"
    assert model.blocks[0].attn.d_head == d_head
    assert plan.forward_mult["blocks.0.attn.logit_scale"][1] == m_head


def test_rotary_gpt_has_no_position_parameters():
    model, plan = build_model_and_plan(gpt_cfg("model.positions=rotary"), (16,), 256, width=64)
    assert model.pos_emb is None and not any("pos" in n for n in plan.specs)
    assert model(torch.randint(0, 256, (2, 16))).shape == (2, 16, 256)


@pytest.mark.parametrize("optimizer", ["kfac", "shampoo"])
def test_second_order_optimizers_precondition_every_linear_of_the_gpt(optimizer):
    cfg = gpt_cfg(f"optimizer={optimizer}", "param=somup", "model.tie=true")
    model, plan = build_model_and_plan(cfg, (16,), 256, width=64)
    opt = optim.build(cfg.optimizer, model, plan, "xent")
    expected = {f"blocks.{b}.{p}" for b in (0, 1) for p in PROJECTIONS} | {"head"}
    assert set(opt.layers) == expected
    x, y = torch.randint(0, 256, (4, 16)), torch.randint(0, 256, (4, 16))
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss)


def test_vit_on_fashion_mnist_shapes_and_roles():
    cfg = compose(["model=vit", "data=fashion_mnist", "model.base_width=32", "param=somup", "optimizer=kfac"])
    model, plan = build_model_and_plan(cfg, (1, 28, 28), 10, width=64)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10) and model.patches == 16
    roles = {n: s.role for n, s in plan.specs.items()}
    assert roles["patch.weight"] == roles["pos_emb.weight"] == "input" and roles["head.weight"] == "output"
    assert roles["blocks.0.attn.q.weight"] == "hidden" and roles["head.bias"] == "fixed"
    assert "patch" in optim.build(cfg.optimizer, model, plan, "xent").layers  # the patch Conv2d is preconditioned


@pytest.mark.parametrize("override, key", [
    (["model.heads=3"], "model.width"),                         # 256 is not a multiple of 3
    (["model.head_size=8"], "model.heads"),                     # both given
    (["model.heads=null"], "model.heads"),                      # neither given
    (["model.positions=alibi"], "model.positions"),
    (["model.tie=maybe"], "model.tie"),
    (["model.layers=0"], "model.layers"),
    (["model.heads=null", "model.head_size=5", "model.positions=rotary", "model.width=40",
      "model.base_width=20"], "model.width"),                   # odd head size with rotary positions
])
def test_bad_gpt_options_name_their_key(override, key):
    with pytest.raises(UsageError) as e:
        validate(gpt_cfg(*override), check_data=False)
    assert key in str(e.value).split(":")[0] or key in str(e.value)


def test_token_models_and_image_data_do_not_mix():
    with pytest.raises(UsageError, match="token sequences"):
        validate(compose(["model=gpt", "data=fashion_mnist"]), check_data=False)
    with pytest.raises(UsageError, match="images"):
        validate(compose(["model=vit", "data=pystdlib"]), check_data=False)


def test_params_prints_the_attention_multiplier(capsys):
    assert main(["params", *GPT, "model.width=128", "param=mup", "optimizer=adam"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "blocks.0.attn.logit_scale" in line)
    assert "attention" in line and "0.5" in line.split()[-1]


def test_builds_on_meta_with_width_free_names():
    cfg = gpt_cfg("model.tie=true")
    names = {w: [n for n, _ in models.build(cfg.model, (16,), 256, w, "meta").named_parameters()] for w in (32, 96)}
    assert names[32] == names[96]
    assert OmegaConf.select(cfg, "model.tie") is True


@pytest.mark.slow
@needs_fmnist
def test_vit_learns_real_fashion_mnist(tmp_path):
    from muso_cli import train

    cfg = compose(["model=vit", "data=fashion_mnist", "data.n_train=4000", "data.n_test=1000", "model.width=32",
                   "model.base_width=32", "model.layers=1", "optimizer=adam", "optimizer.lr=0.003", "train.steps=150",
                   "train.batch_size=64", "train.eval_every=150", "train.eval_train_samples=1000",
                   "train.progress=false", "device=cpu"])
    result = train.run(cfg, tmp_path)
    assert result["status"] == "ok" and result["final"]["test_acc"] > 0.6, result["final"]
