"""Per-dataset metadata files: ``dataset.json`` (field for field as the reference builders write it)
and ``test_puzzles.json`` (the original test tasks, read by evaluators and reports)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from utils.io import atomic_write_json


@dataclass
class PuzzleDatasetMetadata:
    pad_id: int
    ignore_label_id: int | None
    blank_identifier_id: int
    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int
    total_groups: int
    mean_puzzle_examples: float
    total_puzzles: int
    sets: list[str]

    @staticmethod
    def load(split_dir: str | os.PathLike) -> "PuzzleDatasetMetadata":
        path = Path(split_dir) / "dataset.json"
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no dataset metadata (is this a built dataset split?)") from None
        fields = {f.name for f in dataclasses.fields(PuzzleDatasetMetadata)}
        missing = fields - set(raw) - {"total_puzzles"}  # older reference builds lack total_puzzles
        if missing:
            raise ValueError(f"{path}: missing keys {sorted(missing)}")
        raw.setdefault("total_puzzles", 0)
        return PuzzleDatasetMetadata(**{k: v for k, v in raw.items() if k in fields})

    def save(self, split_dir: str | os.PathLike) -> None:
        atomic_write_json(Path(split_dir) / "dataset.json", dataclasses.asdict(self))


def load_test_puzzles(data_paths: str | Sequence[str]) -> dict[str, dict]:
    """Merge ``test_puzzles.json`` of one or more dataset folders (task order kept)."""
    paths = [data_paths] if isinstance(data_paths, (str, os.PathLike)) else list(data_paths)
    puzzles: dict[str, dict] = {}
    for path in paths:
        file = Path(path) / "test_puzzles.json"
        with open(file) as f:
            for task_id, task in json.load(f).items():
                if task_id in puzzles and puzzles[task_id] != task:
                    raise ValueError(f"{file}: task {task_id} differs from an earlier dataset's copy")
                puzzles[task_id] = task
    return puzzles
