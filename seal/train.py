"""The one supervised training loop (TTT adapters and ReSTEM): AdamW, warmup + cosine, sliced loss."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from seal.model import Precision, sliced_lm_loss
from seal.ttt_data import TrainExample


@dataclass
class TrainStats:
    steps: int
    first_loss: float
    last_loss: float


def num_steps(num_examples: int, batch_size: int, epochs: int) -> int:
    return math.ceil(num_examples / batch_size) * epochs


def collate(batch: list[TrainExample], pad_id: int, device) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence; padding is masked out of attention and never supervised."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, e in enumerate(batch):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train_supervised(
    model,
    examples: list[TrainExample],
    *,
    learning_rate: float,
    epochs: int,
    batch_size: int,
    warmup_steps: int,
    pad_id: int,
    precision: Precision,
    seed: int,
    grad_clip: float = 1.0,
) -> TrainStats:
    """Train the trainable (LoRA) parameters of ``model`` in place."""
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    total = num_steps(len(examples), batch_size, epochs)
    if total == 0 or not params:
        return TrainStats(0, float("nan"), float("nan"))
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, warmup_steps, total))
    scaler = torch.amp.GradScaler(device.type) if precision.needs_grad_scaler else None
    rng = np.random.default_rng(seed)
    model.train()
    losses: list[float] = []
    for _ in range(epochs):
        order = rng.permutation(len(examples))
        for start in range(0, len(order), batch_size):
            batch = collate([examples[k] for k in order[start : start + batch_size]], pad_id, device)
            with torch.autocast(device.type, dtype=precision.autocast, enabled=precision.autocast is not None):
                loss = sliced_lm_loss(model, **batch)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            losses.append(float(loss.detach()))
    model.eval()
    return TrainStats(len(losses), losses[0], losses[-1])
