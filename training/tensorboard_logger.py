"""TensorBoard as a metrics sink (``loggers=[..., tensorboard]``): event files in ``<run>/tensorboard``.

The metric names are the ones metrics.jsonl and wandb get (train/lm_loss, ARC/pass@2, ...), written
as scalars at the optimizer step; ``tensorboard --logdir <run folder>`` shows them. A resumed run
appends a new event file to the same folder, which TensorBoard merges.
"""

from __future__ import annotations

from pathlib import Path


class TensorBoardSink:
    def __init__(self, run_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # the tensorboard package is a dependency; say so if it went missing
            raise ImportError("loggers=[...tensorboard] needs the tensorboard package: "
                              "pip install tensorboard") from exc
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, global_step=step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
