"""Building blocks shared by TRM, HRM and the transformer baseline.

Parameter names match the reference implementations so their state dicts load unchanged:
``CastedLinear.weight`` / ``.bias``, ``CastedEmbedding.embedding_weight``, ``Attention.qkv_proj`` /
``.o_proj``, ``SwiGLU.gate_up_proj`` / ``.down_proj``, ``ReasoningBlock.self_attn`` / ``.mlp_t`` /
``.mlp``, ``ReasoningModule.layers``.

Weights are stored in float32 and cast to the activation dtype at use ("casted" layers), so
the optimiser always sees fp32 master weights while the forward runs in bfloat16 on GPUs.

Public API:
    trunc_normal_init_(tensor, std)      JAX-style truncated normal whose std really is ``std``
    resolve_forward_dtype(name, device)  torch dtype to compute in on a device
    CastedLinear, CastedEmbedding, RotaryEmbedding, CosSin, apply_rotary_pos_emb,
    rms_norm, SwiGLU, Attention, ReasoningBlock, ReasoningModule, swiglu_inner_size
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

CosSin = Tuple[torch.Tensor, torch.Tensor]

try:  # FlashAttention is optional: used only on a supported CUDA device, SDPA otherwise.
    from flash_attn_interface import flash_attn_func as _flash_attn_func  # type: ignore[import-not-found]
except ImportError:
    try:
        from flash_attn import flash_attn_func as _flash_attn_func  # type: ignore[import-not-found]
    except ImportError:
        _flash_attn_func = None


# ----------------------------------------------------------------------------- init and dtypes

def trunc_normal_init_(tensor: torch.Tensor, std: float = 1.0, lower: float = -2.0, upper: float = 2.0) -> torch.Tensor:
    """Fill ``tensor`` with a normal truncated to [lower, upper] standard deviations, rescaled so the
    result has standard deviation ``std`` (torch's trunc_normal_ does not correct for the truncation).
    Sampled by inverting the CDF of uniform draws, as JAX/flax do; std == 0 gives zeros."""
    with torch.no_grad():
        if std == 0:
            return tensor.zero_()
        cdf_lo = math.erf(lower / math.sqrt(2))  # 2*Phi(lower) - 1
        cdf_hi = math.erf(upper / math.sqrt(2))
        mass = (cdf_hi - cdf_lo) / 2  # Phi(upper) - Phi(lower)
        pdf = lambda v: math.exp(-0.5 * v * v) / math.sqrt(2 * math.pi)  # noqa: E731
        # Variance of a standard normal truncated to [lower, upper].
        var = 1 + (lower * pdf(lower) - upper * pdf(upper)) / mass - ((pdf(lower) - pdf(upper)) / mass) ** 2
        scale = std / math.sqrt(var)
        tensor.uniform_(cdf_lo, cdf_hi).erfinv_().mul_(math.sqrt(2) * scale)
        return tensor.clamp_(lower * scale, upper * scale)


_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


def resolve_forward_dtype(name: str, device: torch.device | str) -> torch.dtype:
    """The dtype to compute in for config ``forward_dtype=name`` on ``device``.

    Low precision is only used where it is fast: bfloat16 on CUDA devices that support it,
    float16 on CUDA. Everywhere else (CPU, MPS, pre-Ampere GPUs asked for bf16) float32.
    """
    if name not in _DTYPES:
        raise ValueError(f"forward_dtype={name!r}; valid: {', '.join(_DTYPES)}")
    device = torch.device(device)
    wanted = _DTYPES[name]
    if wanted == torch.float32 or device.type != "cuda":
        return torch.float32
    if wanted == torch.bfloat16 and not _cuda_has_native_bf16():
        return torch.float32
    return wanted


@torch.compiler.assume_constant_result
def _cuda_has_native_bf16() -> bool:
    # A constant to torch.compile: traced inside forward, torch.cuda.is_bf16_supported() is a graph
    # break on every call. No emulation: pre-Ampere GPUs "support" bf16 only slowly.
    return torch.cuda.is_bf16_supported(including_emulation=False)


# ----------------------------------------------------------------------------- casted layers

class CastedLinear(nn.Module):
    """Linear layer with fp32 weights used in the input's dtype; truncated LeCun-normal init
    (std 1/sqrt(in_features)), zero bias."""

    def __init__(self, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(trunc_normal_init_(torch.empty(out_features, in_features), std=in_features ** -0.5))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.weight.to(x.dtype), bias)


class CastedEmbedding(nn.Module):
    """Embedding table with fp32 weights returned in ``dtype`` (default ``cast_to``)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, init_std: float,
                 cast_to: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.cast_to = cast_to
        self.embedding_weight = nn.Parameter(trunc_normal_init_(torch.empty(num_embeddings, embedding_dim), std=init_std))

    def forward(self, ids: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        return F.embedding(ids, self.embedding_weight.to(dtype or self.cast_to))


# ----------------------------------------------------------------------------- positions

class RotaryEmbedding(nn.Module):
    """RoPE tables (fp32, not saved in the state dict) for the rotate-half convention:
    position p, channel i (and i + dim/2) rotate by angle p * base^(-2i/dim)."""

    def __init__(self, dim: int, max_position_embeddings: int, base: float = 10000.0) -> None:
        super().__init__()
        inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)
        angles = torch.outer(torch.arange(max_position_embeddings, dtype=torch.float32), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)  # [positions, dim]
        self.register_buffer("cos_cached", angles.cos(), persistent=False)
        self.register_buffer("sin_cached", angles.sin(), persistent=False)

    def forward(self) -> CosSin:
        return self.cos_cached, self.sin_cached


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary_pos_emb(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Rotate q, k ([batch, seq, heads, head_dim]) in fp32 and return them in their own dtype."""
    dtype = q.dtype
    cos, sin = cos[:, None, :], sin[:, None, :]  # broadcast over heads
    q32, k32 = q.to(cos.dtype), k.to(cos.dtype)
    q_rot = q32 * cos + rotate_half(q32) * sin
    k_rot = k32 * cos + rotate_half(k32) * sin
    return q_rot.to(dtype), k_rot.to(dtype)


# ----------------------------------------------------------------------------- norm, MLP, attention

def rms_norm(hidden_states: torch.Tensor, variance_epsilon: float) -> torch.Tensor:
    """Weightless RMS norm over the last dim, computed in fp32, returned in the input dtype."""
    x = hidden_states.to(torch.float32)
    x = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + variance_epsilon)
    return x.to(hidden_states.dtype)


def swiglu_inner_size(hidden_size: int, expansion: float) -> int:
    """round(expansion * hidden * 2/3) rounded up to a multiple of 256 (1536 for 512 x 4)."""
    inner = round(expansion * hidden_size * 2 / 3)
    return -(inner // -256) * 256


class SwiGLU(nn.Module):
    """down_proj(silu(gate) * up) with gate and up from one fused projection, no biases."""

    def __init__(self, hidden_size: int, expansion: float) -> None:
        super().__init__()
        inner = swiglu_inner_size(hidden_size, expansion)
        self.gate_up_proj = CastedLinear(hidden_size, 2 * inner, bias=False)
        self.down_proj = CastedLinear(inner, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


def _flash_attention_usable(q: torch.Tensor) -> bool:
    if _flash_attn_func is None or not q.is_cuda or q.dtype not in (torch.float16, torch.bfloat16):
        return False
    # get_device_properties is constant-folded by torch.compile; get_device_capability is a graph break.
    return torch.cuda.get_device_properties(q.device).major >= 8


class Attention(nn.Module):
    """Multi-head self-attention without biases (fused qkv_proj, o_proj), optional RoPE.

    Runs torch's scaled_dot_product_attention; FlashAttention only when it is installed and the
    tensors are bf16/fp16 on an Ampere-or-newer GPU. ``num_key_value_heads`` < ``num_heads`` gives GQA.
    """

    def __init__(self, hidden_size: int, head_dim: int, num_heads: int,
                 num_key_value_heads: Optional[int] = None, causal: bool = False) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.num_heads = num_heads
        self.num_key_value_heads = num_key_value_heads or num_heads
        self.causal = causal
        self.output_size = head_dim * num_heads
        self.qkv_proj = CastedLinear(hidden_size, (num_heads + 2 * self.num_key_value_heads) * head_dim, bias=False)
        self.o_proj = CastedLinear(self.output_size, hidden_size, bias=False)

    def forward(self, cos_sin: Optional[CosSin], hidden_states: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = hidden_states.shape
        qkv = self.qkv_proj(hidden_states).view(batch, seq, self.num_heads + 2 * self.num_key_value_heads, self.head_dim)
        q, k, v = qkv.split([self.num_heads, self.num_key_value_heads, self.num_key_value_heads], dim=2)
        if cos_sin is not None:
            cos, sin = cos_sin
            q, k = apply_rotary_pos_emb(q, k, cos[:seq], sin[:seq])

        if _flash_attention_usable(q):
            out = _flash_attn_func(q, k, v, causal=self.causal)  # [batch, seq, heads, head_dim]
            if isinstance(out, tuple):  # FlashAttention 3 also returns the softmax log-sum-exp
                out = out[0]
        else:
            if self.num_key_value_heads != self.num_heads:  # GQA: share each kv head over a group
                group = self.num_heads // self.num_key_value_heads
                k, v = k.repeat_interleave(group, dim=2), v.repeat_interleave(group, dim=2)
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # SDPA wants [batch, heads, seq, head_dim]
            out = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
            out = out.transpose(1, 2)
        return self.o_proj(out.reshape(batch, seq, self.output_size))


# ----------------------------------------------------------------------------- blocks

class ReasoningBlock(nn.Module):
    """Post-norm block: x = rms(x + mix(x)); x = rms(x + mlp(x)).

    ``mix`` is self-attention (``self_attn``) or, when ``mlp_t_seq_len`` is given (TRM's mlp_t
    variant), a SwiGLU applied across the sequence dimension (``mlp_t``).
    """

    def __init__(self, hidden_size: int, num_heads: int, expansion: float, rms_norm_eps: float,
                 causal: bool = False, mlp_t_seq_len: Optional[int] = None) -> None:
        super().__init__()
        self.norm_eps = rms_norm_eps
        if mlp_t_seq_len is not None:
            self.mlp_t = SwiGLU(mlp_t_seq_len, expansion)
        else:
            self.self_attn = Attention(hidden_size, hidden_size // num_heads, num_heads, num_heads, causal=causal)
        self.mlp = SwiGLU(hidden_size, expansion)

    def forward(self, cos_sin: Optional[CosSin], hidden_states: torch.Tensor) -> torch.Tensor:
        x = hidden_states
        if hasattr(self, "mlp_t"):
            x_t = x.transpose(1, 2)  # [batch, hidden, seq]: mix positions
            x = rms_norm(x_t + self.mlp_t(x_t), self.norm_eps).transpose(1, 2)
        else:
            x = rms_norm(x + self.self_attn(cos_sin=cos_sin, hidden_states=x), self.norm_eps)
        return rms_norm(x + self.mlp(x), self.norm_eps)


class ReasoningModule(nn.Module):
    """A stack of blocks that first adds its input injection: f(z, inj) = blocks(z + inj)."""

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, hidden_states: torch.Tensor, input_injection: torch.Tensor,
                cos_sin: Optional[CosSin] = None) -> torch.Tensor:
        x = hidden_states + input_injection
        for layer in self.layers:
            x = layer(cos_sin=cos_sin, hidden_states=x)
        return x
