"""End-to-end tests of the training entry point on CPU: configs, learning, resume, robustness.

Configs are composed the way pretrain.py composes them (Hydra compose over config/) and handed to the
plain ``pretrain.train`` function or to ``Trainer`` (lightning-hydra-template style). The model is a
one-layer, width-32 TRM so a step takes ~0.1 s on one core.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

import pretrain
from dataset.puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig
from tests.dataset_fixtures import write_tiny_dataset
from training.checkpoint import list_checkpoints, load_checkpoint
from training.config import to_pretrain_config
from training.trainer import NonFiniteLossError, Trainer

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(REPO / "config")
SMALL_ARCH = ["arch.hidden_size=32", "arch.num_heads=2", "arch.L_layers=1", "arch.H_cycles=1", "arch.L_cycles=1",
              "arch.puzzle_emb_ndim=32", "arch.puzzle_emb_len=1"]
QUIET = ["evaluators=[]", "wandb_mode=disabled", "log_interval=0", "device=cpu"]


def compose_cfg(overrides: list[str], name: str = "cfg_tiny_cpu"):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def tiny_cfg(data: Path, run: Path, *extra: str):
    return to_pretrain_config(compose_cfg([f"data_paths=[{data}]", f"checkpoint_path={run}", *SMALL_ARCH, *QUIET,
                                           *extra]))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny"
    write_tiny_dataset(path, num_tasks=3, augs_per_task=1, examples_per_puzzle=2)
    return path


def read_jsonl(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@torch.inference_mode()
def exact_accuracy_on_training_examples(trainer: Trainer, data: Path) -> float:
    """Independent check: run the trained head on every training example and compare with labels."""
    ds = PuzzleDataset(PuzzleDatasetConfig(seed=0, dataset_paths=[str(data)], global_batch_size=4,
                                           test_set_mode=True), split="train")
    head = trainer.head.eval()
    correct = total = 0
    for _, batch, _ in ds:
        carry = head.initial_carry(batch)
        while True:
            carry, _, _, preds, done = head(carry=carry, batch=batch, return_keys=["preds"])
            if done:
                break
        labels = batch["labels"]
        has_labels = (labels != -100).any(-1)
        right = ((preds["preds"] == labels) | (labels == -100)).all(-1)
        correct += int((right & has_labels).sum())
        total += int(has_labels.sum())
    return correct / total


def test_tiny_run_loss_falls_and_memorises_puzzles(tmp_path):
    data = tmp_path / "two"
    write_tiny_dataset(data, num_tasks=2, augs_per_task=0, examples_per_puzzle=1)
    cfg = tiny_cfg(data, tmp_path / "run", "global_batch_size=2", "epochs=240", "eval_interval=240", "lr=1e-2",
                   "lr_warmup_steps=5", "arch.halt_max_steps=1", "checkpoint_every_eval=false")
    trainer = Trainer(cfg)
    trainer.train()
    trainer.close()
    losses = [r["train/lm_loss"] for r in read_jsonl(tmp_path / "run") if "train/lm_loss" in r]
    assert len(losses) == 240
    assert sum(losses[-10:]) / 10 < 0.25 * sum(losses[:10]) / 10
    assert exact_accuracy_on_training_examples(trainer, data) == 1.0


def _final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(list_checkpoints(run)[-1][1]).model_state


@pytest.mark.parametrize("ema", [False, True])
def test_resume_continues_exactly(data, tmp_path, ema):
    common = ["global_batch_size=4", "epochs=20", "eval_interval=2", "arch.halt_max_steps=3",
              "carry_on_resume=restore", "checkpoint_every_eval=false", f"ema={ema}"]
    pretrain.train(compose_cfg([f"data_paths=[{data}]", f"checkpoint_path={tmp_path / 'full'}", *SMALL_ARCH, *QUIET,
                                *common, "max_steps=8"]))
    for steps in (4, 8):  # the second call finds step 4 in its folder and continues from it
        pretrain.train(compose_cfg([f"data_paths=[{data}]", f"checkpoint_path={tmp_path / 'split'}", *SMALL_ARCH,
                                    *QUIET, *common, f"max_steps={steps}"]))
    assert [s for s, _ in list_checkpoints(tmp_path / "split")] == [4, 8]
    full, split = load_checkpoint(tmp_path / "full" / "step_00000008"), load_checkpoint(tmp_path / "split" / "step_00000008")
    assert full.model_state.keys() == split.model_state.keys()
    for key in full.model_state:
        torch.testing.assert_close(split.model_state[key], full.model_state[key], rtol=0, atol=1e-6, msg=key)
    if ema:
        assert any(k.endswith("puzzle_emb.weights") for k in full.ema_state)
        for key in full.ema_state:
            torch.testing.assert_close(split.ema_state[key], full.ema_state[key], rtol=0, atol=1e-6, msg=key)
    full_log = {r["step"]: r for r in read_jsonl(tmp_path / "full") if "train/lm_loss" in r}
    split_log = {r["step"]: r for r in read_jsonl(tmp_path / "split") if "train/lm_loss" in r}
    for step in range(5, 9):
        assert split_log[step]["train/lm_loss"] == pytest.approx(full_log[step]["train/lm_loss"], rel=1e-5)


def _poison_call(trainer: Trainer, call: int) -> None:
    original, calls = trainer.train_model, [0]

    def poisoned(**kwargs):
        calls[0] += 1
        carry, loss, metrics, preds, done = original(**kwargs)
        return carry, (loss * float("nan") if calls[0] == call else loss), metrics, preds, done

    trainer.train_model = poisoned


def test_nonfinite_loss_stops_and_keeps_good_checkpoints(data, tmp_path):
    trainer = Trainer(tiny_cfg(data, tmp_path / "run", "global_batch_size=4", "checkpoint_every_n_steps=1",
                               "nonfinite_policy=stop", "max_steps=6"))
    _poison_call(trainer, 3)
    with pytest.raises(NonFiniteLossError, match="at step 3"):
        trainer.train()
    trainer.close()
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [1, 2]
    assert all(torch.isfinite(v).all() for v in _final_weights(tmp_path / "run").values())
    assert all(torch.isfinite(p).all() for p in trainer.head.state_dict().values())


def test_nonfinite_loss_skip_policy_skips_the_step(data, tmp_path):
    trainer = Trainer(tiny_cfg(data, tmp_path / "run", "global_batch_size=4", "nonfinite_policy=skip", "max_steps=4"))
    _poison_call(trainer, 2)
    trainer.train()
    trainer.close()
    assert trainer.step == 4 and trainer.nonfinite_skipped == 1
    assert all(torch.isfinite(p).all() for p in trainer.head.state_dict().values())


def test_freeze_weights_trains_only_puzzle_embeddings_then_unfreezes(data, tmp_path):
    trainer = Trainer(tiny_cfg(data, tmp_path / "run", "global_batch_size=4", "epochs=4", "eval_interval=4",
                               "freeze_weights=true", "freeze_weights_epochs=2", "lr_warmup_steps=0"))
    total = trainer.total_steps  # 4 epochs x 3 groups x 2 examples / 4 = 6 steps; frozen for the first 3
    assert total == 6 and trainer.freeze_until_step == 3
    table_key = "model.inner.puzzle_emb.weights"
    start = {k: v.clone() for k, v in trainer.head.state_dict().items()}
    for _, batch, gbs in trainer.train_loader:
        trainer.train_step(batch, gbs)
        now = trainer.head.state_dict()
        trunk_same = all(torch.equal(now[k], start[k]) for k in now if k != table_key)
        if trainer.step <= 3:
            assert trunk_same and all(p.grad is None for p in trainer.head.parameters())
        else:
            assert not trunk_same
        if trainer.step == 3:
            assert not torch.equal(now[table_key], start[table_key])
    trainer.close()


def test_misspelt_or_mistyped_key_fails_naming_it(data):
    for override, name in (("lrr=1", "lrr"), ("arch.L_layer=2", "L_layer"), ("epochs=abc", "epochs")):
        with pytest.raises((HydraException, OmegaConfBaseException)) as info:
            compose_cfg([f"data_paths=[{data}]", override])
        assert name in str(info.value) + str(info.value.__cause__)
    with pytest.raises(ValueError, match="nonfinite_policy"):
        to_pretrain_config(compose_cfg([f"data_paths=[{data}]", "nonfinite_policy=maybe"]))


@pytest.mark.parametrize("plus", ["+", ""])
def test_reference_plus_keys_work_with_and_without_plus(plus):
    cfg = to_pretrain_config(compose_cfg(
        ["arch=trm", "data_paths=[data/arc1concept-aug-1000]", "arch.L_layers=2", "arch.H_cycles=3",
         "arch.L_cycles=4", f"{plus}run_name=my_run", f"{plus}project_name=proj", f"{plus}checkpoint_path=ck/x",
         f"{plus}load_checkpoint=ck/y", f"{plus}eval_save_outputs=[inputs,preds]", "ema=True"], name="cfg_pretrain"))
    assert (cfg.run_name, cfg.project_name, cfg.checkpoint_path, cfg.load_checkpoint) == ("my_run", "proj", "ck/x", "ck/y")
    assert cfg.eval_save_outputs == ["inputs", "preds"] and cfg.ema is True
    assert (cfg.arch.name, cfg.arch.L_layers, cfg.arch.H_cycles, cfg.arch.L_cycles) == ("trm", 2, 3, 4)
    assert cfg.arch.puzzle_emb_ndim == cfg.arch.hidden_size == 512
    assert cfg.data_paths == ["data/arc1concept-aug-1000"] and cfg.global_batch_size == 768


@pytest.mark.parametrize("preset", ["gpu_24gb", "gpu_16gb"])
def test_presets_override_the_reference_values(preset):
    values = yaml.safe_load((REPO / "config" / "preset" / f"{preset}.yaml").read_text())
    cfg = to_pretrain_config(compose_cfg([f"preset={preset}"], name="cfg_pretrain"))
    for key, value in values.items():
        assert getattr(cfg, key) == pytest.approx(value), key


def test_reference_command_form_runs_through_hydra_main(data, tmp_path):
    """`python pretrain.py arch=... data_paths="[...]" ... +run_name=my_run ema=True` (tiny sizes)."""
    cmd = [sys.executable, str(REPO / "pretrain.py"), "arch=trm_tiny", f"data_paths=[{data}]", *SMALL_ARCH,
           "+run_name=my_run", "ema=True", "global_batch_size=4", "epochs=2", "eval_interval=2",
           "arch.halt_max_steps=2", *QUIET]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "checkpoints" / "Tiny-ACT-torch" / "my_run"
    (step, path), = list_checkpoints(run)
    assert step == math.floor(2 * 3 * 2 / 4) and (path / "ema.safetensors").is_file()
    saved = yaml.safe_load((path / "config.yaml").read_text())
    assert saved["run_name"] == "my_run" and saved["ema"] is True and saved["arch"]["hidden_size"] == 32
    assert json.loads((path / "identifiers.json").read_text())[0] == "<blank>"


# ----- max_train_minutes: a wall-clock budget per launch ----------------------------------------------
def _fake_clock(monkeypatch, trainer_module):
    """training.trainer's clock made a counter that the test advances (one second per training step)."""
    import time as real_time
    import types

    clock = [0.0]
    monkeypatch.setattr(trainer_module, "time", types.SimpleNamespace(monotonic=lambda: clock[0], time=real_time.time))
    return clock


