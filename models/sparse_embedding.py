"""Per-puzzle embedding table trained with sparse sign-SGD.

Every puzzle identifier (each augmented copy of each task) owns one row of ``weights``. The table
is a persistent buffer, not a Parameter: the dense optimiser never sees it, it is saved with the
model (key ``...puzzle_emb.weights``), and only the rows used in a batch are updated.

Memory: rows x width x 4 bytes (fp32), e.g. ARC-1 with 1000 augmentations: 876,406 x 512 x 4
= 1.8 GB, held on every rank and written into every checkpoint; with puzzle_emb_ndim = 0 the model
has no table at all (``model.puzzle_emb`` is None).

Training: ``forward`` copies the batch's rows into ``local_weights`` (a leaf with grad, one row per
batch slot) and records their ids in ``local_ids``; after backward, ``SparseSignSGD.step`` gathers
(ids, grads) from all ranks, sums the gradients of each distinct id, and applies
    w[id] <- w[id] * (1 - lr * weight_decay) - lr * sign(summed grad)
identically on every rank. Evaluation reads ``weights`` directly without gradients.
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.optimizer import Optimizer

from models.layers import trunc_normal_init_


class CastedSparseEmbedding(nn.Module):
    """Embedding table as a buffer plus per-batch trainable copies of the looked-up rows."""

    def __init__(self, num_embeddings: int, embedding_dim: int, batch_size: int, init_std: float = 0.0,
                 cast_to: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.cast_to = cast_to
        self.weights = nn.Buffer(trunc_normal_init_(torch.empty(num_embeddings, embedding_dim), std=init_std),
                                 persistent=True)
        self.local_weights = nn.Buffer(torch.zeros(batch_size, embedding_dim, requires_grad=True), persistent=False)
        self.local_ids = nn.Buffer(torch.zeros(batch_size, dtype=torch.int32), persistent=False)

    def _apply(self, fn, recurse=True):
        # Module.to(device) replaces buffers by fn(buffer), which for a tensor requiring grad is a
        # non-leaf copy whose .grad is never filled; make the per-batch copy a leaf again.
        super()._apply(fn, recurse)
        self.local_weights = self.local_weights.detach().requires_grad_(True)
        return self

    def forward(self, ids: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        dtype = dtype or self.cast_to
        if ids.ndim > 1:
            ids = ids.squeeze(-1)
        if not self.training:
            return self.weights[ids].to(dtype)
        if ids.shape[0] != self.local_weights.shape[0]:
            raise ValueError(f"training batch has {ids.shape[0]} rows but the puzzle embedding was built for "
                             f"batch_size={self.local_weights.shape[0]} (the per-rank batch size)")
        with torch.no_grad():
            self.local_weights.copy_(self.weights[ids])
            self.local_ids.copy_(ids)
        return self.local_weights.to(dtype)


def _gather_across_ranks(tensor: torch.Tensor) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    out = torch.empty((dist.get_world_size() * tensor.shape[0],) + tuple(tensor.shape[1:]),
                      dtype=tensor.dtype, device=tensor.device)
    # torch 2.13 renamed all_gather_into_tensor (now a FutureWarning) to all_gather_single.
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(out, tensor.contiguous())
    return out


@torch.no_grad()
def sparse_sign_sgd_update(weights: torch.Tensor, ids: torch.Tensor, grads: torch.Tensor,
                           lr: float, weight_decay: float) -> None:
    """Apply one sign-SGD step with decoupled weight decay to the rows ``ids`` of ``weights``;
    gradients of repeated ids are summed first (so each row moves at most once by lr)."""
    unique_ids, slot = ids.to(torch.long).unique(return_inverse=True)
    summed = torch.zeros(unique_ids.shape[0], grads.shape[1], dtype=grads.dtype, device=grads.device)
    summed.index_add_(0, slot, grads)
    rows = weights[unique_ids]
    rows.mul_(1.0 - lr * weight_decay).add_(torch.sign(summed).to(rows.dtype), alpha=-lr)
    weights[unique_ids] = rows


class SparseSignSGD(Optimizer):
    """Sign-SGD for a CastedSparseEmbedding, consistent across torch.distributed ranks.

    ``params``: the embedding's buffers (``module.buffers()``), as in the reference: the one with
    requires_grad is the per-batch copy, the 1-D one the ids, the 2-D one the table.
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-2, weight_decay: float = 0.1,
                 world_size: Optional[int] = None) -> None:
        if lr < 0 or weight_decay < 0:
            raise ValueError(f"lr and weight_decay must be >= 0 (got {lr}, {weight_decay})")
        # world_size is accepted for reference compatibility; the process group decides.
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))
        # (ids, grads) of earlier micro-batches of this step (gradient accumulation): the per-batch copy
        # is refilled by every forward, so its rows' gradients are set aside before the next one.
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    @torch.no_grad()
    def stash_local_gradients(self) -> None:
        """Set this micro-batch's row gradients aside (and clear them); step() applies them all."""
        for group in self.param_groups:
            local_weights, ids, _ = self._split(group["params"])
            if local_weights.grad is not None:
                self._pending.append((ids.clone(), local_weights.grad.clone()))
                local_weights.grad = None

    @property
    def pending_gradients(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self._pending

    def local_gradients(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(ids, row gradients) of this rank for the step so far: stashed micro-batches + the current one."""
        parts = list(self._pending)
        for group in self.param_groups:
            local_weights, ids, _ = self._split(group["params"])
            if local_weights.grad is not None:
                parts.append((ids, local_weights.grad))
        if not parts:
            return None
        return torch.cat([i for i, _ in parts]), torch.cat([g for _, g in parts])

    def zero_grad(self, set_to_none: bool = True) -> None:  # type: ignore[override]
        self._pending.clear()
        super().zero_grad(set_to_none=set_to_none)

    @staticmethod
    def _split(group_params):
        local_weights = ids = table = None
        for p in group_params:
            if p.requires_grad:
                local_weights = p
            elif p.ndim == 1:
                ids = p
            elif p.ndim == 2:
                table = p
        if local_weights is None or ids is None or table is None:
            raise ValueError("SparseSignSGD expects the buffers of a CastedSparseEmbedding "
                             "(local_weights with grad, local_ids, weights)")
        return local_weights, ids, table

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for group in self.param_groups:
            local_weights, ids, table = self._split(group["params"])
            if self._pending:  # several micro-batches: their rows are summed per id like one batch's
                gathered = self.local_gradients()
                assert gathered is not None
                ids, grads = gathered
            elif local_weights.grad is None:
                continue
            else:
                grads = local_weights.grad
            all_grads = _gather_across_ranks(grads)
            all_ids = _gather_across_ranks(ids)
            sparse_sign_sgd_update(table, all_ids, all_grads, lr=group["lr"], weight_decay=group["weight_decay"])
        self._pending.clear()
        return None
