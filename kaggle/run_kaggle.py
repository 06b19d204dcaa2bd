"""Offline ARC Prize submission: fine-tune an attached checkpoint on the hidden test tasks, vote, submit.

    python -m kaggle.run_kaggle \
        --challenges /kaggle/input/arc-prize-2025/arc-agi_test_challenges.json \
        --checkpoint /kaggle/input/trm-arc2/step_00723914 \
        --output /kaggle/working/submission.json --time-budget-min 600 [hydra overrides ...]

1. A complete fallback submission.json is written first, so a submission exists whatever happens.
2. The challenges (no solutions) are built into a dataset: every demo pair (and its augmented
   copies) trains, every test input is predicted (dataset/build_arc_dataset.py).
3. The checkpoint (a folder, or an ``org/repo`` already in the offline Hub cache) is fitted to the
   new identifiers: LoRA adapters merged, EMA weights preferred, embedding rows by name
   (utils/embedding_growth.py).
4. Training with config/cfg_kaggle_lora.yaml (LoRA rank 1 by default; the architecture comes from the
   checkpoint's config.yaml) stops cleanly when the time left only just covers the evaluation.
5. Evaluation with voting over augmentations writes the final submission.json (every task, every
   test input, two attempts).

No network is used: HF_HUB_OFFLINE=1 and wandb disabled. Overrides are Hydra ``key=value`` pairs,
e.g. ``global_batch_size=32 epochs=200 arch.lora_rank=0`` (full fine-tuning).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import yaml  # noqa: E402

from models.config import ArchConfig  # noqa: E402
from models.lora import apply_lora_config, lora_config_from_arch, lora_layers, stays_trainable  # noqa: E402
from training.config import PretrainConfig  # noqa: E402
from training.trainer import Trainer  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
FALLBACK_GRID = [[0]]
_CHALLENGES_NAME = re.compile(r"^(?P<prefix>.+)_(?P<subset>[^_]+)_challenges\.json$")


# ------------------------------------------------------------------------------ config schema
@dataclass
class LoRAArchConfig(ArchConfig):
    """ArchConfig plus the LoRA knobs, for trainers whose schema lacks them (same names as the presets)."""

    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: List[str] = field(default_factory=lambda: ["*"])
    lora_trainable: List[str] = field(default_factory=list)


@dataclass
class LoRAPretrainConfig(PretrainConfig):
    arch: LoRAArchConfig = field(default_factory=LoRAArchConfig)


def compose_config(config_name: str, overrides: list[str], checkpoint_arch: dict) -> PretrainConfig:
    """Preset < the checkpoint's architecture < command-line overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.config_store import ConfigStore
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from training.config import to_pretrain_config

    from training.config import register_configs

    # The presets set arch.lora_*; this schema accepts them even where ArchConfig lacks the fields.
    ConfigStore.instance().store(name="pretrain_schema", node=LoRAPretrainConfig)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(REPO_ROOT / "config"), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides)
    finally:
        register_configs()  # the trainer's own schema back in the store
    arch = {k: v for k, v in checkpoint_arch.items() if not k.startswith("lora_")}
    known = set(OmegaConf.to_container(cfg.arch))
    cfg.arch = OmegaConf.merge(cfg.arch, {k: v for k, v in arch.items() if k in known})
    arch_overrides = [o for o in overrides if o.lstrip("+").startswith("arch.")]
    if arch_overrides:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([o.lstrip("+") for o in arch_overrides]))
    return to_pretrain_config(cfg)


# ------------------------------------------------------------------------------ submission files
def load_challenges(path: Path) -> dict:
    tasks = json.loads(path.read_text())
    if not isinstance(tasks, dict) or not tasks:
        raise ValueError(f"{path}: expected a non-empty object {{task_id: task}}")
    return tasks


def complete_submission(challenges: dict, submission: dict | None) -> tuple[dict, int]:
    """Every task with one entry per test input; missing or malformed entries get the fallback grid."""
    submission = submission or {}
    out, filled = {}, 0
    for task_id, task in challenges.items():
        entries = submission.get(task_id) or []
        fixed = []
        for i in range(len(task["test"])):
            entry = entries[i] if i < len(entries) and isinstance(entries[i], dict) else {}
            attempt_1 = entry.get("attempt_1") or FALLBACK_GRID
            attempt_2 = entry.get("attempt_2") or attempt_1
            filled += int(not entry)
            fixed.append({"attempt_1": attempt_1, "attempt_2": attempt_2})
        out[task_id] = fixed
    return out, filled


def write_json(path: Path, obj: object) -> None:
    from utils.io import atomic_write_json

    atomic_write_json(path, obj)


