"""What a person watching the console sees: progress bars for evaluation, metric names in natural
order, and where a finished run left its files.

Only the main rank draws bars (others get a disabled one), so loops call these without testing ranks.
"""

from __future__ import annotations

import re
from pathlib import Path

import tqdm

from utils.distributed import is_main


def natural_key(name: str) -> tuple:
    """Sort key reading digit runs as numbers: pass@2 before pass@10 before pass@100."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


class EvalProgress:
    """A bar over evaluation batches (done / total) with the ACT steps of the last batch in its postfix."""

    def __init__(self, total_batches: int | None, desc: str = "eval"):
        self.bar = tqdm.tqdm(total=total_batches, desc=desc, unit="batch", dynamic_ncols=True, leave=False,
                             disable=not is_main())

    def batch_done(self, act_steps: int) -> None:
        self.bar.set_postfix_str(f"ACT steps {act_steps}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> EvalProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def startup_line(trainer, resume_from: str | None) -> str:
    """Device, run folder, weights (total / training), steps; whether the run resumes or is already done."""
    from models.registry import parameter_summary

    text = (f"[{trainer.device.type} x{trainer.info.world_size}] run folder {trainer.run_dir}; "
            f"{parameter_summary(trainer.head)}; {trainer.total_steps} steps ({trainer.cfg.epochs} epochs); "
            f"bf16={trainer.bf16} compile={trainer._compile_enabled()}")
    if resume_from and trainer._finished():
        return (text + f"; already complete at step {trainer.step} of {trainer.step_budget} ({resume_from}): "
                "nothing to train; a new run_name or checkpoint_path trains again")
    return text + (f"; resumed from {resume_from} at step {trainer.step}" if resume_from else "")


def newest_evaluation_files(run_dir: str | Path) -> dict[str, Path]:
    """submission.json and report.html of the newest evaluation in a run folder (those that exist)."""
    folders = sorted(Path(run_dir).glob("evaluator_*_step_*"), key=lambda p: natural_key(p.name))
    found: dict[str, Path] = {}
    for folder in reversed(folders):
        for name in ("submission.json", "report.html"):
            if name not in found and (folder / name).is_file():
                found[name] = folder / name
        if found:
            break
    return found


def where_outputs_are(checkpoint: Path | None, evaluation_files: dict[str, Path]) -> str:
    """One line naming the checkpoint, submission.json and report.html (what exists of them)."""
    parts = [f"checkpoint {checkpoint}" if checkpoint is not None else "no checkpoint"]
    for name in ("submission.json", "report.html"):
        if name in evaluation_files:
            parts.append(f"{name} {evaluation_files[name]}")
    return "outputs: " + "; ".join(parts)
