"""Two CPU processes under torchrun (gloo) train to the same weights as one process with the same
global batch: DDP averages the gradients, the puzzle table stays in sync through sign-SGD's all-gather.

Halting is made deterministic (halt_max_steps=1, no exploration) because exploration draws differ per
rank by design; everything else (data order, loss scaling, optimizers) must agree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.dataset_fixtures import write_tiny_dataset
from training.checkpoint import list_checkpoints, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--config-name", "cfg_tiny_cpu", "arch.hidden_size=32", "arch.num_heads=2", "arch.L_layers=1",
        "arch.H_cycles=1", "arch.L_cycles=1", "arch.puzzle_emb_ndim=32", "arch.puzzle_emb_len=1",
        "arch.halt_max_steps=1", "arch.halt_exploration_prob=0.0", "evaluators=[]", "wandb_mode=disabled",
        "global_batch_size=4", "epochs=4", "eval_interval=4", "lr=1e-3", "lr_warmup_steps=0"]


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--rdzv_backend=c10d",
            "--rdzv_endpoint=localhost:0", "--nnodes=1"]


def _run(launcher: list[str], data: Path, run: Path, steps: int = 3, extra: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = [*launcher, str(REPO / "pretrain.py"), *ARGS, f"max_steps={steps}", *extra, f"data_paths=[{data}]",
           f"+checkpoint_path={run}"]
    result = subprocess.run(cmd, cwd=run.parent, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    step, path = list_checkpoints(run)[-1]
    assert step == steps
    return load_checkpoint(path).model_state


def test_two_processes_match_one_process(tmp_path):
    data = tmp_path / "data"
    write_tiny_dataset(data, num_tasks=4, augs_per_task=1, examples_per_puzzle=2)
    single = _run([sys.executable], data, tmp_path / "single")
    double = _run(TORCHRUN, data, tmp_path / "double")
    assert single.keys() == double.keys()
    table = "model.inner.puzzle_emb.weights"
    assert not torch.equal(single[table], torch.zeros_like(single[table]))  # the table did train
    for key in single:
        torch.testing.assert_close(double[key], single[key], rtol=0, atol=1e-5, msg=key)
    # Metrics are reduced over ranks before logging: the same numbers as one process saw.
    logs = [[json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
            for name in ("single", "double")]
    losses = [[r["train/lm_loss"] for r in log if "train/lm_loss" in r] for log in logs]
    assert len(losses[0]) == 3 and losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_two_processes_resume_where_they_stopped(tmp_path):
    """Two ranks stop after 3 steps; the same command with a larger budget resumes (per-rank loader
    positions, RNG states and the ACT carry come back) and ends where 6 uninterrupted steps end."""
    data = tmp_path / "data"
    write_tiny_dataset(data, num_tasks=4, augs_per_task=1, examples_per_puzzle=2)
    restore = ("carry_on_resume=restore", "checkpoint_keep=4")
    straight = _run([sys.executable], data, tmp_path / "straight", steps=6, extra=restore)
    _run(TORCHRUN, data, tmp_path / "resumed", steps=3, extra=restore)
    resumed = _run(TORCHRUN, data, tmp_path / "resumed", steps=6, extra=restore)
    assert [step for step, _ in list_checkpoints(tmp_path / "resumed")] == [3, 6]
    # Each step trained exactly once across the two launches: the second one did resume.
    log = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "train/lm_loss" in r] == [1, 2, 3, 4, 5, 6]
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=1e-5, msg=key)


def test_two_processes_with_gradient_accumulation_match_one_process(tmp_path):
    """K=2 micro-batches of 1 row per rank (DDP syncs on the second only, puzzle-row gradients of both
    micro-batches are summed per id across ranks) = one process with its whole batch of 4."""
    data = tmp_path / "data"
    write_tiny_dataset(data, num_tasks=4, augs_per_task=1, examples_per_puzzle=2)
    single = _run([sys.executable], data, tmp_path / "single")
    double = _run(TORCHRUN, data, tmp_path / "double", extra=("gradient_accumulation_steps=2",))
    for key in single:
        torch.testing.assert_close(double[key], single[key], rtol=0, atol=1e-5, msg=key)
