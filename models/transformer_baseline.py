"""Transformer baseline: HRM without the hierarchy and without inner cycles.

The architecture ablation of the HRM/TRM papers (reference: TinyRecursiveModels
models/recursive_reasoning/transformers_baseline.py, ``Model_ACTV2``). One stack ``H_level`` of
H_layers post-norm blocks runs ONCE per ACT step on the carried state plus the input embedding:

    z_H = H(z_H, x) = blocks(z_H + x);   logits = lm_head(z_H)[:, prefix:];   q = q_head(z_H[:, 0])

The ACT outer loop (carry, halting, exploration, Q-learning, adaptive evaluation) is the shared
one of models/trm.py, so the same loss head, trainer and evaluators work unchanged. With
``halt_max_steps: 1`` it is a plain single-pass transformer. H_cycles, L_cycles and L_layers are
ignored (the reference keeps H_cycles "for compatibility" only).

State-dict names equal the reference's: ``inner.H_level.layers.<i>...``, ``inner.H_init`` (no
L module, no L_init), ``inner.embed_tokens.embedding_weight``, ``inner.lm_head.weight``,
``inner.q_head.weight`` / ``.bias``, ``inner.puzzle_emb.weights``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch

from models.act import ACTModel
from models.config import ArchConfig
from models.recursive_base import RecursiveInner


@dataclass
class BaselineInnerCarry:
    z_H: torch.Tensor  # [batch, prefix + seq, hidden]


class TransformerBaselineInner(RecursiveInner):
    """One ACT step of the baseline: the shared embeddings and heads, one block stack ``H_level`` and
    one carried state (so no L module and no ``L_init``, as in the reference)."""

    carry_type = BaselineInnerCarry

    def __init__(self, arch: ArchConfig, *, batch_size: int, seq_len: int, vocab_size: int,
                 num_puzzle_identifiers: int, causal: bool = False) -> None:
        if arch.H_layers < 1:
            raise ValueError(f"the transformer baseline needs arch.H_layers >= 1 (got {arch.H_layers})")
        super().__init__(arch, batch_size=batch_size, seq_len=seq_len, vocab_size=vocab_size,
                         num_puzzle_identifiers=num_puzzle_identifiers)
        self.make_initial_latents()
        self.H_level = self.make_blocks(arch.H_layers, causal)

    def forward(self, carry: BaselineInnerCarry, batch: Dict[str, torch.Tensor],
                input_embeddings: Optional[torch.Tensor] = None):
        """-> (new carry (detached), logits [B, seq, vocab], (q_halt_logits, q_continue_logits))."""
        x = self.input_embeddings(batch) if input_embeddings is None else input_embeddings
        z_H = self.H_level(carry.z_H, x, cos_sin=self.rope())
        logits, q_halt, q_continue = self.heads(z_H)
        return BaselineInnerCarry(z_H=z_H.detach()), logits, (q_halt, q_continue)


class TransformerBaseline(ACTModel):
    """Transformer baseline with ACT; build through models.registry.build_model
    (name "transformers_baseline")."""

    def __init__(self, arch: ArchConfig, *, batch_size: int, seq_len: int, vocab_size: int,
                 num_puzzle_identifiers: int, causal: bool = False) -> None:
        super().__init__(arch)
        self.inner = TransformerBaselineInner(arch, batch_size=batch_size, seq_len=seq_len, vocab_size=vocab_size,
                                              num_puzzle_identifiers=num_puzzle_identifiers, causal=causal)
