"""LoRA adapters for the recursive models' linear layers (CastedLinear and nn.Linear).

An adapted layer computes ``W x + scale * B (A x)`` with ``A`` [rank, in] (Kaiming-uniform init),
``B`` [out, rank] (zero init) and ``scale = alpha / rank``, so a freshly adapted model computes
exactly what the base model computed. Everything else is frozen, except the parameters named by
``trainable`` patterns; the puzzle embedding is a buffer trained by its own SignSGD optimizer and
is not touched here.

The adapter lives on the layer itself (parameters ``lora_A``, ``lora_B``, persistent buffer
``lora_scale`` and a forward hook), so the base weights keep their state-dict keys: a dense
checkpoint loads into an adapted model with only ``lora_*`` keys missing, and an adapted state
dict can be merged into dense weights without building a model (``merge_lora_state_dict``).
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

LORA_PARAM_NAMES = ("lora_A", "lora_B")
LORA_KEY_SUFFIXES = (".lora_A", ".lora_B", ".lora_scale")
_HOOK_ATTR = "_lora_hook_handle"
_DROPOUT_ATTR = "_lora_dropout"


@dataclass
class LoRAConfig:
    """LoRA settings; ``rank`` 0 disables LoRA."""

    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    # fnmatch patterns over module names (e.g. "*.qkv_proj", "lm_head"); "*" = every linear layer
    targets: list[str] = field(default_factory=lambda: ["*"])
    # fnmatch patterns over parameter names that stay trainable besides the adapters
    trainable: list[str] = field(default_factory=list)


def is_linear_layer(module: nn.Module) -> bool:
    """CastedLinear (matched by name so models/ need not be importable here) or nn.Linear."""
    if isinstance(module, nn.Linear):
        return True
    weight = getattr(module, "weight", None)
    return type(module).__name__ == "CastedLinear" and isinstance(weight, torch.Tensor) and weight.dim() == 2


def _matches(name: str, patterns: list[str] | tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def stays_trainable(param_name: str, trainable: list[str] | tuple[str, ...] = ()) -> bool:
    """Whether a parameter trains under LoRA: an adapter, or named by a ``trainable`` pattern."""
    return param_name.endswith((".lora_A", ".lora_B")) or param_name in LORA_PARAM_NAMES or _matches(
        param_name, list(trainable))


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Adapted layers by module name."""
    return {name: m for name, m in model.named_modules() if hasattr(m, "lora_A")}


def _lora_forward_hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    x = args[0]
    dropout = getattr(module, _DROPOUT_ATTR)
    x = F.dropout(x, p=dropout, training=module.training) if dropout > 0 else x
    # Compute in the activation dtype, as CastedLinear does for the base weight.
    low_rank = F.linear(F.linear(x, module.lora_A.to(x.dtype)), module.lora_B.to(x.dtype))
    return output + low_rank * module.lora_scale.to(x.dtype)


def _attach(module: nn.Module, rank: int, alpha: float, dropout: float) -> None:
    out_features, in_features = module.weight.shape
    device = module.weight.device
    lora_A = nn.Parameter(torch.empty(rank, in_features, device=device, dtype=torch.float32))
    nn.init.kaiming_uniform_(lora_A, a=math.sqrt(5))  # nn.Linear's default init
    lora_B = nn.Parameter(torch.zeros(out_features, rank, device=device, dtype=torch.float32))
    module.register_parameter("lora_A", lora_A)
    module.register_parameter("lora_B", lora_B)
    module.register_buffer("lora_scale", torch.tensor(alpha / rank, dtype=torch.float32, device=device))
    setattr(module, _DROPOUT_ATTR, float(dropout))
    setattr(module, _HOOK_ATTR, module.register_forward_hook(_lora_forward_hook))


def _detach(module: nn.Module) -> None:
    getattr(module, _HOOK_ATTR).remove()
    for name in (*LORA_PARAM_NAMES, "lora_scale"):
        delattr(module, name)
    delattr(module, _HOOK_ATTR)
    delattr(module, _DROPOUT_ATTR)


def apply_lora(
    model: nn.Module,
    rank: int,
    alpha: float = 16.0,
    targets: list[str] | tuple[str, ...] = ("*",),
    dropout: float = 0.0,
    trainable: list[str] | tuple[str, ...] = (),
    freeze_base: bool = True,
) -> list[str]:
    """Attach adapters to every linear layer whose module name matches ``targets``.

    Freezes all other parameters (unless ``freeze_base`` is False) except those matching
    ``trainable``. Returns the adapted module names; raises if nothing matched.
    """
    if rank <= 0:
        raise ValueError(f"LoRA rank must be positive, got {rank}")
    adapted = []
    for name, module in model.named_modules():
        if is_linear_layer(module) and _matches(name, list(targets)):
            if hasattr(module, "lora_A"):
                raise RuntimeError(f"{name} already has a LoRA adapter")
            adapted.append((name, module))
    if not adapted:
        linear = [n for n, m in model.named_modules() if is_linear_layer(m)]
        raise ValueError(f"LoRA targets {list(targets)} matched no linear layer; layers are: {linear}")
    if freeze_base:
        for pname, param in model.named_parameters():
            param.requires_grad_(_matches(pname, list(trainable)))
    for _, module in adapted:
        _attach(module, rank, alpha, dropout)
    return [name for name, _ in adapted]


