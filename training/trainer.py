"""The one training loop for every architecture: Trainer(PretrainConfig).train().

Per optimizer step: one ACT step of the loss head on a batch (the ACT carry keeps unfinished
examples across batches), loss / global batch size backward, gradients averaged by DDP (or FSDP2),
AdamATan2 (or AdamW, `optimizer=`) on the weights and sign-SGD on the puzzle-embedding rows (synchronised across ranks by the
optimizer's all-gather), learning rates from one warmup + cosine schedule, EMA update. Every
``eval_interval`` epochs: evaluation (EMA weights when ema=True) through the configured evaluators,
then a checkpoint. A re-run of the same command resumes from the newest complete checkpoint.

The optional everyday features sit in their own modules behind small hooks here: micro-batches of
gradient_accumulation_steps (training/accumulation.py), gradient norm / clipping / monitor
(grad_monitor.py), fp16 loss scaling (precision.py), the depth curriculum (curriculum.py) and the best
checkpoint (best_checkpoint.py).

Each periodic duty asks for itself: ``_checkpoint_due``, ``_eval_due``; the set-up lives in
``__init__`` in the order the pieces depend on each other.

With ``max_train_minutes`` the loop also watches the clock: after each step it predicts the final
evaluation's duration (measured step time x evaluation rows x ACT steps, or the last measured
evaluation) and stops as at the end of a run once the time left only covers that evaluation.
"""

from __future__ import annotations

import copy
import inspect
import math
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Collection

import torch
from omegaconf import OmegaConf

from dataset.puzzle_dataset import PuzzleDatasetConfig, create_dataloader
from models.lora import maybe_apply_lora, stays_trainable
from models.registry import build_model, count_parameters
from models.sparse_embedding import SparseSignSGD
from training import state as st
from training.accumulation import Accumulator
from training.best_checkpoint import BestCheckpoint
from training.checkpoint import LoadedCheckpoint, choose_resume_checkpoint, load_checkpoint, save_checkpoint
from training.checkpoint_config import arch_for_post_training
from training.config import PretrainConfig
from training.curriculum import Curriculum
from training.divergence import DivergenceGuard, NonFiniteLossError, resume_veto, weights_health
from training.ema import EMA
from training.evaluation import Evaluation
from training.grad_monitor import GradMonitor
from training.metrics_logger import MetricsLogger, NullLogger, format_metrics
from training.optimizers import build_dense_optimizer
from training.precision import Precision, resolve_precision
from training.progress import startup_line
from training.resume import gather_train_state, restore_train_state
from training.schedule import lr_at_step
from utils.distributed import (barrier, broadcast_object, destroy_distributed, init_distributed, print0,
                               select_device)
from utils.io import clean_interrupted

# An evaluation batch runs halt_max_steps forward passes; one costs about half a training step on as many rows.
EVAL_FORWARD_COST = 0.5


def decide_run_names(cfg: PretrainConfig) -> tuple[str, str, str]:
    """(project_name, run_name, run folder); decided on rank 0 and broadcast."""
    project = cfg.project_name or f"{os.path.basename(os.path.normpath(cfg.data_paths[0])).capitalize()}-ACT-torch"
    run_name = cfg.run_name or f"{cfg.arch.name.split('@')[-1]}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir = cfg.checkpoint_path or os.path.join("checkpoints", project, run_name)
    return project, run_name, run_dir


