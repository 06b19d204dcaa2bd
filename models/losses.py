"""Per-token losses and the ACT loss head that wraps every model.

stablemax (Prieto et al., "Grokking at the edge of numerical stability"): s(x) = x + 1 for x >= 0,
1 / (1 - x) for x < 0; probabilities s(x_i) / sum_j s(x_j). Computed in float64 (float32 on MPS,
which has no float64) because s grows only linearly and the log needs the precision.

ACTLossHead(model, loss_type) calls ``model(carry, batch) -> (new_carry, outputs)`` and returns
``(new_carry, loss, metrics, preds, all_finish)``:
  loss    = lm_loss + 0.5 * (q_halt_loss + q_continue_loss), each SUMMED over the batch
            (lm_loss of a row = its per-token loss summed and divided by its count of valid labels);
            the trainer divides by the global batch size. Two optional terms (off by default, and then
            not computed at all, so the loss is the reference's bit for bit):
            changed_cell_loss = (w - 1) * per-token loss of the cells whose label differs from the
              input, per row divided by the same label count: lm_loss + changed_cell_loss weights those
              cells by w = changed_cell_weight (the cells a model that copies its input gets wrong);
            ponder_loss = ponder_cost * sum over rows of -log sigmoid(q_halt_logit): every ACT step a
              row takes pays it once, pushing the halting head toward stopping earlier.
  metrics = 0-d tensors summed over rows that halted this step and have labels: count, accuracy
            (per-row token accuracy), exact_accuracy, q_halt_accuracy, steps, lm_loss, q_halt_loss,
            q_continue_loss. The trainer all-reduces and divides by count.
  preds   = requested keys among "preds" (argmax tokens), "logits", "q_halt_logits",
            "q_continue_logits" and any key of the batch the model actually worked on.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_LABEL_ID = -100


def stablemax(x: torch.Tensor) -> torch.Tensor:
    """s(x): x + 1 for x >= 0, 1 / (1 - x) for x < 0 (positive, continuous, linear growth)."""
    return torch.where(x < 0, 1 / (1 - x.clamp(max=0)), x + 1)


def log_stablemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    s_x = stablemax(x)
    return torch.log(s_x) - torch.log(s_x.sum(dim=dim, keepdim=True))


def stablemax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_LABEL_ID) -> torch.Tensor:
    """Per-token -log stablemax(logits)[label]; 0 where label == ignore_index. Same shape as labels."""
    wide = torch.float32 if logits.device.type == "mps" else torch.float64
    logprobs = log_stablemax(logits.to(wide), dim=-1)
    valid = labels != ignore_index
    safe_labels = torch.where(valid, labels, 0).to(torch.long)
    picked = torch.gather(logprobs, -1, safe_labels.unsqueeze(-1)).squeeze(-1)
    return torch.where(valid, -picked, 0)


def softmax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_LABEL_ID) -> torch.Tensor:
    """Per-token softmax cross-entropy in float32; 0 where label == ignore_index."""
    flat = F.cross_entropy(logits.to(torch.float32).reshape(-1, logits.shape[-1]), labels.to(torch.long).reshape(-1),
                           ignore_index=ignore_index, reduction="none")
    return flat.view(labels.shape)


LOSS_FUNCTIONS: Dict[str, Callable[..., torch.Tensor]] = {
    "stablemax_cross_entropy": stablemax_cross_entropy,
    "softmax_cross_entropy": softmax_cross_entropy,
}

MODEL_OUTPUT_KEYS = ("preds", "logits", "q_halt_logits", "q_continue_logits")


class ACTLossHead(nn.Module):
    """Loss and metrics around an ACT model (TRM, HRM, baseline); the model lives in ``self.model``
    so state-dict keys are ``model.<...>`` as in the reference checkpoints."""

    def __init__(self, model: nn.Module, loss_type: str = "stablemax_cross_entropy",
                 changed_cell_weight: float = 1.0, ponder_cost: float = 0.0) -> None:
        super().__init__()
        if loss_type not in LOSS_FUNCTIONS:
            raise ValueError(f"unknown loss_type {loss_type!r}; valid: {', '.join(LOSS_FUNCTIONS)}")
        self.model = model
        self.loss_type = loss_type
        self.loss_fn = LOSS_FUNCTIONS[loss_type]
        self.changed_cell_weight = float(changed_cell_weight)
        self.ponder_cost = float(ponder_cost)

    def initial_carry(self, batch: Dict[str, torch.Tensor]) -> Any:
        return self.model.initial_carry(batch)

    def forward(self, carry: Any, batch: Dict[str, torch.Tensor], return_keys: Sequence[str] = ()
                ) -> Tuple[Any, torch.Tensor, Dict[str, torch.Tensor], Dict[str, torch.Tensor], torch.Tensor]:
        new_carry, outputs = self.model(carry, batch)
        labels = new_carry.current_data["labels"]
        logits = outputs["logits"]
        q_halt = outputs["q_halt_logits"]

        with torch.no_grad():
            outputs["preds"] = torch.argmax(logits, dim=-1)
            mask = labels != IGNORE_LABEL_ID
            label_counts = mask.sum(-1)
            divisor = label_counts.clamp_min(1).unsqueeze(-1)  # rows without labels contribute 0, not NaN
            is_correct = mask & (outputs["preds"] == labels)
            seq_is_correct = is_correct.sum(-1) == label_counts

            counted = new_carry.halted & (label_counts > 0)
            metrics = {
                "count": counted.sum(),
                "accuracy": torch.where(counted, (is_correct.to(torch.float32) / divisor).sum(-1), 0).sum(),
                "exact_accuracy": (counted & seq_is_correct).sum(),
                "q_halt_accuracy": (counted & ((q_halt >= 0) == seq_is_correct)).sum(),
                "steps": torch.where(counted, new_carry.steps, 0).sum(),
            }

        token_loss = self.loss_fn(logits, labels, ignore_index=IGNORE_LABEL_ID)
        lm_loss = (token_loss / divisor).sum()
        q_halt_loss = F.binary_cross_entropy_with_logits(q_halt, seq_is_correct.to(q_halt.dtype), reduction="sum")
        q_continue_loss = torch.zeros((), dtype=q_halt_loss.dtype, device=q_halt_loss.device)
        if "target_q_continue" in outputs:
            q_continue_loss = F.binary_cross_entropy_with_logits(
                outputs["q_continue_logits"], outputs["target_q_continue"].to(q_halt.dtype), reduction="sum")
        metrics.update(lm_loss=lm_loss.detach(), q_halt_loss=q_halt_loss.detach(),
                       q_continue_loss=q_continue_loss.detach())

        preds = {}
        for key in return_keys:
            if key in MODEL_OUTPUT_KEYS and key in outputs:
                preds[key] = outputs[key].detach()
            elif key in new_carry.current_data:
                preds[key] = new_carry.current_data[key]
        loss = lm_loss + 0.5 * (q_halt_loss + q_continue_loss)
        if self.changed_cell_weight != 1.0:
            changed = mask & (labels != new_carry.current_data["inputs"].to(labels.dtype))
            changed_cell_loss = (self.changed_cell_weight - 1.0) * (torch.where(changed, token_loss, 0) / divisor).sum()
            loss = loss + changed_cell_loss
            metrics["changed_cell_loss"] = changed_cell_loss.detach()
        if self.ponder_cost != 0.0:
            ponder_loss = self.ponder_cost * F.softplus(-q_halt.to(torch.float32)).sum()  # -log sigmoid(q)
            loss = loss + ponder_loss
            metrics["ponder_loss"] = ponder_loss.detach()
        return new_carry, loss, metrics, preds, new_carry.halted.all()
