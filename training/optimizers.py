"""AdamATan2: the optimizer TRM and HRM are trained with, on any device.

The reference trains with the CUDA-only ``adam_atan2`` package. Its fused kernel computes, per element
and with ``bc1 = 1 - beta1**step``, ``bc2 = 1 - beta2**step``::

    p  <- p * (1 - lr * weight_decay)
    m  <- beta1 * m + (1 - beta1) * g          (written as lerp(m, g, 1 - beta1))
    v  <- beta2 * v + (1 - beta2) * g * g      (lerp(v, g*g, 1 - beta2))
    p  <- p - (lr / bc1) * atan2(m, sqrt(v) / sqrt(bc2))

``adam-atan2-pytorch`` (the usual drop-in) computes ``lr * 1.27 * atan2(m / bc1, sqrt(v / bc2))``
instead, roughly a 1.27x larger step, so its learning rates do not transfer. This module reproduces the
kernel exactly: it calls the kernel when the package is installed and the parameters live on CUDA,
and otherwise runs the same maths with multi-tensor ``torch._foreach_*`` ops (atan2 has no foreach
op, so that one call goes tensor by tensor). The state layout (``step``, ``exp_avg``, ``exp_avg_sq``)
is the package's, so optimizer checkpoints move between the two paths.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import Tensor


def _load_fused_backend():
    try:
        import adam_atan2_backend  # type: ignore[import-not-found]  # built by `pip install adam-atan2`
    except (ImportError, OSError):  # missing, or built against another torch (a common failure)
        return None
    return adam_atan2_backend


_FUSED_BACKEND = _load_fused_backend()


def fused_available() -> bool:
    return _FUSED_BACKEND is not None and torch.cuda.is_available()


class AdamATan2(torch.optim.Optimizer):
    """Adam with atan2 in place of division by sqrt(v) + eps (no epsilon; scale invariant).

    ``fused``: None uses the CUDA kernel when available for CUDA parameters; False forces the
    PyTorch implementation (tests compare the two).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 1e-2, fused: bool | None = None):
        if lr < 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        if weight_decay < 0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))
        self.fused = fused

    def _use_fused(self, device: torch.device) -> bool:
        if self.fused is False or device.type != "cuda":
            return False
        if _FUSED_BACKEND is None:
            if self.fused:
                raise RuntimeError("fused=True but the adam_atan2 CUDA backend is not installed")
            return False
        return True

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue  # frozen or unused this step: no update and no weight decay, as the kernel
                if p.grad.is_sparse:
                    raise RuntimeError("AdamATan2 does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if state["step"].device != p.device and self._use_fused(p.device):
                    state["step"] = state["step"].to(p.device)  # the kernel reads step counts on the device
                params.append(_local(p))
                grads.append(_local(p.grad))
                exp_avgs.append(_local(state["exp_avg"]))
                exp_avg_sqs.append(_local(state["exp_avg_sq"]))
                steps.append(state["step"])
            if not params:
                continue
            beta1, beta2 = group["betas"]
            lr, wd = float(group["lr"]), float(group["weight_decay"])
            # Group by device and dtype, the way multi-tensor kernels want their inputs.
            buckets: dict[tuple, list[int]] = {}
            for i, p in enumerate(params):
                buckets.setdefault((p.device, p.dtype), []).append(i)
            for (device, _), idx in buckets.items():
                sel = [params[i] for i in idx], [grads[i] for i in idx], [exp_avgs[i] for i in idx], \
                    [exp_avg_sqs[i] for i in idx], [steps[i] for i in idx]
                if self._use_fused(device):
                    self._fused_update(*sel, beta1=beta1, beta2=beta2, lr=lr, weight_decay=wd)
                else:
                    _foreach_update(*sel, beta1=beta1, beta2=beta2, lr=lr, weight_decay=wd)
        return loss

    def _fused_update(self, params, grads, exp_avgs, exp_avg_sqs, steps, *, beta1, beta2, lr, weight_decay):
        torch._foreach_add_(steps, 1)
        _FUSED_BACKEND.adam_atan2_cuda_impl_(params, grads, exp_avgs, exp_avg_sqs, steps,
                                             lr, beta1, beta2, weight_decay)


def _local(t: Tensor) -> Tensor:
    """The shard a rank owns when FSDP2 made ``t`` a DTensor (the update is elementwise, so shards suffice)."""
    return t._local_tensor if hasattr(t, "_local_tensor") else t


def _foreach_update(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],
                    exp_avg_sqs: list[Tensor], steps: list[Tensor], *, beta1: float, beta2: float,
                    lr: float, weight_decay: float) -> None:
    torch._foreach_add_(steps, 1)
    # All parameters of a group step together, so one step count serves the whole bucket; tensors that
    # joined later (their count differs) are rare and handled one by one with their own corrections.
    step_values = [float(s) for s in steps]
    if len(set(step_values)) > 1:
        for i in range(len(params)):
            _foreach_update_same_step([params[i]], [grads[i]], [exp_avgs[i]], [exp_avg_sqs[i]], step_values[i],
                                      beta1, beta2, lr, weight_decay)
        return
    _foreach_update_same_step(params, grads, exp_avgs, exp_avg_sqs, step_values[0], beta1, beta2, lr, weight_decay)


def _foreach_update_same_step(params, grads, exp_avgs, exp_avg_sqs, step: float, beta1: float, beta2: float,
                              lr: float, weight_decay: float) -> None:
    bias_correction1 = 1 - beta1 ** step
    bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
    # Parameters, gradients and moments share one dtype (float32 for every model here); the kernel's
    # float32 opmath for low-precision tensors is not reproduced.
    work = params
    if weight_decay != 0:
        torch._foreach_mul_(work, 1 - lr * weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_lerp_(exp_avg_sqs, torch._foreach_mul(grads, grads), 1 - beta2)
    denoms = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denoms, bias_correction2_sqrt)
    for m, d in zip(exp_avgs, denoms):
        torch.atan2(m, d, out=d)
    torch._foreach_add_(work, denoms, alpha=-lr / bias_correction1)


DENSE_OPTIMIZERS = ("adam_atan2", "adamw")


def build_dense_optimizer(name: str, params: list, *, betas: tuple[float, float], weight_decay: float,
                          eps: float = 1e-8) -> torch.optim.Optimizer:
    """The dense weights' optimizer (``optimizer=`` knob), built with lr 0: the trainer's schedule sets it.

    ``adamw`` is torch.optim.AdamW with the same betas and decoupled weight decay p <- p(1 - lr wd) as
    AdamATan2, so only the update rule differs (m / (sqrt(v) + eps) instead of atan2).
    """
    if name == "adam_atan2":
        return AdamATan2(params, lr=0.0, betas=betas, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=0.0, betas=betas, weight_decay=weight_decay, eps=eps)
    raise ValueError(f"optimizer={name!r}; valid: {', '.join(DENSE_OPTIMIZERS)}")
