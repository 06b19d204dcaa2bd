"""Checkpoint folders: round trip, atomicity under a failure mid-write, pruning, NaN refusal, and
loading initial weights from a reference-format file."""

from __future__ import annotations

import json

import pytest
import torch

import training.checkpoint as ckpt
from models.config import ArchConfig
from models.registry import build_model
from training.state import load_initial_weights, resize_puzzle_table


def _state(value: float) -> dict[str, torch.Tensor]:
    return {"model.w": torch.full((2, 3), value), "model.inner.puzzle_emb.weights": torch.full((4, 2), value)}


def _save(run, step, value, **kw):
    return ckpt.save_checkpoint(run, step, model_state=_state(value), train_state={"step": step, "rng": [1, 2]},
                                config_yaml=f"lr: {value}\n", identifiers=["<blank>", "a"], **kw)


def test_round_trip_and_layout(tmp_path):
    path = _save(tmp_path, 7, 1.5, ema_state=_state(0.5), metrics={"all/accuracy": 0.25})
    assert path == tmp_path / "step_00000007"
    assert sorted(p.name for p in path.iterdir()) == ["config.yaml", "ema.safetensors", "identifiers.json",
                                                      "metrics.json", "model.safetensors", "train_state.json",
                                                      "train_state.safetensors"]
    loaded = ckpt.load_checkpoint(path)
    assert torch.equal(loaded.model_state["model.w"], torch.full((2, 3), 1.5))
    assert torch.equal(loaded.ema_state["model.w"], torch.full((2, 3), 0.5))
    assert loaded.train_state == {"step": 7, "rng": [1, 2]} and loaded.config_yaml == "lr: 1.5\n"
    assert json.loads((path / "metrics.json").read_text()) == {"all/accuracy": 0.25}


def test_failure_mid_write_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    _save(tmp_path, 1, 1.0)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(ckpt, "write_nested", crash)  # model.safetensors is written, train_state.* is not
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 2, 2.0)
    monkeypatch.undo()
    assert ckpt.find_latest_checkpoint(tmp_path) == tmp_path / "step_00000001"
    assert not (tmp_path / "step_00000002").exists()
    assert torch.equal(ckpt.load_checkpoint(tmp_path / "step_00000001").model_state["model.w"], torch.ones(2, 3))


def test_incomplete_or_temporary_folders_are_not_checkpoints(tmp_path):
    _save(tmp_path, 3, 1.0)
    (tmp_path / "step_00000009").mkdir()  # e.g. copied by hand, files missing
    (tmp_path / ".step_00000010.abc.tmp").mkdir()
    assert ckpt.find_latest_checkpoint(tmp_path) == tmp_path / "step_00000003"
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        ckpt.load_checkpoint(tmp_path / "step_00000009")


def test_keeps_newest_k(tmp_path):
    for step in range(1, 6):
        _save(tmp_path, step, float(step), keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [4, 5]


def test_refuses_non_finite_weights(tmp_path):
    _save(tmp_path, 1, 1.0)
    with pytest.raises(ckpt.NonFiniteWeightsError, match="model.w"):
        _save(tmp_path, 2, float("nan"))
    with pytest.raises(ckpt.NonFiniteWeightsError, match="ema:"):
        _save(tmp_path, 2, 1.0, ema_state=_state(float("inf")))
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [1]


def _tiny_head(num_ids: int):
    arch = ArchConfig(hidden_size=16, num_heads=2, L_layers=1, H_cycles=1, L_cycles=1, puzzle_emb_ndim=16,
                      puzzle_emb_len=1, forward_dtype="float32")
    return build_model(arch, batch_size=2, seq_len=900, vocab_size=12, num_puzzle_identifiers=num_ids)


def test_load_reference_pt_with_compile_prefix(tmp_path):
    torch.manual_seed(0)
    source = _tiny_head(5)
    with torch.no_grad():
        source.model.inner.puzzle_emb.weights.normal_()
    torch.save({f"_orig_mod.{k}": v for k, v in source.state_dict().items()}, tmp_path / "step_100")
    torch.manual_seed(1)
    target = _tiny_head(5)
    assert load_initial_weights(target, str(tmp_path / "step_100"), "mean") == []
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_other_puzzle_count_reinitialises_the_table(tmp_path):
    source = _tiny_head(5)
    with torch.no_grad():
        source.model.inner.puzzle_emb.weights.copy_(torch.arange(5 * 16, dtype=torch.float32).view(5, 16))
    torch.save(source.state_dict(), tmp_path / "w.pt")
    target = _tiny_head(3)
    notes = load_initial_weights(target, str(tmp_path / "w.pt"), "mean")
    assert "re-initialised" in notes[0]
    expected_row = torch.arange(5 * 16, dtype=torch.float32).view(5, 16).mean(0)
    assert torch.equal(target.model.inner.puzzle_emb.weights, expected_row.expand(3, 16))
    old = torch.randn(4000, 3) * torch.tensor([1.0, 2.0, 0.5]) + torch.tensor([3.0, -1.0, 0.0])
    new = resize_puzzle_table(old, 5000, "normal")
    torch.testing.assert_close(new.mean(0), old.mean(0), atol=0.1, rtol=0)
    torch.testing.assert_close(new.std(0), old.std(0), atol=0.1, rtol=0)