# ------------------------------------------------------------------------------ preparation
def build_test_dataset(challenges_path: Path, work_dir: Path, num_aug: int, seed: int, workers: int) -> Path:
    """Build the challenges (copied alone, so no solutions file is picked up) into a dataset."""
    from dataset.build_arc_dataset import BuildConfig, build_dataset, format_summary

    match = _CHALLENGES_NAME.match(challenges_path.name)
    subset = match.group("subset") if match else "test"
    inputs = work_dir / "input"
    inputs.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(challenges_path, inputs / f"arc-agi_{subset}_challenges.json")
    out = work_dir / "data"
    summary = build_dataset(BuildConfig(
        output_dir=str(out), input_file_prefix=str(inputs / "arc-agi"), subsets=[subset], test_set_name=subset,
        num_aug=num_aug, seed=seed, workers=workers, progress=False))
    print(format_summary(summary), flush=True)
    return out


def prepare_checkpoint(checkpoint: str, identifiers: list[str], out: Path, strategy: str,
                       use_ema: bool) -> dict:
    """Initial weights for the run (adapters merged, table fitted by name); returns the checkpoint's arch."""
    from safetensors.torch import load_file, save_file

    from models.lora import merge_lora_state_dict
    from utils.embedding_growth import align_state_dict, read_table_stats
    from utils.hub import resolve_checkpoint

    folder = resolve_checkpoint(checkpoint)
    weights = folder / "ema.safetensors"
    if not (use_ema and weights.is_file()):
        weights = folder / "model.safetensors"
    state = merge_lora_state_dict({k.replace("_orig_mod.", ""): v for k, v in load_file(str(weights)).items()})
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}  # bf16 exports
    old_ids = json.loads((folder / "identifiers.json").read_text())
    state, report = align_state_dict(state, old_ids, identifiers, strategy, stats=read_table_stats(folder))
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"))
    print(f"checkpoint {folder} ({weights.name}): puzzle table {report or 'absent'}", flush=True)
    config = yaml.safe_load((folder / "config.yaml").read_text()) if (folder / "config.yaml").is_file() else {}
    return (config or {}).get("arch") or {}