class Trainer:
    def __init__(self, cfg: PretrainConfig, arch_set_on_command_line: Collection[str] = ()):
        self.started = time.monotonic()  # the clock of max_train_minutes
        self.cfg = cfg = copy.deepcopy(cfg)
        if cfg.distributed == "fsdp2":
            # Needs the optimizers built after sharding and full-state checkpoint gathering; not done yet.
            raise NotImplementedError("distributed=fsdp2 is not implemented yet; use distributed=ddp "
                                      "(TRM's 7M weights fit every GPU, so DDP loses nothing here)")
        self.device = select_device(cfg.device)
        self.info = init_distributed(self.device, timeout_minutes=cfg.dist_timeout_minutes)
        rank, world = self.info.rank, self.info.world_size
        if self.device.type == "cuda":
            torch.set_float32_matmul_precision("high")
        if cfg.load_checkpoint:  # post-training: the checkpoint's architecture, command-line arch keys win
            cfg.arch, taken = arch_for_post_training(cfg.arch, cfg.load_checkpoint, arch_set_on_command_line)
            print0(taken)

        # Names, run folder and whether to resume: one decision, shared by all ranks.
        decision, latest = None, None
        if self.info.is_main:
            project, run_name, run_dir = decide_run_names(cfg)
            for prefix in ("step_", "best."):  # left by a process killed mid-checkpoint or mid-copy of best/
                for note in clean_interrupted(run_dir, prefix):
                    print0(note)
            latest = choose_resume_checkpoint(run_dir, print0, usable=resume_veto) if cfg.resume else None
            decision = (project, run_name, run_dir, str(latest.path) if latest else None)
        cfg.project_name, cfg.run_name, cfg.checkpoint_path, resume_from = broadcast_object(decision)
        self.run_dir = Path(cfg.checkpoint_path)

        # Data. One loader pass = eval_interval epochs (the reference's "iteration").
        self.epochs_per_iter = cfg.eval_interval or cfg.epochs
        self.total_iters = cfg.epochs // self.epochs_per_iter
        workers = self._loader_workers()
        self.train_loader = create_dataloader(PuzzleDatasetConfig(
            seed=cfg.seed, dataset_paths=list(cfg.data_paths), global_batch_size=cfg.global_batch_size,
            test_set_mode=False, epochs_per_iter=self.epochs_per_iter, rank=rank, num_replicas=world),
            "train", num_workers=workers)
        meta = self.train_loader.dataset.metadata
        self.identifiers = self.train_loader.dataset.identifiers
        # Counted exactly from each pass's plan. The reference estimates epochs x groups x mean examples /
        # batch, which overshoots by the incomplete batches the loader drops: its progress bar and cosine
        # schedule never reach their end.
        self.total_steps = sum(self.train_loader.dataset.batches_in_pass(p) for p in range(self.total_iters))
        self.step_budget = min(self.total_steps, cfg.max_steps) if cfg.max_steps is not None else self.total_steps

        # Model: same seed on every rank, then rank 0's weights broadcast to be sure.
        st.seed_everything(cfg.seed)
        arch = copy.deepcopy(cfg.arch)
        arch.forward_dtype, use_scaler = resolve_precision(cfg.autocast, self.device, arch.forward_dtype)
        self.bf16 = arch.forward_dtype == "bfloat16"
        micro_batch = cfg.global_batch_size // (world * cfg.gradient_accumulation_steps)
        self.head = build_model(arch, batch_size=micro_batch, seq_len=meta.seq_len,
                                vocab_size=meta.vocab_size, num_puzzle_identifiers=meta.num_puzzle_identifiers)
        if cfg.load_checkpoint and not resume_from:  # before this run's adapters exist: saved ones merge
            for note in st.load_initial_weights(self.head, cfg.load_checkpoint, cfg.puzzle_emb_reinit_strategy,
                                                identifiers=self.identifiers):
                print0(note)
        self.lora_layers = maybe_apply_lora(self.head, arch)  # fresh adapters on top of the loaded weights
        self.head.to(self.device)
        st.broadcast_module_state(self.head)
        st.seed_everything(cfg.seed + rank)  # halting exploration differs per rank, as the reference

        # Optimizers: sign-SGD on the puzzle table, AdamATan2 on the weights (unless frozen throughout).
        self.puzzle_emb = self.head.model.puzzle_emb
        if cfg.freeze_weights and self.puzzle_emb is None:
            raise ValueError("freeze_weights=True but the model has no puzzle embedding (arch.puzzle_emb_ndim=0)")
        self.freeze_until_step = 0
        if cfg.freeze_weights:
            frozen_epochs = cfg.epochs if cfg.freeze_weights_epochs is None else min(cfg.freeze_weights_epochs, cfg.epochs)
            self.freeze_until_step = math.ceil(self.total_steps * frozen_epochs / cfg.epochs)
        self.optimizers: list[torch.optim.Optimizer] = []
        self.base_lrs: list[float] = []
        if self.puzzle_emb is not None:
            self.optimizers.append(SparseSignSGD(self.puzzle_emb.buffers(), lr=0.0, weight_decay=cfg.puzzle_emb_weight_decay))
            self.base_lrs.append(cfg.puzzle_emb_lr)
        if not cfg.freeze_weights or self.freeze_until_step < self.total_steps:
            self.optimizers.append(build_dense_optimizer(
                cfg.optimizer, [p for n, p in self.head.named_parameters() if self._trains(n)],
                betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay, eps=cfg.adamw_eps))
            self.base_lrs.append(cfg.lr)
        self.ema = EMA(self.head, cfg.ema_rate) if cfg.ema else None
        self.precision = Precision(self.device, use_scaler)
        self.accumulator = Accumulator(cfg.gradient_accumulation_steps)
        self.grad_monitor = GradMonitor(self.head.named_parameters, cfg.grad_monitor_patience, cfg.grad_clip_norm,
                                        warn=lambda text: self.logger.message(text))
        self.curriculum = Curriculum(cfg.arch_schedule, arch, self.total_steps)
        self.ddp_model: torch.nn.Module | None = None

        # Loop state.
        self.step = 0
        self.iteration = 0  # loader passes whose evaluation has run
        self.carry: Any = None  # one ACT carry; a list of them with gradient_accumulation_steps > 1
        self.nonfinite_skipped = 0
        self.stopped_by_time = False
        self.step_seconds: float | None = None  # smoothed duration of a training step in this process
        self.last_eval_seconds: float | None = None
        self.history_bytes: int | None = 0 if cfg.resume else None  # metrics.jsonl kept (None: all)
        self.saved_step: int | None = None  # the newest checkpoint this process wrote or resumed from
        self.evaluated_since_save = False  # known on every rank (metrics reach the main rank only)
        self.guard = DivergenceGuard(self.run_dir, cfg.nonfinite_policy, cfg.nonfinite_max_skips, self.info.is_main)
        if resume_from:
            self._resume(resume_from, latest)
        del latest  # the checkpoint read while choosing it: its tensors are in the model now

        self.trunk_trainable: bool | None = None
        self._configure_trunk(trainable=self.step >= self.freeze_until_step)
        self.evaluation = Evaluation.create(self, workers)

        self.best = BestCheckpoint(self.run_dir, cfg.checkpoint_best_metric, cfg.checkpoint_best_mode,
                                   message=lambda text: self.logger.message(text))
        self.hub_pusher = None
        if cfg.hub_repo_id and self.info.is_main:
            from training.hub import HubPusher

            self.hub_pusher = HubPusher(cfg.hub_repo_id, private=cfg.hub_private, exclude=tuple(cfg.hub_exclude))
        self.logger: NullLogger = NullLogger()
        print0(startup_line(self, resume_from))  # before the logger draws its bar: a line of its own
        self.config_yaml = OmegaConf.to_yaml(OmegaConf.structured(cfg))
        if self.info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(self.config_yaml)
            self.logger = MetricsLogger(self.run_dir, project=cfg.project_name, run_name=cfg.run_name,
                                        config=OmegaConf.to_container(OmegaConf.structured(cfg)),
                                        wandb_mode=cfg.wandb_mode, entity=cfg.entity,
                                        total_steps=self.step_budget, initial_step=self.step,
                                        loggers=list(cfg.loggers), keep_history_bytes=self.history_bytes)
            if not resume_from:  # already in the history of a resumed run
                self.logger.log({"num_params": count_parameters(self.head)}, step=self.step)

    # ----- set-up helpers ------------------------------------------------------------------------
    def _loader_workers(self) -> int:
        return 1 if self.device.type == "cuda" else 0  # on small CPUs a worker process competes with compute

    def _compile_enabled(self) -> bool:
        if "DISABLE_COMPILE" in os.environ:
            return False
        return self.cfg.compile if self.cfg.compile is not None else self.device.type == "cuda"

    def _configure_trunk(self, trainable: bool) -> None:
        """(Un)freeze the weights and rebuild the wrappers that depend on which weights train."""
        if trainable == self.trunk_trainable:
            return
        self.trunk_trainable = trainable
        for name, p in self.head.named_parameters():
            p.requires_grad_(trainable and self._trains(name))
        model: torch.nn.Module = self.head
        self.ddp_model = None
        if trainable and self.info.world_size > 1:
            model = self.ddp_model = self._wrap_distributed(model)
        self.train_model = torch.compile(model) if self._compile_enabled() else model
        self.eval_model = torch.compile(self.head) if self._compile_enabled() else self.head

    def _trains(self, param_name: str) -> bool:
        """Under LoRA only the adapters (and arch.lora_trainable matches) train; otherwise everything."""
        return not self.lora_layers or stays_trainable(param_name, self.cfg.arch.lora_trainable)

    def _wrap_distributed(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        # Buffers are not re-broadcast each step: the puzzle table is kept equal by its optimizer. Nor at
        # wrapping: broadcast_module_state made every rank equal already (torch >= 2.13 names it so;
        # its broadcast_buffers is deprecated there and warns).
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters:
            return DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False, init_sync=False)
        return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)

    # ----- training ------------------------------------------------------------------------------
    def _finished(self) -> bool:
        return self.iteration >= self.total_iters or self.step >= self.step_budget or self.stopped_by_time

    def train(self) -> dict[str, float]:
        cfg = self.cfg
        last: dict[str, float] = {}
        timed_steps = 0
        while not self._finished():
            if self.train_loader.state_dict()["pass"] == self.iteration:  # else: pass done, its eval pending
                self.head.train()
                for _set_name, batch, global_batch_size in self.train_loader:
                    started = time.monotonic()
                    last = self.train_step(batch, global_batch_size) or last
                    timed_steps += 1
                    if timed_steps > 1:  # the first step of a process compiles; then a smoothed average
                        took = time.monotonic() - started
                        self.step_seconds = took if self.step_seconds is None else 0.8 * self.step_seconds + 0.2 * took
                    if self.step >= self.step_budget or self._out_of_time():
                        break  # the final checkpoint below covers this step
                    if self._checkpoint_due_by_steps():
                        self.save()
            finished_pass = self.train_loader.state_dict()["pass"] > self.iteration
            if finished_pass:
                self.iteration += 1
            final = self._finished()
            eval_metrics = None
            # A run cut short by its time budget evaluates even before min_eval_interval: its last chance.
            if (finished_pass or final) and (self.iteration - 1 >= cfg.min_eval_interval or self.stopped_by_time):
                eval_metrics = self.evaluate()
                last.update(eval_metrics or {})
            if final or (finished_pass and cfg.checkpoint_every_eval):
                self.save(eval_metrics)
        if self.stopped_by_time:
            self.logger.message(f"max_train_minutes={round(cfg.max_train_minutes, 2):g}: stopped at step {self.step} "
                                f"of {self.step_budget} after {time.monotonic() - self.started:.0f} s")
        self.logger.progress(self.step)
        return last

    # ----- time budget ---------------------------------------------------------------------------
    def _out_of_time(self) -> bool:
        """Whether the time left only covers the final evaluation; every rank gets the same answer."""
        if self.cfg.max_train_minutes is None:
            return False
        late = time.monotonic() + self.predicted_eval_seconds() >= self.started + 60.0 * self.cfg.max_train_minutes
        votes = st.all_reduce_sum(torch.tensor([float(late)], device=self.device))  # one late rank stops all
        self.stopped_by_time = bool(votes.item() > 0)
        return self.stopped_by_time

    def predicted_eval_seconds(self) -> float:
        cfg = self.cfg
        if cfg.final_eval_reserve_minutes is not None:
            return 60.0 * cfg.final_eval_reserve_minutes
        if self.evaluation is None:
            return 0.0
        if self.last_eval_seconds is not None:
            return self.last_eval_seconds
        meta = self.evaluation.loader.dataset.metadata
        puzzles_per_group = meta.total_puzzles / max(meta.total_groups, 1)
        if cfg.eval_max_augmentations is not None:
            puzzles_per_group = min(puzzles_per_group, cfg.eval_max_augmentations)
        eval_batch = cfg.eval_global_batch_size or cfg.global_batch_size
        rows = math.ceil(meta.total_groups * puzzles_per_group * meta.mean_puzzle_examples / eval_batch) * eval_batch
        halt = cfg.halt_max_steps_eval or cfg.arch.halt_max_steps
        return (self.step_seconds or 0.0) * rows / cfg.global_batch_size * halt * EVAL_FORWARD_COST

    def train_step(self, batch: dict[str, torch.Tensor], global_batch_size: int) -> dict[str, float] | None:
        cfg = self.cfg
        self._configure_trunk(trainable=self.step >= self.freeze_until_step)
        self.curriculum.apply(self.head, self.step)
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        loss, metrics = self.accumulator.forward_backward(self, batch, global_batch_size)

        keys = sorted(metrics)
        values = st.all_reduce_sum(torch.stack([loss.detach().float()] + [metrics[k].float() for k in keys]))
        values = values.cpu()
        self.guard.loss_seen(float(values[0]), self.step)  # judges the checkpoint of these weights, if any
        if not bool(torch.isfinite(values[0])):
            return self._non_finite(float(values[0]))

        self.step += 1
        console = cfg.log_interval > 0 and self.step % cfg.log_interval == 0
        for optimizer in self.optimizers:
            self.precision.unscale(optimizer)
        grad_metrics = self.grad_monitor.process(self.optimizers, per_group=console)
        lr = 0.0
        for optimizer, base_lr in zip(self.optimizers, self.base_lrs):
            lr = lr_at_step(self.step, base_lr=base_lr, warmup_steps=cfg.lr_warmup_steps,
                            total_steps=self.total_steps, min_ratio=cfg.lr_min_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if not isinstance(optimizer, SparseSignSGD) and not self.trunk_trainable:
                continue  # frozen trunk: no gradients, no weight decay
            self.precision.step(optimizer)
            optimizer.zero_grad(set_to_none=True)
        self.precision.update()
        if self.ema is not None:
            self.ema.update(self.head)

        reduced = dict(zip(keys, values[1:].tolist()))
        count = reduced.pop("count")
        # Per-row metrics exist only when rows halted this step (they halt together early in training).
        out = {f"train/{k}": v / (global_batch_size if k.endswith("loss") else count)
               for k, v in reduced.items() if count > 0 or k.endswith("loss")}
        out["train/lr"] = lr
        out.update(grad_metrics)
        self.logger.log(out, step=self.step, console=console)
        self.logger.progress(self.step)
        return out

    def _non_finite(self, value: float) -> None:
        step = self.step + 1
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        self.carry = None  # the carried latents may hold the NaN too
        if self.guard.may_skip():
            self.nonfinite_skipped += 1
            self.logger.message(f"non-finite loss ({value}) at step {step}: step skipped "
                                f"({self.nonfinite_skipped} so far)")
            self.logger.log({"train/nonfinite_skipped": self.nonfinite_skipped}, step=self.step)
            return None
        raise NonFiniteLossError(self.guard.stop_message(value, step))

    # ----- evaluation ----------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float] | None:
        if self.evaluation is None:
            return None
        started = time.time()
        self.logger.pause_clock()
        self.curriculum.use_full_depth(self.head)
        metrics = self.evaluation.run(self)
        self.evaluated_since_save = True
        self.last_eval_seconds = took = time.time() - started
        self.logger.resume_clock()  # the training bar's rate leaves the evaluation out
        if metrics is not None:
            metrics["eval/seconds"] = took
            self.logger.log(metrics, step=self.step)
            self.logger.message(f"eval at step {self.step} took {took:.1f} s: " + format_metrics(metrics, self.step))
        return metrics

    # ----- checkpoints ---------------------------------------------------------------------------
    def _checkpoint_due_by_steps(self) -> bool:
        n = self.cfg.checkpoint_every_n_steps
        return bool(n) and self.step > 0 and self.step % n == 0

    def save(self, metrics: dict[str, float] | None = None) -> None:
        if self.step == self.saved_step and not self.evaluated_since_save:
            return  # nothing new since the last checkpoint (e.g. a skipped step): never rewrite it
        train_state = gather_train_state(self)  # a collective: every rank takes part
        self.saved_step, self.evaluated_since_save = self.step, False
        if self.info.is_main:
            extra = self.evaluation.files_to_keep() if self.evaluation is not None and metrics else {}
            model_state = self.head.state_dict()
            path = save_checkpoint(self.run_dir, self.step, model_state=model_state, train_state=train_state,
                                   config_yaml=self.config_yaml, identifiers=self.identifiers,
                                   ema_state=self.ema.state_dict() if self.ema else None, metrics=metrics,
                                   extra_files=extra, keep=self.cfg.checkpoint_keep,
                                   health=weights_health(model_state))
            self.guard.checkpoint_written(self.step, path)
            self.logger.message(f"checkpoint {path}")
            self.best.consider(path, metrics)
            if self.hub_pusher is not None:
                self.hub_pusher.submit(path)  # uploads in the background; a failure only logs a warning

    def _resume(self, path: str, loaded: LoadedCheckpoint | None = None) -> None:
        """Restore from ``path``; rank 0 passes the checkpoint it already read while choosing it."""
        restore_train_state(self, loaded if loaded is not None else load_checkpoint(path, map_location="cpu"))
        self.saved_step = self.step
        self.guard.checkpoint_written(self.step, Path(path))  # the first loss judges these weights again

    def close(self, failed: bool = False) -> None:
        if self.hub_pusher is not None:
            self.hub_pusher.close()  # waits for pending uploads
        self.logger.close()
        # Every rank waits for the others' last writes, then the group is torn down: a rank that left
        # with gloo's threads still running aborted at interpreter exit ("terminate called ...").
        if not failed:
            barrier()
        destroy_distributed()
