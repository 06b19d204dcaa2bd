"""The trainer's state for a checkpoint, and its restoration on resume (bit for bit).

Everything here ends up in train_state.json + train_state.safetensors (utils/nested_state.py), so it
holds only tensors, numpy arrays, numbers, strings, None, lists, tuples, dicts and the ACT carry
dataclasses; the carry is rebuilt into a fresh carry the model makes, never from class names in a file.
"""

from __future__ import annotations

from typing import Any

from training import state as st
from training.checkpoint import LoadedCheckpoint
from training.ema import EMA
from utils.nested_state import restore_dataclasses

# ``trainer`` below is the training.trainer.Trainer that calls these (not imported: it imports this module).
Trainer = Any


def gather_train_state(trainer: Trainer) -> dict[str, Any]:
    """A collective: every rank takes part (rank 0 receives the others' RNG, loader and carry)."""
    restore = trainer.cfg.carry_on_resume == "restore"
    per_rank = st.gather_objects({"rng": st.rng_state(trainer.device), "loader": trainer.train_loader.state_dict(),
                                  "carry": st.to_cpu(trainer.carry) if restore else None})
    return {"step": trainer.step, "iteration": trainer.iteration, "total_steps": trainer.total_steps,
            "world_size": trainer.info.world_size, "carry_policy": trainer.cfg.carry_on_resume,
            "optimizers": [opt.state_dict() for opt in trainer.optimizers],
            "nonfinite_skipped": trainer.nonfinite_skipped, "per_rank": per_rank,
            # metrics.jsonl as long as it was now: a resumed run cuts what later steps appended.
            "metrics_bytes": trainer.logger.history_bytes(),
            **({"grad_scaler": trainer.precision.state_dict()} if trainer.precision.enabled else {})}


def restore_carry(trainer: Trainer, saved: Any) -> Any:
    """The saved ACT carry poured into one the model builds for the saved batch (same classes, shapes);
    with gradient accumulation a list of them, one per micro-batch slot."""
    if isinstance(saved, list):
        return [restore_carry(trainer, slot) for slot in saved]
    template = trainer.head.initial_carry(saved["fields"]["current_data"])
    return st.to_device(restore_dataclasses(template, saved), trainer.device)


def restore_train_state(trainer: Trainer, ckpt: LoadedCheckpoint) -> None:
    path = ckpt.path
    trainer.head.load_state_dict({k: v.to(trainer.device) for k, v in ckpt.model_state.items()})
    if trainer.ema is not None:
        if ckpt.ema_state is not None:
            trainer.ema.load_state_dict(ckpt.ema_state)
        else:  # ema switched on at resume: average from the resumed weights, not the initial ones
            trainer.ema = EMA(trainer.head, trainer.cfg.ema_rate)
    ts = ckpt.train_state
    if len(ts["optimizers"]) != len(trainer.optimizers):
        raise ValueError(f"{path}: {len(ts['optimizers'])} optimizer states for {len(trainer.optimizers)} "
                         "optimizers (was freeze_weights or puzzle_emb_ndim changed?)")
    for optimizer, state in zip(trainer.optimizers, ts["optimizers"]):
        optimizer.load_state_dict(state)
    trainer.step, trainer.iteration = ts["step"], ts["iteration"]
    trainer.nonfinite_skipped = ts.get("nonfinite_skipped", 0)
    trainer.history_bytes = ts.get("metrics_bytes")
    trainer.precision.load_state_dict(ts.get("grad_scaler"))
    rank, same_world = trainer.info.rank, ts["world_size"] == trainer.info.world_size
    mine = ts["per_rank"][rank if same_world else 0]
    trainer.train_loader.load_state_dict(mine["loader"])  # every rank walks the same global plan
    if same_world:
        if mine["carry"] is not None:
            trainer.carry = restore_carry(trainer, mine["carry"])
        st.set_rng_state(mine["rng"], trainer.device)  # last: nothing may draw after it
