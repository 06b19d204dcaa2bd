"""HRM: reference parameter names and count, the H/L recursion schedule against a hand-written loop,
the one-step gradient against a hand-built computation, ACT halting / exploration / Q target against
direct computations, adaptive evaluation, and loading a reference-format state dict."""

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from models.compat import load_reference_state_dict
from models.config import ArchConfig
from models.hrm import HRM
from models.layers import swiglu_inner_size
from models.losses import ACTLossHead

ARCH_DIR = Path(__file__).resolve().parents[1] / "config" / "arch"
SEQ_LEN, VOCAB, NUM_IDS = 8, 12, 5


def load_arch(name: str, **overrides) -> ArchConfig:
    """An ArchConfig from config/arch/<name>.yaml (checked against the schema), with overrides."""
    merged = OmegaConf.merge(OmegaConf.structured(ArchConfig), OmegaConf.load(ARCH_DIR / f"{name}.yaml"), overrides)
    return OmegaConf.to_object(merged)


def build(seed: int = 0, batch_size: int = 3, **overrides) -> HRM:
    torch.manual_seed(seed)
    return HRM(load_arch("hrm_tiny", **overrides), batch_size=batch_size, seq_len=SEQ_LEN, vocab_size=VOCAB,
               num_puzzle_identifiers=NUM_IDS)


