"""The convolutional models: shapes at channel multipliers 1 and 2, roles from shapes alone, meta-device builds,
clean errors for bad options and non-image data, and a few training steps of each through `muso run`."""
from __future__ import annotations

from collections import Counter

import pytest
import torch

from conftest import needs_fmnist
from muso_cli import models, parametrize
from muso_cli.cli import main
from muso_cli.config import compose
from muso_cli.validate import validate
from muso_cli.errors import UsageError
from muso_cli.track import read_json, read_json_lines

IMAGE_SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]  # digits, (Fashion-)MNIST, CIFAR
# Expected role counts, written out from each architecture: the first conv is `input` (fixed image channels in,
# channels·k out), every other conv `hidden`, the readout `output` with its bias `fixed`; conv biases and norm
# gains/shifts are `vector`s.
ROLES = {
    # conv1 | conv2 | readout; conv biases ×2
    "cnn": {"input": 1, "hidden": 1, "output": 1, "vector": 2, "fixed": 1},
    # conv1 | conv2..4 | readout; conv biases ×4
    "myrtle": {"input": 1, "hidden": 3, "output": 1, "vector": 4, "fixed": 1},
    # stem | 16 block convs + 3 shortcut 1×1 convs | readout; 20 batch norms × (gain, shift)
    "resnet18": {"input": 1, "hidden": 19, "output": 1, "vector": 40, "fixed": 1},
    # conv1 | conv2..16 | readout; 16 batch norms × (gain, shift), no conv biases before a norm
    "vgg19": {"input": 1, "hidden": 15, "output": 1, "vector": 32, "fixed": 1},
}


def model_cfg(name: str, *overrides: str):
    return compose([f"model={name}", *overrides]).model


def build(cfg, width, shape=(3, 32, 32), num_classes=10, device="cpu"):
    return models.build(cfg, shape, num_classes, width, device)


def roles(cfg, width, shape=(3, 32, 32)):
    """infer_roles of the model at ``width`` against the meta-device models at the base width and twice it."""
    base = build(cfg, cfg.base_width, shape, device="meta")
    delta = build(cfg, 2 * cfg.base_width, shape, device="meta")
    return parametrize.infer_roles(build(cfg, width, shape), base, delta)


@pytest.mark.parametrize("name", ROLES)
@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_forward_on_every_image_size_at_k1_and_k2(name, shape):
    cfg = model_cfg(name)
    for k in (1, 2):
        model = build(cfg, k, shape, num_classes=7)
        assert model(torch.randn(3, *shape)).shape == (3, 7)


@pytest.mark.parametrize("name", ROLES)
def test_roles_from_shapes_and_multipliers(name):
    cfg = model_cfg(name)
    specs = roles(cfg, 4)
    assert Counter(s.role for s in specs.values()) == ROLES[name]
    assert all(s.width_mult == 4.0 for s in specs.values() if s.role != "fixed")
    conv_weights = [s for s in specs.values() if len(s.shape) == 4]
    assert conv_weights[0].role == "input" and conv_weights[0].shape[1] == 3  # fixed image channels stay input
    readout = [s for s in specs.values() if s.role == "output"]
    assert [s.name for s in readout] == ["readout.weight"]


@pytest.mark.parametrize("name", ROLES)
def test_at_the_base_width_roles_hold_and_every_multiplier_is_1(name):
    cfg = model_cfg(name)
    specs = roles(cfg, cfg.base_width)
    assert Counter(s.role for s in specs.values()) == ROLES[name]
    assert {s.width_mult for s in specs.values()} == {1.0}


def test_vgg_without_batch_norm_has_conv_biases_as_vectors():
    cfg = model_cfg("vgg19", "model.batch_norm=false")
    specs = roles(cfg, 2)
    assert Counter(s.role for s in specs.values()) == {"input": 1, "hidden": 15, "output": 1, "vector": 16,
                                                       "fixed": 1}
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in build(cfg, 1).modules())


@pytest.mark.parametrize("name", ROLES)
def test_builds_on_meta_with_width_free_names(name):
    cfg = model_cfg(name)
    meta = build(cfg, 3, device="meta")
    assert all(p.is_meta for p in meta.parameters())
    assert meta(torch.empty(2, 3, 32, 32, device="meta")).shape == (2, 10)  # shapes check out for free
    assert [n for n, _ in meta.named_parameters()] == [n for n, _ in build(cfg, 1, device="meta").named_parameters()]


