"""A character-level GPT trained by its own loop: argparse, its own data pipeline (the Python standard library's
source as bytes), its own model, AdamW for embeddings and norms and Muon for the matrices, DDP when launched by
torchrun. muso does not train it: it runs this script for every trial of a study (trainer=command) and judges
the runs (examples/chargpt/run.sh, docs/own-code.md, "Your own training loop").

By hand (muso's config composed from the flags):

    python examples/chargpt/chargpt.py --width 128 --lr 0.01 --steps 200
    torchrun --nproc_per_node=2 examples/chargpt/chargpt.py --width 128        # DDP on CPU (gloo)

Run by muso, $MUSO_TRIAL_CONFIG holds the trial (its width, lr, seed, optimizer and parameterization) and the
script reports its metrics to $MUSO_TRIAL_DIR/metrics.jsonl; the muso-specific lines are marked `# muso`.
"""
from __future__ import annotations

import argparse
import math
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from muso_cli import api  # muso
from muso_cli.corpus import locate, read
from muso_cli.parametrize import WidthMultiplier  # muso: µP's attention scale, 1/d_head instead of 1/√d_head


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads, self.head = heads, width // heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.q, self.k, self.v = (nn.Linear(width, width, bias=False) for _ in range(3))
        self.out = nn.Linear(width, width, bias=False)
        self.logit_scale = WidthMultiplier("attention", self.head)  # muso
        self.fc, self.proj = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape
        h = self.ln1(x)
        q, k, v = (m(h).view(n, t, self.heads, self.head).transpose(1, 2) for m in (self.q, self.k, self.v))
        scores = self.logit_scale(q @ k.transpose(-2, -1) / math.sqrt(self.head))
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        att = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        x = x + self.out((att @ v).transpose(1, 2).reshape(n, t, -1))
        return x + self.proj(F.gelu(self.fc(self.ln2(x))))


class CharGPT(nn.Module):
    """bytes [N, T] → logits [N, T, 256]; ``width`` is d_model."""

    def __init__(self, width: int, context: int = 64, layers: int = 2, heads: int = 4, vocab: int = 256):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln, self.head = nn.LayerNorm(width), nn.Linear(width, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def batch(text: torch.Tensor, context: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    start = torch.randint(0, len(text) - context - 1, (size,), generator=generator)
    x = torch.stack([text[s:s + context] for s in start.tolist()])
    y = torch.stack([text[s + 1:s + context + 1] for s in start.tolist()])
    return x, y


@torch.no_grad()
def loss_on(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    model.eval()
    loss = sum(F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item() for x, y in batches) / len(batches)
    model.train()
    return loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--optimizer", default="muon")
    p.add_argument("--param", default="somup")
    args = p.parse_args()

    ddp = "RANK" in os.environ
    if ddp:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if ddp else 0
    torch.set_num_threads(1)
    # muso: the trial's config when muso runs the script, else muso's config from the flags
    cfg = api.trial_config([f"optimizer={args.optimizer}", f"param={args.param}", f"model.width={args.width}",
                            f"optimizer.lr={args.lr}", f"seed={args.seed}", "model.base_width=64"])
    train_text, test_text = (torch.tensor(list(t), dtype=torch.long) for t in read(locate()))
    torch.manual_seed(int(cfg.seed))
    model, optimizer = api.build(lambda w: CharGPT(w, context=args.context), cfg)  # muso: init and param groups
    net = nn.parallel.DistributedDataParallel(model) if ddp else model
    metrics = api.Metrics()  # muso: $MUSO_TRIAL_DIR/metrics.jsonl (rank 0 writes)
    fixed = torch.Generator().manual_seed(1234)
    held_out = [batch(test_text, args.context, 32, fixed) for _ in range(4)]
    seen = [batch(train_text, args.context, 32, fixed) for _ in range(4)]
    data = torch.Generator().manual_seed(int(cfg.seed) * 100 + rank)
    for step in range(args.steps + 1):
        if step % args.eval_every == 0 or step == args.steps:
            train_loss, test_loss = loss_on(model, seen), loss_on(model, held_out)
            metrics.log(step, train_loss=train_loss, test_loss=test_loss, processes=dist.get_world_size() if ddp else 1)
            if not math.isfinite(train_loss) or step == args.steps:
                break
        x, y = batch(train_text, args.context, args.batch, data)
        loss = F.cross_entropy(net(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if ddp:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
