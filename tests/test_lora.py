"""LoRA adapters: start identical to the base, train only adapters (+ puzzle embedding), merge exactly."""

import copy

import pytest
import torch
from torch import nn

from models.layers import CastedLinear
from models.lora import (
    apply_lora,
    count_trainable_parameters,
    is_lora_key,
    load_lora_adapters,
    lora_layers,
    lora_state_dict,
    merge_lora,
    merge_lora_state_dict,
    save_lora_adapters,
)


class TinyNet(nn.Module):
    """Shape of a recursive block: token embedding, attention-like projections, heads."""

    def __init__(self, vocab=12, hidden=16):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, hidden)
        self.block = nn.Module()
        self.block.qkv_proj = CastedLinear(hidden, 3 * hidden, bias=False)
        self.block.o_proj = CastedLinear(3 * hidden, hidden, bias=False)
        self.lm_head = CastedLinear(hidden, vocab, bias=False)
        self.q_head = CastedLinear(hidden, 2, bias=True)

    def forward(self, tokens):
        x = self.embed_tokens(tokens)
        for _ in range(2):  # recursion: the same layers applied repeatedly
            x = torch.tanh(x + self.block.o_proj(torch.relu(self.block.qkv_proj(x))))
        return self.lm_head(x), self.q_head(x[:, 0])


def _tokens(seed=0):
    return torch.randint(0, 12, (3, 5), generator=torch.Generator().manual_seed(seed))


