"""Offline ARC Prize submission: fine-tune an attached checkpoint on the hidden test tasks, vote, submit.

    python -m kaggle.run_kaggle \
        --challenges /kaggle/input/arc-prize-2025/arc-agi_test_challenges.json \
        --checkpoint /kaggle/input/trm-arc2/step_00723914 \
        --output /kaggle/working/submission.json --time-budget-min 600 [hydra overrides ...]

1. A complete fallback submission.json is written first, so a submission exists whatever happens.
2. The challenges (no solutions) are built into a dataset: every demo pair (and its augmented
   copies) trains, every test input is predicted (dataset/build_arc_dataset.py).
3. The project's trainer runs config/cfg_kaggle_lora.yaml (LoRA rank 1; the architecture comes from
   the checkpoint's config.yaml) with ``load_checkpoint=`` the checkpoint (a folder, or an ``org/repo``
   already in the offline Hub cache; its EMA weights when it has them; any LoRA adapters merged,
   embedding rows fitted by name) and ``max_train_minutes=`` what is left of the budget, so it
   stops cleanly in time for its final evaluation.
4. That evaluation votes over augmentations; its submission, completed where anything is missing,
   becomes the final submission.json (every task, every test input, two attempts).

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
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from training.checkpoint_config import cli_arch_keys  # noqa: E402
from training.config import PretrainConfig  # noqa: E402
from training.trainer import Trainer  # noqa: E402
from training.hub import resolve_checkpoint  # noqa: E402
from utils.errors import UserError  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
FALLBACK_GRID = [[0]]
_CHALLENGES_NAME = re.compile(r"^(?P<prefix>.+)_(?P<subset>[^_]+)_challenges\.json$")


# ------------------------------------------------------------------------------ configuration
def compose_config(config_name: str, overrides: list[str]) -> PretrainConfig:
    """The preset with the command-line overrides. The architecture is the checkpoint's (the trainer
    takes it, as for pretrain.py's load_checkpoint=), except arch keys given here."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from training.cli import composition_error_message
    from training.config import register_configs, to_pretrain_config

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(REPO_ROOT / "config"), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides)
    except HydraException as exc:  # `lrr=1`, `epochs=abc`: one line naming the key
        raise UserError(composition_error_message(exc, PretrainConfig)) from None
    return to_pretrain_config(cfg)


def ema_view(folder: Path, view: Path) -> Path:
    """The checkpoint with its EMA weights (those its evaluations used) as model.safetensors, by links."""
    if not (folder / "ema.safetensors").is_file():
        return folder
    shutil.rmtree(view, ignore_errors=True)
    view.mkdir(parents=True)
    for item in folder.iterdir():
        if item.name != "model.safetensors":
            (view / ("model.safetensors" if item.name == "ema.safetensors" else item.name)).symlink_to(item.resolve())
    return view


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


# ------------------------------------------------------------------------------ main flow
def run(args: argparse.Namespace, overrides: list[str]) -> dict:
    started = time.monotonic()
    budget_s = args.time_budget_min * 60.0
    challenges_path, output, work = Path(args.challenges), Path(args.output), Path(args.work_dir)
    challenges = load_challenges(challenges_path)
    write_json(output, complete_submission(challenges, None)[0])
    print(f"fallback submission for {len(challenges)} tasks written to {output}", flush=True)

    checkpoint = resolve_checkpoint(args.checkpoint)  # fails early (offline) if it is not there
    if not args.no_ema:
        checkpoint = ema_view(checkpoint, work / "checkpoint_ema")
    data = work / "data"
    base = [f"data_paths=[{data}]", f"data_paths_test=[{data}]", f"load_checkpoint={checkpoint}",
            f"checkpoint_path={work / 'run'}", "wandb_mode=disabled", f"seed={args.seed}"]
    cfg = compose_config(args.config_name, base + overrides)  # bad overrides stop here
    build_test_dataset(challenges_path, work, args.num_aug, args.seed, args.workers)
    margin_s = max(args.margin_min * 60.0, 0.02 * budget_s)
    # Rounded down to 1/100 minute: the budget still holds, and messages and config.yaml read 2.99, not 2.98666...
    cfg.max_train_minutes = math.floor(max(budget_s - margin_s - (time.monotonic() - started), 0.0) / 0.6) / 100

    trainer = Trainer(cfg, arch_set_on_command_line=cli_arch_keys(overrides))
    try:
        metrics = trainer.train()
    finally:
        trainer.close()
    print(f"training stopped at step {trainer.step}/{trainer.total_steps}"
          + (" (time budget)" if trainer.stopped_by_time else ""), flush=True)
    if trainer.evaluation is None:
        raise RuntimeError(f"{data} has no test split to predict")
    produced = trainer.evaluation.last_saved.get("submission.json")
    submission = json.loads(produced.read_text()) if produced and produced.is_file() else None
    final, filled = complete_submission(challenges, submission)
    write_json(output, final)
    summary = {"tasks": len(challenges), "test_inputs": sum(len(t["test"]) for t in challenges.values()),
               "fallback_entries": filled, "steps": trainer.step, "total_steps": trainer.total_steps,
               "stopped_by_time": trainer.stopped_by_time, "seconds": round(time.monotonic() - started, 1),
               "budget_seconds": budget_s,
               "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
    write_json(work / "run_summary.json", summary)
    print(f"submission.json: {len(final)} tasks, {filled} fallback entries; {summary['seconds']} s", flush=True)
    return summary


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m kaggle.run_kaggle", description="Offline ARC Prize submission (fine-tune, vote, submit)",
        usage="%(prog)s --challenges FILE --checkpoint CKPT [options] [key=value ...]",
        epilog="Anything after the options is a Hydra override of the training config (key=value, as for "
               "pretrain.py), e.g. global_batch_size=32 epochs=200 arch.lora_rank=0 (full fine-tuning); "
               "--config-name picks the config they apply to. See kaggle/README.md.")
    parser.add_argument("--challenges", required=True, help="arc-agi_test_challenges.json")
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder, or org/repo in the offline HF cache")
    parser.add_argument("--output", default="submission.json", help="submission file to write (default %(default)s)")
    parser.add_argument("--work-dir", default="kaggle_work", help="dataset, run and logs (default %(default)s)")
    parser.add_argument("--time-budget-min", type=float, default=600.0, help="whole run, minutes (default %(default)s)")
    parser.add_argument("--margin-min", type=float, default=2.0, help="safety margin kept free, minutes (default %(default)s)")
    parser.add_argument("--num-aug", type=int, default=100, help="augmented copies per task in the dataset (default %(default)s)")
    parser.add_argument("--config-name", default="cfg_kaggle_lora", help="training config in config/ (default %(default)s)")
    parser.add_argument("--no-ema", action="store_true", help="start from model.safetensors even if EMA weights exist")
    parser.add_argument("--seed", type=int, default=0, help="seed of the dataset build and the training (default 0)")
    parser.add_argument("--workers", type=int, default=None, help="dataset builder processes (default: all cores)")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        print(f"error: unrecognised arguments {bad} (overrides are key=value)", file=sys.stderr)
        return 2
    try:
        run(args, overrides)
    except UserError as exc:  # a damaged or refused checkpoint file, a full disk: one line
        print(f"error: {exc} ({args.output} holds the best submission written so far)", file=sys.stderr)
        return exc.exit_code
    except Exception:  # noqa: BLE001 - the fallback submission stays in place
        traceback.print_exc()
        print(f"error: the run failed; {args.output} holds the best submission written so far", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    sys.exit(main())
