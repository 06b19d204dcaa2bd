"""Learning-rate schedule shared by every optimizer: linear warmup, then cosine decay to a floor.

The same formula as the reference (`cosine_schedule_with_warmup_lr_lambda` in TRM's pretrain.py):
the reference ARC config sets ``lr_min_ratio=1.0``, which makes it constant after warmup.
"""

from __future__ import annotations

import math


def lr_at_step(step: int, *, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float = 0.0,
               num_cycles: float = 0.5) -> float:
    """Learning rate for optimizer step ``step`` (the reference counts steps from 1 when it trains)."""
    if step < warmup_steps:
        return base_lr * step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress))
    return base_lr * (min_ratio + max(0.0, (1 - min_ratio) * cosine))