def _randomise_adapters(model, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in lora_layers(model).values():
            module.lora_B.copy_(torch.randn(module.lora_B.shape, generator=gen) * 0.1)


def test_fresh_adapter_computes_exactly_the_base_model():
    torch.manual_seed(0)
    base = TinyNet()
    adapted = copy.deepcopy(base)
    names = apply_lora(adapted, rank=2, alpha=16)
    assert sorted(names) == ["block.o_proj", "block.qkv_proj", "lm_head", "q_head"]
    for out_base, out_lora in zip(base(_tokens()), adapted(_tokens())):
        assert torch.equal(out_base, out_lora)
    layer = adapted.block.qkv_proj
    assert layer.lora_A.shape == (2, 16) and layer.lora_B.shape == (48, 2)
    assert torch.count_nonzero(layer.lora_B) == 0 and torch.count_nonzero(layer.lora_A) > 0
    assert float(layer.lora_scale) == pytest.approx(8.0)


def test_trainable_parameters_are_adapters_only_and_counted_by_hand():
    model = TinyNet()
    apply_lora(model, rank=1, alpha=16)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    # rank r adds r * (in + out) per layer: qkv 16+48, o 48+16, lm_head 16+12, q_head 16+2
    assert count_trainable_parameters(model) == 64 + 64 + 28 + 18


def test_target_patterns_and_extra_trainable():
    model = TinyNet()
    names = apply_lora(model, rank=1, targets=["block.*"], trainable=["embed_tokens.*"])
    assert sorted(names) == ["block.o_proj", "block.qkv_proj"]
    assert model.embed_tokens.weight.requires_grad and not model.lm_head.weight.requires_grad
    with pytest.raises(ValueError, match="matched no linear layer"):
        apply_lora(TinyNet(), rank=1, targets=["nothing*"])


def test_training_step_changes_only_adapters():
    torch.manual_seed(0)
    model = TinyNet()
    apply_lora(model, rank=2, alpha=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    for step in range(3):
        logits, q = model(_tokens(step))
        loss = nn.functional.cross_entropy(logits.reshape(-1, 12), _tokens(step + 10).reshape(-1)) + q.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith(("lora_A", "lora_B")) for k in changed)
    assert "lm_head.lora_B" in changed


def test_merge_equals_unmerged_and_matches_hand_formula():
    torch.manual_seed(0)
    model = TinyNet()
    apply_lora(model, rank=3, alpha=6)
    _randomise_adapters(model)
    expected_out = model(_tokens())
    layer = model.block.qkv_proj
    w64 = layer.weight.double() + 2.0 * (layer.lora_B.double() @ layer.lora_A.double())  # alpha / rank = 2
    state_merged = merge_lora_state_dict(model.state_dict())

    assert merge_lora(model) == 4
    assert not any(is_lora_key(k) for k in model.state_dict())
    assert torch.allclose(model.block.qkv_proj.weight.double(), w64, atol=1e-6)
    for a, b in zip(expected_out, model(_tokens())):
        assert torch.allclose(a, b, atol=1e-5)
    # The state-dict merge (no model needed) gives the same dense weights.
    for key, value in model.state_dict().items():
        assert torch.allclose(state_merged[key], value, atol=1e-6), key
    # A fresh dense model loads the merged weights strictly.
    dense = TinyNet()
    dense.load_state_dict(state_merged, strict=True)
    for a, b in zip(expected_out, dense(_tokens())):
        assert torch.allclose(a, b, atol=1e-5)


def test_adapters_save_and_load_alone(tmp_path):
    torch.manual_seed(0)
    base = TinyNet()
    tuned = copy.deepcopy(base)
    apply_lora(tuned, rank=2, alpha=8, targets=["block.*", "lm_head"])
    _randomise_adapters(tuned)
    path = tmp_path / "adapters.safetensors"
    save_lora_adapters(tuned, path)

    from safetensors.torch import load_file

    saved = load_file(str(path))
    assert set(saved) == set(lora_state_dict(tuned)) and all(is_lora_key(k) for k in saved)

    fresh = copy.deepcopy(base)
    layers = load_lora_adapters(fresh, path)
    assert layers == ["block.o_proj", "block.qkv_proj", "lm_head"]
    for a, b in zip(tuned(_tokens()), fresh(_tokens())):
        assert torch.equal(a, b)


def test_dense_checkpoint_loads_into_adapted_model_with_only_adapter_keys_missing():
    base = TinyNet()
    adapted = TinyNet()
    apply_lora(adapted, rank=1)
    result = adapted.load_state_dict(base.state_dict(), strict=False)
    assert result.unexpected_keys == [] and all(is_lora_key(k) for k in result.missing_keys)
    for a, b in zip(base(_tokens()), adapted(_tokens())):
        assert torch.equal(a, b)


# ------------------------------------------------------------------- the recursive models themselves
def _tiny_arch(**overrides):
    from models.config import ArchConfig

    fields = dict(name="trm", H_cycles=2, L_cycles=2, L_layers=1, hidden_size=32, num_heads=2, expansion=2.0,
                  puzzle_emb_ndim=32, puzzle_emb_len=2, halt_max_steps=2, forward_dtype="float32")
    fields.update(overrides)
    return ArchConfig(**fields)


def _batch(batch_size=4, seq_len=16, num_ids=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randint(2, 12, (batch_size, seq_len), generator=gen, dtype=torch.int32)
    return {"inputs": inputs, "labels": inputs.flip(-1).long(),
            "puzzle_identifiers": torch.randint(1, num_ids, (batch_size,), generator=gen, dtype=torch.int32)}


def test_reference_arc_trm_rank1_adapter_count():
    """The Trelis fork's figure: rank 1 on every linear layer of the 7M ARC TRM = 18,446 parameters."""
    from models.config import ArchConfig
    from models.registry import build_model

    head = build_model(ArchConfig(), batch_size=2, seq_len=900, vocab_size=12, num_puzzle_identifiers=2)
    apply_lora(head, rank=1, alpha=16)
    # per block: qkv 512+1536, o 512+512, gate_up 512+3072, down 1536+512; lm_head 512+12; q_head 512+2
    assert count_trainable_parameters(head) == 2 * (2048 + 1024 + 3584 + 2048) + 524 + 514 == 18446


def test_trm_finetune_step_changes_only_adapters_and_puzzle_embedding():
    from models.registry import build_model
    from models.sparse_embedding import SparseSignSGD

    torch.manual_seed(0)
    head = build_model(_tiny_arch(), batch_size=4, seq_len=16, vocab_size=12, num_puzzle_identifiers=5)
    base = copy.deepcopy(head)
    apply_lora(head, rank=2, alpha=16)
    head.train()
    base.train()
    batch = _batch()
    # A fresh adapter computes exactly what the base computes (same carry, same halting draws).
    torch.manual_seed(1)
    _, loss_base, *_ = base(base.initial_carry(batch), batch)
    torch.manual_seed(1)
    _, loss_lora, *_ = head(head.initial_carry(batch), batch)
    assert torch.equal(loss_base, loss_lora)

    before = {k: v.clone() for k, v in head.state_dict().items()}
    dense_opt = torch.optim.AdamW([p for p in head.parameters() if p.requires_grad], lr=1e-3)
    emb_opt = SparseSignSGD(head.model.puzzle_emb.buffers(), lr=1e-2, weight_decay=0.1)
    carry = head.initial_carry(batch)
    for _ in range(2):
        carry, loss, *_ = head(carry, batch)
        loss.backward()
        dense_opt.step()
        emb_opt.step()
        dense_opt.zero_grad()
        head.model.puzzle_emb.local_weights.grad = None
    changed = {k for k, v in head.state_dict().items() if not torch.equal(before[k], v)}
    assert any(k.endswith("lora_B") for k in changed)
    assert "model.inner.puzzle_emb.weights" in changed
    assert changed <= {k for k in before if k.endswith(("lora_A", "lora_B"))} | {"model.inner.puzzle_emb.weights"}


def test_trm_merged_model_matches_adapted_model():
    from models.registry import build_model

    torch.manual_seed(0)
    head = build_model(_tiny_arch(), batch_size=4, seq_len=16, vocab_size=12, num_puzzle_identifiers=5)
    apply_lora(head, rank=2, alpha=16)
    _randomise_adapters(head)
    head.eval()
    batch = _batch()
    with torch.no_grad():
        _, _, _, adapted, _ = head(head.initial_carry(batch), batch, return_keys=("logits",))
        merge_lora(head)
        _, _, _, merged, _ = head(head.initial_carry(batch), batch, return_keys=("logits",))
    assert not lora_layers(head)
    assert torch.allclose(adapted["logits"], merged["logits"], atol=1e-4)


# ------------------------------------------------------------------------- presets and merge tool
def _compose(name):
    import os

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from training.config import register_configs, to_pretrain_config

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=os.path.abspath("config"), version_base="1.3"):
            return to_pretrain_config(compose(config_name=name))
    finally:
        register_configs()
        GlobalHydra.instance().clear()


def test_emb_posttrain_preset_matches_the_trelis_fork():
    cfg = _compose("cfg_emb_posttrain")
    assert (cfg.global_batch_size, cfg.epochs, cfg.eval_interval) == (96, 12500, 2500)
    assert (cfg.lr, cfg.puzzle_emb_lr, cfg.lr_warmup_steps) == (1.25e-5, 1.25e-3, 200)
    assert cfg.freeze_weights and not cfg.ema
    assert cfg.arch.hidden_size == 512 and cfg.weight_decay == 0.1  # the rest from cfg_pretrain


@pytest.mark.parametrize("name, expected", [
    ("cfg_pretrain_lora", dict(global_batch_size=768, epochs=12500, eval_interval=3125, lr=1e-4, puzzle_emb_lr=1e-2,
                               ema=True, eval_max_augmentations=256, weight_decay=0.0)),
    ("cfg_kaggle_lora", dict(global_batch_size=96, epochs=500, eval_max_augmentations=8, ema=False)),
])
def test_lora_presets_compose(name, expected):
    cfg = _compose(name)
    for key, value in expected.items():
        assert getattr(cfg, key) == value, key
    assert (cfg.arch.lora_rank, cfg.arch.lora_alpha) == (1, 16.0) and not cfg.freeze_weights


def test_merge_lora_command_writes_a_dense_checkpoint(tmp_path):
    import json

    import yaml
    from safetensors.torch import load_file, save_file

    from checkpoint_tools.merge_lora import main

    torch.manual_seed(0)
    model = TinyNet()
    apply_lora(model, rank=2, alpha=4)
    _randomise_adapters(model)
    expected = model(_tokens())
    ckpt = tmp_path / "step_00000010"
    ckpt.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt / "model.safetensors"))
    (ckpt / "config.yaml").write_text(yaml.safe_dump({"arch": {"name": "trm", "lora_rank": 2, "lora_alpha": 4.0}}))
    (ckpt / "identifiers.json").write_text(json.dumps(["<blank>"]))
    assert main([str(ckpt), str(tmp_path / "merged")]) == 0
    dense = TinyNet()
    dense.load_state_dict(load_file(str(tmp_path / "merged" / "model.safetensors")), strict=True)
    for a, b in zip(expected, dense(_tokens())):
        assert torch.allclose(a, b, atol=1e-5)
    assert yaml.safe_load((tmp_path / "merged" / "config.yaml").read_text())["arch"]["lora_rank"] == 0
    with pytest.raises(ValueError, match="no LoRA adapters"):
        main([str(tmp_path / "merged"), str(tmp_path / "again")])

    # Adapters saved alone, applied to the dense base checkpoint, give the same merged weights.
    save_lora_adapters(model, tmp_path / "adapters.safetensors")
    base = tmp_path / "base"
    base.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if not is_lora_key(k)},
              str(base / "model.safetensors"))
    assert main([str(base), str(tmp_path / "merged2"), "--adapters", str(tmp_path / "adapters.safetensors")]) == 0
    merged2 = load_file(str(tmp_path / "merged2" / "model.safetensors"))
    for key, value in load_file(str(tmp_path / "merged" / "model.safetensors")).items():
        assert torch.allclose(merged2[key], value, atol=1e-6)
