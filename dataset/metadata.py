"""Per-dataset metadata files: ``dataset.json`` (field for field as the reference builders write it)
and ``test_puzzles.json`` (the original test tasks, read by evaluators and reports)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from utils.errors import UserError
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
        if not path.exists():
            raise FileNotFoundError(f"{path}: no dataset metadata (is this a built dataset split?)")
        raw = read_json_file(path)
        if not isinstance(raw, dict):
            raise UserError(f"{path}: expected a JSON object of dataset metadata")
        fields = {f.name for f in dataclasses.fields(PuzzleDatasetMetadata)}
        missing = fields - set(raw) - {"total_puzzles"}  # older reference builds lack total_puzzles
        if missing:
            raise UserError(f"{path}: missing keys {sorted(missing)}")
        raw.setdefault("total_puzzles", 0)
        for key in ("pad_id", "blank_identifier_id", "vocab_size", "seq_len", "num_puzzle_identifiers",
                    "total_groups", "total_puzzles"):
            if not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] < 0:
                raise UserError(f"{path}: {key} must be a non-negative integer, got {raw[key]!r}")
        if not isinstance(raw["sets"], list) or not all(isinstance(x, str) for x in raw["sets"]):
            raise UserError(f"{path}: sets must be a list of names, got {raw['sets']!r}")
        return PuzzleDatasetMetadata(**{k: v for k, v in raw.items() if k in fields})

    def save(self, split_dir: str | os.PathLike) -> None:
        atomic_write_json(Path(split_dir) / "dataset.json", dataclasses.asdict(self))


def read_json_file(path: Path) -> object:
    """Parse a dataset's JSON file; a damaged one is a UserError naming it (one line)."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        raise
    except RecursionError:
        raise UserError(f"{path}: not valid JSON (nested too deeply to parse)") from None
    except (ValueError, OSError) as exc:  # JSONDecodeError, UnicodeDecodeError, a directory, I/O
        raise UserError(f"{path}: not valid JSON, truncated or damaged ({str(exc).splitlines()[0]})") from None


def load_test_puzzles(data_paths: str | Sequence[str]) -> dict[str, dict]:
    """Merge ``test_puzzles.json`` of one or more dataset folders (task order kept)."""
    paths = [data_paths] if isinstance(data_paths, (str, os.PathLike)) else list(data_paths)
    puzzles: dict[str, dict] = {}
    for path in paths:
        file = Path(path) / "test_puzzles.json"
        loaded = read_json_file(file)
        if not isinstance(loaded, dict):
            raise UserError(f"{file}: expected a JSON object {{task_id: task}}")
        for task_id, task in loaded.items():
            if task_id in puzzles and puzzles[task_id] != task:
                raise UserError(f"{file}: task {task_id} differs from an earlier dataset's copy")
            puzzles[task_id] = task
    return puzzles
