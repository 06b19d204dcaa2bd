"""Inference-size export: smaller, filtered identifiers, and the same predictions for kept puzzles."""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from models.compat import load_reference_state_dict
from models.lora import apply_lora, lora_layers
from checkpoint_tools.export import export_checkpoint, main, select_rows

IDS = ["<blank>", "t1", "t1|||t1|||0213456789", "t1|||t5|||0987654321", "t2", "t2|||t3|||0123456798", "t3"]


def _head(num_ids, emb=True):
    from models.config import ArchConfig
    from models.registry import build_model

    arch = ArchConfig(name="trm", H_cycles=1, L_cycles=2, L_layers=1, hidden_size=32, num_heads=2, expansion=2.0,
                      puzzle_emb_ndim=32 if emb else 0, puzzle_emb_len=1 if emb else 0, halt_max_steps=2,
                      forward_dtype="float32")
    return build_model(arch, batch_size=2, seq_len=10, vocab_size=12, num_puzzle_identifiers=num_ids)


def _logits(head, ids):
    head.eval()
    gen = torch.Generator().manual_seed(5)
    batch = {"inputs": torch.randint(2, 12, (len(ids), 10), generator=gen, dtype=torch.int32),
             "labels": torch.full((len(ids), 10), 3, dtype=torch.long),
             "puzzle_identifiers": torch.tensor(ids, dtype=torch.int32)}
    with torch.no_grad():
        carry = head.initial_carry(batch)
        for _ in range(2):
            carry, _, _, preds, _ = head(carry, batch, return_keys=("logits",))
    return preds["logits"]


def _write_checkpoint(folder, head, ids=IDS):
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "identifiers.json").write_text(json.dumps(ids))
    (folder / "config.yaml").write_text(yaml.safe_dump({"arch": {"name": "trm"}}))
    save_file({"optimizers.0.exp_avg": torch.zeros(5000)}, str(folder / "train_state.safetensors"))  # left behind
    (folder / "train_state.json").write_text(json.dumps({"step": 10}))
    return folder


@pytest.fixture
def trained(tmp_path):
    torch.manual_seed(0)
    head = _head(len(IDS))
    with torch.no_grad():
        head.model.puzzle_emb.weights.normal_()
    return head, _write_checkpoint(tmp_path / "step_00000100", head)


def test_select_rows_by_task_id_and_name():
    assert select_rows(IDS, ["t1"]) == [0, 1, 2, 3]
    assert select_rows(IDS, ["t2|||t3|||0123456798", "t3"]) == [0, 5, 6]
    assert select_rows(IDS, []) == [0]
    assert select_rows(IDS, None) == list(range(7))
    assert select_rows(IDS, None, max_copies=2) == [0, 1, 2, 4, 5, 6]  # t1's third copy dropped
    assert select_rows(IDS, ["t1", "t3"], max_copies=1) == [0, 1, 6]
    with pytest.raises(ValueError, match="match no identifier"):
        select_rows(IDS, ["t9"])


def test_float32_export_predicts_exactly_like_the_checkpoint(trained, tmp_path):
    head, ckpt = trained
    summary = export_checkpoint(ckpt, tmp_path / "export", keep=["t2", "t1|||t5|||0987654321"], dtype="float32")
    kept = json.loads((tmp_path / "export" / "identifiers.json").read_text())
    assert kept == ["<blank>", "t1|||t5|||0987654321", "t2", "t2|||t3|||0123456798"]
    assert summary["export_bytes"] < summary["source_bytes"]
    assert not list((tmp_path / "export").glob("train_state*"))

    small = _head(len(kept))
    load_reference_state_dict(small, load_file(str(tmp_path / "export" / "model.safetensors")))
    # Old ids 3, 4, 5 are rows 1, 2, 3 of the export.
    assert torch.equal(_logits(head, [3, 4, 5, 0]), _logits(small, [1, 2, 3, 0]))


def test_bf16_export_equals_a_bf16_rounded_model(trained, tmp_path):
    head, ckpt = trained
    main([str(ckpt), str(tmp_path / "export"), "--keep", "t3"])
    state = load_file(str(tmp_path / "export" / "model.safetensors"))
    assert all(v.dtype == torch.bfloat16 for v in state.values() if v.is_floating_point())
    assert state["model.inner.puzzle_emb.weights"].shape == (2, 32)

    # Independent expectation: the original model with every float tensor rounded through bf16.
    rounded = _head(len(IDS))
    rounded.load_state_dict({k: v.to(torch.bfloat16).to(v.dtype) if v.is_floating_point() else v
                             for k, v in head.state_dict().items()})
    small = _head(2)
    load_reference_state_dict(small, state)
    assert torch.equal(_logits(rounded, [6, 0]), _logits(small, [1, 0]))


def test_keep_none_and_no_table(trained, tmp_path):
    from checkpoint_tools.embedding_growth import grow_checkpoint

    head, ckpt = trained
    export_checkpoint(ckpt, tmp_path / "dense", keep=[])
    assert json.loads((tmp_path / "dense" / "identifiers.json").read_text()) == ["<blank>"]
    assert load_file(str(tmp_path / "dense" / "model.safetensors"))["model.inner.puzzle_emb.weights"].shape[0] == 1
    # New puzzles on the dense export still start from the full trained table's mean.
    grow_checkpoint(tmp_path / "dense", ["<blank>", "new_a", "new_b"], tmp_path / "grown", strategy="mean")
    grown = load_file(str(tmp_path / "grown" / "model.safetensors"))["model.inner.puzzle_emb.weights"]
    full_mean = head.model.puzzle_emb.weights[1:].mean(0)
    assert torch.allclose(grown[1].float(), full_mean, atol=1e-2) and torch.equal(grown[1], grown[2])

    plain = _write_checkpoint(tmp_path / "no_table", _head(len(IDS), emb=False))
    summary = export_checkpoint(plain, tmp_path / "plain_export", keep=["t9"])  # nothing to filter
    assert summary["identifiers_kept"] == len(IDS)


def test_lora_checkpoint_is_merged_on_export(tmp_path):
    torch.manual_seed(0)
    head = _head(len(IDS))
    apply_lora(head, rank=2, alpha=8)
    with torch.no_grad():
        for module in lora_layers(head).values():
            module.lora_B.normal_(0, 0.05)
    ckpt = _write_checkpoint(tmp_path / "lora_ckpt", head)
    export_checkpoint(ckpt, tmp_path / "export", dtype="float32")
    state = load_file(str(tmp_path / "export" / "model.safetensors"))
    assert not any(".lora_" in k for k in state)
    dense = _head(len(IDS))
    load_reference_state_dict(dense, state)
    assert torch.allclose(_logits(head, [1, 2]), _logits(dense, [1, 2]), atol=1e-4)
