"""Adaptive computation time (ACT) around a recursive inner model: the outer loop shared by TRM, HRM
and the transformer baseline.

``ACTModel`` owns the carry between calls: rows that halted take a fresh example from the next
batch and restart from the inner model's fixed initial latents; the other rows keep their example and
ignore the new one ("deep supervision": the latents are carried, detached, to the next ACT step).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from models.config import ArchConfig
from models.sparse_embedding import CastedSparseEmbedding


@dataclass
class ACTCarry:
    inner_carry: object  # the inner model's carry: a dataclass of batch-first tensors
    steps: torch.Tensor  # int32 [batch]: ACT steps taken on the current example
    halted: torch.Tensor  # bool [batch]: finished; replaced by a new example at the next call
    current_data: Dict[str, torch.Tensor]  # the examples the rows are working on
    outputs: Optional[Dict[str, torch.Tensor]] = field(default=None)  # kept for adaptive evaluation only


def where_rows(mask: torch.Tensor, if_true: torch.Tensor, if_false: torch.Tensor) -> torch.Tensor:
    """torch.where with a per-row mask broadcast over the trailing dims."""
    return torch.where(mask.view((-1,) + (1,) * (if_true.ndim - 1)), if_true, if_false)


def where_rows_carry(mask: torch.Tensor, if_true, if_false):
    """where_rows over every tensor field of two carries of the same dataclass."""
    return dataclasses.replace(if_false, **{f.name: where_rows(mask, getattr(if_true, f.name), getattr(if_false, f.name))
                                            for f in dataclasses.fields(if_false)})


class ACTModel(nn.Module):
    """Adaptive computation time around an inner model (TRM, HRM, ...).

    The inner model provides ``empty_carry(batch_size)``, ``reset_carry(mask, carry)``,
    ``input_embeddings(batch)`` and ``forward(carry, batch, input_embeddings) ->
    (new_carry, logits, (q_halt_logits, q_continue_logits))``; subclasses set ``self.inner``.

    Halting. Training: a row halts at halt_max_steps, or when q_halt > 0 (no_ACT_continue) /
    q_halt > q_continue (Q-learning, target from a second no-grad step), but with probability
    halt_exploration_prob not before a random step in [2, halt_max_steps]. Evaluation: every row runs
    halt_max_steps, or with ``arch.adaptive_halting`` rows stop at their halting decision, keep their
    state and outputs unchanged, and the batch finishes once all rows halted.
    """

    inner: nn.Module

    def __init__(self, arch: ArchConfig) -> None:
        super().__init__()
        self.arch = arch

    @property
    def puzzle_emb(self) -> Optional[CastedSparseEmbedding]:
        return getattr(self.inner, "puzzle_emb", None)

    def initial_carry(self, batch: Dict[str, torch.Tensor]) -> ACTCarry:
        batch_size = batch["inputs"].shape[0]
        device = batch["inputs"].device
        return ACTCarry(inner_carry=self.inner.empty_carry(batch_size),
                        steps=torch.zeros(batch_size, dtype=torch.int32, device=device),
                        halted=torch.ones(batch_size, dtype=torch.bool, device=device),  # all take new data
                        current_data={k: torch.zeros_like(v) for k, v in batch.items()})

    def _halt_signal(self, q_halt: torch.Tensor, q_continue: torch.Tensor) -> torch.Tensor:
        return q_halt > 0 if self.arch.no_ACT_continue else q_halt > q_continue

    def forward(self, carry: ACTCarry, batch: Dict[str, torch.Tensor]) -> Tuple[ACTCarry, Dict[str, torch.Tensor]]:
        arch = self.arch
        adaptive_eval = arch.adaptive_halting and not self.training
        frozen = None
        if adaptive_eval and not bool(carry.halted.all()):
            frozen, reset = carry.halted, torch.zeros_like(carry.halted)  # same batch continues
        else:
            reset = carry.halted
        inner_carry = self.inner.reset_carry(reset, carry.inner_carry)
        steps = torch.where(reset, 0, carry.steps)
        data = {k: where_rows(reset, batch[k], v) for k, v in carry.current_data.items()}

        x = self.inner.input_embeddings(data)
        new_inner, logits, (q_halt, q_continue) = self.inner(inner_carry, data, input_embeddings=x)
        outputs = {"logits": logits, "q_halt_logits": q_halt, "q_continue_logits": q_continue}

        with torch.no_grad():
            new_steps = steps + 1
            if frozen is not None:
                new_steps = torch.where(frozen, steps, new_steps)
                new_inner = where_rows_carry(frozen, inner_carry, new_inner)
                outputs = {k: where_rows(frozen, carry.outputs[k], v) for k, v in outputs.items()}
            is_last_step = new_steps >= arch.halt_max_steps
            halted = is_last_step
            if self.training and arch.halt_max_steps > 1:
                halted = halted | self._halt_signal(q_halt, q_continue)
                explore = torch.rand_like(q_halt) < arch.halt_exploration_prob
                min_steps = explore * torch.randint_like(new_steps, low=2, high=arch.halt_max_steps + 1)
                halted = halted & (new_steps >= min_steps)
                if not arch.no_ACT_continue:
                    # Bootstrapped Q target from the next step's prediction (no replay buffer: the
                    # many rows of a batch act as parallel environments).
                    _, _, (next_halt, next_continue) = self.inner(new_inner, data, input_embeddings=x)
                    outputs["target_q_continue"] = torch.sigmoid(
                        torch.where(is_last_step, next_halt, torch.maximum(next_halt, next_continue)))
            elif adaptive_eval:
                halted = halted | self._halt_signal(q_halt, q_continue)
                if frozen is not None:
                    halted = halted | frozen

        new_carry = ACTCarry(new_inner, new_steps, halted, data,
                             outputs={k: v.detach() for k, v in outputs.items()} if adaptive_eval else None)
        return new_carry, outputs
