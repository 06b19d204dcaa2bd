"""Train a recursive reasoning model (TRM, HRM, transformer baseline) on a built ARC dataset.

One process (CPU, one GPU or Apple MPS):
    python pretrain.py arch=trm data_paths="[data/arc1concept-aug-1000]" arch.L_layers=2 \
        arch.H_cycles=3 arch.L_cycles=4 +run_name=my_run ema=True
Several GPUs on one machine (the reference command, unchanged):
    torchrun --nproc-per-node 4 --rdzv_backend=c10d --rdzv_endpoint=localhost:0 --nnodes=1 pretrain.py ...
Tiny CPU run (minutes, on the demo dataset built by `python demo.py`):
    python pretrain.py --config-name cfg_tiny_cpu

Every key and its type: training/config.py. The loop: training/trainer.py. Re-running a command with
the same run_name (or checkpoint_path) resumes from its newest complete checkpoint.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

import hydra
from omegaconf import DictConfig

from training.config import check_world_size, register_configs, to_pretrain_config
from utils.errors import exit_on_user_error

register_configs()


def train(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict:
    """Build the trainer from a composed config and run it; returns the last metrics (tests call this).

    ``overrides``: the command line's ``key=value`` items; the arch keys among them win over a
    ``load_checkpoint``'s architecture (training/checkpoint_config.py).
    """
    config = to_pretrain_config(cfg)
    check_world_size(config, int(os.environ.get("WORLD_SIZE", 1)))  # before any process group or data
    from training.checkpoint_config import cli_arch_keys
    from training.trainer import Trainer  # after the checks: torch takes seconds to import
    from utils.distributed import collective_timeouts_explained

    with collective_timeouts_explained(config.dist_timeout_minutes):
        trainer = Trainer(config, arch_set_on_command_line=cli_arch_keys(overrides))
        try:
            metrics = trainer.train()
        except BaseException:
            trainer.close(failed=True)  # no goodbye barrier: the other ranks may be gone or hung
            raise
        trainer.close()
    if trainer.info.is_main:
        print(run_outputs_line(trainer.run_dir), flush=True)
    return metrics


def run_outputs_line(run_dir) -> str:
    """Where a run's newest checkpoint, submission.json and report.html are."""
    from training.checkpoint import find_latest_checkpoint
    from training.progress import newest_evaluation_files, where_outputs_are

    return where_outputs_are(find_latest_checkpoint(run_dir), newest_evaluation_files(run_dir))


@hydra.main(config_path="config", config_name="cfg_pretrain", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    with exit_on_user_error():  # expected stops (bad key, value or file, full disk, divergence, hung rank): one line
        train(cfg, HydraConfig.get().overrides.task)


if __name__ == "__main__":
    from training.cli import precheck_command_line
    from training.config import PretrainConfig

    with exit_on_user_error():
        precheck_command_line(sys.argv[1:], Path(__file__).parent / "config", "cfg_pretrain", PretrainConfig)
    main()
