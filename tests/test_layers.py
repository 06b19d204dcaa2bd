"""Shared layers and per-token losses against independent formulas (float64, complex numbers, loops)."""

import math

import pytest
import torch

from models.layers import (Attention, CastedEmbedding, CastedLinear, ReasoningBlock, RotaryEmbedding, SwiGLU,
                           apply_rotary_pos_emb, resolve_forward_dtype, rms_norm, swiglu_inner_size,
                           trunc_normal_init_)
from models.losses import log_stablemax, softmax_cross_entropy, stablemax_cross_entropy


def test_trunc_normal_has_requested_std_and_bounds():
    torch.manual_seed(0)
    t = trunc_normal_init_(torch.empty(200_000), std=0.3)
    assert abs(t.std().item() - 0.3) < 0.003  # torch.nn.init.trunc_normal_ would give ~0.264
    # Truncation at 2 standard deviations of the underlying (rescaled) normal.
    scale = 0.3 / 0.8796256610342398  # std of a standard normal truncated to [-2, 2]
    assert t.abs().max().item() <= 2 * scale + 1e-6
    assert torch.count_nonzero(trunc_normal_init_(torch.ones(5), std=0)) == 0


def test_resolve_forward_dtype_uses_float32_on_cpu():
    assert resolve_forward_dtype("bfloat16", "cpu") == torch.float32
    assert resolve_forward_dtype("float32", "cpu") == torch.float32
    with pytest.raises(ValueError, match="bfloat16"):
        resolve_forward_dtype("int8", "cpu")


def test_casted_linear_and_embedding_keep_fp32_weights_and_compute_in_input_dtype():
    torch.manual_seed(0)
    lin = CastedLinear(8, 3, bias=True)
    assert lin.weight.dtype == torch.float32 and set(dict(lin.named_parameters())) == {"weight", "bias"}
    assert abs(lin.weight.std().item() - 8 ** -0.5) < 0.2  # LeCun normal
    assert torch.count_nonzero(lin.bias) == 0
    x = torch.randn(4, 8).to(torch.bfloat16)
    y = lin(x)
    assert y.dtype == torch.bfloat16
    expected = x.float() @ lin.weight.to(torch.bfloat16).float().T
    torch.testing.assert_close(y.float(), expected, atol=0.05, rtol=0.02)

    emb = CastedEmbedding(5, 4, init_std=0.5, cast_to=torch.bfloat16)
    assert set(dict(emb.named_parameters())) == {"embedding_weight"}
    ids = torch.tensor([0, 4, 4])
    assert emb(ids).dtype == torch.bfloat16
    torch.testing.assert_close(emb(ids, torch.float32), emb.embedding_weight[ids])


