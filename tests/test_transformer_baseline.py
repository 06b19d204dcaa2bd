"""Transformer baseline: reference names, one block-stack pass per ACT step against a hand-written
computation, single-pass mode (halt_max_steps 1), loss-head compatibility, reference state dicts."""

import math

import pytest
import torch

from models.compat import load_reference_state_dict
from models.losses import ACTLossHead
from models.transformer_baseline import TransformerBaseline

from tests.test_hrm import NUM_IDS, SEQ_LEN, VOCAB, load_arch
from tests.test_hrm import reference_names_and_shapes as hrm_reference_names_and_shapes


def build(seed: int = 0, batch_size: int = 3, **overrides) -> TransformerBaseline:
    torch.manual_seed(seed)
    return TransformerBaseline(load_arch("transformers_baseline_tiny", **overrides), batch_size=batch_size,
                               seq_len=SEQ_LEN, vocab_size=VOCAB, num_puzzle_identifiers=NUM_IDS)


def make_batch(batch_size: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(2, VOCAB, (batch_size, SEQ_LEN), generator=g, dtype=torch.int32)
    labels[:, :1] = -100
    return {"inputs": torch.randint(0, VOCAB, (batch_size, SEQ_LEN), generator=g, dtype=torch.int32),
            "labels": labels,
            "puzzle_identifiers": torch.randint(1, NUM_IDS, (batch_size,), generator=g, dtype=torch.int32)}


def randomise(model, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.inner.puzzle_emb.weights.copy_(torch.randn(model.inner.puzzle_emb.weights.shape, generator=g))
        model.inner.q_head.weight.copy_(0.05 * torch.randn(model.inner.q_head.weight.shape, generator=g))


def reference_names_and_shapes(h, vocab, n_ids, ndim, layers, expansion):
    """Persistent state of TinyRecursiveModels' Model_ACTV2 (transformers_baseline): HRM's layout with
    the H stack alone (no L module, no L_init)."""
    shapes = hrm_reference_names_and_shapes(h, vocab, n_ids, ndim, layers, 0, expansion)
    del shapes["inner.L_init"]
    return shapes


def test_default_config_has_reference_names():
    arch = load_arch("transformers_baseline")
    assert (arch.H_layers, arch.hidden_size, arch.halt_max_steps) == (8, 512, 16)
    model = TransformerBaseline(arch, batch_size=2, seq_len=900, vocab_size=12, num_puzzle_identifiers=7)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == reference_names_and_shapes(512, 12, 7, 512, 8, 4)
    n_params = sum(p.numel() for p in model.parameters())
    per_block = 512 * 1536 + 512 * 512 + 512 * 2 * 1536 + 1536 * 512
    assert n_params == 8 * per_block + 2 * 12 * 512 + 2 * 512 + 2  # same size as HRM (8 blocks)
    print(f"transformer baseline dense parameters: {n_params:,}")


def test_one_pass_per_act_step_matches_hand_computation():
    model = build(halt_max_steps=3)
    randomise(model)
    model.eval()
    inner = model.inner
    calls = []
    inner.H_level.register_forward_hook(lambda m, a, out: calls.append(1))
    batch = make_batch()
    cos_sin = inner.rotary_emb()
    with torch.no_grad():
        x = inner.input_embeddings(batch)
        z = inner.H_init.expand(3, SEQ_LEN + 1, 64)  # reset rows start from H_init at every position
        carry = model.initial_carry(batch)
        for step in range(1, 4):
            carry, out = model(carry, batch)
            h = z + x
            for layer in inner.H_level.layers:
                h = layer(cos_sin=cos_sin, hidden_states=h)
            z = h
            assert len(calls) == step
            torch.testing.assert_close(carry.inner_carry.z_H, z, rtol=0, atol=1e-6)
            torch.testing.assert_close(out["logits"], z[:, 1:] @ inner.lm_head.weight.T, rtol=1e-5, atol=1e-5)
            q = z[:, 0] @ inner.q_head.weight.T + inner.q_head.bias
            torch.testing.assert_close(out["q_halt_logits"], q[:, 0], rtol=1e-5, atol=1e-5)
            assert out["logits"].shape == (3, SEQ_LEN, VOCAB) and out["logits"].dtype == torch.float32
            assert carry.steps.tolist() == [step] * 3 and bool(carry.halted.all()) == (step == 3)


def test_halt_max_steps_1_is_a_single_pass_transformer():
    model = build(halt_max_steps=1)
    randomise(model)
    for train in (True, False):
        model.train(train)
        carry = model.initial_carry(make_batch())
        for seed in (0, 1):  # every call halts and the next one takes the new batch from scratch
            batch = make_batch(seed=seed)
            with torch.no_grad():
                carry, out = model(carry, batch)
                fresh = model.inner(model.inner.reset_carry(torch.ones(3, dtype=torch.bool),
                                                            model.inner.empty_carry(3)), batch)[1]
            assert bool(carry.halted.all()) and carry.steps.tolist() == [1, 1, 1]
            assert torch.equal(carry.current_data["inputs"], batch["inputs"])
            torch.testing.assert_close(out["logits"], fresh, rtol=0, atol=0)
            assert "target_q_continue" not in out


@pytest.mark.parametrize("no_act_continue", [True, False])
def test_loss_head_compatible(no_act_continue):
    model = build(no_ACT_continue=no_act_continue)
    randomise(model)
    head = ACTLossHead(model, "softmax_cross_entropy")
    head.train()
    batch = make_batch()
    carry, loss, metrics, preds, finished = head(head.initial_carry(batch), batch, return_keys=("preds", "q_halt_logits"))
    loss.backward()
    assert math.isfinite(loss.item()) and preds["preds"].shape == (3, SEQ_LEN) and preds["q_halt_logits"].shape == (3,)
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    assert model.inner.puzzle_emb.local_weights.grad is not None
    assert (metrics["q_continue_loss"].item() > 0) == (not no_act_continue)
    # Evaluation: the loss head finishes the batch after exactly halt_max_steps calls.
    head.eval()
    carry = head.initial_carry(batch)
    with torch.no_grad():
        for step in range(1, model.arch.halt_max_steps + 1):
            carry, loss, metrics, _, finished = head(carry, batch)
            assert bool(finished) == (step == model.arch.halt_max_steps)
    assert metrics["count"].item() == 3 and metrics["steps"].item() == 3 * model.arch.halt_max_steps


def test_reference_state_dict_loads_and_reproduces_outputs():
    source = build(seed=0)
    randomise(source)
    shapes = reference_names_and_shapes(64, VOCAB, NUM_IDS, 64, source.arch.H_layers, source.arch.expansion)
    state = source.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == shapes
    reference = {"_orig_mod.model." + k: state[k].clone() for k in shapes}
    target = ACTLossHead(build(seed=1))
    load_reference_state_dict(target, reference)
    batch = make_batch()
    source.eval(), target.eval()
    with torch.no_grad():
        o1 = source(source.initial_carry(batch), batch)[1]
        o2 = target.model(target.model.initial_carry(batch), batch)[1]
    for key in ("logits", "q_halt_logits", "q_continue_logits"):
        assert torch.equal(o1[key], o2[key]), key
    # An HRM checkpoint (with an L module) is refused.
    reference["_orig_mod.model.inner.L_init"] = torch.zeros(64)
    with pytest.raises(ValueError, match="L_init"):
        load_reference_state_dict(ACTLossHead(build(seed=2)), reference)
