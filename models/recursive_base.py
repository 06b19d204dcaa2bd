"""What the inner modules of TRM, HRM and the transformer baseline share: input embeddings (tokens,
puzzle prefix, positions), the output and halting heads, the fixed initial latents and the carry.

Each model subclasses ``RecursiveInner``, builds its own block stacks (``make_blocks``), registers
the initial latents its carry needs (``make_initial_latents``) and writes its ``forward``: how the
latents are updated in one ACT step. The carry is a dataclass whose fields ``z_H`` / ``z_L`` start
from the buffers ``H_init`` / ``L_init``; ``empty_carry`` and ``reset_carry`` work for either.

Member names are the reference's (``embed_tokens``, ``lm_head``, ``q_head``, ``puzzle_emb``,
``embed_pos``, ``H_init``, ``L_init``), so state-dict keys stay those of its checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from models.act import where_rows
from models.config import ArchConfig
from models.layers import (CastedEmbedding, CastedLinear, ReasoningBlock, ReasoningModule, RotaryEmbedding,
                           resolve_forward_dtype, trunc_normal_init_)
from models.sparse_embedding import CastedSparseEmbedding


@dataclass
class LatentCarry:
    """Two carried latents (TRM, HRM): z_H (the answer state) and z_L (the reasoning state)."""
    z_H: torch.Tensor  # [batch, prefix + seq, hidden]
    z_L: torch.Tensor


class RecursiveInner(nn.Module):
    """Embeddings, heads, initial latents and carry handling; subclasses add blocks and ``forward``."""

    carry_type: type = LatentCarry

    def __init__(self, arch: ArchConfig, *, batch_size: int, seq_len: int, vocab_size: int,
                 num_puzzle_identifiers: int) -> None:
        super().__init__()
        arch.validate()
        self.arch = arch
        self.seq_len = seq_len
        self.prefix_len = arch.prefix_len
        hidden = arch.hidden_size
        self.embed_scale = math.sqrt(hidden)
        embed_std = 1.0 / self.embed_scale

        self.embed_tokens = CastedEmbedding(vocab_size, hidden, init_std=embed_std)
        self.lm_head = CastedLinear(hidden, vocab_size, bias=False)
        self.q_head = CastedLinear(hidden, 2, bias=True)
        with torch.no_grad():  # start the halting head at "continue" with little signal (sigmoid(-5))
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)
        self.puzzle_emb = (CastedSparseEmbedding(num_puzzle_identifiers, arch.puzzle_emb_ndim, batch_size=batch_size,
                                                 init_std=0.0) if arch.puzzle_emb_ndim > 0 else None)
        if arch.pos_encodings == "rope":
            self.rotary_emb = RotaryEmbedding(hidden // arch.num_heads, self.total_len, base=arch.rope_theta)
        elif arch.pos_encodings == "learned":
            self.embed_pos = CastedEmbedding(self.total_len, hidden, init_std=embed_std)

    @property
    def total_len(self) -> int:
        return self.seq_len + self.prefix_len

    # ----- building blocks for subclasses ---------------------------------------------------------
    def make_blocks(self, layers: int, causal: bool, mlp_t: bool = False) -> ReasoningModule:
        arch = self.arch
        return ReasoningModule([
            ReasoningBlock(arch.hidden_size, arch.num_heads, arch.expansion, arch.rms_norm_eps, causal=causal,
                           mlp_t_seq_len=self.total_len if mlp_t else None)
            for _ in range(layers)])

    def make_initial_latents(self) -> None:
        """``H_init`` (and ``L_init`` when the carry has z_L): fixed, never trained starting points; fp32
        buffers holding values exactly representable in forward_dtype, as the reference stores them."""
        init_dtype = getattr(torch, self.arch.forward_dtype)
        for f in dataclasses.fields(self.carry_type):
            value = trunc_normal_init_(torch.empty(self.arch.hidden_size), std=1.0).to(init_dtype).float()
            setattr(self, f"{f.name[2:]}_init", nn.Buffer(value, persistent=True))

    def rope(self):
        return self.rotary_emb() if hasattr(self, "rotary_emb") else None

    # ----- shared computation ---------------------------------------------------------------------
    def compute_dtype(self) -> torch.dtype:
        return resolve_forward_dtype(self.arch.forward_dtype, self.H_init.device)

    def input_embeddings(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """x = sqrt(hidden) * [puzzle prefix ; token embeddings] (+ learned positions)."""
        dtype = self.compute_dtype()
        hidden = self.arch.hidden_size
        tokens = self.embed_tokens(batch["inputs"].to(torch.int32), dtype)
        if self.prefix_len > 0:
            if self.puzzle_emb is not None:
                prefix = self.puzzle_emb(batch["puzzle_identifiers"], dtype)
                prefix = F.pad(prefix, (0, self.prefix_len * hidden - prefix.shape[-1]))
            else:  # no puzzle table: empty slots (the q_head still reads slot 0)
                prefix = tokens.new_zeros(tokens.shape[0], self.prefix_len * hidden)
            tokens = torch.cat((prefix.view(-1, self.prefix_len, hidden), tokens), dim=-2)
        if self.arch.pos_encodings == "learned":
            tokens = 0.707106781 * (tokens + self.embed_pos.embedding_weight.to(dtype))  # keep variance ~1
        return self.embed_scale * tokens

    def heads(self, z_H: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.lm_head(z_H)[:, self.prefix_len:]
        q_logits = self.q_head(z_H[:, 0]).to(torch.float32)
        return logits, q_logits[..., 0], q_logits[..., 1]

    def empty_carry(self, batch_size: int):
        shape = (batch_size, self.total_len, self.arch.hidden_size)
        dtype, device = self.compute_dtype(), self.H_init.device
        return self.carry_type(**{f.name: torch.zeros(shape, dtype=dtype, device=device)
                                  for f in dataclasses.fields(self.carry_type)})

    def reset_carry(self, reset: torch.Tensor, carry):
        """Rows in ``reset`` restart from the initial latents; the others keep theirs."""
        def restart(name: str) -> torch.Tensor:
            current = getattr(carry, name)
            return where_rows(reset, getattr(self, f"{name[2:]}_init").to(current.dtype).expand_as(current), current)
        # Fields of the instance, not of the class: torch.compile traces dataclasses.fields(instance)
        # but breaks the graph on a class object (3 graphs per forward instead of 1).
        return self.carry_type(**{f.name: restart(f.name) for f in dataclasses.fields(carry)})