def make_batch(batch_size: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(2, VOCAB, (batch_size, SEQ_LEN), generator=g, dtype=torch.int32)
    labels[:, -2:] = -100  # some ignored positions
    return {"inputs": torch.randint(0, VOCAB, (batch_size, SEQ_LEN), generator=g, dtype=torch.int32),
            "labels": labels,
            "puzzle_identifiers": torch.randint(1, NUM_IDS, (batch_size,), generator=g, dtype=torch.int32)}


def randomise(model: HRM, seed: int = 1) -> None:
    """Non-zero puzzle embeddings and q_head (both start at constants) so every path matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.inner.puzzle_emb.weights.copy_(torch.randn(model.inner.puzzle_emb.weights.shape, generator=g))
        model.inner.q_head.weight.copy_(0.3 * torch.randn(model.inner.q_head.weight.shape, generator=g))


def reference_names_and_shapes(h, vocab, n_ids, ndim, H_layers, L_layers, expansion):
    """Persistent state of sapientinc/HRM HierarchicalReasoningModel_ACTV1, written out by hand."""
    inter = -(round(expansion * h * 2 / 3) // -256) * 256
    shapes = {"inner.embed_tokens.embedding_weight": (vocab, h), "inner.lm_head.weight": (vocab, h),
              "inner.q_head.weight": (2, h), "inner.q_head.bias": (2,), "inner.puzzle_emb.weights": (n_ids, ndim),
              "inner.H_init": (h,), "inner.L_init": (h,)}
    for level, count in (("H_level", H_layers), ("L_level", L_layers)):
        for i in range(count):
            p = f"inner.{level}.layers.{i}."
            shapes.update({p + "self_attn.qkv_proj.weight": (3 * h, h), p + "self_attn.o_proj.weight": (h, h),
                           p + "mlp.gate_up_proj.weight": (2 * inter, h), p + "mlp.down_proj.weight": (h, inter)})
    return shapes


# ----------------------------------------------------------------------------- structure

def test_default_config_has_reference_names_and_27_3M_parameters():
    arch = load_arch("hrm")
    assert (arch.H_cycles, arch.L_cycles, arch.H_layers, arch.L_layers) == (2, 2, 4, 4)
    assert (arch.hidden_size, arch.num_heads, arch.puzzle_emb_ndim, arch.halt_max_steps) == (512, 8, 512, 16)
    assert arch.forward_dtype == "bfloat16" and arch.loss.loss_type == "stablemax_cross_entropy"
    model = HRM(arch, batch_size=2, seq_len=900, vocab_size=12, num_puzzle_identifiers=7)
    assert model.inner.prefix_len == 1  # ceil(512 / 512) puzzle positions, as the reference
    assert swiglu_inner_size(512, 4) == 1536
    expected = reference_names_and_shapes(512, 12, 7, 512, 4, 4, 4)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    n_params = sum(p.numel() for p in model.parameters())  # the puzzle table is a buffer
    per_block = 512 * 1536 + 512 * 512 + 512 * 2 * 1536 + 1536 * 512
    assert n_params == 8 * per_block + 2 * 12 * 512 + 2 * 512 + 2 == 27_276_290
    print(f"HRM dense parameters: {n_params:,} (~{n_params / 1e6:.1f}M)")
    assert abs(n_params / 1e6 - 27.3) < 0.05


def test_shapes_dtypes_and_initial_heads():
    model = build()
    batch = make_batch()
    carry = model.initial_carry(batch)
    carry, out = model(carry, batch)
    assert out["logits"].shape == (3, SEQ_LEN, VOCAB) and out["logits"].dtype == torch.float32
    assert out["q_halt_logits"].shape == (3,) and out["q_halt_logits"].dtype == torch.float32
    assert carry.inner_carry.z_H.shape == (3, SEQ_LEN + 1, 64) and carry.inner_carry.z_L.shape == (3, SEQ_LEN + 1, 64)
    assert not carry.inner_carry.z_H.requires_grad and not carry.inner_carry.z_L.requires_grad
    # q_head: zero weights, bias -5 -> both logits exactly -5 at initialisation.
    assert torch.equal(out["q_halt_logits"], torch.full((3,), -5.0))
    assert torch.equal(out["q_continue_logits"], torch.full((3,), -5.0))
    assert carry.steps.tolist() == [1, 1, 1] and torch.equal(carry.current_data["inputs"], batch["inputs"])
    # H_init / L_init: fixed buffers, std ~1 (trunc normal), never trained.
    assert "inner.H_init" in dict(model.named_buffers()) and "inner.H_init" not in dict(model.named_parameters())


def test_rejects_missing_modules():
    with pytest.raises(ValueError, match="H_layers"):
        build(H_layers=0)


def test_same_seed_same_model_and_outputs():
    a, b = build(seed=3), build(seed=3)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    batch = make_batch()
    a.eval(), b.eval()
    out_a = a(a.initial_carry(batch), batch)[1]["logits"]
    out_b = b(b.initial_carry(batch), batch)[1]["logits"]
    assert torch.equal(out_a, out_b)
    assert not torch.equal(build(seed=4).inner.H_init, a.inner.H_init)


# ----------------------------------------------------------------------------- recursion and gradient

def run_blocks(level, z, cos_sin):
    for layer in level.layers:
        z = layer(cos_sin=cos_sin, hidden_states=z)
    return z


def hand_step(inner, z_H, z_L, x, one_step_grad: bool):
    """The HRM schedule written out: z_L <- L(z_L + z_H + x) L_cycles times, then z_H <- H(z_H + z_L),
    H_cycles times; with one_step_grad all updates but the final L and H are cut from the graph."""
    cos_sin = inner.rotary_emb()
    H_cycles, L_cycles = inner.arch.H_cycles, inner.arch.L_cycles
    total_L = H_cycles * L_cycles
    done_L = 0
    for h in range(H_cycles):
        for _ in range(L_cycles):
            done_L += 1
            z_L = run_blocks(inner.L_level, z_L + (z_H + x), cos_sin)  # injection z_H + x
            if one_step_grad and done_L < total_L:
                z_L = z_L.detach()
        z_H = run_blocks(inner.H_level, z_H + z_L, cos_sin)
        if one_step_grad and h < H_cycles - 1:
            z_H = z_H.detach()
    return z_H, z_L


@pytest.mark.parametrize("cycles", [(2, 2), (3, 1), (1, 3)])
def test_inner_forward_matches_hand_written_schedule(cycles):
    model = build(H_cycles=cycles[0], L_cycles=cycles[1])
    randomise(model)
    model.eval()
    batch = make_batch()
    inner = model.inner
    x = inner.input_embeddings(batch)
    start = inner.reset_carry(torch.ones(3, dtype=torch.bool), inner.empty_carry(3))
    with torch.no_grad():
        carry, logits, (q_halt, q_cont) = inner(start, batch)
        z_H, z_L = hand_step(inner, start.z_H, start.z_L, x, one_step_grad=False)
    torch.testing.assert_close(carry.z_H, z_H, rtol=0, atol=1e-6)
    torch.testing.assert_close(carry.z_L, z_L, rtol=0, atol=1e-6)
    torch.testing.assert_close(logits, z_H[:, 1:] @ inner.lm_head.weight.T, rtol=1e-5, atol=1e-5)
    q = z_H[:, 0] @ inner.q_head.weight.T + inner.q_head.bias
    torch.testing.assert_close(torch.stack([q_halt, q_cont], -1), q, rtol=1e-5, atol=1e-5)
    # The reset carry starts from the H_init / L_init vectors at every position.
    assert torch.equal(start.z_H, inner.H_init.expand_as(start.z_H))


def test_only_the_last_L_and_H_steps_are_differentiated():
    model = build(H_cycles=2, L_cycles=3)
    randomise(model)
    model.train()
    batch = make_batch()
    calls = {"L_level": [], "H_level": []}
    for name in calls:
        getattr(model.inner, name).register_forward_hook(
            lambda m, args, out, name=name: calls[name].append(out.requires_grad))
    inner = model.inner
    start = inner.reset_carry(torch.ones(3, dtype=torch.bool), inner.empty_carry(3))
    _, logits, (q_halt, _) = inner(start, batch)
    assert calls == {"L_level": [False] * 5 + [True], "H_level": [False, True]}
    loss = logits.square().mean() + q_halt.sum()
    params = [p for p in model.parameters()]
    grads = torch.autograd.grad(loss, params + [inner.puzzle_emb.local_weights], allow_unused=True)

    # Hand-built one-step computation: same values, gradient only through the final L and H updates.
    x = inner.input_embeddings(batch)
    z_H, _ = hand_step(inner, start.z_H, start.z_L, x, one_step_grad=True)
    q = (z_H[:, 0] @ inner.q_head.weight.T + inner.q_head.bias)[:, 0]
    hand_loss = (z_H[:, 1:] @ inner.lm_head.weight.T).square().mean() + q.sum()
    hand = torch.autograd.grad(hand_loss, params + [inner.puzzle_emb.local_weights], allow_unused=True,
                               retain_graph=True)
    for (name, _), g, want in zip(list(model.named_parameters()) + [("local_weights", None)], grads, hand):
        assert g is not None and want is not None, name
        torch.testing.assert_close(g, want, rtol=1e-4, atol=1e-6, msg=name)

    # Back-propagating through the whole unrolled recursion gives different gradients.
    z_H_full, _ = hand_step(inner, start.z_H, start.z_L, x, one_step_grad=False)
    full_loss = (z_H_full[:, 1:] @ inner.lm_head.weight.T).square().mean()
    w = inner.L_level.layers[0].mlp.down_proj.weight
    g_full = torch.autograd.grad(full_loss, w)[0]
    g_one = torch.autograd.grad((z_H[:, 1:] @ inner.lm_head.weight.T).square().mean(), w)[0]
    assert (g_full - g_one).abs().max() > 1e-4 * g_one.abs().max()


# ----------------------------------------------------------------------------- ACT

def force_q(model: HRM, halt: float, cont: float) -> None:
    with torch.no_grad():
        model.inner.q_head.weight.zero_()
        model.inner.q_head.bias.copy_(torch.tensor([halt, cont]))


def test_eval_always_runs_halt_max_steps_even_when_q_says_halt():
    model = build()
    force_q(model, halt=5.0, cont=-5.0)  # the halting head wants to stop at once
    model.eval()
    head = ACTLossHead(model)
    batch = make_batch()
    carry = head.initial_carry(batch)
    with torch.no_grad():
        for step in range(1, 5):
            carry, _, metrics, _, finished = head(carry, batch)
            assert carry.steps.tolist() == [step] * 3
            assert bool(finished) == (step == 4)
    assert metrics["count"].item() == 3 and metrics["steps"].item() == 3 * 4


def test_training_halts_on_q_and_explores_between_2_and_max_steps():
    torch.manual_seed(0)
    # Q says halt at once: without exploration every row stops after one step.
    model = build(batch_size=64, halt_exploration_prob=0.0)
    force_q(model, halt=5.0, cont=-5.0)
    batch = make_batch(64)
    carry, _ = model(model.initial_carry(batch), batch)
    assert bool(carry.halted.all()) and carry.steps.tolist() == [1] * 64

    # With exploration probability 1 every row draws, at every step, a minimum step uniformly in [2, 4].
    model = build(batch_size=64, halt_exploration_prob=1.0)
    force_q(model, halt=5.0, cont=-5.0)
    carry = model.initial_carry(batch)
    halted_at = torch.zeros(64, dtype=torch.int64)
    for step in range(1, 5):
        carry, _ = model(carry, batch)
        newly = carry.halted & (halted_at == 0)
        halted_at[newly] = step
    # A fresh minimum is drawn at every step, so a row halts at step 2 with p 1/3, at 3 with p 4/9,
    # else at 4: all three occur among 64 rows (missing one has probability < 1e-7).
    assert set(halted_at.tolist()) == {2, 3, 4}

    # Q says continue: rows run to halt_max_steps, keep their example meanwhile, then take new data.
    model = build(halt_exploration_prob=0.0)
    force_q(model, halt=-5.0, cont=5.0)
    first, second = make_batch(seed=0), make_batch(seed=1)
    carry = model.initial_carry(first)
    for step in range(1, 5):
        carry, _ = model(carry, first if step == 1 else second)
        assert torch.equal(carry.current_data["inputs"], first["inputs"]) and carry.steps.tolist() == [step] * 3
        assert bool(carry.halted.all()) == (step == 4)
    carry, _ = model(carry, second)
    assert torch.equal(carry.current_data["inputs"], second["inputs"]) and carry.steps.tolist() == [1] * 3


def test_q_continue_target_is_the_bootstrapped_next_step_value():
    model = build(halt_max_steps=2, halt_exploration_prob=0.0)
    randomise(model)
    force_q(model, halt=-3.0, cont=3.0)  # no early halting: step 1 is not last, step 2 is
    with torch.no_grad():
        model.inner.q_head.weight.copy_(0.05 * torch.randn(2, 64, generator=torch.Generator().manual_seed(5)))
    model.train()
    batch = make_batch()
    carry = model.initial_carry(batch)
    for step in (1, 2):
        before = carry
        carry, out = model(carry, batch)
        with torch.no_grad():  # direct computation: one step from the (reset) carry, then one more
            inner = model.inner
            start = inner.reset_carry(before.halted, before.inner_carry)
            data = {k: torch.where(before.halted.view(-1, 1) if v.ndim == 2 else before.halted, batch[k], v)
                    for k, v in before.current_data.items()}
            after, _, _ = inner(start, data)
            _, _, (next_halt, next_cont) = inner(after, data)
        target = torch.sigmoid(next_halt) if step == 2 else torch.sigmoid(torch.maximum(next_halt, next_cont))
        assert not bool(before.halted.any()) or step == 1
        torch.testing.assert_close(out["target_q_continue"], target, rtol=1e-5, atol=1e-6)
        assert not out["target_q_continue"].requires_grad
    # The loss head turns it into the BCE of q_continue against that target.
    head = ACTLossHead(model)
    carry, loss, metrics, _, _ = head(head.initial_carry(batch), batch)
    assert metrics["q_continue_loss"].item() > 0 and torch.isfinite(loss)


def test_adaptive_evaluation_freezes_halted_rows():
    model = build(batch_size=4, halt_max_steps=4, adaptive_halting=True)
    randomise(model)
    model.eval()
    halt_at = torch.tensor([1, 2, 3, 9])  # the last row never asks to halt -> stops at halt_max_steps
    calls = {"n": 0}

    def scripted_q(module, args, out):  # q_halt > q_continue exactly from step halt_at[row] on
        calls["n"] += 1
        return torch.stack([torch.where(calls["n"] >= halt_at, 10.0, -10.0), torch.zeros(4)], -1).to(out.dtype)

    model.inner.q_head.register_forward_hook(scripted_q)
    batch = make_batch(4)
    carry = model.initial_carry(batch)
    history = []
    with torch.no_grad():
        for step in range(1, 5):
            carry, out = model(carry, batch)
            history.append((carry.steps.clone(), out["logits"].clone(), carry.inner_carry.z_H.clone(), carry.halted.clone()))
    assert history[-1][0].tolist() == [1, 2, 3, 4]
    assert [h[3].tolist() for h in history] == [[True, False, False, False], [True, True, False, False],
                                                [True, True, True, False], [True] * 4]
    for row, stop in enumerate([1, 2, 3, 4]):
        for later in range(stop, 4):  # after halting: steps, outputs and state stay as they were
            assert history[later][0][row] == stop
            assert torch.equal(history[later][1][row], history[stop - 1][1][row])
            assert torch.equal(history[later][2][row], history[stop - 1][2][row])
    # Until a row halts it evolves exactly as in a plain (reference) evaluation.
    plain = build(batch_size=4, halt_max_steps=4)
    plain.load_state_dict(model.state_dict())
    plain.eval()
    carry_p = plain.initial_carry(batch)
    with torch.no_grad():
        for step in range(1, 5):
            carry_p, out_p = plain(carry_p, batch)
            for row, stop in enumerate([1, 2, 3, 4]):
                if step == stop:
                    torch.testing.assert_close(history[step - 1][1][row], out_p["logits"][row], rtol=0, atol=0)
    # All rows halted: the next call takes a new batch for every row.
    carry, _ = model(carry, make_batch(4, seed=7))
    assert carry.steps.tolist() == [1] * 4


# ----------------------------------------------------------------------------- reference checkpoints

@pytest.mark.parametrize("forward_dtype", ["float32", "bfloat16"])
def test_reference_state_dict_loads_and_reproduces_outputs(forward_dtype):
    source = build(seed=0, forward_dtype=forward_dtype)
    randomise(source)
    a = source.inner.arch
    shapes = reference_names_and_shapes(64, VOCAB, NUM_IDS, 64, a.H_layers, a.L_layers, a.expansion)
    # What the reference trainer saves: the compiled ACTLossHead's state dict, H_init/L_init stored in
    # forward_dtype (on CPU we compute in fp32, but the init vectors are forward_dtype-representable).
    reference = {}
    for name, shape in shapes.items():
        value = source.state_dict()[name]
        assert tuple(value.shape) == shape, name
        if name.endswith(("H_init", "L_init")):
            value = value.to(getattr(torch, forward_dtype))
        reference["_orig_mod.model." + name] = value.clone()
    target = ACTLossHead(build(seed=1, forward_dtype=forward_dtype))
    assert not torch.equal(target.model.inner.H_init, source.inner.H_init)
    load_reference_state_dict(target, reference)
    batch = make_batch()
    source.eval(), target.eval()
    with torch.no_grad():
        c1, o1 = source(source.initial_carry(batch), batch)
        c2, o2 = target.model(target.model.initial_carry(batch), batch)
    for key in ("logits", "q_halt_logits", "q_continue_logits"):
        assert torch.equal(o1[key], o2[key]), key
    assert torch.equal(c1.inner_carry.z_L, c2.inner_carry.z_L)

    # A checkpoint of another architecture is refused with the offending key named.
    del reference["_orig_mod.model.inner.H_level.layers.0.mlp.down_proj.weight"]
    with pytest.raises(ValueError, match="H_level.layers.0.mlp.down_proj"):
        load_reference_state_dict(ACTLossHead(build(seed=2)), reference)


def test_loss_head_trains_all_dense_weights_and_the_puzzle_rows():
    model = build()
    randomise(model)
    head = ACTLossHead(model, "stablemax_cross_entropy")
    head.train()
    batch = make_batch()
    carry, loss, metrics, preds, _ = head(head.initial_carry(batch), batch, return_keys=("preds", "puzzle_identifiers"))
    loss.backward()
    assert math.isfinite(loss.item()) and preds["preds"].shape == (3, SEQ_LEN)
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []
    assert model.inner.puzzle_emb.local_weights.grad is not None
    assert torch.equal(preds["puzzle_identifiers"], batch["puzzle_identifiers"])
    assert metrics["q_continue_loss"].item() > 0  # HRM trains q_continue (no_ACT_continue: false)
