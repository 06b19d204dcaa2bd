"""Where metrics go: the console, ``metrics.jsonl`` in the run folder, and Weights & Biases.

Only the main rank logs; other ranks get a logger whose methods do nothing, so the loop never tests
ranks itself. wandb runs "online" when an API key is there (WANDB_API_KEY, or WANDB_MODE says so),
"offline" otherwise (sync later with ``wandb sync``), or not at all with ``wandb_mode=disabled``.
Metric names are the reference's: train/accuracy, train/exact_accuracy, train/q_halt_accuracy,
train/steps, train/lm_loss, train/q_halt_loss, train/lr, <set>/<metric> for evaluation, and the
evaluators' own names (ARC/pass@2, ...).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import tqdm

from training.progress import natural_key


def resolve_wandb_mode(mode: str) -> str:
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled"):
        return env
    if os.environ.get("WANDB_DISABLED", "").lower() in ("1", "true", "yes"):
        return "disabled"
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def format_metrics(metrics: dict[str, float], step: int) -> str:
    parts = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(metrics.items(), key=lambda kv: natural_key(kv[0]))]
    return f"step {step} | " + " | ".join(parts)


class NullLogger:
    """The logger of non-main ranks."""

    def log(self, metrics: dict[str, float], step: int, console: bool = False) -> None:
        pass

    def progress(self, step: int) -> None:
        pass

    def pause_clock(self) -> None:
        pass

    def resume_clock(self) -> None:
        pass

    def history_bytes(self) -> int | None:
        return None

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class MetricsLogger(NullLogger):
    def __init__(self, run_dir: str | Path, *, project: str, run_name: str, config: dict[str, Any],
                 wandb_mode: str = "auto", entity: str | None = None, total_steps: int = 0, initial_step: int = 0,
                 loggers: tuple[str, ...] | list[str] = ("console", "jsonl", "wandb"),
                 keep_history_bytes: int | None = None):
        self.run_dir = Path(run_dir)
        # ``loggers`` (config knob): console prints metrics at log_interval, jsonl writes metrics.jsonl, wandb
        # follows wandb_mode, tensorboard writes event files (training/tensorboard_logger.py).
        self.console = "console" in loggers
        self.jsonl = "jsonl" in loggers
        self.sinks = []
        if "tensorboard" in loggers:
            from training.tensorboard_logger import TensorBoardSink

            self.sinks.append(TensorBoardSink(self.run_dir))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl_path = self.run_dir / "metrics.jsonl"
        if keep_history_bytes is not None:  # a resume: drop what steps after the checkpoint appended
            self._truncate_history(keep_history_bytes)
        self.bar = tqdm.tqdm(total=total_steps, initial=initial_step, dynamic_ncols=True, desc="train")
        self.wandb_mode = resolve_wandb_mode(wandb_mode) if "wandb" in loggers else "disabled"
        self.wandb_run = None
        if self.wandb_mode != "disabled":
            self.wandb_run = self._start_wandb(project, run_name, entity, config)

    def _start_wandb(self, project: str, run_name: str, entity: str | None, config: dict[str, Any]):
        import wandb

        # One wandb run per run folder: a resumed training continues the same wandb run.
        id_file = self.run_dir / "wandb_run_id.txt"
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]  # wandb-style id
        id_file.write_text(run_id)
        return wandb.init(project=project, name=run_name, entity=entity, config=config, id=run_id, resume="allow",
                          mode=self.wandb_mode, dir=str(self.run_dir), settings=wandb.Settings(x_disable_stats=True))

    def log(self, metrics: dict[str, float], step: int, console: bool = False) -> None:
        metrics = {k: float(v) for k, v in metrics.items()}
        if self.jsonl:
            with open(self.jsonl_path, "a") as f:
                f.write(json.dumps({"step": step, "time": time.time(), **metrics}) + "\n")
        if self.wandb_run is not None:
            self.wandb_run.log(metrics, step=step)
        for sink in self.sinks:
            sink.log(metrics, step)
        if console and self.console:
            self.message(format_metrics(metrics, step))

    def progress(self, step: int) -> None:
        self.bar.update(step - self.bar.n)

    def pause_clock(self) -> None:
        """Before an evaluation: its time must not count in the training bar's rate and ETA."""
        self._paused_at = self.bar._time()

    def resume_clock(self) -> None:
        """After an evaluation: shift the bar's start by the pause, so its rate counts training time only."""
        paused_at = getattr(self, "_paused_at", None)
        if paused_at is not None:
            pause = self.bar._time() - paused_at
            self.bar.start_t += pause
            self.bar.last_print_t += pause
            self._paused_at = None

    def history_bytes(self) -> int | None:
        return self.jsonl_path.stat().st_size if self.jsonl_path.is_file() else 0

    def _truncate_history(self, size: int) -> None:
        if self.jsonl_path.is_file() and self.jsonl_path.stat().st_size > size:
            from utils.io import atomic_write_text

            with open(self.jsonl_path, "rb") as f:
                kept = f.read(size).decode("utf-8", errors="replace")
            atomic_write_text(self.jsonl_path, kept)

    def message(self, text: str) -> None:
        tqdm.tqdm.write(text)

    def close(self) -> None:
        self.bar.close()
        for sink in self.sinks:
            sink.close()
        self.sinks = []
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None
