"""Tiny Recursive Model (TRM, Jolicoeur-Martineau 2025).

One small network ``L_level`` (L_layers post-norm blocks) refines two latents: y = z_H (the answer
state) and z = z_L (the reasoning state). One ACT step, given the input embedding x:

    repeat H_cycles times (all but the last without gradient):
        repeat L_cycles times:  z_L = net(z_L, z_H + x)      # net(a, b) = blocks(a + b)
        z_H = net(z_H, z_L)
    logits = lm_head(z_H)[:, prefix:];   (q_halt, q_continue) = q_head(z_H[:, 0])

The latents are carried (detached) to the next ACT step of the same example ("deep supervision") by
the ACT wrapper (models/act.py); embeddings, heads and the carry are the shared base's
(models/recursive_base.py).

State-dict names equal the reference's (``inner.L_level.layers.0.self_attn.qkv_proj.weight``,
``inner.puzzle_emb.weights``, ``inner.H_init``, ...), so its checkpoints load as they are.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch

from models.act import ACTCarry, ACTModel, where_rows, where_rows_carry  # noqa: F401 - re-exported
from models.config import ArchConfig
from models.recursive_base import LatentCarry, RecursiveInner

TRMInnerCarry = LatentCarry  # the name the tests and older code use


class TRMInner(RecursiveInner):
    """One ACT step of TRM: one block stack ``L_level`` refines both latents."""

    def __init__(self, arch: ArchConfig, *, batch_size: int, seq_len: int, vocab_size: int,
                 num_puzzle_identifiers: int, causal: bool = False) -> None:
        super().__init__(arch, batch_size=batch_size, seq_len=seq_len, vocab_size=vocab_size,
                         num_puzzle_identifiers=num_puzzle_identifiers)
        self.L_level = self.make_blocks(arch.L_layers, causal, mlp_t=arch.mlp_t)
        self.make_initial_latents()

    def forward(self, carry: LatentCarry, batch: Dict[str, torch.Tensor],
                input_embeddings: Optional[torch.Tensor] = None):
        """-> (new carry (detached), logits [B, seq, vocab], (q_halt_logits, q_continue_logits))."""
        x = self.input_embeddings(batch) if input_embeddings is None else input_embeddings
        cos_sin = self.rope()
        net = self.L_level
        z_H, z_L = carry.z_H, carry.z_L
        with torch.no_grad():  # all but the last outer cycle only move the latents
            for _ in range(self.arch.H_cycles - 1):
                for _ in range(self.arch.L_cycles):
                    z_L = net(z_L, z_H + x, cos_sin=cos_sin)
                z_H = net(z_H, z_L, cos_sin=cos_sin)
        for _ in range(self.arch.L_cycles):  # the last one is back-propagated through
            z_L = net(z_L, z_H + x, cos_sin=cos_sin)
        z_H = net(z_H, z_L, cos_sin=cos_sin)
        logits, q_halt, q_continue = self.heads(z_H)
        return LatentCarry(z_H=z_H.detach(), z_L=z_L.detach()), logits, (q_halt, q_continue)


class TRM(ACTModel):
    """TRM with ACT; build through models.registry.build_model."""

    def __init__(self, arch: ArchConfig, *, batch_size: int, seq_len: int, vocab_size: int,
                 num_puzzle_identifiers: int, causal: bool = False) -> None:
        super().__init__(arch)
        self.inner = TRMInner(arch, batch_size=batch_size, seq_len=seq_len, vocab_size=vocab_size,
                              num_puzzle_identifiers=num_puzzle_identifiers, causal=causal)