def apply_lora_config(model: nn.Module, cfg: LoRAConfig) -> list[str]:
    return apply_lora(model, cfg.rank, cfg.alpha, cfg.targets, cfg.dropout, cfg.trainable)


def lora_config_from_arch(arch: object) -> LoRAConfig:
    """LoRA settings from ``arch.lora_*`` fields (the Trelis-fork spelling); rank 0 when absent."""
    default = LoRAConfig()
    return LoRAConfig(
        rank=int(getattr(arch, "lora_rank", 0) or 0),
        alpha=float(getattr(arch, "lora_alpha", default.alpha)),
        dropout=float(getattr(arch, "lora_dropout", default.dropout)),
        targets=list(getattr(arch, "lora_targets", None) or default.targets),
        trainable=list(getattr(arch, "lora_trainable", None) or default.trainable),
    )


def maybe_apply_lora(model: nn.Module, arch: object) -> list[str]:
    """Apply LoRA when ``arch.lora_rank`` > 0 (call after building, before or after loading weights)."""
    cfg = lora_config_from_arch(arch)
    return apply_lora_config(model, cfg) if cfg.rank > 0 else []


@torch.no_grad()
def merge_lora(model: nn.Module) -> int:
    """Fold every adapter into its dense weight (W += scale * B A) and remove it.

    Returns the number of merged layers. Frozen flags of base parameters are left as they are.
    """
    layers = lora_layers(model)
    for module in layers.values():
        delta = (module.lora_B.float() @ module.lora_A.float()) * module.lora_scale.float()
        module.weight.add_(delta.to(module.weight.dtype))
        _detach(module)
    return len(layers)


def is_lora_key(key: str) -> bool:
    return key.endswith(LORA_KEY_SUFFIXES)


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors (A, B and scale), detached, on CPU."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if is_lora_key(k)}


def merge_lora_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Merge adapters found in a state dict into their ``.weight`` entries; drop the adapter keys."""
    merged = {k: v for k, v in state_dict.items() if not is_lora_key(k)}
    for key in state_dict:
        if not key.endswith(".lora_A"):
            continue
        prefix = key[: -len(".lora_A")]
        weight_key = prefix + ".weight"
        if weight_key not in merged:
            raise KeyError(f"adapter {key} has no base weight {weight_key} in the state dict")
        A = state_dict[key].double()
        B = state_dict[prefix + ".lora_B"].double()
        scale = state_dict[prefix + ".lora_scale"].double()
        weight = merged[weight_key]
        merged[weight_key] = (weight.double() + scale * (B @ A)).to(weight.dtype)
    return merged


def save_lora_adapters(model: nn.Module, path: str | Path, alpha: float | None = None) -> None:
    """Write the adapters alone as safetensors, with rank and targets in the header metadata."""
    from utils.io import atomic_path
    from utils.tensor_files import write_safetensors

    tensors = lora_state_dict(model)
    if not tensors:
        raise ValueError("model has no LoRA adapters to save")
    layers = lora_layers(model)
    first = next(iter(layers.values()))
    rank = int(first.lora_A.shape[0])
    meta = {
        "format": "lora",
        "rank": str(rank),
        "alpha": str(alpha if alpha is not None else float(first.lora_scale) * rank),
        "layers": json.dumps(sorted(layers)),
    }
    with atomic_path(path) as tmp:
        write_safetensors(tmp, tensors, metadata=meta)


def load_lora_adapters(model: nn.Module, path: str | Path, trainable: tuple[str, ...] = ()) -> list[str]:
    """Load adapters saved by ``save_lora_adapters``, attaching them first if the model has none."""
    from utils.tensor_files import read_safetensors, safetensors_metadata

    meta = safetensors_metadata(path)
    tensors = read_safetensors(path)
    if not lora_layers(model):
        if meta.get("format") != "lora":
            raise ValueError(f"{path}: not a LoRA adapter file (metadata {meta})")
        layer_names = json.loads(meta["layers"])
        apply_lora(model, int(meta["rank"]), float(meta["alpha"]), targets=layer_names, trainable=trainable)
    expected = set(lora_state_dict(model))
    if set(tensors) != expected:
        raise ValueError(
            f"{path}: adapter keys do not match the model "
            f"(missing {sorted(expected - set(tensors))[:5]}, unexpected {sorted(set(tensors) - expected)[:5]})"
        )
    model.load_state_dict(tensors, strict=False)
    return sorted(lora_layers(model))


def count_trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