# ------------------------------------------------------------------------------ time-boxed trainer
class KaggleTrainer(Trainer):
    """The project's trainer with a wall-clock deadline and LoRA applied if the trainer does not.

    After each step it predicts how long the final evaluation will take (from the measured step
    time) and ends training when the time left only covers that evaluation plus a margin; the
    loop then finishes as at the end of a run (checkpoint saved).
    """

    def __init__(self, cfg: PretrainConfig, deadline: float, eval_batches: int, margin_s: float):
        self.deadline = deadline
        self.eval_batches = eval_batches
        self.margin_s = margin_s
        self.step_seconds: float | None = None
        self.stopped_by_time = False
        self._lora = lora_config_from_arch(cfg.arch)
        super().__init__(cfg)
        self._ensure_lora()

    def _ensure_lora(self) -> None:
        if self._lora.rank <= 0 or lora_layers(self.head):
            return
        from training.ema import EMA
        from training.optimizers import AdamATan2

        apply_lora_config(self.head, self._lora)
        cfg = self.cfg
        for i, optimizer in enumerate(self.optimizers):
            if isinstance(optimizer, AdamATan2):  # rebuilt so the new adapter parameters are in it
                self.optimizers[i] = AdamATan2([p for p in self.head.parameters() if p.requires_grad], lr=0.0,
                                               betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
        if self.ema is not None:
            self.ema = EMA(self.head, cfg.ema_rate)
        self.trunk_trainable = None
        self._configure_trunk(trainable=self.step >= self.freeze_until_step)

    def _configure_trunk(self, trainable: bool) -> None:
        if not lora_layers(self.head):
            return super()._configure_trunk(trainable)
        if trainable == self.trunk_trainable:
            return
        # As the trainer's, but base weights stay frozen: set before any DDP wrapper is built.
        self.trunk_trainable = trainable
        for name, p in self.head.named_parameters():
            p.requires_grad_(trainable and stays_trainable(name, self._lora.trainable))
        model: torch.nn.Module = self.head
        if trainable and self.info.world_size > 1:
            model = self._wrap_distributed(model)
        self.train_model = torch.compile(model) if self._compile_enabled() else model
        self.eval_model = torch.compile(self.head) if self._compile_enabled() else self.head

    def predicted_eval_seconds(self) -> float:
        halt = self.cfg.halt_max_steps_eval or self.cfg.arch.halt_max_steps
        # An evaluation batch runs `halt` forward passes; a forward pass costs about 1/3 of a step.
        return (self.step_seconds or 0.0) * self.eval_batches * halt * 0.5

    def train_step(self, batch, global_batch_size):
        started = time.monotonic()
        out = super().train_step(batch, global_batch_size)
        took = time.monotonic() - started
        # Skip the first step (compilation) in the estimate; then a smoothed average.
        if self.step > 1:
            self.step_seconds = took if self.step_seconds is None else 0.8 * self.step_seconds + 0.2 * took
        if time.monotonic() + self.predicted_eval_seconds() + self.margin_s >= self.deadline:
            self.stopped_by_time = True
            self.step_budget = self.step  # the loop ends as at the end of a run
        return out

    def evaluate(self):
        return None  # the runner evaluates once, after training


# ------------------------------------------------------------------------------ main flow
def run(args: argparse.Namespace, overrides: list[str]) -> dict:
    started = time.monotonic()
    deadline = started + args.time_budget_min * 60.0
    challenges_path = Path(args.challenges)
    output = Path(args.output)
    work = Path(args.work_dir)
    challenges = load_challenges(challenges_path)
    fallback, _ = complete_submission(challenges, None)
    write_json(output, fallback)
    print(f"fallback submission for {len(challenges)} tasks written to {output}", flush=True)

    data = build_test_dataset(challenges_path, work, args.num_aug, args.seed, args.workers)
    identifiers = json.loads((data / "identifiers.json").read_text())
    init = work / "init_checkpoint"
    checkpoint_arch = prepare_checkpoint(args.checkpoint, identifiers, init, args.strategy, not args.no_ema)

    run_dir = work / "run"
    base = [f"data_paths=[{data}]", f"data_paths_test=[{data}]", f"load_checkpoint={init}",
            f"checkpoint_path={run_dir}", "wandb_mode=disabled", f"seed={args.seed}"]
    cfg = compose_config(args.config_name, base + overrides, checkpoint_arch)

    n_inputs = sum(len(t["test"]) for t in challenges.values())
    per_input = min(args.num_aug + 1, cfg.eval_max_augmentations or args.num_aug + 1)
    eval_batches = math.ceil(n_inputs * per_input / (cfg.eval_global_batch_size or cfg.global_batch_size))
    margin = max(args.margin_min * 60.0, 0.02 * args.time_budget_min * 60.0)
    trainer = KaggleTrainer(cfg, deadline=deadline, eval_batches=eval_batches, margin_s=margin)
    try:
        trainer.train()
        print(f"training stopped at step {trainer.step}/{trainer.total_steps}"
              + (" (time budget)" if trainer.stopped_by_time else ""), flush=True)
        if trainer.evaluation is None:
            raise RuntimeError(f"{data} has no test split to predict")
        metrics = trainer.evaluation.run(trainer) or {}
        produced = trainer.evaluation.last_saved.get("submission.json")
    finally:
        trainer.close()
    submission = json.loads(produced.read_text()) if produced and produced.is_file() else None
    final, filled = complete_submission(challenges, submission)
    write_json(output, final)
    summary = {"tasks": len(challenges), "test_inputs": n_inputs, "fallback_entries": filled,
               "steps": trainer.step, "total_steps": trainer.total_steps, "stopped_by_time": trainer.stopped_by_time,
               "seconds": round(time.monotonic() - started, 1), "budget_seconds": args.time_budget_min * 60.0,
               "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
    write_json(work / "run_summary.json", summary)
    print(f"submission.json: {len(final)} tasks, {filled} fallback entries; {summary['seconds']} s", flush=True)
    return summary


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description="Offline ARC Prize submission (fine-tune, vote, submit)")
    parser.add_argument("--challenges", required=True, help="arc-agi_test_challenges.json")
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder, or org/repo in the offline HF cache")
    parser.add_argument("--output", default="submission.json")
    parser.add_argument("--work-dir", default="kaggle_work")
    parser.add_argument("--time-budget-min", type=float, default=600.0, help="whole run, minutes")
    parser.add_argument("--margin-min", type=float, default=2.0, help="safety margin kept free, minutes")
    parser.add_argument("--num-aug", type=int, default=100, help="augmented copies per task in the dataset")
    parser.add_argument("--config-name", default="cfg_kaggle_lora")
    parser.add_argument("--strategy", default="mean", choices=("mean", "normal", "zeros"),
                        help="initial puzzle-embedding rows for the new tasks")
    parser.add_argument("--no-ema", action="store_true", help="start from model.safetensors even if EMA weights exist")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="dataset builder processes")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        print(f"error: unrecognised arguments {bad} (overrides are key=value)", file=sys.stderr)
        return 2
    try:
        run(args, overrides)
    except Exception:  # noqa: BLE001 - the fallback submission stays in place
        traceback.print_exc()
        print(f"error: the run failed; {args.output} holds the best submission written so far", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    sys.exit(main())
