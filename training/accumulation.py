"""Forward and backward of one optimizer step, over ``gradient_accumulation_steps`` micro-batches.

The loader hands each rank ``global_batch_size / ranks`` rows; with K micro-batches they are cut into
K contiguous slices of ``global_batch_size / (K x ranks)`` rows. Each slice is a fixed *slot* with its
own ACT carry (K carries), so a row's example stays in its slot until it halts, exactly as in a run
whose batch is that slice: halting and the carried latents behave as without accumulation. Every
micro-batch's loss is scaled by ranks / global_batch_size, so the summed gradients are the reference's
``sum over the global batch / global batch`` (K=1 is today's code path, untouched).

DDP synchronises gradients only on the last micro-batch (``no_sync`` on the others). The puzzle
table's per-batch row copy is refilled by every forward, so its gradients are set aside after each
micro-batch (SparseSignSGD.stash_local_gradients) and applied together: rows are summed per puzzle id
across all micro-batches and ranks, as one large batch would be.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch

from models.sparse_embedding import SparseSignSGD


def split_rows(batch: dict[str, torch.Tensor], parts: int) -> list[dict[str, torch.Tensor]]:
    """``parts`` contiguous, equally sized row slices of a batch."""
    rows = next(iter(batch.values())).shape[0]
    if rows % parts:
        raise ValueError(f"a batch of {rows} rows does not split into gradient_accumulation_steps={parts} "
                         "equal micro-batches")
    return [{k: v[i * rows // parts:(i + 1) * rows // parts] for k, v in batch.items()} for i in range(parts)]


class Accumulator:
    """Runs the K micro-batches of a step; owns nothing but the settings (the carries live on the trainer)."""

    def __init__(self, steps: int):
        self.steps = steps

    def forward_backward(self, trainer, batch: dict[str, torch.Tensor], global_batch_size: int
                         ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss (summed over micro-batches, unscaled) and summed metrics; gradients left in ``.grad``.

        ``trainer.carry`` is one carry when K=1 (today's layout, also in checkpoints) and a list of K
        carries otherwise.
        """
        scale = trainer.info.world_size / global_batch_size
        if isinstance(trainer.carry, list) != (self.steps > 1) or (self.steps > 1 and len(trainer.carry) != self.steps):
            trainer.carry = None  # restored from a run with another gradient_accumulation_steps: start afresh
        if self.steps == 1:
            if trainer.carry is None:
                trainer.carry = trainer.head.initial_carry(batch)
            trainer.carry, loss, metrics = self._one(trainer, trainer.carry, batch, scale, sync=True)
            return loss, metrics
        slices = split_rows(batch, self.steps)
        if trainer.carry is None:
            trainer.carry = [trainer.head.initial_carry(s) for s in slices]
        sparse = [opt for opt in trainer.optimizers if isinstance(opt, SparseSignSGD)]
        total_loss: torch.Tensor | None = None
        total: dict[str, torch.Tensor] = {}
        for i, micro in enumerate(slices):
            last = i == self.steps - 1
            trainer.carry[i], loss, metrics = self._one(trainer, trainer.carry[i], micro, scale, sync=last)
            if not last:
                for opt in sparse:
                    opt.stash_local_gradients()
            total_loss = loss if total_loss is None else total_loss + loss
            for k, v in metrics.items():
                total[k] = v if k not in total else total[k] + v
        assert total_loss is not None
        return total_loss, total

    @staticmethod
    def _one(trainer, carry: Any, batch: dict[str, torch.Tensor], scale: float, sync: bool):
        ddp = trainer.ddp_model
        context = ddp.no_sync() if (ddp is not None and not sync) else nullcontext()
        with context:
            carry, loss, metrics, _, _ = trainer.train_model(carry=carry, batch=batch, return_keys=())
            # DDP averages gradients over ranks; scaling by world/global makes that the reference's sum / global.
            trainer.precision.scale(loss * scale).backward()
        return carry, loss.detach(), metrics
