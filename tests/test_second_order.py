"""What K-FAC and Shampoo share as torch optimizers: LR schedulers scale their whole step."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from muso_cli import KFAC, Shampoo
from muso_cli.models.mlp import MLP


@pytest.mark.parametrize("make", [lambda m: KFAC(m, lr=0.2, damping=0.1), lambda m: Shampoo(m, lr=0.05, damping=1e-2)],
                         ids=["kfac", "shampoo"])
def test_lambda_lr_scales_the_step(make):
    torch.manual_seed(12)
    model = MLP((10,), 4, width=16)
    twin = copy.deepcopy(model)
    x, y = torch.randn(8, 10), torch.randint(0, 4, (8,))
    deltas = []
    for m, factor in ((model, 1.0), (twin, 0.25)):
        opt = make(m)
        torch.optim.lr_scheduler.LambdaLR(opt, lambda step, f=factor: f)
        before = [p.detach().clone() for p in m.parameters()]
        F.cross_entropy(m(x), y).backward()
        opt.step()
        deltas.append([p.detach() - b for p, b in zip(m.parameters(), before)])
    for full, scaled in zip(*deltas):
        torch.testing.assert_close(scaled, 0.25 * full, rtol=1e-5, atol=1e-7)
