"""Compute precision of a training run: the ``autocast`` knob and the fp16 gradient scaler.

The models cast their weights to ``arch.forward_dtype`` themselves (models.layers.CastedLinear), so
precision is chosen by setting that dtype, not by a ``torch.autocast`` region:

    autocast      forward_dtype                 gradient scaler
    None          true on CUDA, off elsewhere   -
    true          arch.forward_dtype as set     -      (today's behaviour: bfloat16 by default)
    bf16          bfloat16                      -
    fp16          float16                       torch.amp.GradScaler (GPUs without bf16: T4, V100)
    false / off   float32                       -

CPU and MPS compute in float32 whatever is asked (models.layers.resolve_forward_dtype); the scaler of
``fp16`` still runs there (it scales the loss and skips steps whose gradients overflow), which is how
the CPU tests exercise it. The scaler's state (scale, growth tracker) is numbers only and goes into the
train state, so a resumed fp16 run continues with the same loss scale.
"""

from __future__ import annotations

from typing import Any

import torch

AUTOCAST_CHOICES = ("bf16", "fp16", "off", "true", "false")
_FORWARD_DTYPE = {"bf16": "bfloat16", "fp16": "float16", "off": "float32"}


def parse_autocast(value: Any) -> str | None:
    """Canonical spelling ("bf16", "fp16", "off", "true") or None; ValueError naming the knob."""
    if value is None:
        return None
    text = str(value).strip().lower()
    aliases = {"false": "off", "no": "off", "none": "off", "float32": "off", "fp32": "off",
               "bfloat16": "bf16", "float16": "fp16", "yes": "true", "on": "true"}
    text = aliases.get(text, text)
    if text not in ("bf16", "fp16", "off", "true"):
        raise ValueError(f"autocast={value!r}; valid: bf16, fp16, off, true, false (or null = bf16 on CUDA)")
    return text


def resolve_precision(value: Any, device: torch.device, forward_dtype: str) -> tuple[str, bool]:
    """(arch.forward_dtype to build the model with, whether a gradient scaler runs)."""
    mode = parse_autocast(value)
    if mode is None:
        mode = "true" if device.type == "cuda" else "off"
    if mode == "true":
        return forward_dtype, False
    return _FORWARD_DTYPE[mode], mode == "fp16"


class Precision:
    """The loss scaling around backward and optimizer steps; a pass-through when no scaler runs."""

    def __init__(self, device: torch.device, use_scaler: bool):
        self.scaler = torch.amp.GradScaler(device.type, enabled=True) if use_scaler else None
        self._unscaled: set[int] = set()

    @property
    def enabled(self) -> bool:
        return self.scaler is not None

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss if self.scaler is None else self.scaler.scale(loss)

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Gradients back to their true size (before clipping or measuring them); once per step."""
        if self.scaler is not None and id(optimizer) not in self._unscaled:
            pending = getattr(optimizer, "pending_gradients", [])  # earlier micro-batches' puzzle rows
            if pending and not all(bool(torch.isfinite(g).all()) for _, g in pending):
                for group in optimizer.param_groups:  # let the scaler see the overflow: the step is skipped
                    for p in group["params"]:
                        if p.requires_grad:
                            p.grad = torch.full_like(p, float("nan"))
            self.scaler.unscale_(optimizer)
            inv_scale = 1.0 / self.scaler.get_scale()
            for _, grads in pending:
                grads.mul_(inv_scale)
            self._unscaled.add(id(optimizer))

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)  # skipped when the gradients hold inf/NaN

    def update(self) -> None:
        if self.scaler is not None:
            self.scaler.update()
            self._unscaled.clear()

    def state_dict(self) -> dict[str, Any] | None:
        return None if self.scaler is None else dict(self.scaler.state_dict())

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(dict(state))
