"""Gradient norms, clipping and the gradient monitor, between backward and the optimizer step.

* ``train/grad_norm``: the global L2 norm of the dense weights' gradients (after DDP averaging and fp16
  unscaling, before clipping), logged every step whatever ``grad_clip_norm`` is.
* ``grad_clip_norm``: the dense gradients scaled by min(1, clip / norm), as
  ``torch.nn.utils.clip_grad_norm_``; the puzzle table's sign-SGD is scale-invariant and not clipped.
* The monitor: per parameter group (embeddings, each level, heads, the puzzle table, LoRA adapters,
  anything else by its module name) the gradient norm is logged as ``train/grad_norm/<group>`` every
  ``log_interval`` steps, and a group that trains but gets a zero or non-finite gradient for
  ``grad_monitor_patience`` consecutive steps is named in a warning: a frozen-by-mistake or
  disconnected part of a model otherwise fails silently.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from models.sparse_embedding import SparseSignSGD

PUZZLE_GROUP = "puzzle_table"


def group_of(name: str) -> str:
    """Monitor group of a parameter name (``model.inner.L_level.layers.0...`` -> ``L_level``)."""
    if "lora_" in name:
        return "lora"
    parts = [p for p in name.split(".") if p not in ("model", "inner", "_orig_mod", "module")]
    head = parts[0] if parts else name
    if head.startswith("embed"):
        return "embeddings"
    if head in ("lm_head", "q_head"):
        return "heads"
    return head


class GradMonitor:
    def __init__(self, named_parameters: Callable, patience: int, clip_norm: float | None, warn: Callable[[str], None]):
        self.named_parameters = named_parameters  # called each step: requires_grad changes when unfreezing
        self.patience = patience
        self.clip_norm = clip_norm
        self.warn = warn
        self.bad_streak: dict[str, int] = {}

    def dense_parameters(self) -> list[torch.nn.Parameter]:
        return [p for _, p in self.named_parameters() if p.requires_grad]

    def process(self, optimizers: list[torch.optim.Optimizer], per_group: bool) -> dict[str, float]:
        """Measure (and clip) the gradients; returns the metrics to log."""
        params = self.dense_parameters()
        grads = [p.grad for p in params if p.grad is not None]
        out: dict[str, float] = {}
        if grads:
            total = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
            if self.clip_norm is not None:
                torch.nn.utils.clip_grads_with_norm_(params, self.clip_norm, total)
            out["train/grad_norm"] = float(total)
        if per_group or self.patience > 0:
            norms = self.group_norms(optimizers)
            if per_group:
                out.update({f"train/grad_norm/{g}": v for g, v in norms.items()})
            self._watch(norms)
        return out

    def group_norms(self, optimizers: list[torch.optim.Optimizer]) -> dict[str, float]:
        """L2 norm of each trainable group's gradients (0 for a trainable group that got none)."""
        groups: dict[str, list[torch.Tensor]] = {}
        for name, p in self.named_parameters():
            if p.requires_grad:
                groups.setdefault(group_of(name), []).append(p.grad if p.grad is not None else p.new_zeros(()))
        for opt in optimizers:
            if isinstance(opt, SparseSignSGD):
                local = opt.local_gradients()
                groups[PUZZLE_GROUP] = [local[1] if local is not None else torch.zeros(())]
        if not groups:
            return {}
        names = sorted(groups)
        stacked = torch.stack([torch.nn.utils.get_total_norm(groups[g], norm_type=2.0).float().cpu() for g in names])
        return dict(zip(names, stacked.tolist()))

    def _watch(self, norms: dict[str, float]) -> None:
        if self.patience <= 0:
            return
        for group, norm in norms.items():
            bad = norm == 0.0 or not math.isfinite(norm)
            streak = self.bad_streak.get(group, 0) + 1 if bad else 0
            self.bad_streak[group] = streak
            if streak == self.patience:  # once per streak
                what = "zero" if norm == 0.0 else "non-finite"
                self.warn(f"WARNING: parameter group '{group}' trains but got a {what} gradient for {streak} "
                          "consecutive steps (disconnected from the loss, or frozen by mistake?)")
