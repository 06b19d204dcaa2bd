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

import hydra
from omegaconf import DictConfig

from training.config import register_configs, to_pretrain_config

register_configs()


def train(cfg: DictConfig) -> dict:
    """Build the trainer from a composed config and run it; returns the last metrics (tests call this)."""
    from training.trainer import Trainer
    from utils.distributed import collective_timeouts_explained

    pcfg = to_pretrain_config(cfg)
    with collective_timeouts_explained(pcfg.dist_timeout_minutes):
        trainer = Trainer(pcfg)
        try:
            result = trainer.train()
        except BaseException:
            trainer.close(failed=True)  # no goodbye barrier: the other ranks may be gone or hung
            raise
        trainer.close()
    return result


@hydra.main(config_path="config", config_name="cfg_pretrain", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from utils.errors import one_line_errors

    with one_line_errors():  # expected stops (bad file, full disk, divergence, hung rank): one line, exit code
        train(cfg)


if __name__ == "__main__":
    main()
