"""A tiny ARC-style dataset written straight to disk with numpy, independent of the builder.

``write_tiny_dataset`` produces the on-disk format of CONTRACTS.md (the TRM/HRM reference format):
every task is one group whose puzzles are the original plus ``augs_per_task`` augmented copies
(real dihedral + colour augmentations from ``dataset.arc_grid``, named as the references name them),
with a ``train`` split (the demonstration pairs) and a ``test`` split (the test pairs, with solutions).
It returns what it wrote, so a test can check a loader or evaluator against known contents.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from dataset.arc_grid import BLANK_IDENTIFIER, SEQ_LEN, VOCAB_SIZE, Augmentation, encode_grid

SPLITS = ("train", "test")


@dataclass
class SplitContents:
    inputs: np.ndarray  # uint8 [n_examples, 900]
    labels: np.ndarray  # uint8 [n_examples, 900]
    puzzle_identifiers: np.ndarray  # int32 [n_puzzles]
    puzzle_indices: np.ndarray  # int32 [n_puzzles + 1]
    group_indices: np.ndarray  # int32 [n_groups + 1]

    @property
    def num_examples(self) -> int:
        return len(self.inputs)

    def puzzle_of_example(self) -> np.ndarray:
        """Puzzle index (row of puzzle_identifiers) of every example."""
        return np.repeat(np.arange(len(self.puzzle_identifiers)), np.diff(self.puzzle_indices))

    def group_of_puzzle(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.group_indices) - 1), np.diff(self.group_indices))


@dataclass
class TinyDataset:
    path: Path
    identifiers: list[str]
    splits: dict[str, SplitContents] = field(default_factory=dict)
    test_puzzles: dict = field(default_factory=dict)


def _as_per_task(value: int | Sequence[int], num_tasks: int, what: str) -> list[int]:
    counts = [value] * num_tasks if isinstance(value, (int, np.integer)) else list(value)
    if len(counts) != num_tasks:
        raise ValueError(f"{what}: expected {num_tasks} counts, got {len(counts)}")
    return [int(c) for c in counts]


def _random_pairs(rng: np.random.Generator, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` pairs with pairwise distinct inputs (so rows of one puzzle are distinguishable)."""
    pairs, seen = [], set()
    while len(pairs) < count:
        h, w = rng.integers(2, 6, size=2)
        grid_in = rng.integers(0, 10, size=(h, w), dtype=np.uint8)
        key = (grid_in.shape, grid_in.tobytes())
        if key in seen:
            continue
        seen.add(key)
        grid_out = rng.integers(0, 10, size=rng.integers(1, 6, size=2), dtype=np.uint8)
        pairs.append((grid_in, grid_out))
    return pairs


def write_tiny_dataset(
    directory: str | Path,
    num_tasks: int = 4,
    augs_per_task: int = 2,
    examples_per_puzzle: int | Sequence[int] = 3,
    test_examples: int | Sequence[int] = 1,
    seed: int = 0,
    write_total_puzzles: bool = True,
    task_prefix: str = "task",
) -> TinyDataset:
    """Write a dataset with ``num_tasks`` groups of ``1 + augs_per_task`` puzzles under ``directory``.

    ``examples_per_puzzle`` / ``test_examples`` are the number of demonstration / test pairs of each
    task (one int for all tasks or one per task). ``write_total_puzzles=False`` writes the older
    reference ``dataset.json`` without that key.
    """
    directory = Path(directory)
    rng = np.random.default_rng(seed)
    demo_counts = _as_per_task(examples_per_puzzle, num_tasks, "examples_per_puzzle")
    test_counts = _as_per_task(test_examples, num_tasks, "test_examples")

    identifiers = [BLANK_IDENTIFIER]
    rows = {s: {"inputs": [], "labels": [], "ids": [], "p_idx": [0], "g_idx": [0]} for s in SPLITS}
    test_puzzles = {}
    for t in range(num_tasks):
        task_id = f"{task_prefix}{t:03d}"
        demos = _random_pairs(rng, demo_counts[t])
        tests = _random_pairs(rng, test_counts[t])
        test_puzzles[task_id] = {
            "train": [{"input": i.tolist(), "output": o.tolist()} for i, o in demos],
            "test": [{"input": i.tolist(), "output": o.tolist()} for i, o in tests],
        }
        augs = [Augmentation.identity()]
        names = {task_id}
        while len(augs) < 1 + augs_per_task:
            aug = Augmentation.random(rng)
            if aug.name(task_id) not in names:
                names.add(aug.name(task_id))
                augs.append(aug)
        for aug in augs:
            puzzle_id = len(identifiers)
            identifiers.append(aug.name(task_id))
            for split, pairs in (("train", demos), ("test", tests)):
                r = rows[split]
                for grid_in, grid_out in pairs:
                    r["inputs"].append(encode_grid(aug.apply(grid_in)))
                    r["labels"].append(encode_grid(aug.apply(grid_out)))
                r["ids"].append(puzzle_id)
                r["p_idx"].append(len(r["inputs"]))
        for split in SPLITS:
            rows[split]["g_idx"].append(len(rows[split]["ids"]))

    result = TinyDataset(path=directory, identifiers=identifiers, test_puzzles=test_puzzles)
    for split in SPLITS:
        r = rows[split]
        contents = SplitContents(
            inputs=np.stack(r["inputs"]).astype(np.uint8).reshape(-1, SEQ_LEN),
            labels=np.stack(r["labels"]).astype(np.uint8).reshape(-1, SEQ_LEN),
            puzzle_identifiers=np.array(r["ids"], dtype=np.int32),
            puzzle_indices=np.array(r["p_idx"], dtype=np.int32),
            group_indices=np.array(r["g_idx"], dtype=np.int32),
        )
        result.splits[split] = contents
        split_dir = directory / split
        split_dir.mkdir(parents=True, exist_ok=True)
        for name in ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices"):
            np.save(split_dir / f"all__{name}.npy", getattr(contents, name))
        n_puzzles = len(contents.puzzle_identifiers)
        meta = {
            "pad_id": 0,
            "ignore_label_id": 0,
            "blank_identifier_id": 0,
            "vocab_size": VOCAB_SIZE,
            "seq_len": SEQ_LEN,
            "num_puzzle_identifiers": len(identifiers),
            "total_groups": num_tasks,
            "mean_puzzle_examples": contents.num_examples / max(n_puzzles, 1),
            "sets": ["all"],
        }
        if write_total_puzzles:
            meta["total_puzzles"] = n_puzzles
        (split_dir / "dataset.json").write_text(json.dumps(meta))
    (directory / "identifiers.json").write_text(json.dumps(identifiers))
    (directory / "test_puzzles.json").write_text(json.dumps(test_puzzles))
    return result
