"""What a non-finite loss does, and which checkpoints hold "good" weights.

A checkpoint is good when its weights are finite and the first training loss computed with exactly
these weights (the next step's forward pass, on the next batch) was finite. That costs nothing: the
loss is computed anyway. Weights one update away from blowing up (finite, |w| ~ 1e10) fail the test
as soon as the next step sees them. Each checkpoint's ``health.json`` holds the verdict: "pending"
when written, "good" or "diverged" once the next loss is seen (the final checkpoint of a run stays
pending until a resumed run's first step decides).

``nonfinite_policy=skip`` skips a step whose loss is not finite; ``nonfinite_max_skips`` consecutive
non-finite losses stop the run (NonFiniteLossError, exit code 3) naming the newest good checkpoint.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from training.checkpoint import list_checkpoints
from utils.errors import UserError
from utils.io import atomic_write_json

HEALTH_FILE = "health.json"


class NonFiniteLossError(UserError):
    """The loss went non-finite and the policy says stop; the message names the newest good checkpoint."""

    exit_code = 3


def weights_health(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The health.json of a checkpoint being written: verdict pending until the next loss is seen."""
    floats = [v for v in state.values() if torch.is_floating_point(v) and v.numel()]
    largest = max((float(v.detach().abs().max()) for v in floats), default=0.0)
    return {"verdict": "pending", "weights_finite": math.isfinite(largest), "max_abs_weight": largest,
            "next_loss": None}


def read_health(path: Path) -> dict[str, Any]:
    try:
        health = json.loads((path / HEALTH_FILE).read_text())
        return health if isinstance(health, dict) else {}
    except (OSError, ValueError):
        return {}


def newest_good_checkpoint(run_dir: str | Path) -> Path | None:
    for _, path in reversed(list_checkpoints(run_dir)):
        if read_health(path).get("verdict") == "good":
            return path
    return None


def resume_veto(path: Path) -> str | None:
    """For checkpoint.choose_resume_checkpoint: weights known to diverge are not resumed from."""
    health = read_health(path)
    if health.get("verdict") == "diverged":
        return f"its weights gave a non-finite loss at the next step ({health.get('next_loss')})"
    return None


class DivergenceGuard:
    """Counts consecutive non-finite losses and records checkpoint verdicts (writes on the main rank)."""

    def __init__(self, run_dir: Path, policy: str, max_skips: int, is_main: bool):
        self.run_dir, self.policy, self.max_skips, self.is_main = run_dir, policy, max_skips, is_main
        self.consecutive = 0
        self.pending: tuple[int, Path] | None = None  # the checkpoint whose weights the next loss judges

    def checkpoint_written(self, step: int, path: Path) -> None:
        self.pending = (step, Path(path))

    def loss_seen(self, value: float, step: int) -> None:
        """``value``: the loss computed with the weights after ``step`` updates (same on every rank)."""
        finite = math.isfinite(value)
        self.consecutive = 0 if finite else self.consecutive + 1
        if self.pending is None or self.pending[0] != step:
            return
        path, self.pending = self.pending[1], None
        health = read_health(path)
        verdict = "good" if finite and health.get("weights_finite", True) else "diverged"
        if self.is_main and path.is_dir() and health.get("verdict") != verdict:
            atomic_write_json(path / HEALTH_FILE, {**health, "verdict": verdict, "next_loss": value}, indent=1)

    def may_skip(self) -> bool:
        return self.policy == "skip" and self.consecutive < self.max_skips

    def stop_message(self, value: float, step: int) -> str:
        why = (f"{self.consecutive} consecutive non-finite losses (nonfinite_max_skips={self.max_skips})"
               if self.policy == "skip" else "nonfinite_policy=stop")
        good = newest_good_checkpoint(self.run_dir)
        where = (f"the newest good checkpoint (finite weights, finite loss at the next step) is {good}"
                 if good is not None else f"no checkpoint in {self.run_dir} is known good")
        return f"non-finite loss ({value}) at step {step}; stopped: {why}; {where}"