def _eval_rows(trainer: Trainer) -> int:
    return sum(len(batch["inputs"]) for _, batch, _ in trainer.evaluation.loader)  # padded batches, as run


@pytest.mark.parametrize("reserve", ["3", "null"])
def test_time_budget_stops_in_time_for_the_final_evaluation(data, tmp_path, monkeypatch, reserve):
    import training.trainer as trainer_module

    clock = _fake_clock(monkeypatch, trainer_module)
    trainer = Trainer(tiny_cfg(data, tmp_path / "run", "global_batch_size=4", "epochs=100", "eval_interval=100",
                               "arch.halt_max_steps=2", "min_eval_interval=5", f"max_train_minutes={10 / 60}",
                               f"final_eval_reserve_minutes={reserve if reserve == 'null' else int(reserve) / 60}"))
    train_step = trainer.train_step

    def one_second_step(*args):
        clock[0] += 1.0
        return train_step(*args)

    trainer.train_step = one_second_step
    if reserve == "null":  # predicted: 1 s/step x eval rows / 4 rows per step x 2 ACT steps x 0.5
        predicted = 1.0 * _eval_rows(trainer) / 4 * 2 * 0.5
        expected_step = max(2, math.ceil(10 - predicted))  # the first step (compilation) is not timed
    else:
        expected_step = 10 - 3
    trainer.train()
    trainer.close()
    assert trainer.stopped_by_time and trainer.step == expected_step < trainer.total_steps
    (step, path), = list_checkpoints(tmp_path / "run")  # the final checkpoint, once
    metrics = json.loads((path / "metrics.json").read_text())  # evaluated despite min_eval_interval=5
    assert step == expected_step and "all/exact_accuracy" in metrics


def test_time_budget_prediction_uses_the_last_measured_evaluation(data, tmp_path):
    trainer = Trainer(tiny_cfg(data, tmp_path / "run", "global_batch_size=4", "eval_global_batch_size=8",
                               "arch.halt_max_steps=3", "max_train_minutes=60"))
    trainer.step_seconds = 0.5
    # Eval rows padded to batches of 8, each row run for 3 ACT steps at half a step's cost per 4 rows.
    assert trainer.predicted_eval_seconds() == pytest.approx(0.5 * _eval_rows(trainer) / 4 * 3 * 0.5)
    trainer.evaluate()
    assert trainer.predicted_eval_seconds() == trainer.last_eval_seconds > 0
    trainer.train()  # an hour is plenty: the run ends by its epochs
    trainer.close()
    assert not trainer.stopped_by_time and trainer.step == trainer.total_steps
