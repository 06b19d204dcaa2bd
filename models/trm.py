"""Tiny Recursive Model (TRM, Jolicoeur-Martineau 2025) and the ACT wrapper shared by recursive models.

One small network ``L_level`` (L_layers post-norm blocks) refines two latents: y = z_H (the answer
state) and z = z_L (the reasoning state). One ACT step, given the input embedding x:

    repeat H_cycles times (all but the last without gradient):
        repeat L_cycles times:  z_L = net(z_L, z_H + x)      # net(a, b) = blocks(a + b)
        z_H = net(z_H, z_L)
    logits = lm_head(z_H)[:, prefix:];   (q_halt, q_continue) = q_head(z_H[:, 0])

The latents are carried (detached) to the next ACT step of the same example ("deep supervision").
``ACTModel`` owns that carry: rows that halted take a fresh example from the next batch and restart
from the fixed H_init / L_init vectors; the other rows keep their example and ignore the new one.

State-dict names equal the reference's (``inner.L_level.layers.0.self_attn.qkv_proj.weight``,
``inner.puzzle_emb.weights``, ``inner.H_init``, ...), so its checkpoints load as they are.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from models.config import ArchConfig
from models.layers import (CastedEmbedding, CastedLinear, ReasoningBlock, ReasoningModule, RotaryEmbedding,
                           resolve_forward_dtype, trunc_normal_init_)
from models.sparse_embedding import CastedSparseEmbedding


@dataclass
class TRMInnerCarry:
    z_H: torch.Tensor  # [batch, prefix + seq, hidden]
    z_L: torch.Tensor


@dataclass
class ACTCarry:
    inner_carry: object  # the inner model's carry: a dataclass of batch-first tensors
    steps: torch.Tensor  # int32 [batch]: ACT steps taken on the current example
    halted: torch.Tensor  # bool [batch]: finished; replaced by a new example at the next call
    current_data: Dict[str, torch.Tensor]  # the examples the rows are working on
    outputs: Optional[Dict[str, torch.Tensor]] = field(default=None)  # kept for adaptive evaluation only


def where_rows(mask: torch.Tensor, if_true: torch.Tensor, if_false: torch.Tensor) -> torch.Tensor:
    """torch.where with a per-row mask broadcast over the trailing dims."""
    return torch.where(mask.view((-1,) + (1,) * (if_true.ndim - 1)), if_true, if_false)


def where_rows_carry(mask: torch.Tensor, if_true, if_false):
    """where_rows over every tensor field of two carries of the same dataclass."""
    return dataclasses.replace(if_false, **{f.name: where_rows(mask, getattr(if_true, f.name), getattr(if_false, f.name))
                                            for f in dataclasses.fields(if_false)})


class TRMInner(nn.Module):
    """One ACT step of TRM: embeddings, recursion, heads."""

    def __init__(self, arch: ArchConfig, *, batch_size: int, seq_len: int, vocab_size: int,
                 num_puzzle_identifiers: int, causal: bool = False) -> None:
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
        self.puzzle_emb = (CastedSparseEmbedding(num_puzzle_identifiers, arch.puzzle_emb_ndim, batch_size=batch_size,
                                                 init_std=0.0) if arch.puzzle_emb_ndim > 0 else None)
        total_len = seq_len + self.prefix_len
        if arch.pos_encodings == "rope":
            self.rotary_emb = RotaryEmbedding(hidden // arch.num_heads, total_len, base=arch.rope_theta)
        elif arch.pos_encodings == "learned":
            self.embed_pos = CastedEmbedding(total_len, hidden, init_std=embed_std)

        self.L_level = ReasoningModule([
            ReasoningBlock(hidden, arch.num_heads, arch.expansion, arch.rms_norm_eps, causal=causal,
                           mlp_t_seq_len=total_len if arch.mlp_t else None)
            for _ in range(arch.L_layers)])

        # Fixed (never trained) starting points of the latents; fp32 buffers holding values exactly
        # representable in forward_dtype, which is how the reference stores them.
        init_dtype = getattr(torch, arch.forward_dtype)
        self.H_init = nn.Buffer(trunc_normal_init_(torch.empty(hidden), std=1.0).to(init_dtype).float(), persistent=True)
        self.L_init = nn.Buffer(trunc_normal_init_(torch.empty(hidden), std=1.0).to(init_dtype).float(), persistent=True)
        with torch.no_grad():  # start the halting head at "continue" with little signal (sigmoid(-5))
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)

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

    def empty_carry(self, batch_size: int) -> TRMInnerCarry:
        shape = (batch_size, self.seq_len + self.prefix_len, self.arch.hidden_size)
        dtype, device = self.compute_dtype(), self.H_init.device
        return TRMInnerCarry(z_H=torch.zeros(shape, dtype=dtype, device=device),
                             z_L=torch.zeros(shape, dtype=dtype, device=device))

    def reset_carry(self, reset: torch.Tensor, carry: TRMInnerCarry) -> TRMInnerCarry:
        dtype = carry.z_H.dtype
        return TRMInnerCarry(z_H=where_rows(reset, self.H_init.to(dtype).expand_as(carry.z_H), carry.z_H),
                             z_L=where_rows(reset, self.L_init.to(dtype).expand_as(carry.z_L), carry.z_L))

    def heads(self, z_H: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.lm_head(z_H)[:, self.prefix_len:]
        q_logits = self.q_head(z_H[:, 0]).to(torch.float32)
        return logits, q_logits[..., 0], q_logits[..., 1]

    def forward(self, carry: TRMInnerCarry, batch: Dict[str, torch.Tensor],
                input_embeddings: Optional[torch.Tensor] = None):
        """-> (new carry (detached), logits [B, seq, vocab], (q_halt_logits, q_continue_logits))."""
        x = self.input_embeddings(batch) if input_embeddings is None else input_embeddings
        cos_sin = self.rotary_emb() if hasattr(self, "rotary_emb") else None
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
        return TRMInnerCarry(z_H=z_H.detach(), z_L=z_L.detach()), logits, (q_halt, q_continue)


class ACTModel(nn.Module):
    """Adaptive computation time around an inner model (TRM, HRM, ...).

    The inner model provides ``empty_carry(batch_size)``, ``reset_carry(mask, carry)``,
    ``input_embeddings(batch)`` and ``forward(carry, batch, input_embeddings) ->
    (new_carry, logits, (q_halt_logits, q_continue_logits))``; subclasses set ``self.inner``.

    Halting. Training: a row halts at halt_max_steps, or when q_halt > 0 (no_ACT_continue) /
    q_halt > q_continue (Q-learning, target from a second no-grad step), but with probability
    halt_exploration_prob not before a random step in [2, halt_max_steps]. Evaluation: every row runs
    halt_max_steps, or with ``arch.adaptive_halting`` rows stop at their halting decision, keep their
    state and outputs unchanged, and the batch finishes once all rows halted.
    """

    inner: nn.Module

    def __init__(self, arch: ArchConfig) -> None:
        super().__init__()
        self.arch = arch

    @property
    def puzzle_emb(self) -> Optional[CastedSparseEmbedding]:
        return getattr(self.inner, "puzzle_emb", None)

    def initial_carry(self, batch: Dict[str, torch.Tensor]) -> ACTCarry:
        batch_size = batch["inputs"].shape[0]
        device = batch["inputs"].device
        return ACTCarry(inner_carry=self.inner.empty_carry(batch_size),
                        steps=torch.zeros(batch_size, dtype=torch.int32, device=device),
                        halted=torch.ones(batch_size, dtype=torch.bool, device=device),  # all take new data
                        current_data={k: torch.zeros_like(v) for k, v in batch.items()})

    def _halt_signal(self, q_halt: torch.Tensor, q_continue: torch.Tensor) -> torch.Tensor:
        return q_halt > 0 if self.arch.no_ACT_continue else q_halt > q_continue

    def forward(self, carry: ACTCarry, batch: Dict[str, torch.Tensor]) -> Tuple[ACTCarry, Dict[str, torch.Tensor]]:
        arch = self.arch
        adaptive_eval = arch.adaptive_halting and not self.training
        frozen = None
        if adaptive_eval and not bool(carry.halted.all()):
            frozen, reset = carry.halted, torch.zeros_like(carry.halted)  # same batch continues
        else:
            reset = carry.halted
        inner_carry = self.inner.reset_carry(reset, carry.inner_carry)
        steps = torch.where(reset, 0, carry.steps)
        data = {k: where_rows(reset, batch[k], v) for k, v in carry.current_data.items()}

        x = self.inner.input_embeddings(data)
        new_inner, logits, (q_halt, q_continue) = self.inner(inner_carry, data, input_embeddings=x)
        outputs = {"logits": logits, "q_halt_logits": q_halt, "q_continue_logits": q_continue}

        with torch.no_grad():
            new_steps = steps + 1
            if frozen is not None:
                new_steps = torch.where(frozen, steps, new_steps)
                new_inner = where_rows_carry(frozen, inner_carry, new_inner)
                outputs = {k: where_rows(frozen, carry.outputs[k], v) for k, v in outputs.items()}
            is_last_step = new_steps >= arch.halt_max_steps
            halted = is_last_step
            if self.training and arch.halt_max_steps > 1:
                halted = halted | self._halt_signal(q_halt, q_continue)
                explore = torch.rand_like(q_halt) < arch.halt_exploration_prob
                min_steps = explore * torch.randint_like(new_steps, low=2, high=arch.halt_max_steps + 1)
                halted = halted & (new_steps >= min_steps)
                if not arch.no_ACT_continue:
                    # Bootstrapped Q target from the next step's prediction (no replay buffer: the
                    # many rows of a batch act as parallel environments).
                    _, _, (next_halt, next_continue) = self.inner(new_inner, data, input_embeddings=x)
                    outputs["target_q_continue"] = torch.sigmoid(
                        torch.where(is_last_step, next_halt, torch.maximum(next_halt, next_continue)))
            elif adaptive_eval:
                halted = halted | self._halt_signal(q_halt, q_continue)
                if frozen is not None:
                    halted = halted | frozen

        new_carry = ACTCarry(new_inner, new_steps, halted, data,
                             outputs={k: v.detach() for k, v in outputs.items()} if adaptive_eval else None)
        return new_carry, outputs


class TRM(ACTModel):
    """TRM with ACT; build through models.registry.build_model."""

    def __init__(self, arch: ArchConfig, *, batch_size: int, seq_len: int, vocab_size: int,
                 num_puzzle_identifiers: int, causal: bool = False) -> None:
        super().__init__(arch)
        self.inner = TRMInner(arch, batch_size=batch_size, seq_len=seq_len, vocab_size=vocab_size,
                              num_puzzle_identifiers=num_puzzle_identifiers, causal=causal)