def test_rms_norm_matches_float64_formula():
    x = torch.randn(3, 7, 16) * 5
    expected = x.double() / torch.sqrt(x.double().pow(2).mean(-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(rms_norm(x, 1e-5).double(), expected, atol=1e-5, rtol=1e-5)
    assert rms_norm(x.to(torch.bfloat16), 1e-5).dtype == torch.bfloat16


def test_rope_is_a_complex_rotation_of_channel_pairs():
    torch.manual_seed(0)
    dim, seq, base = 8, 6, 10000.0
    rope = RotaryEmbedding(dim, seq, base)
    assert rope.cos_cached.dtype == torch.float32 and "cos_cached" not in rope.state_dict()
    q, k = torch.randn(2, seq, 3, dim), torch.randn(2, seq, 3, dim)
    q_rot, _ = apply_rotary_pos_emb(q, k, *rope())
    # Independent: channel i pairs with i + dim/2 as one complex number rotated by pos * base^(-2i/dim).
    half = dim // 2
    z = torch.complex(q[..., :half].double(), q[..., half:].double())
    angle = torch.arange(seq).double()[:, None] * base ** (-2 * torch.arange(half).double() / dim)
    z = z * torch.polar(torch.ones_like(angle), angle)[None, :, None, :]
    torch.testing.assert_close(q_rot.double(), torch.cat([z.real, z.imag], -1), atol=1e-5, rtol=1e-5)


def test_swiglu_inner_size_and_forward():
    assert swiglu_inner_size(512, 4) == 1536  # reference TRM / HRM width
    assert swiglu_inner_size(64, 4) == 256
    assert swiglu_inner_size(916, 4) == 2560
    torch.manual_seed(0)
    mlp = SwiGLU(16, 4)
    x = torch.randn(2, 5, 16)
    w_gate, w_up = mlp.gate_up_proj.weight.chunk(2, dim=0)
    gate, up = x @ w_gate.T, x @ w_up.T
    expected = (gate * torch.sigmoid(gate) * up) @ mlp.down_proj.weight.T
    torch.testing.assert_close(mlp(x), expected, atol=1e-5, rtol=1e-5)


def _slow_attention(x, attn, cos_sin, causal):
    """Attention written out with explicit per-head softmax in float64."""
    b, s, _ = x.shape
    h, d = attn.num_heads, attn.head_dim
    qkv = (x.double() @ attn.qkv_proj.weight.double().T).view(b, s, 3 * h, d)
    q, k, v = qkv[:, :, :h], qkv[:, :, h:2 * h], qkv[:, :, 2 * h:]
    if cos_sin is not None:
        cos, sin = (t.double()[:s, None, :] for t in cos_sin)
        rot = lambda t: torch.cat([-t[..., d // 2:], t[..., :d // 2]], -1)  # noqa: E731
        q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
    if causal:
        scores = scores.masked_fill(torch.ones(s, s, dtype=torch.bool).triu(1), float("-inf"))
    out = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(b, s, h * d)
    return out @ attn.o_proj.weight.double().T


@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_slow_reference(causal):
    torch.manual_seed(0)
    attn = Attention(hidden_size=32, head_dim=8, num_heads=4, causal=causal)
    assert set(dict(attn.named_parameters())) == {"qkv_proj.weight", "o_proj.weight"}
    x = torch.randn(2, 10, 32)
    cos_sin = RotaryEmbedding(8, 12)()
    torch.testing.assert_close(attn(cos_sin, x).double(), _slow_attention(x, attn, cos_sin, causal), atol=1e-4, rtol=1e-4)


def test_post_norm_block_and_mlp_t_variant():
    torch.manual_seed(0)
    block = ReasoningBlock(32, 4, 4, 1e-5)
    x = torch.randn(2, 10, 32) * 3
    y = block(RotaryEmbedding(8, 10)(), x)
    # Post-norm: every output vector has unit RMS.
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(2, 10), atol=1e-3, rtol=1e-3)
    mix = ReasoningBlock(32, 4, 4, 1e-5, mlp_t_seq_len=10)
    assert not hasattr(mix, "self_attn") and mix.mlp_t.gate_up_proj.weight.shape[1] == 10
    # Independent: the sequence mixer is SwiGLU over the transposed tensor, normed over positions.
    xt = x.transpose(1, 2)
    h = xt + mix.mlp_t(xt)
    h = (h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5)).transpose(1, 2)
    h = h + mix.mlp(h)
    expected = h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(mix(None, x), expected, atol=1e-5, rtol=1e-5)


def test_stablemax_cross_entropy_matches_float64_formula():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 6) * 4
    labels = torch.randint(0, 6, (3, 4))
    labels[0, 1] = -100
    s = torch.where(logits.double() >= 0, logits.double() + 1, 1 / (1 - logits.double()))
    expected = -torch.log(s.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) / s.sum(-1))
    expected[0, 1] = 0
    got = stablemax_cross_entropy(logits, labels)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(log_stablemax(torch.tensor([0.0, -1.0, 2.0])).exp().sum(), torch.tensor(1.0))
    # Gradients stay finite for large negative logits (the unused branch is clamped).
    big = torch.tensor([[-1e6, 3.0]], requires_grad=True)
    stablemax_cross_entropy(big, torch.tensor([1])).sum().backward()
    assert torch.isfinite(big.grad).all()


def test_softmax_cross_entropy_ignores_label():
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, -100, 4], [0, 2, 3]])
    expected = -torch.log_softmax(logits.double(), -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    expected[0, 1] = 0
    torch.testing.assert_close(softmax_cross_entropy(logits, labels).double(), expected, atol=1e-6, rtol=1e-6)
