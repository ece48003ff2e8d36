"""Where the table applies, read from a model's structure: each parameter's role from the shapes that change with
width, and the residual blocks from the parameters that a deeper model adds (docs/parameterization.md).

Roles come from shapes alone (never from module names), as in microsoft/mup's ``set_base_shapes``: a weight whose
fan-in and fan-out both differ between the base model and a *delta* model (the same architecture at another width)
is *hidden*, one whose fan-out alone differs is *input*, fan-in alone *output*; a 1-D tensor that differs is a
*vector*; nothing differs: *fixed*. Blocks come from structure alone too: the parameters a model one block deeper
has and the base-depth model lacks name the numbered containers of the blocks. :mod:`muso_cli.parametrize` applies
the table to what this module finds; this module knows nothing of the table.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

# ------------------------------------------------------------------------------------------------------
# Roles from shapes.

@dataclass(frozen=True)
class ParamSpec:
    """A parameter's place in the width scaling.

    shape / base_shape: the tensor's shape in the target and the base model.
    role: input | hidden | output | vector | fixed.
    width_mult: m = target / base size of the growing dimension (1.0 when fixed).
    fan_in: inputs per output unit in the target model (in_features · kernel area; 1 for an embedding).
    layer: the name of the Linear/Conv2d module whose weight or bias this is (None otherwise).
    holders: the types of the modules that hold it (several for a tied weight).
    layout: how its dimensions read: out_first ([out, in, *kernel]: Linear, Conv, and the first-dimension rule for
    any other matrix), in_first ([rows, dim]: Embedding), rows ([..., d]: only the last dimension scales, each
    d-vector a row of features added to the network's, e.g. a position embedding (1, T, d) or a class token).
    """

    name: str
    shape: tuple[int, ...]
    base_shape: tuple[int, ...]
    role: str
    width_mult: float
    fan_in: int
    layer: str | None = None
    is_bias: bool = False
    holders: tuple[type, ...] = ()
    layout: str = "out_first"


LAYER_TYPES = (nn.Linear, nn.Conv2d)


def _layout(module: nn.Module | None, shape: tuple[int, ...], bshape: tuple[int, ...],
            dshape: tuple[int, ...]) -> str:
    """'in_first' for embeddings (weight is [num_embeddings, dim]: fan-in first); 'rows' for a tensor of 3 or more
    dimensions outside a layer whose last dimension alone scales (ParamSpec.layout); else 'out_first'."""
    if isinstance(module, nn.Embedding):
        return "in_first"
    last_alone = shape[:-1] == bshape[:-1] == dshape[:-1] and dshape[-1] != bshape[-1]
    if len(shape) >= 3 and last_alone and not isinstance(module, LAYER_TYPES):
        return "rows"
    return "out_first"


def _owners(model: nn.Module) -> dict[int, list[tuple[str, nn.Module, str]]]:
    """id(param) → [(module name, module, attribute)] for every module that holds it (tied weights: several)."""
    owners: dict[int, list[tuple[str, nn.Module, str]]] = {}
    for mname, module in model.named_modules():
        for attr, p in module.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append((mname, module, attr))
    return owners


def infer_roles(model: nn.Module, base: nn.Module, delta: nn.Module | None = None) -> dict[str, ParamSpec]:
    """Role and width multiplier of every parameter of ``model`` by comparing shapes.

    ``base`` is the same architecture at the base width and ``delta`` at any other width (build both on the
    meta device: they cost nothing); the dimensions that differ between them are the ones that scale with
    width. Without ``delta``, ``model`` is compared with ``base`` (ambiguous when it has the base width).
    Tied parameters appear once (under their first name); a weight shared by an embedding and a Linear
    readout is treated as the readout.
    """
    base_shapes = {n: tuple(p.shape) for n, p in base.named_parameters()}
    delta_shapes = {n: tuple(p.shape) for n, p in (delta or model).named_parameters()}
    owners = _owners(model)
    specs: dict[str, ParamSpec] = {}
    for name, p in model.named_parameters():
        if name not in base_shapes or name not in delta_shapes:
            raise ValueError(f"parameter {name!r} is in the model but not in the base (or delta) model: build "
                             f"them with the same architecture (only the width differs)")
        shape, bshape, dshape = tuple(p.shape), base_shapes[name], delta_shapes[name]
        if not len(shape) == len(bshape) == len(dshape):
            raise ValueError(f"parameter {name!r} has shape {shape} but {bshape} in the base model")
        held = owners.get(id(p), [])
        layer_owner = next(((n, m, a) for n, m, a in held if isinstance(m, LAYER_TYPES)), None)
        owner = layer_owner or (held[0] if held else None)
        module = owner[1] if owner else None
        layout = _layout(module, shape, bshape, dshape)
        role, mult, fan_in = _classify(name, shape, bshape, dshape, layout)
        specs[name] = ParamSpec(name=name, shape=shape, base_shape=bshape, role=role, width_mult=mult,
                                fan_in=fan_in, layer=layer_owner[0] if layer_owner else None,
                                is_bias=bool(layer_owner and layer_owner[2] == "bias"),
                                holders=tuple(type(m) for _, m, _ in held), layout=layout)
    return specs


def _classify(name: str, shape: tuple[int, ...], bshape: tuple[int, ...], dshape: tuple[int, ...],
              layout: str) -> tuple[str, float, int]:
    if len(shape) <= 1:
        if dshape == bshape:
            return "fixed", 1.0, 1
        return "vector", shape[0] / bshape[0], 1
    if layout == "rows":  # rows of features, as an embedding's: the input role, fan-in 1 (one-hot rows)
        return "input", shape[-1] / bshape[-1], 1
    if shape[2:] != bshape[2:] or dshape[2:] != bshape[2:]:
        raise ValueError(f"parameter {name!r}: only the first two dimensions (a matrix's out and in, a kernel's "
                         f"channels), or the last one alone (rows of features such as a position embedding "
                         f"(1, T, d)), may change with width, got {shape} vs base {bshape}")
    d_out, d_in = (1, 0) if layout == "in_first" else (0, 1)
    g_out, g_in = dshape[d_out] != bshape[d_out], dshape[d_in] != bshape[d_in]
    fan_in = 1 if layout == "in_first" else shape[1] * math.prod(shape[2:])
    if g_in and g_out:
        return "hidden", shape[d_in] / bshape[d_in], fan_in
    if g_out:
        return "input", shape[d_out] / bshape[d_out], fan_in
    if g_in:
        return "output", shape[d_in] / bshape[d_in], fan_in
    return "fixed", 1.0, fan_in


# ------------------------------------------------------------------------------------------------------
# Residual blocks from structure (DEPTH).

@dataclass(frozen=True)
class Depth:
    """Where a model's residual blocks are, and how many relative to the base depth.

    containers: the module paths whose numbered children are the blocks (``blocks`` for ``blocks.0``, ``blocks.1``,
    …). blocks / base_blocks: L and L₀, the number of blocks of the model and of the model at model.base_depth.
    alpha: the branch multiplier's exponent (DEPTH_ALPHAS). A parameter is inside a block when its name is
    ``<container>.<index>.…``; every other parameter (embedding, readout, final norm) is outside.
    """

    containers: tuple[str, ...]
    blocks: int
    base_blocks: int
    alpha: float

    @property
    def mult(self) -> float:
        """The depth multiplier L/L₀."""
        return self.blocks / self.base_blocks

    def block_of(self, name: str) -> tuple[str, int] | None:
        """(container, index) of the block that holds parameter (or module) ``name``; None outside the blocks."""
        for container in self.containers:
            prefix = f"{container}." if container else ""
            index = name[len(prefix):].split(".", 1)[0] if name.startswith(prefix) else ""
            if index.isdigit():
                return container, int(index)
        return None


def _count_blocks(names, containers: tuple[str, ...]) -> int:
    probe = Depth(containers, 1, 1, 0.0)
    return len({probe.block_of(n) for n in names} - {None})


class DepthStructureError(ValueError):
    """The residual blocks cannot be found from the models at two depths (infer_depth)."""


def infer_depth(model: nn.Module, base: nn.Module, deeper: nn.Module, alpha: float) -> Depth:
    """The residual blocks of ``model`` from two models built like it at other depths (on the meta device: free):
    ``base`` at the base depth and ``deeper`` one block deeper (or any depth above the base).

    The rule is structural, as width's roles are: the parameters that ``deeper`` has and ``base`` lacks belong to the
    blocks added; each such name has a numbered component (``blocks.2.fc1.weight``) whose siblings exist in ``base``
    (``blocks.0.fc1.weight``): the path before it is a block container. Raises DepthStructureError when the depth adds
    no parameter, or adds one that no numbered container holds.
    """
    base_names = [n for n, _ in base.named_parameters()]
    known = set(base_names)
    added = [n for n, _ in deeper.named_parameters() if n not in known]
    if not added:
        raise DepthStructureError("the model has the same parameters at its base depth and one block deeper: the "
                                  "depth argument does not add residual blocks")
    split_base = [b.split(".") for b in base_names]
    containers: list[str] = []
    for name in added:
        parts = name.split(".")
        found = next((".".join(parts[:i]) for i, part in enumerate(parts) if part.isdigit()
                      and any(len(b) == len(parts) and b[:i] == parts[:i] and b[i].isdigit() and b[i + 1:] == parts[i + 1:]
                              for b in split_base)), None)
        if found is None:
            raise DepthStructureError(f"parameter {name!r} appears when the depth grows but is not held by a numbered "
                                      f"block (a ModuleList or Sequential of blocks) that the base-depth model has too")
        if found not in containers:
            containers.append(found)
    containers_t = tuple(containers)
    blocks = _count_blocks([n for n, _ in model.named_parameters()], containers_t)
    return Depth(containers_t, blocks, _count_blocks(base_names, containers_t), float(alpha))


def same_shapes(a: nn.Module, b: nn.Module) -> bool:
    """Whether two models have the same parameters with the same shapes (a model at the base width and its base)."""
    shapes = lambda m: {n: tuple(p.shape) for n, p in m.named_parameters()}  # noqa: E731
    return shapes(a) == shapes(b)
