"""Hierarchical Reasoning Model (HRM, Wang et al. 2025) with adaptive computation time.

Two modules of post-norm blocks work at two speeds: a fast low-level module ``L_level``
(L_layers blocks) and a slow high-level module ``H_level`` (H_layers blocks). One ACT step, given
the input embedding x and the carried latents (z_H, z_L):

    repeat H_cycles times:
        repeat L_cycles times:  z_L = L(z_L, z_H + x)       # f(a, inj) = blocks(a + inj)
        z_H = H(z_H, z_L)
    logits = lm_head(z_H)[:, prefix:];   (q_halt, q_continue) = q_head(z_H[:, 0])

"One-step gradient": every update except the very last L update and the very last H update runs
without gradient, so back-propagation goes through exactly one L step and one H step (the
fixed-point approximation of the HRM paper). Unlike TRM, the two modules have separate weights.

Embeddings, heads and the carry are the shared base's (models/recursive_base.py), the ACT wrapper
(halting, exploration, Q-learning target, adaptive evaluation) the shared one (models/act.py); the puzzle prefix is ceil(puzzle_emb_ndim / hidden)
positions when ``puzzle_emb_len`` is 0, as in the reference (1 for 512 / 512).

State-dict names equal the reference's (sapientinc/HRM models/hrm/hrm_act_v1.py):
``inner.H_level.layers.<i>.self_attn.qkv_proj.weight``, ``inner.L_level.layers.<i>.mlp.down_proj.weight``,
``inner.embed_tokens.embedding_weight``, ``inner.lm_head.weight``, ``inner.q_head.weight`` / ``.bias``,
``inner.puzzle_emb.weights``, ``inner.H_init``, ``inner.L_init``; so its checkpoints load with
models.compat.load_reference_state_dict.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch

from models.act import ACTModel
from models.config import ArchConfig
from models.recursive_base import LatentCarry, RecursiveInner


class HRMInner(RecursiveInner):
    """One ACT step of HRM: a low-level module ``L_level`` (L_layers blocks) and a separate
    high-level module ``H_level`` (H_layers blocks)."""

    def __init__(self, arch: ArchConfig, *, batch_size: int, seq_len: int, vocab_size: int,
                 num_puzzle_identifiers: int, causal: bool = False) -> None:
        if arch.H_layers < 1 or arch.L_layers < 1:
            raise ValueError(f"HRM needs arch.H_layers >= 1 and arch.L_layers >= 1 "
                             f"(got H_layers={arch.H_layers}, L_layers={arch.L_layers})")
        if arch.mlp_t:
            raise ValueError("arch.mlp_t is a TRM option; HRM uses attention blocks in both modules")
        super().__init__(arch, batch_size=batch_size, seq_len=seq_len, vocab_size=vocab_size,
                         num_puzzle_identifiers=num_puzzle_identifiers)
        # In this order, so a seed gives the weights it gave before the shared base existed.
        self.L_level = self.make_blocks(arch.L_layers, causal)
        self.make_initial_latents()
        self.H_level = self.make_blocks(arch.H_layers, causal)

    def forward(self, carry: LatentCarry, batch: Dict[str, torch.Tensor],
                input_embeddings: Optional[torch.Tensor] = None):
        """-> (new carry (detached), logits [B, seq, vocab], (q_halt_logits, q_continue_logits))."""
        x = self.input_embeddings(batch) if input_embeddings is None else input_embeddings
        cos_sin = self.rope()
        H_cycles, L_cycles = self.arch.H_cycles, self.arch.L_cycles
        z_H, z_L = carry.z_H, carry.z_L
        with torch.no_grad():  # every update but the last L and the last H step only moves the latents
            for h in range(H_cycles):
                last_h = h == H_cycles - 1
                for l_step in range(L_cycles):
                    if not (last_h and l_step == L_cycles - 1):
                        z_L = self.L_level(z_L, z_H + x, cos_sin=cos_sin)
                if not last_h:
                    z_H = self.H_level(z_H, z_L, cos_sin=cos_sin)
        # The one step back-propagated through.
        z_L = self.L_level(z_L, z_H + x, cos_sin=cos_sin)
        z_H = self.H_level(z_H, z_L, cos_sin=cos_sin)
        logits, q_halt, q_continue = self.heads(z_H)
        return LatentCarry(z_H=z_H.detach(), z_L=z_L.detach()), logits, (q_halt, q_continue)


class HRM(ACTModel):
    """HRM with ACT; build through models.registry.build_model (name "hrm")."""

    def __init__(self, arch: ArchConfig, *, batch_size: int, seq_len: int, vocab_size: int,
                 num_puzzle_identifiers: int, causal: bool = False) -> None:
        super().__init__(arch)
        self.inner = HRMInner(arch, batch_size=batch_size, seq_len=seq_len, vocab_size=vocab_size,
                              num_puzzle_identifiers=num_puzzle_identifiers, causal=causal)
