"""Models by name: the one place the trainer, evaluator and scripts turn an ArchConfig into a model.

Every model class takes ``(arch, *, batch_size, seq_len, vocab_size, num_puzzle_identifiers,
causal=False)`` and implements the ACT interface (``initial_carry(batch)``, ``forward(carry, batch)
-> (carry, outputs)``). Builders import their module lazily so one broken or missing model does not
stop the others from loading. Adding a model = one builder function + one MODEL_REGISTRY line.
"""

from __future__ import annotations

from typing import Callable, Dict

from torch import nn

from models.config import ArchConfig
from models.losses import ACTLossHead


def _build_trm(arch: ArchConfig, **dims) -> nn.Module:
    from models.trm import TRM
    return TRM(arch, **dims)


def _build_hrm(arch: ArchConfig, **dims) -> nn.Module:
    from models.hrm import HRM
    return HRM(arch, **dims)


def _build_transformers_baseline(arch: ArchConfig, **dims) -> nn.Module:
    from models.transformer_baseline import TransformerBaseline
    return TransformerBaseline(arch, **dims)


MODEL_REGISTRY: Dict[str, Callable[..., nn.Module]] = {
    "trm": _build_trm,
    "hrm": _build_hrm,
    "transformers_baseline": _build_transformers_baseline,
}

# Names used by the reference configs ("module@Class"), accepted so their YAML files work unchanged.
MODEL_ALIASES: Dict[str, str] = {
    "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1": "trm",
    "recursive_reasoning.hrm@HierarchicalReasoningModel_ACTV1": "hrm",
    "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1": "hrm",
    "recursive_reasoning.transformers_baseline@Model_ACTV2": "transformers_baseline",
    "transformer": "transformers_baseline",
}


def canonical_model_name(name: str) -> str:
    """Registry key for ``name`` (a key or a reference alias); ValueError listing valid names."""
    key = MODEL_ALIASES.get(name, name)
    if key not in MODEL_REGISTRY:
        raise ValueError(f"unknown model name {name!r}; valid names: {', '.join(sorted(MODEL_REGISTRY))}"
                         f" (reference aliases: {', '.join(sorted(MODEL_ALIASES))})")
    return key


def build_model(arch: ArchConfig, *, batch_size: int, seq_len: int, vocab_size: int,
                num_puzzle_identifiers: int, causal: bool = False) -> ACTLossHead:
    """Build ``arch.name`` (on CPU, float32 weights) wrapped in its ACTLossHead.

    ``batch_size`` is the per-rank training batch (sizes the puzzle embedding's per-batch copy).
    """
    arch.validate()
    builder = MODEL_REGISTRY[canonical_model_name(arch.name)]
    model = builder(arch, batch_size=batch_size, seq_len=seq_len, vocab_size=vocab_size,
                    num_puzzle_identifiers=num_puzzle_identifiers, causal=causal)
    return ACTLossHead(model, arch.loss.loss_type, changed_cell_weight=arch.loss.changed_cell_weight,
                       ponder_cost=arch.loss.ponder_cost)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of dense parameters. The puzzle table is a buffer and never counted; LoRA adapters
    are counted like any parameter (use trainable_only=True to count only what trains)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def parameter_summary(model: nn.Module) -> str:
    """One line for the start-up message: dense weights in total and training now (LoRA adapters
    among them), and the puzzle table, which trains separately (sign-SGD on its rows)."""
    from models.lora import is_lora_key

    total = count_parameters(model)
    trainable = count_parameters(model, trainable_only=True)
    adapters = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and is_lora_key(n))
    text = f"{total:,} weights, {trainable:,} trainable"
    if adapters:
        text += f" ({adapters:,} in LoRA adapters)"
    tables = [b for n, b in model.named_buffers() if n.endswith("puzzle_emb.weights")]
    if tables:
        text += f"; puzzle table {tables[0].shape[0]:,} x {tables[0].shape[1]} (trains by sign-SGD)"
    return text
