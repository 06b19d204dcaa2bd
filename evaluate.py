"""Evaluate a saved checkpoint on ARC (or Sudoku / Maze) test data: metrics.json, report.html and more.

    python evaluate.py checkpoint=checkpoints/<project>/<run>/step_00001000 data_paths_test=[data/arc-demo]
    python evaluate.py checkpoint=checkpoints/<project>/<run>          # newest step_* in the run folder
    python evaluate.py checkpoint=path/to/reference/step_723914         # reference state dict + all_config.yaml
    OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 evaluate.py checkpoint=... device=cpu

Every key and its type: EvaluateConfig below; the YAML is config/cfg_evaluate.yaml. Outputs go to
``output_dir`` (default ``<checkpoint folder>/evaluation``).
"""

from __future__ import annotations

import copy
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import hydra
import torch
from omegaconf import MISSING, OmegaConf

from dataset.puzzle_dataset import PuzzleDatasetConfig, create_dataloader
from evaluators.registry import build_evaluator, default_evaluator_name
from training.config import EvaluatorConfig, PretrainConfig
from utils.distributed import dist_info, init_distributed, print0, select_device
from training.hub import resolve_checkpoint
from training.progress import EvalProgress, natural_key
from utils.errors import UserError, exit_on_user_error
from utils.io import atomic_write_json
from utils.schema import unknown_key_message

@dataclass
class EvaluateConfig:
    # A checkpoint folder (step_*), a run folder (its newest step_*), a reference state-dict file
    # with all_config.yaml beside it, or (later) a Hugging Face Hub repo id.
    checkpoint: str = MISSING
    # Built dataset folders whose test split is evaluated; empty = the checkpoint config's.
    data_paths_test: List[str] = field(default_factory=list)
    # Where submission.json, metrics.json, answers.json and report.html go.
    output_dir: Optional[str] = None
    # Use ema.safetensors when the checkpoint has one.
    use_ema: bool = True
    # Evaluation batch over all ranks; None = the checkpoint config's eval/global batch size.
    eval_global_batch_size: Optional[int] = None
    # ACT steps per example; None = arch.halt_max_steps (the reference always runs them all).
    halt_max_steps_eval: Optional[int] = None
    # Keep at most this many augmented copies per task; None = all.
    eval_max_augmentations: Optional[int] = None
    # Evaluators; empty = the checkpoint config's (or the ARC evaluator).
    evaluators: List[EvaluatorConfig] = field(default_factory=list)
    # "auto" (cuda > mps > cpu) or a torch device string.
    device: str = "auto"
    # bfloat16 autocast; None = on for CUDA.
    autocast: Optional[bool] = None
    # Write report.html (the visual report) next to the submission.
    report: bool = True
    seed: int = 0


# ----- checkpoints -----
def load_for_evaluation(path: Path, use_ema: bool) -> tuple[PretrainConfig, dict[str, torch.Tensor], str]:
    """(training config, weights, description) from one of our checkpoints or a reference one."""
    from training.checkpoint import check_finite, load_weights
    from training.checkpoint_config import read_checkpoint_config
    from utils.tensor_files import read_safetensors

    dropped: list[str] = []
    cfg, _ = read_checkpoint_config(path, dropped)
    for key in dropped:
        print0(f"all_config.yaml: ignoring {key}")
    if cfg is None:
        raise FileNotFoundError(f"{path}: no config.yaml (ours) or all_config.yaml (reference) beside the weights")
    if path.is_dir():
        state = load_weights(path)
        ema_file = path / "ema.safetensors"
        if use_ema and ema_file.is_file():
            ema = read_safetensors(ema_file)
            check_finite(ema, ema_file)
            state.update(ema)  # EMA covers the floating-point entries
            return cfg, state, f"{path} (EMA weights)"
        return cfg, state, str(path)
    return cfg, load_weights(path), f"{path} (reference format)"


