"""A rank that hangs (SIGSTOP: alive but silent) in the middle of training, for the timeout test.

    OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 tests/hang_rank_worker.py DATA RUN_DIR TIMEOUT_MIN

Rank 1 stops itself before its second training step; rank 0 must give up after dist_timeout_minutes
and end with one line (exit code 1), as ``python pretrain.py`` would.
"""

from __future__ import annotations

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hydra import compose, initialize_config_dir  # noqa: E402

import pretrain  # noqa: E402
from training.trainer import Trainer  # noqa: E402
from utils.errors import exit_on_user_error  # noqa: E402

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config")


def main() -> None:
    data, run, timeout = sys.argv[1], sys.argv[2], sys.argv[3]
    # torchrun starts each rank in its own session: the test ends them by pid, the stopped one included.
    print(f"hang: rank {os.environ.get('RANK')} pid {os.getpid()}", file=sys.stderr, flush=True)
    train_step = Trainer.train_step

    def hang_on_rank_1(self, *args):
        if self.info.rank == 1 and self.step == 1:
            print("hang: rank 1 stops now", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)
        return train_step(self, *args)

    Trainer.train_step = hang_on_rank_1
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="cfg_tiny_cpu", overrides=[
            f"data_paths=[{data}]", f"checkpoint_path={run}", "arch.hidden_size=32", "arch.num_heads=2",
            "arch.L_layers=1", "arch.H_cycles=1", "arch.L_cycles=1", "arch.puzzle_emb_ndim=32",
            "arch.puzzle_emb_len=1", "evaluators=[]", "wandb_mode=disabled", "log_interval=0", "device=cpu",
            "global_batch_size=4", "max_steps=4", f"dist_timeout_minutes={timeout}"])
    with exit_on_user_error():
        pretrain.train(cfg)


if __name__ == "__main__":
    main()
