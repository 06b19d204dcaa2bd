"""The best evaluation's checkpoint, kept as ``<run>/best`` outside the newest-K rotation.

``checkpoint_best_metric=ARC/pass@2`` (any metric an evaluation logs) with ``checkpoint_best_mode``
max or min: after each checkpoint written just after an evaluation, if the metric beats the best so
far, ``<run>/best`` is replaced (atomically) by that checkpoint folder, metrics.json included. Files
are hard-linked where the file system allows (checkpoint files are never modified in place, so the
link is as good as a copy and a 2 GB puzzle table is not duplicated), copied otherwise. The best value
so far is read back from ``<run>/best/metrics.json``, so a resumed run keeps comparing against it.
``evaluate.py checkpoint=<run>/best`` and ``load_checkpoint=<run>/best`` read it like any checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Callable

from utils.io import atomic_directory

BEST_DIR = "best"


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


class BestCheckpoint:
    def __init__(self, run_dir: Path, metric: str | None, mode: str, message: Callable[[str], None]):
        self.folder = Path(run_dir) / BEST_DIR
        self.metric = metric
        self.mode = mode
        self.message = message
        self.best: float | None = self._read_best()
        self._missing_reported = False

    def _read_best(self) -> float | None:
        path = self.folder / "metrics.json"
        if self.metric is None or not path.is_file():
            return None
        value = json.loads(path.read_text()).get(self.metric)
        return float(value) if isinstance(value, (int, float)) else None

    def is_better(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def consider(self, checkpoint: Path, metrics: dict[str, float] | None) -> bool:
        """Keep ``checkpoint`` as the best if its evaluation's metric is the best so far."""
        if self.metric is None or not metrics:
            return False
        if self.metric not in metrics:
            if not self._missing_reported:
                self._missing_reported = True
                self.message(f"checkpoint_best_metric={self.metric!r} is not among the evaluation metrics "
                             f"({', '.join(sorted(metrics))}); no best checkpoint is kept")
            return False
        value = float(metrics[self.metric])
        if not self.is_better(value):
            return False
        with atomic_directory(self.folder) as tmp:
            shutil.copytree(checkpoint, tmp, dirs_exist_ok=True, copy_function=_link_or_copy)
            (tmp / "best.json").write_text(json.dumps({"metric": self.metric, "mode": self.mode, "value": value,
                                                       "checkpoint": checkpoint.name}, indent=1))
        self.best = value
        self.message(f"best checkpoint: {self.metric} {value:.4g} ({checkpoint.name}) -> {self.folder}")
        return True