def test_channel_layouts():
    """Channels are channels·k (cnn: ×1, ×2; resnet/vgg stages: ×1, 2, 4, 8), so the readout fan-in grows with k."""
    cnn = build(model_cfg("cnn"), 2, (1, 28, 28))
    assert (cnn.conv1.out_channels, cnn.conv2.out_channels) == (32, 64)
    assert cnn.readout.in_features == 64 * 2 * 2  # average-pooled to 2×2 (model.readout_pool)
    flat = build(model_cfg("cnn", "model.readout_pool=null"), 2, (1, 28, 28))
    assert flat.readout.in_features == 64 * 7 * 7  # the plain flatten of the 7×7 map after two pools
    myrtle = build(model_cfg("myrtle"), 2)
    assert {m.out_channels for m in myrtle.modules() if isinstance(m, torch.nn.Conv2d)} == {32}
    resnet = build(model_cfg("resnet18"), 4)
    assert [stage[0].conv1[0].out_channels for stage in resnet.stages] == [64, 128, 256, 512]
    assert sum(p.numel() for p in resnet.parameters()) == 11_173_962  # the usual CIFAR ResNet-18 at k = 4
    vgg = build(model_cfg("vgg19"), 4)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in vgg.modules()) == 16
    assert vgg.readout.in_features == 512


@pytest.mark.parametrize("override, key", [("model.channels=0", "model.channels"),
                                           ("model.channels=1.5", "model.channels"),
                                           ("model.width=0", "model.width")])
@pytest.mark.parametrize("name", ROLES)
def test_bad_options_name_their_key(name, override, key):
    with pytest.raises(UsageError) as e:
        validate(compose([f"model={name}", override]), check_data=False)
    assert e.value.key == key


def test_vgg_batch_norm_must_be_a_boolean():
    with pytest.raises(UsageError) as e:
        validate(compose(["model=vgg19", "model.batch_norm=sometimes"]), check_data=False)
    assert e.value.key == "model.batch_norm"


@pytest.mark.parametrize("name", ROLES)
def test_vector_data_give_a_clean_error(name):
    with pytest.raises(UsageError, match="needs images") as e:
        build(model_cfg(name), 1, (32,))
    assert e.value.key == "data.name"


def test_too_small_images_for_the_pooling_models():
    for name in ("cnn", "myrtle"):
        with pytest.raises(UsageError, match="at least 4×4"):
            build(model_cfg(name), 1, (1, 3, 3))
    assert build(model_cfg("resnet18"), 1, (1, 1, 1))(torch.randn(2, 1, 1, 1)).shape == (2, 10)


def test_params_table_for_resnet18_on_cifar10(capsys):
    assert main(["params", "model=resnet18", "model.width=4", "param=somup", "data=cifar10"]) == 0
    out = capsys.readouterr().out
    assert "stem.0.weight" in out and "readout.weight" in out and "hidden" in out


def test_params_on_vector_data_exits_2(capsys):
    assert main(["params", "model=cnn", "data=synthetic"]) == 2
    assert "data.name" in capsys.readouterr().err


@pytest.mark.parametrize("name", ROLES)
def test_a_few_training_steps_of_each_model(tmp_path, name):
    out = tmp_path / name
    assert main(["run", f"model={name}", "model.width=1", "data=digits", "train.steps=4", "train.eval_every=4",
                 "train.batch_size=32", "train.eval_train_samples=64", "train.progress=false",
                 f"hydra.run.dir={out}"]) == 0
    result = read_json(out / "result.json")
    assert result["status"] == "ok" and result["steps"] == 4


@pytest.mark.slow
@needs_fmnist
def test_cnn_learns_real_fashion_mnist(tmp_path):
    """600 SGD steps (batch 128, momentum 0.9) of the CNN at k = 1 (readout average-pooled to 2×2) on the real
    files, tested on all 10k test images. Measured: 0.843 / 0.852 / 0.839 test accuracy for seeds 0 / 1 / 2
    (chance: 0.1); ~20 s on 2 cores."""
    out = tmp_path / "cnn"
    assert main(["run", "model=cnn", "model.width=1", "optimizer.lr=0.1", "optimizer.momentum=0.9",
                 "train.steps=600", "train.eval_every=200", "train.progress=false", f"hydra.run.dir={out}"]) == 0
    result = read_json(out / "result.json")
    assert result["status"] == "ok" and result["data_source"] == "/usr/share/datasets/fashion-mnist"
    rows = read_json_lines(out / "metrics.jsonl")
    assert rows[0]["test_acc"] < 0.3 and result["final"]["test_acc"] >= 0.80


