"""Evaluators by name: the trainer and evaluate.py build them here, never by import strings."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from evaluators.arc import ARCEvaluator

EVALUATOR_REGISTRY: dict[str, Callable[..., Any]] = {"arc": ARCEvaluator}
# Names the reference configs use ("module@Class").
EVALUATOR_ALIASES = {"arc@ARC": "arc"}


def build_evaluator(name: str, data_path: str | Sequence[str], eval_metadata: Any, identifiers: Sequence[str], **kwargs: Any):
    """Build evaluator ``name`` for the test split of ``data_path`` (one folder or several)."""
    key = EVALUATOR_ALIASES.get(name, name)
    if key not in EVALUATOR_REGISTRY:
        valid = sorted([*EVALUATOR_REGISTRY, *EVALUATOR_ALIASES])
        raise ValueError(f"unknown evaluator {name!r}; valid names: {', '.join(valid)}")
    return EVALUATOR_REGISTRY[key](data_path, eval_metadata, identifiers, **kwargs)
