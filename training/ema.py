"""Exponential moving average of the weights, the puzzle-embedding table included.

The reference averages parameters only; its puzzle embeddings (a buffer trained by sign-SGD) are left
raw, so an EMA evaluation mixes averaged trunk weights with un-averaged embeddings. Here every
floating-point entry of the model's state dict is averaged: parameters and persistent buffers alike
(constant buffers such as RoPE tables stay constant under averaging).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


def _tracked(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict(keep_vars=True).items() if torch.is_floating_point(v)}


class EMA:
    def __init__(self, model: nn.Module, rate: float):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"ema_rate must be in [0, 1], got {rate}")
        self.rate = rate
        self.shadow = {k: v.detach().clone() for k, v in _tracked(model).items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """shadow <- rate * shadow + (1 - rate) * current, in one multi-tensor op per call."""
        current = _tracked(model)
        keys = list(self.shadow)
        torch._foreach_lerp_([self.shadow[k] for k in keys], [current[k].detach() for k in keys], 1.0 - self.rate)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {sorted(missing)[:5]}")
        for k, v in self.shadow.items():
            v.copy_(state[k])

    @contextmanager
    @torch.no_grad()
    def applied_to(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the averaged weights into ``model`` (in place, so compiled graphs and optimizer
        references stay valid) and restore the trained ones afterwards."""
        current = _tracked(model)
        backup = {k: v.detach().clone() for k, v in current.items()}
        try:
            for k, v in current.items():
                v.data.copy_(self.shadow[k])
            yield model
        finally:
            for k, v in current.items():
                v.data.copy_(backup[k])