# ----- evaluation -----
def run_evaluation(ecfg: EvaluateConfig) -> dict[str, float] | None:
    """Evaluate ``ecfg.checkpoint``; returns the metrics on the main rank (None elsewhere)."""
    from models.registry import build_model
    from training.state import fit_weights

    device = select_device(ecfg.device)
    info = init_distributed(device)
    try:
        ckpt_path = resolve_checkpoint(ecfg.checkpoint)
    except UserError:  # already one line naming the folder or Hub id
        raise
    except ValueError as exc:  # neither a folder nor a Hub id: the user's checkpoint= value
        raise UserError(f"checkpoint: {exc}") from None
    cfg, state, described = load_for_evaluation(ckpt_path, ecfg.use_ema)
    paths = list(ecfg.data_paths_test or cfg.data_paths_test or cfg.data_paths)
    batch_size = ecfg.eval_global_batch_size or cfg.eval_global_batch_size or cfg.global_batch_size
    if batch_size % info.world_size:
        raise UserError(f"eval_global_batch_size={batch_size} is not divisible by the {info.world_size} ranks (world size)")
    loader = create_dataloader(
        PuzzleDatasetConfig(
            seed=ecfg.seed, dataset_paths=paths, global_batch_size=batch_size, test_set_mode=True, epochs_per_iter=1,
            rank=info.rank, num_replicas=info.world_size, max_eval_augmentations=ecfg.eval_max_augmentations,
        ),
        "test",
        num_workers=1 if device.type == "cuda" else 0,
    )
    meta = loader.dataset.metadata
    arch = copy.deepcopy(cfg.arch)
    bf16 = ecfg.autocast if ecfg.autocast is not None else device.type == "cuda"
    if not bf16:
        arch.forward_dtype = "float32"
    if ecfg.halt_max_steps_eval or cfg.halt_max_steps_eval:
        arch.halt_max_steps = ecfg.halt_max_steps_eval or cfg.halt_max_steps_eval
    head = build_model(arch, batch_size=batch_size // info.world_size, seq_len=meta.seq_len,
                       vocab_size=meta.vocab_size, num_puzzle_identifiers=meta.num_puzzle_identifiers)
    # LoRA merged, puzzle rows matched by identifier name (a dataset rebuilt in another order still fits)
    for note in fit_weights(head, state, ckpt_path if ckpt_path.is_dir() else ckpt_path.parent,
                            loader.dataset.identifiers, "mean"):
        print0(note)
    head.to(device).eval()

    data_arg = paths if len(paths) > 1 else paths[0]
    specs = ecfg.evaluators or cfg.evaluators or [EvaluatorConfig(name=default_evaluator_name(data_arg, meta))]
    evaluators = [
        build_evaluator(s.name, data_arg, meta, loader.dataset.identifiers,
                        **{"report": ecfg.report,
                           "report_title": f"{'ARC' if s.name.startswith('arc') else s.name.capitalize()} evaluation of {described}",
                           **s.build_kwargs()})
        for s in specs
    ]
    local_dir = Path(ecfg.checkpoint).expanduser().exists()
    default_out = (ckpt_path if ckpt_path.is_dir() else ckpt_path.parent) / "evaluation" if local_dir \
        else Path("outputs") / "evaluation" / ecfg.checkpoint.replace("/", "--")  # never inside the HF cache
    out_dir = Path(ecfg.output_dir) if ecfg.output_dir else default_out
    print0(f"[{device.type} x{info.world_size}] evaluating {described} on {', '.join(paths)} -> {out_dir}")

    required = set().union(*(e.required_outputs for e in evaluators))
    for evaluator in evaluators:
        evaluator.begin_eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    started = time.monotonic()
    with torch.inference_mode(), autocast, EvalProgress(loader.dataset.test_batches()) as bar:
        for _, batch, _ in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            carry = head.initial_carry(batch)
            act_steps = 0
            while True:  # run the ACT loop to completion (halt_max_steps, or all rows halted)
                carry, _, _, preds, all_finish = head(carry=carry, batch=batch, return_keys=sorted(required))
                act_steps += 1
                if bool(all_finish):
                    break
            for evaluator in evaluators:
                evaluator.update_batch(batch, preds)
            bar.batch_done(act_steps)

    metrics: dict[str, float] = {}
    for evaluator in evaluators:
        result = evaluator.result(str(out_dir))
        if result is not None:
            metrics.update(result)
    if not dist_info().is_main:
        return None
    atomic_write_json(out_dir / "metrics.json", {"checkpoint": described, "data_paths_test": paths, **metrics}, indent=2)
    print0(f"evaluation took {time.monotonic() - started:.1f} s")
    print0(" ".join(f"{k}={metrics[k]:.4f}" for k in sorted(metrics, key=natural_key) if "pass@" in k or "accuracy" in k or "valid" in k))
    files = {name: out_dir / name for name in ("submission.json", "report.html", "metrics.json")
             if (out_dir / name).is_file()}
    print0("outputs: " + "; ".join(f"{name} {path}" for name, path in files.items()) + f" (checkpoint {described})")
    return metrics


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)


register_configs()


@hydra.main(version_base="1.3", config_path="config", config_name="cfg_evaluate")
def main(cfg: Any) -> None:
    with exit_on_user_error():  # bad keys, values, files: one line and exit code 2
        unknown = unknown_key_message(OmegaConf.to_container(cfg, resolve=False), EvaluateConfig)
        if unknown:  # a `+key=` Hydra appended and to_object would drop without a word
            raise UserError(unknown)
        ecfg = OmegaConf.to_object(cfg)
        assert isinstance(ecfg, EvaluateConfig)
        try:
            run_evaluation(ecfg)
        finally:
            from utils.distributed import destroy_distributed

            destroy_distributed()


if __name__ == "__main__":
    import sys

    from training.cli import precheck_command_line

    with exit_on_user_error():
        precheck_command_line(sys.argv[1:], Path(__file__).parent / "config", "cfg_evaluate", EvaluateConfig)
    main()
