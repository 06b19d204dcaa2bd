"""Reference-format state dicts (TinyRecursiveModels checkpoints) load into our TRM and round-trip."""

import pytest
import torch

from models.compat import export_reference_state_dict, load_reference_state_dict
from models.config import ArchConfig
from models.registry import build_model

SEQ, VOCAB, IDS, H = 10, 12, 7, 32


def arch():
    return ArchConfig(hidden_size=H, num_heads=4, H_cycles=2, L_cycles=2, L_layers=2, halt_max_steps=3,
                      puzzle_emb_ndim=H, puzzle_emb_len=2, forward_dtype="bfloat16")


def build(seed, ids=IDS):
    torch.manual_seed(seed)
    return build_model(arch(), batch_size=3, seq_len=SEQ, vocab_size=VOCAB, num_puzzle_identifiers=ids)


def reference_state_dict(seed=1, ids=IDS):
    """Keys and shapes written out from the reference model (TinyRecursiveReasoningModel_ACTV1 inside a
    torch.compile'd ACTLossHead), not taken from our model."""
    g = torch.Generator().manual_seed(seed)
    inner = 256  # SwiGLU(32, 4): round(4 * 32 * 2 / 3) = 85, rounded up to a multiple of 256
    shapes = {"inner.H_init": (H,), "inner.L_init": (H,), "inner.embed_tokens.embedding_weight": (VOCAB, H),
              "inner.lm_head.weight": (VOCAB, H), "inner.q_head.weight": (2, H), "inner.q_head.bias": (2,),
              "inner.puzzle_emb.weights": (ids, H)}
    for i in range(2):
        layer = f"inner.L_level.layers.{i}."
        shapes.update({layer + "self_attn.qkv_proj.weight": (3 * H, H), layer + "self_attn.o_proj.weight": (H, H),
                       layer + "mlp.gate_up_proj.weight": (2 * inner, H), layer + "mlp.down_proj.weight": (H, inner)})
    state = {"_orig_mod.model." + k: torch.randn(s, generator=g) * 0.2 for k, s in shapes.items()}
    for k in ("_orig_mod.model.inner.H_init", "_orig_mod.model.inner.L_init"):
        state[k] = state[k].to(torch.bfloat16)  # the reference keeps these in forward_dtype
    return state


def outputs(head, batch):
    head.eval()
    with torch.no_grad():
        carry = head.initial_carry(batch)
        _, loss, _, preds, _ = head(carry, batch, return_keys=("logits", "q_halt_logits"))
    return loss, preds


def make_batch():
    g = torch.Generator().manual_seed(5)
    return {"inputs": torch.randint(0, VOCAB, (3, SEQ), generator=g), "labels": torch.randint(0, VOCAB, (3, SEQ), generator=g),
            "puzzle_identifiers": torch.tensor([1, 6, 2])}


def test_reference_state_dict_loads_by_name_and_gives_identical_outputs():
    ref = reference_state_dict()
    loaded = build(seed=0)
    load_reference_state_dict(loaded, ref)
    # Independent expectation: a model whose tensors are set one by one through attribute access.
    manual = build(seed=9)
    inner = manual.model.inner
    with torch.no_grad():
        get = lambda k: ref["_orig_mod.model.inner." + k]  # noqa: E731
        inner.H_init.copy_(get("H_init").float())
        inner.L_init.copy_(get("L_init").float())
        inner.embed_tokens.embedding_weight.copy_(get("embed_tokens.embedding_weight"))
        inner.lm_head.weight.copy_(get("lm_head.weight"))
        inner.q_head.weight.copy_(get("q_head.weight"))
        inner.q_head.bias.copy_(get("q_head.bias"))
        inner.puzzle_emb.weights.copy_(get("puzzle_emb.weights"))
        for i, block in enumerate(inner.L_level.layers):
            block.self_attn.qkv_proj.weight.copy_(get(f"L_level.layers.{i}.self_attn.qkv_proj.weight"))
            block.self_attn.o_proj.weight.copy_(get(f"L_level.layers.{i}.self_attn.o_proj.weight"))
            block.mlp.gate_up_proj.weight.copy_(get(f"L_level.layers.{i}.mlp.gate_up_proj.weight"))
            block.mlp.down_proj.weight.copy_(get(f"L_level.layers.{i}.mlp.down_proj.weight"))
    batch = make_batch()
    (loss_a, preds_a), (loss_b, preds_b) = outputs(loaded, batch), outputs(manual, batch)
    assert torch.equal(preds_a["logits"], preds_b["logits"]) and torch.equal(loss_a, loss_b)

    bare = build(seed=3).model  # the ACT model without its loss head takes the same dict
    load_reference_state_dict(bare, ref)
    assert torch.equal(bare.inner.lm_head.weight, ref["_orig_mod.model.inner.lm_head.weight"])


def test_export_then_load_round_trip():
    source, target = build(seed=0), build(seed=1)
    with torch.no_grad():
        source.model.inner.puzzle_emb.weights.normal_()
    exported = export_reference_state_dict(source, compiled_prefix=True)
    assert all(k.startswith("_orig_mod.model.inner.") for k in exported)
    assert exported["_orig_mod.model.inner.H_init"].dtype == torch.bfloat16
    load_reference_state_dict(target, exported)
    batch = make_batch()
    assert torch.equal(outputs(source, batch)[1]["logits"], outputs(target, batch)[1]["logits"])
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key]), key
    assert set(export_reference_state_dict(source.model)) == {k.replace("_orig_mod.", "") for k in exported}


def test_mismatches_are_explained():
    head = build(seed=0)
    with pytest.raises(ValueError, match="regenerated"):
        load_reference_state_dict(head, reference_state_dict(ids=IDS + 5))
    broken = reference_state_dict()
    del broken["_orig_mod.model.inner.lm_head.weight"]
    broken["_orig_mod.model.inner.extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys: model.inner.lm_head.weight[\s\S]*unexpected keys: model.inner.extra"):
        load_reference_state_dict(head, broken)
