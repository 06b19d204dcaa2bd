"""ARC evaluator: vote over augmented copies, score pass@k, write a Kaggle submission.

Each prediction (one augmented copy of one test input) is decoded, mapped back through its
copy's augmentation (read from the identifier name), and counted as a vote for that answer under
its (task, test input). The test input is found by un-augmenting the batch's input grid and
matching it against ``test_puzzles.json``. Answers rank by vote count, then by mean halting
confidence (sigmoid of ``q_halt_logits``).

Metrics (over tasks whose test outputs are known):
- ``ARC/pass@k`` (TRM / Kaggle): a test input scores 1 when its answer is among the top k; a task
  scores the fraction of its test inputs right; the figure is the mean over tasks.
- ``ARC/strict_pass@k`` (HRM notebook / SEAL): a task scores 1 only when all its test inputs are
  right within the top k; the figure is the fraction of tasks.
``ARC/pass@2`` is the headline figure and equals the Kaggle score of ``submission.json``.

Unlike the reference, every evaluation votes only over its own predictions (``begin_eval``
clears), and every task gets submission entries even without a usable prediction.

A copy whose output decodes to no grid at all (no colour cell in the top-left corner) is, as in
the reference, one more answer: the empty grid, voted like any other and written as ``[]`` in
the submission. ``ignore_empty_predictions=True`` drops those copies before voting instead, so
the next answer takes their place (better scores when many copies decode to nothing; not
comparable with published numbers; on in the Kaggle flow).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist

from dataset.arc_grid import ID_SEPARATOR, NUM_COLOURS, parse_identifier, validate_grid
from dataset.metadata import load_test_puzzles
from evaluators.report import write_report
from evaluators.submission import FALLBACK_GRID, write_submission
from evaluators.voting import EMPTY, VoteTable, canonicalise_tokens, canvas_to_grid, grid_to_canvas, row_hashes
from utils.distributed import dist_info
from utils.io import atomic_write_json

DEFAULT_PASS_KS = (1, 2, 5, 10, 100, 1000)
_UNPARSED, _UNKNOWN_TASK = -2, -1


@dataclass
class EvaluationResult:
    """What the last ``result`` found, kept on the main rank for reports and tests."""

    task_ids: list[str]
    # answers[task][test index] = [(grid, votes, mean confidence), ...] best first (top keep_top)
    answers: dict[str, list[list[tuple[np.ndarray, int, float]]]]
    # correct_rank[task][test index] = 0-based rank of the right answer, None if absent/unknown
    correct_rank: dict[str, list[int | None]]
    metrics: dict[str, float] = field(default_factory=dict)


class ARCEvaluator:
    required_outputs = {"inputs", "puzzle_identifiers", "q_halt_logits", "preds"}

    def __init__(
        self,
        data_path: str | Sequence[str],
        eval_metadata: Any,
        identifiers: Sequence[str],
        submission_K: int = 2,
        pass_Ks: Sequence[int] = DEFAULT_PASS_KS,
        keep_top: int = 10,
        flush_rows: int = 65536,
        report: bool = True,
        report_title: str = "ARC evaluation",
        ignore_empty_predictions: bool = False,
        **_unused: Any,  # reference knobs (aggregated_voting, ...) are accepted and ignored
    ):
        self.test_puzzles = load_test_puzzles(data_path)
        self.identifiers = list(identifiers)
        self.blank_id = int(getattr(eval_metadata, "blank_identifier_id", 0) or 0)
        self.submission_K = submission_K
        self.pass_Ks = tuple(pass_Ks)
        self.keep_top = max(keep_top, submission_K)
        self.flush_rows = flush_rows
        self.ignore_empty_predictions = bool(ignore_empty_predictions)
        self.report, self.report_title = report, report_title
        self.data_paths = [str(data_path)] if isinstance(data_path, (str, Path)) else [str(p) for p in data_path]
        self.task_ids = list(self.test_puzzles)
        self._build_test_tables()
        # Identifier -> (task index, dihedral id, inverse colour map), parsed on first sight.
        n_ids = len(self.identifiers)
        self._id_task = np.full(n_ids, _UNPARSED, dtype=np.int64)
        self._id_transform = np.zeros(n_ids, dtype=np.int64)
        self._id_inverse_lut = np.zeros((n_ids, NUM_COLOURS), dtype=np.uint8)
        self.last_result: EvaluationResult | None = None
        self.begin_eval()

    # ----- set-up -----
    def _build_test_tables(self) -> None:
        """One slot per (task, test input); slots with equal inputs in a task share a vote group."""
        task_index = {t: i for i, t in enumerate(self.task_ids)}
        self.slots: list[tuple[str, int]] = []
        slot_group, group_task, group_canvas, expected = [], [], [], []
        for task_id, task in self.test_puzzles.items():
            seen: dict[bytes, int] = {}
            for j, pair in enumerate(task["test"]):
                canvas = grid_to_canvas(validate_grid(pair["input"], f"{task_id} test {j} input"))
                if canvas.tobytes() not in seen:
                    seen[canvas.tobytes()] = len(group_task)
                    group_task.append(task_index[task_id])
                    group_canvas.append(canvas)
                slot_group.append(seen[canvas.tobytes()])
                out = pair.get("output")
                expected.append(None if out is None else grid_to_canvas(validate_grid(out, f"{task_id} test {j} output")))
                self.slots.append((task_id, j))
        self.slot_group = np.array(slot_group, dtype=np.int64)
        self.group_task = np.array(group_task, dtype=np.int64)
        self.group_canvas = np.stack(group_canvas) if group_canvas else np.zeros((0, 900), np.uint8)
        self.slot_expected = expected
        hashes = row_hashes(self.group_canvas, self.group_task) if group_task else np.zeros(0, np.uint64)
        self._group_hash_order = np.argsort(hashes, kind="stable")
        self._group_hash_sorted = hashes[self._group_hash_order]

    def _parse_new_identifiers(self, ids: np.ndarray) -> None:
        """Fill the per-identifier tables for ids not seen yet.

        Augmented names end in a fixed-width tail ``|||t<k>|||<10 digits>`` (dataset.arc_grid), so
        the tails of all new names are checked and decoded as one uint8 array; per name there is only
        a slice and a dict lookup (~400k names in well under a second). Names with a separator but
        another shape go through parse_identifier, which raises with the reason.
        """
        new = np.unique(ids[self._id_task[ids] == _UNPARSED])
        if len(new) == 0:
            return
        names = [self.identifiers[i] for i in new.tolist()]
        tail_len = 2 * len(ID_SEPARATOR) + 2 + NUM_COLOURS
        tails = np.frombuffer("".join(n[-tail_len:].rjust(tail_len) for n in names).encode("ascii", "replace"), np.uint8)
        tails = tails.reshape(len(names), tail_len)
        sep = np.frombuffer(ID_SEPARATOR.encode(), np.uint8)
        n_sep = len(sep)
        digits = tails[:, 2 * n_sep + 2 :].astype(np.int64) - ord("0")
        transform = tails[:, n_sep + 1].astype(np.int64) - ord("0")
        augmented = (
            (tails[:, :n_sep] == sep).all(axis=1)
            & (tails[:, n_sep] == ord("t"))
            & (transform >= 0) & (transform < 8)
            & (tails[:, n_sep + 2 : 2 * n_sep + 2] == sep).all(axis=1)
            & (np.sort(digits, axis=1) == np.arange(NUM_COLOURS)).all(axis=1)
        )
        for k in np.flatnonzero(~augmented):
            if ID_SEPARATOR in names[k]:
                parse_identifier(names[k])  # raises with the reason (or parses an unusual but valid name)
                raise ValueError(f"identifier {names[k]!r} is not of the form task{ID_SEPARATOR}t<0-7>{ID_SEPARATOR}<colour map>")
        task_index = {t: i for i, t in enumerate(self.task_ids)}
        self._id_task[new] = [task_index.get(n[:-tail_len] if a else n, _UNKNOWN_TASK) for n, a in zip(names, augmented.tolist())]
        self._id_transform[new] = np.where(augmented, transform, 0)
        maps = np.where(augmented[:, None], digits, np.arange(NUM_COLOURS))
        self._id_inverse_lut[new] = np.argsort(maps, axis=1)

    # ----- collection -----
    def begin_eval(self) -> None:
        self._buffer: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._buffered_rows = 0
        self._tables: list[VoteTable] = []
        self._counts = np.zeros(3, dtype=np.int64)  # predictions, unmatched inputs, empty outputs

    def update_batch(self, batch: dict[str, torch.Tensor], preds: dict[str, torch.Tensor]) -> None:
        def get(key: str) -> torch.Tensor:
            return preds[key] if key in preds else batch[key]

        ids = get("puzzle_identifiers").detach().to("cpu", torch.int64).numpy().reshape(-1)
        keep = ids != self.blank_id  # padding rows of the last test batch
        if not keep.any():
            return
        if ids.max() >= len(self.identifiers) or ids.min() < 0:
            raise ValueError(f"puzzle identifier {int(ids.max())} is outside the evaluator's {len(self.identifiers)} "
                             "identifiers: the batches come from another dataset than the identifiers given")
        # Tokens are 0..11: uint8 on the device first keeps the transfer small.
        inputs = get("inputs").detach().to(torch.uint8).cpu().numpy().reshape(len(ids), -1)
        outputs = preds["preds"].detach().to(torch.uint8).cpu().numpy().reshape(len(ids), -1)
        confidence = torch.sigmoid(preds["q_halt_logits"].detach().float()).cpu().numpy().reshape(-1)
        self._buffer.append((ids[keep], inputs[keep], outputs[keep], confidence[keep]))
        self._buffered_rows += int(keep.sum())
        if self._buffered_rows >= self.flush_rows:
            self._flush()

    def _flush(self) -> None:
        """Canonicalise buffered rows in one go (grouped numpy work wants many rows) and vote."""
        if not self._buffer:
            return
        ids, inputs, outputs, confidence = (np.concatenate(parts) for parts in zip(*self._buffer))
        self._buffer, self._buffered_rows = [], 0
        self._parse_new_identifiers(ids)
        tasks, transforms, luts = self._id_task[ids], self._id_transform[ids], self._id_inverse_lut[ids]
        groups = self._match_inputs(canonicalise_tokens(inputs, transforms, luts), tasks)
        answers = canonicalise_tokens(outputs, transforms, luts)
        has_answer = answers[:, 0] != EMPTY
        usable = (groups >= 0) & (has_answer | (not self.ignore_empty_predictions))
        self._counts += [len(ids), int((groups < 0).sum()), int(((groups >= 0) & ~has_answer).sum())]
        self._tables.append(VoteTable.from_predictions(groups[usable], answers[usable], confidence[usable]))

    def _match_inputs(self, canvases: np.ndarray, tasks: np.ndarray) -> np.ndarray:
        """Vote group of each un-augmented input (-1 when it is no test input of its task)."""
        if len(self._group_hash_sorted) == 0:
            return np.full(len(tasks), -1, dtype=np.int64)
        hashes = row_hashes(canvases, tasks)
        pos = np.minimum(np.searchsorted(self._group_hash_sorted, hashes), len(self._group_hash_sorted) - 1)
        group = self._group_hash_order[pos]
        ok = (self._group_hash_sorted[pos] == hashes) & (self.group_task[group] == tasks)
        for start in range(0, len(ok), 4096):  # byte check, in cache-sized pieces
            sl = slice(start, start + 4096)
            ok[sl] &= (self.group_canvas[group[sl]] == canvases[sl]).all(axis=1)
        return np.where(ok, group, -1)

    # ----- results -----
    def _gathered_table(self) -> tuple[VoteTable, np.ndarray] | None:
        self._flush()
        local = VoteTable.concatenate(self._tables)
        payload = (local.groups, local.canvases, local.votes, local.conf_sums, self._counts)
        info = dist_info()
        if info.world_size > 1:
            parts = [None] * info.world_size if info.is_main else None
            dist.gather_object(payload, parts, dst=0)
            if not info.is_main:
                return None
        else:
            parts = [payload]
        tables = [VoteTable(g, c, v, s) for g, c, v, s, _ in parts]
        return VoteTable.concatenate(tables), sum(p[4] for p in parts)

    def result(self, save_path: str | None = None) -> dict[str, float] | None:
        gathered = self._gathered_table()
        if gathered is None:
            return None
        table, counts = gathered
        res = self._score(table, counts)
        self.last_result = res
        if save_path is not None:
            self.save(save_path)
        return res.metrics

    def _score(self, table: VoteTable, counts: np.ndarray) -> EvaluationResult:
        order = table.ranked_order()
        groups = table.groups[order]
        starts = np.searchsorted(groups, np.arange(len(self.group_task) + 1))
        means = table.mean_confidence[order]
        answers: dict[str, list] = {t: [] for t in self.task_ids}
        ranks: dict[str, list] = {t: [] for t in self.task_ids}
        for (task_id, _), group, expected in zip(self.slots, self.slot_group, self.slot_expected):
            rows = order[starts[group] : starts[group + 1]]
            rank = None
            if expected is not None and len(rows):
                hit = np.flatnonzero((table.canvases[rows] == expected).all(axis=1))
                rank = int(hit[0]) if len(hit) else None
            top = rows[: self.keep_top]
            answers[task_id].append(
                [(canvas_to_grid(table.canvases[i]), int(table.votes[i]), float(m)) for i, m in zip(top, means[starts[group] :])]
            )
            ranks[task_id].append(rank)
        res = EvaluationResult(self.task_ids, answers, ranks)
        res.metrics = self._metrics(res, counts)
        return res

    def _metrics(self, res: EvaluationResult, counts: np.ndarray) -> dict[str, float]:
        scored = [t for t in self.task_ids if all(e is not None for (tt, _), e in zip(self.slots, self.slot_expected) if tt == t)]
        metrics: dict[str, float] = {
            "ARC/num_tasks": float(len(self.task_ids)),
            "ARC/num_scored_tasks": float(len(scored)),
            "ARC/num_predictions": float(counts[0]),
            "ARC/unmatched_predictions": float(counts[1]),
            "ARC/empty_predictions": float(counts[2]),
        }
        if not scored:
            return metrics
        for k in self.pass_Ks:
            per_input = {t: [r is not None and r < k for r in res.correct_rank[t]] for t in scored}
            metrics[f"ARC/pass@{k}"] = float(np.mean([np.mean(v) for v in per_input.values()]))
            metrics[f"ARC/strict_pass@{k}"] = float(np.mean([all(v) for v in per_input.values()]))
        return metrics

    def submission_attempts(self) -> dict[str, list[list[np.ndarray]]]:
        """Top ``submission_K`` grids per test input; FALLBACK_GRID where nothing was predicted."""
        assert self.last_result is not None, "call result() first"
        attempts = {}
        for task_id in self.task_ids:
            attempts[task_id] = [
                [g for g, _, _ in ranked[: self.submission_K]] or [np.array(FALLBACK_GRID)]
                for ranked in self.last_result.answers[task_id]
            ]
        return attempts

    def answers_json(self) -> dict[str, list[dict]]:
        """Ranked answers per test input, JSON-ready (answers.json; what the report reads)."""
        res = self.last_result
        assert res is not None, "call result() first"
        return {
            task_id: [
                {
                    "correct_rank": rank,
                    "answers": [{"grid": g.tolist(), "votes": v, "confidence": c} for g, v, c in ranked],
                }
                for ranked, rank in zip(res.answers[task_id], res.correct_rank[task_id])
            ]
            for task_id in res.task_ids
        }

    def save(self, save_path: str) -> None:
        """submission.json (Kaggle format), answers.json (ranked answers) and report.html (grids to look at)."""
        write_submission(Path(save_path) / "submission.json", self.submission_attempts(), self.submission_K)
        answers = self.answers_json()
        atomic_write_json(Path(save_path) / "answers.json", answers)
        if self.report:
            # The title names what was evaluated (the caller's words, else the output folder) and on what.
            what = self.report_title if self.report_title != "ARC evaluation" else f"ARC evaluation of {save_path}"
            write_report(Path(save_path) / "report.html", self.test_puzzles, answers, self.last_result.metrics,
                         title=f"{what} on {', '.join(self.data_paths)}")


__all__ = ["ARCEvaluator", "EvaluationResult", "DEFAULT_PASS_KS"]
