"""Batched trials: several settings of one width trained as one stacked model, in one process.

A study's base-width sweep is lr × damping × seeds runs of one small model; each leaves a core or a GPU mostly
idle (Python overhead, tiny matmuls). With ``launcher.batch=N`` (default 1: off) the local, pool and Slurm
launchers group the trials they receive into batches of at most N that share everything but optimizer.lr,
optimizer.damping and seed (:mod:`.group`), and train each batch as one model whose parameters are stacked
[N, …] (:mod:`.stack`: torch.func stack_module_state + functional_call + vmap), with per-member lr and damping
as tensors [N] and every optimizer state stacked (:mod:`.optim`: SGD, Adam, K-FAC with factors [N, d, d] and
batched Cholesky, Shampoo with batched eigh). A pool worker runs one batch at a time; a Slurm array task runs
the batches of its chunk (``launcher.trials_per_task=N launcher.batch=N``: one batch per task).

Each member is its single trial in every observable way (:mod:`.train`): the same init (plan.init_ from its
seed), the same batch order (its seed's sampler), the same param groups from its plan, the same claim and
heartbeat (muso_cli.claims, taken by the launcher), and the same files in its own trial folder (config.yaml,
metrics.jsonl, result.json; result.json adds ``batch``, the number of members), so resume, report, status and
W&B see no difference. Its numbers equal the single trial's up to float rounding (batched kernels; the single
trial's exact factored K-FAC / Shampoo form): tests/test_batched.py checks every metric to 1e-4 relative.
A member that diverges (the single trial's rule) is recorded at that step and leaves the stack before the
update. A stop checkpoints every member into its folder; the next launch resumes them.

Trials that cannot batch run alone, the usual way, with the reason logged once: a config that differs in
anything but those three keys, data augmentation, a module other than Linear and parameter-free activations
(a CNN, a transformer, a user's ``_target_`` model), and optimizer options the batched update does not
implement (K-FAC's MC Fisher and trace / pi damping, Shampoo's grafting, any option it does not know).
"""
from __future__ import annotations

from .group import batch_key, make_batches, supports
from .train import Member, run

__all__ = ["Member", "batch_key", "make_batches", "run", "supports"]