@pytest.mark.parametrize("value", ["0", "1.5", "true"])
def test_cnn_readout_pool_must_be_a_positive_integer(value):
    with pytest.raises(UsageError) as e:
        validate(compose(["model=cnn", f"model.readout_pool={value}"]), check_data=False)
    assert e.value.key == "model.readout_pool"


def test_a_vit_patch_must_divide_the_images():
    """A patch that does not divide the image would drop its last rows and columns (the Conv2d's stride)."""
    with pytest.raises(UsageError) as e:
        validate(compose(["model=vit", "data=digits", "model.patch=5"]), check_data=False)
    assert e.value.key == "model.patch" and "3 rows and 3 columns" in e.value.problem and "model.patch=4" in e.value.fix
    validate(compose(["model=vit", "data=digits", "model.patch=4"]), check_data=False)


@pytest.mark.parametrize("overrides", [["model=gpt", "data=synthetic", "model.base_width=16"],
                                       ["model=mlp", "data=pystdlib"]])
def test_token_models_and_feature_data_do_not_mix_where_shapes_cannot_tell(overrides):
    """The GPT on vectors (an input of shape (32,) is a sequence's shape too) and an MLP on text: refused, not an
    embedding lookup of floats (or a Linear of integers) failing in the first step."""
    with pytest.raises(UsageError) as e:
        validate(compose(overrides), check_data=False)
    assert e.value.key == "data.name" and "token sequences" in e.value.problem


def test_a_width_below_the_base_width_is_said_under_mup_and_silent_under_sp(capsys):
    """Below the base width µP's multipliers extrapolate downwards (m < 1): said, with the fix if that is the
    width you tune at. Under SP every multiplier is 1 whatever the widths: nothing to say."""
    args = ["params", "data=synthetic", "model.base_width=16", "model.width=8"]
    assert main([*args, "param=mup"]) == 0
    assert "warning: model.width=8 is below model.base_width=16" in capsys.readouterr().err
    assert main([*args, "param=sp"]) == 0
    assert "below model.base_width" not in capsys.readouterr().err


def test_the_size_estimate_counts_parameters_gradients_and_the_optimizers_state():
    """An MLP 32 → w → w → 10 (biases everywhere) on the synthetic data: its parameters exactly; float32
    parameters and gradients, plus Adam's two moments, or K-FAC's factors and their inverses per layer,
    (d_in + 1)² + d_out² each (the bias as a column)."""
    from muso_cli.setup import estimate_size

    w = 1000
    n = 32 * w + w + w * w + w + w * 10 + 10
    adam = estimate_size(compose(["data=synthetic", "optimizer=adam"]), w)
    assert adam.parameters == n and adam.bytes == 4 * (2 * n + 2 * n)
    factors = sum(a ** 2 + b ** 2 for a, b in [(33, w), (w + 1, w), (w + 1, 10)])
    kfac = estimate_size(compose(["data=synthetic", "optimizer=kfac"]), w)
    assert kfac.bytes == 4 * (2 * n + 2 * factors)
    sgd = estimate_size(compose(["data=synthetic", "optimizer=sgd"]), w)
    assert sgd.bytes == 4 * 2 * n  # no momentum, no state


def test_a_model_above_the_size_limit_needs_yes(tmp_path, capsys):
    """Width 100000: 10^10 parameters. Refused, with its size, before anything is built for real or written."""
    args = ["data=synthetic", "model.base_width=16"]
    assert main(["sweep", *args, "study.widths=[100000]", f"study.root={tmp_path}", "--no-launch"]) == 2
    err = capsys.readouterr().err
    assert "error: study.widths: width 100000 builds a model of 1e+10 parameters" in err and "--yes" in err
    assert not any(tmp_path.iterdir())
    assert main(["sweep", *args, "study.widths=[100000]", f"study.root={tmp_path}", "study.params=[sp]",
                 "study.lr=[0.1]", "--no-launch", "--yes"]) == 0
    assert main(["run", *args, "model.width=100000", f"hydra.run.dir={tmp_path / 'r'}"]) == 2
    assert "error: model.width: width 100000" in capsys.readouterr().err and not (tmp_path / "r").exists()
