"""Periodic evaluation: run the ACT head to completion on the test split and feed the evaluators.

Each test batch starts from a fresh carry and the head is called until every row has halted
(``halt_max_steps`` steps, or ``halt_max_steps_eval`` when set; earlier with arch.adaptive_halting).
Per-set token metrics (<set>/accuracy, <set>/exact_accuracy, ...) are summed over ranks and divided
by the number of labelled rows; the evaluators (ARC voting, pass@K, submission) collect their own
predictions across ranks. With ema=True the averaged weights are swapped in for the duration.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from dataset.puzzle_dataset import PuzzleDatasetConfig, create_dataloader
from training import state as st
from training.progress import EvalProgress
from utils.distributed import print0


class Evaluation:
    def __init__(self, loader, evaluators: list[Any], save_outputs: list[str], halt_max_steps: int | None,
                 run_dir: Path):
        self.loader = loader
        self.evaluators = evaluators
        self.save_outputs = list(save_outputs)
        self.halt_max_steps = halt_max_steps
        self.run_dir = run_dir
        self.last_saved: dict[str, Path] = {}

    @staticmethod
    def create(trainer, num_workers: int) -> "Evaluation | None":
        cfg, info = trainer.cfg, trainer.info
        paths = list(cfg.data_paths_test or cfg.data_paths)
        missing = [p for p in paths if not (Path(p) / "test" / "dataset.json").is_file()]
        if missing:
            print0(f"no test split in {', '.join(missing)}: evaluation is off")
            return None
        loader = create_dataloader(PuzzleDatasetConfig(
            seed=cfg.seed, dataset_paths=paths, global_batch_size=cfg.eval_global_batch_size or cfg.global_batch_size,
            test_set_mode=True, epochs_per_iter=1, rank=info.rank, num_replicas=info.world_size,
            max_eval_augmentations=cfg.eval_max_augmentations), "test", num_workers=num_workers)
        evaluators = []
        if cfg.evaluators:
            from evaluators.registry import build_evaluator

            for ev in cfg.evaluators:
                evaluators.append(build_evaluator(ev.name, paths if len(paths) > 1 else paths[0],
                                                  loader.dataset.metadata, loader.dataset.identifiers,
                                                  **ev.build_kwargs()))
        return Evaluation(loader, evaluators, cfg.eval_save_outputs, cfg.halt_max_steps_eval, trainer.run_dir)

    def files_to_keep(self) -> dict[str, Path]:
        """Evaluator outputs copied into the next checkpoint folder (submission.json, ...)."""
        return {name: path for name, path in self.last_saved.items() if path.is_file()}

    def run(self, trainer) -> dict[str, float] | None:
        head, arch = trainer.head, trainer.head.model.arch
        saved_halt = arch.halt_max_steps
        averaged = trainer.ema.applied_to(head) if trainer.ema is not None else nullcontext()
        head.eval()
        try:
            if self.halt_max_steps is not None:
                arch.halt_max_steps = self.halt_max_steps
            with averaged, torch.inference_mode():
                sums = self._loop(trainer)
        finally:
            arch.halt_max_steps = saved_halt
            head.train()

        metrics: dict[str, float] = {}
        names = sorted(sums)
        if names:
            keys = sorted(sums[names[0]])
            table = st.all_reduce_sum(torch.stack([torch.stack([sums[n][k] for k in keys]) for n in names])).cpu()
            for n, row in zip(names, table):
                values = dict(zip(keys, row.tolist()))
                count = max(values.pop("count"), 1.0)
                metrics.update({f"{n}/{k}": v / count for k, v in values.items()})

        self.last_saved = {}
        for evaluator in self.evaluators:
            save_dir = self.run_dir / f"evaluator_{type(evaluator).__name__}_step_{trainer.step:08d}"
            result = evaluator.result(str(save_dir))
            if result is not None:
                metrics.update(result)
            for name in ("submission.json",):
                self.last_saved[name] = save_dir / name
        return metrics if trainer.info.is_main else None

    def _loop(self, trainer) -> dict[str, dict[str, torch.Tensor]]:
        return_keys = set(self.save_outputs)
        for evaluator in self.evaluators:
            evaluator.begin_eval()
            return_keys.update(evaluator.required_outputs)
        sums: dict[str, dict[str, torch.Tensor]] = {}
        saved: dict[str, list[torch.Tensor]] = {}
        bar = EvalProgress(self.loader.dataset.test_batches(), desc=f"eval at step {trainer.step}")
        for set_name, batch, _ in self.loader:
            batch = {k: v.to(trainer.device, non_blocking=True) for k, v in batch.items()}
            carry = trainer.head.initial_carry(batch)
            act_steps = 0
            while True:
                carry, _, metrics, preds, all_finish = trainer.eval_model(carry=carry, batch=batch,
                                                                          return_keys=sorted(return_keys))
                act_steps += 1
                if bool(all_finish):
                    break
            bar.batch_done(act_steps)
            for evaluator in self.evaluators:
                evaluator.update_batch(batch, preds)
            for source in (batch, preds):
                for k, v in source.items():
                    if k in self.save_outputs:
                        saved.setdefault(k, []).append(v.cpu())
            wide = torch.float32 if trainer.device.type == "mps" else torch.float64  # MPS has no float64
            acc = sums.setdefault(set_name, {k: torch.zeros((), dtype=wide, device=trainer.device) for k in metrics})
            for k, v in metrics.items():
                acc[k] += v.to(acc[k].dtype)
        bar.close()
        if saved:
            path = self.run_dir / f"step_{trainer.step}_all_preds.{trainer.info.rank}"
            torch.save({k: torch.cat(v) for k, v in saved.items()}, path)
        return sums
