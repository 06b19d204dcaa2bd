"""Fitting a puzzle-embedding table to another dataset's identifiers: rows follow names."""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from checkpoint_tools.embedding_growth import grow_checkpoint, main
from training.puzzle_rows import align_state_dict, grow_table

OLD = ["<blank>", "a", "b", "c"]


def _table():
    return torch.tensor([[0.0, 0.0], [1.0, 10.0], [2.0, 20.0], [6.0, 30.0]])


def test_old_rows_kept_by_name_and_new_rows_get_the_mean():
    new = ["<blank>", "c", "d", "a", "e"]
    grown, report = grow_table(_table(), OLD, new, strategy="mean")
    # Hand-worked: blank, c, mean(a, b, c) = (3, 20), a, mean again.
    expected = torch.tensor([[0.0, 0.0], [6.0, 30.0], [3.0, 20.0], [1.0, 10.0], [3.0, 20.0]])
    assert torch.equal(grown, expected)
    assert (report.kept, report.added, report.dropped) == (3, 2, 1)


def test_zeros_strategy_and_identity():
    grown, report = grow_table(_table(), OLD, ["<blank>", "z"], strategy="zeros")
    assert torch.equal(grown, torch.zeros(2, 2)) and report.added == 1
    same, report = grow_table(_table(), OLD, OLD)
    assert torch.equal(same, _table()) and report.added == 0


def test_normal_strategy_matches_trained_statistics():
    gen = torch.Generator().manual_seed(3)
    table = torch.randn(50, 4, generator=gen) * torch.tensor([1.0, 2.0, 0.5, 3.0]) + torch.tensor([5.0, -1, 0, 2])
    old = ["<blank>"] + [f"o{i}" for i in range(49)]
    new = old[:10] + [f"n{i}" for i in range(4000)]
    grown, report = grow_table(table, old, new, strategy="normal", seed=1)
    assert torch.equal(grown[:10], table[:10]) and report.added == 4000
    fresh = grown[10:]
    trained = table[1:]
    assert torch.allclose(fresh.mean(0), trained.mean(0), atol=0.15)
    assert torch.allclose(fresh.std(0), trained.std(0), rtol=0.08)
    again, _ = grow_table(table, old, new, strategy="normal", seed=1)
    assert torch.equal(again, grown)  # seeded


def test_errors_are_explicit():
    with pytest.raises(ValueError, match="unknown strategy"):
        grow_table(_table(), OLD, OLD, strategy="bogus")
    with pytest.raises(ValueError, match="rows but there are"):
        grow_table(_table(), OLD[:3], OLD)


def test_state_dict_without_table_is_untouched():
    state = {"model.inner.lm_head.weight": torch.ones(2, 2)}
    out, report = align_state_dict(state, OLD, ["<blank>"])
    assert report is None and out.keys() == state.keys()


def _tiny_head(num_ids):
    from models.config import ArchConfig
    from models.registry import build_model

    arch = ArchConfig(name="trm", H_cycles=1, L_cycles=1, L_layers=1, hidden_size=16, num_heads=2, expansion=2.0,
                      puzzle_emb_ndim=16, puzzle_emb_len=1, halt_max_steps=1, forward_dtype="float32")
    return build_model(arch, batch_size=2, seq_len=8, vocab_size=12, num_puzzle_identifiers=num_ids)


def _logits(head, ids):
    head.eval()
    batch = {"inputs": torch.full((len(ids), 8), 3, dtype=torch.int32),
             "labels": torch.full((len(ids), 8), 3, dtype=torch.long),
             "puzzle_identifiers": torch.tensor(ids, dtype=torch.int32)}
    with torch.no_grad():
        return head(head.initial_carry(batch), batch, return_keys=("logits",))[3]["logits"]


def test_grown_checkpoint_loads_and_keeps_trained_puzzles(tmp_path):
    from models.compat import load_reference_state_dict

    torch.manual_seed(0)
    old_head = _tiny_head(len(OLD))
    with torch.no_grad():
        old_head.model.puzzle_emb.weights.normal_()
    ckpt = tmp_path / "step_00000010"
    ckpt.mkdir()
    save_file({k: v.contiguous() for k, v in old_head.state_dict().items()}, str(ckpt / "model.safetensors"))
    save_file({k: v.contiguous() for k, v in old_head.state_dict().items()}, str(ckpt / "ema.safetensors"))
    (ckpt / "identifiers.json").write_text(json.dumps(OLD))
    (ckpt / "config.yaml").write_text(yaml.safe_dump({"arch": {"name": "trm"}}))
    save_file({"optimizers.0.exp_avg": torch.zeros(3)}, str(ckpt / "train_state.safetensors"))
    (ckpt / "train_state.json").write_text(json.dumps({"step": 10}))

    new_ids = ["<blank>", "new1", "c", "a", "new2", "new3"]
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "identifiers.json").write_text(json.dumps(new_ids))
    out = tmp_path / "grown"
    assert main([str(ckpt), str(dataset), str(out), "--strategy", "mean"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "ema.safetensors", "identifiers.json",
                                                    "model.safetensors"]
    assert json.loads((out / "identifiers.json").read_text()) == new_ids

    new_head = _tiny_head(len(new_ids))
    load_reference_state_dict(new_head, load_file(str(out / "model.safetensors")))
    # Puzzles "a" (old id 1, new id 3) and "c" (old 3, new 2) predict exactly as before.
    assert torch.equal(_logits(old_head, [1, 3]), _logits(new_head, [3, 2]))
    table = new_head.model.puzzle_emb.weights
    assert torch.allclose(table[1], old_head.model.puzzle_emb.weights[1:].mean(0))

    report = grow_checkpoint(ckpt, new_ids, tmp_path / "grown2", strategy="normal")
    assert (report.kept, report.added, report.dropped) == (3, 3, 1)
