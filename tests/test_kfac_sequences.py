"""K-FAC on sequence outputs [N, T, C] with a loss averaged over the N·T tokens (the "expand" setting of
Eschenhagen et al. 2023): every token is one example, so B = (1/(N·T)) Σ δ δᵀ with δ the gradient of the token's
own loss. A position-wise network sees the same examples whether they come as [N, T, d] or as [N·T, d]: its
K-FAC factors and step must be the same either way (before the fix B was T times too small in the first layout,
its step about T times too large where the damping is small)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from muso_cli.optim import KFAC


def _positionwise(seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 5))


def _one_step(x: torch.Tensor, y: torch.Tensor, fisher: str = "empirical"):
    model = _positionwise()
    opt = KFAC(model, lr=0.1, damping=1e-3, fisher=fisher)
    torch.manual_seed(7)  # the MC Fisher's sampled targets
    loss = F.cross_entropy(model(x).reshape(-1, 5), y.reshape(-1))
    opt.zero_grad()
    loss.backward()
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    steps = [p.detach() - b for p, b in zip(model.parameters(), before)]
    return opt.state[model[2].weight]["B"], opt.state[model[0].weight]["A"], steps


def test_tokens_are_examples_in_the_factors_and_the_step():
    x, y = torch.randn(4, 6, 8), torch.randint(0, 5, (4, 6))
    b_tokens, a_tokens, step_tokens = _one_step(x, y)
    b_flat, a_flat, step_flat = _one_step(x.reshape(24, 8), y.reshape(24))
    torch.testing.assert_close(b_tokens, b_flat)
    torch.testing.assert_close(a_tokens, a_flat)
    for s_tokens, s_flat in zip(step_tokens, step_flat):
        torch.testing.assert_close(s_tokens, s_flat)


def test_b_is_the_mean_outer_product_of_per_token_loss_gradients():
    """B of the readout = (1/(N·T)) Σ_t δ_t δ_tᵀ, δ_t = ∂ℓ_t/∂f_t = softmax(f_t) − onehot(y_t) (empirical Fisher)."""
    x, y = torch.randn(3, 5, 8), torch.randint(0, 5, (3, 5))
    b, _, _ = _one_step(x, y)
    with torch.no_grad():
        f = _positionwise()(x).reshape(-1, 5)
    delta = F.softmax(f, -1) - F.one_hot(y.reshape(-1), 5).float()
    torch.testing.assert_close(b, delta.T @ delta / len(delta))


def test_mc_fisher_takes_sequence_logits():
    x, y = torch.randn(4, 6, 8), torch.randint(0, 5, (4, 6))
    b, _, steps = _one_step(x, y, fisher="mc")
    assert torch.isfinite(b).all() and b.trace() > 0
    assert all(torch.isfinite(s).all() for s in steps)
