"""Evaluators by name: the trainer and evaluate.py build them here, never by import strings."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from evaluators.arc import ARCEvaluator
from evaluators.maze import MazeEvaluator
from evaluators.sudoku import SudokuEvaluator

EVALUATOR_REGISTRY: dict[str, Callable[..., Any]] = {"arc": ARCEvaluator, "sudoku": SudokuEvaluator,
                                                     "maze": MazeEvaluator}
# Names the reference configs use ("module@Class").
EVALUATOR_ALIASES = {"arc@ARC": "arc"}


def build_evaluator(name: str, data_path: str | Sequence[str], eval_metadata: Any, identifiers: Sequence[str], **kwargs: Any):
    """Build evaluator ``name`` for the test split of ``data_path`` (one folder or several)."""
    key = EVALUATOR_ALIASES.get(name, name)
    if key not in EVALUATOR_REGISTRY:
        valid = sorted([*EVALUATOR_REGISTRY, *EVALUATOR_ALIASES])
        raise ValueError(f"unknown evaluator {name!r}; valid names: {', '.join(valid)}")
    return EVALUATOR_REGISTRY[key](data_path, eval_metadata, identifiers, **kwargs)


def default_evaluator_name(data_path: str | Sequence[str], eval_metadata: Any) -> str:
    """The evaluator a dataset calls for when none is configured: ARC when it has test_puzzles.json,
    else Sudoku for 81-token rows over 11 tokens, Maze for other one-puzzle-per-example grids."""
    from pathlib import Path

    paths = [data_path] if isinstance(data_path, str) else list(data_path)
    if all((Path(p) / "test_puzzles.json").is_file() for p in paths):
        return "arc"
    if getattr(eval_metadata, "seq_len", None) == 81 and getattr(eval_metadata, "vocab_size", None) == 11:
        return "sudoku"
    if getattr(eval_metadata, "vocab_size", None) == 6:
        return "maze"
    return "arc"
