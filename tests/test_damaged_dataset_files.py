"""Damaged dataset files name themselves in one line (and exit code 2 from the entry points).

A truncated .npy shard, a corrupt dataset.json / identifiers.json / test_puzzles.json: the loader
and the evaluator stop with ``<file>: <reason>``, in the main process, before any training.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataset.metadata import load_test_puzzles
from dataset.puzzle_dataset import PuzzleDatasetConfig, create_dataloader
from tests.dataset_fixtures import write_tiny_dataset
from utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def _loader(path: Path, split: str = "train"):
    return create_dataloader(PuzzleDatasetConfig(seed=0, dataset_paths=[str(path)], global_batch_size=4,
                                                 test_set_mode=split == "test", epochs_per_iter=1), split)


def _truncate(file: Path, keep: int) -> None:
    file.write_bytes(file.read_bytes()[:keep])


# (file under the dataset folder, how to damage it, words of the reason)
DAMAGE = {
    "truncated inputs": ("train/all__inputs.npy", lambda f: _truncate(f, f.stat().st_size - 500), "truncated"),
    "header only": ("train/all__labels.npy", lambda f: _truncate(f, 40), "truncated"),
    "index file cut": ("train/all__puzzle_indices.npy", lambda f: _truncate(f, f.stat().st_size - 3), "truncated"),
    "dataset.json cut": ("train/dataset.json", lambda f: _truncate(f, f.stat().st_size // 2), "not valid JSON"),
    "dataset.json wrong type": ("train/dataset.json", lambda f: f.write_text(
        f.read_text().replace('"seq_len": 900', '"seq_len": "900"')), "seq_len must be"),
    "identifiers.json cut": ("identifiers.json", lambda f: _truncate(f, 7), "not valid JSON"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_file_is_named_in_one_line(tmp_path, case):
    write_tiny_dataset(tmp_path / "d", num_tasks=3, augs_per_task=1)
    name, damage, reason = DAMAGE[case]
    file = tmp_path / "d" / name
    damage(file)
    with pytest.raises(UserError) as info:
        loader = _loader(tmp_path / "d")
        loader.dataset.identifiers  # noqa: B018 - read like the trainer does
    message = str(info.value)
    assert message.startswith(f"{file}: ") and reason in message and "\n" not in message, message


def test_corrupt_test_puzzles_json_is_named(tmp_path):
    (tmp_path / "test_puzzles.json").write_text('{"a": {"train": [')
    with pytest.raises(UserError, match=rf"^{tmp_path / 'test_puzzles.json'}: not valid JSON"):
        load_test_puzzles(str(tmp_path))


def test_pretrain_on_a_truncated_shard_exits_2_naming_it(tmp_path):
    write_tiny_dataset(tmp_path / "d", num_tasks=3, augs_per_task=1)
    shard = tmp_path / "d" / "train" / "all__inputs.npy"
    _truncate(shard, shard.stat().st_size - 900)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    result = subprocess.run(
        [sys.executable, str(REPO / "pretrain.py"), "--config-name", "cfg_tiny_cpu", f"data_paths=[{tmp_path / 'd'}]",
         f"checkpoint_path={tmp_path / 'run'}", "global_batch_size=4"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {shard}: not a readable .npy array"), result.stderr
    assert "Traceback" not in result.stderr
