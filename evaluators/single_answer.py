"""Shared part of the one-answer-per-puzzle evaluators (Sudoku, Maze): collect, gather, save.

Each test example is its own puzzle (no augmented copies, no voting), so an evaluator only keeps
every row's input, label and prediction as uint8 tokens, in the order the loader gives them.
Padding rows of the last batch (input all PAD) are dropped. With several ranks, rank r holds
slice r of every global batch, so interleaving the ranks' batches (batch k of rank 0, of rank
1, ...) gives back the test split's order; the main rank gathers and scores them, writes
``predictions.npz`` (tokens and per-puzzle results, no pickled objects) and ``report.html``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist

from utils.distributed import dist_info
from utils.io import atomic_path, atomic_write_text


class PuzzleRowsEvaluator:
    """Subclasses set ``name`` and ``seq_len``/``vocab_size`` checks, and implement ``score``/``render``."""

    name = "Puzzle"
    required_outputs = {"inputs", "labels", "preds"}

    def __init__(self, data_path: str | Sequence[str], eval_metadata: Any, identifiers: Sequence[str],
                 report: bool = True, report_title: str | None = None, report_max: int = 100, **_unused: Any):
        self.data_path = data_path
        self.metadata = eval_metadata
        self.report = report
        self.report_title = report_title or f"{self.name} evaluation"
        self.report_max = report_max
        self.pad_id = int(getattr(eval_metadata, "pad_id", 0) or 0)
        self.last_metrics: dict[str, float] | None = None
        self.last_rows: dict[str, np.ndarray] | None = None
        self.check_metadata(eval_metadata)
        self.begin_eval()

    def check_metadata(self, meta: Any) -> None:
        """Raise when the dataset is not this evaluator's kind (overridden)."""

    def begin_eval(self) -> None:
        self._batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def update_batch(self, batch: dict[str, torch.Tensor], preds: dict[str, torch.Tensor]) -> None:
        def tokens(t: torch.Tensor) -> np.ndarray:
            # clamp keeps the -100 labels of padding rows from wrapping; tokens fit uint8
            return t.detach().clamp(0, 255).to(torch.uint8).cpu().numpy().reshape(t.shape[0], -1)

        inputs = tokens(preds.get("inputs", batch["inputs"]))
        keep = (inputs != self.pad_id).any(axis=1)
        self._batches.append((inputs[keep], tokens(batch["labels"])[keep], tokens(preds["preds"])[keep]))

    def _gathered(self) -> dict[str, np.ndarray] | None:
        info = dist_info()
        parts = [self._batches]
        if info.world_size > 1:
            parts = [None] * info.world_size if info.is_main else None
            dist.gather_object(self._batches, parts, dst=0)
            if not info.is_main:
                return None
        ordered = [p[k] for k in range(max(len(p) for p in parts)) for p in parts if k < len(p)]  # batch k of each rank
        seq_len = int(getattr(self.metadata, "seq_len", 0) or 0)
        empty = np.zeros((0, seq_len), dtype=np.uint8)
        return {key: np.concatenate([b[i] for b in ordered]) if ordered else empty
                for i, key in enumerate(("inputs", "labels", "preds"))}

    def result(self, save_path: str | None = None) -> dict[str, float] | None:
        rows = self._gathered()
        if rows is None:
            return None
        per_puzzle, metrics = self.score(rows["inputs"], rows["labels"], rows["preds"])
        metrics[f"{self.name}/num_puzzles"] = float(len(rows["inputs"]))
        self.last_rows = {**rows, **per_puzzle}
        self.last_metrics = metrics
        if save_path is not None:
            self.save(save_path)
        return metrics

    def save(self, save_path: str) -> None:
        assert self.last_rows is not None, "call result() first"
        out = Path(save_path)
        with atomic_path(out / "predictions.npz") as tmp:
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **self.last_rows)
            tmp.write_bytes(buffer.getvalue())
        if self.report:
            atomic_write_text(out / "report.html", self.render(self.last_rows, self.last_metrics or {}))

    def shown_rows(self, exact: np.ndarray) -> np.ndarray:
        """Rows the report draws: the first failures, then a few right answers for comparison."""
        wrong = np.flatnonzero(~exact)[: self.report_max]
        right = np.flatnonzero(exact)[: max(0, min(10, self.report_max - len(wrong)))]
        return np.concatenate([wrong, right])

    # ----- subclass API -----
    def score(self, inputs: np.ndarray, labels: np.ndarray, preds: np.ndarray
              ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        raise NotImplementedError

    def render(self, rows: dict[str, np.ndarray], metrics: dict[str, float]) -> str:
        raise NotImplementedError


def mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else 0.0
