"""Per-task adapters: train one LoRA per recipe slot, and answer a task with each of its adapters.

One base model stays in memory; adapters are attached for training and removed again
(``unload``), and for evaluation loaded, switched and deleted one at a time.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from evaluators.voting import rank_answers
from seal.config import Recipe
from seal.evaluate import answer_task
from seal.loop import say
from seal.model import attach_lora, quiet_peft
from seal.self_edit import task_seed
from seal.tasks import ArcTask
from seal.train import num_steps, train_supervised
from seal.ttt_data import build_ttt_examples
from utils.io import atomic_directory


def train_task_adapters(session, task: ArcTask, slots: list[dict], adapter_dir: Path) -> list[dict]:
    """Train an adapter for every slot whose recipe is valid; returns the slots annotated.

    A slot gets ``status`` "trained" (with ``adapter``, ``steps``, losses) or "rejected" (with
    ``reason``): no recipe, no training data, or more steps than ``ttt.max_steps``.
    """
    cfg, tok = session.cfg, session.tokenizer
    seed = task_seed(cfg.seed, task.task_id)
    out = []
    for k, slot in enumerate(slots):
        slot = dict(slot)
        if slot.get("recipe") is None:
            out.append({**slot, "status": "rejected"})
            continue
        recipe = Recipe(**slot["recipe"])
        examples = build_ttt_examples(task, recipe, cfg.ttt, tok, cfg.model.date_string, seed)
        steps = num_steps(len(examples), cfg.ttt.batch_size, recipe.num_train_epochs)
        slot["num_examples"] = len(examples)
        if not examples:
            out.append({**slot, "status": "rejected", "reason": "no training data (every sequence too long)"})
            continue
        if steps > cfg.ttt.max_steps:
            reason = (f"out of range: {steps} training steps exceed the cap of {cfg.ttt.max_steps} "
                      "(raise ttt.max_steps, or lower ttt.max_examples or the epochs)")
            out.append({**slot, "status": "rejected", "reason": reason})
            continue
        peft_model = attach_lora(session.model, cfg.lora, session.precision, cfg.model.gradient_checkpointing, seed + k)
        stats = train_supervised(
            peft_model, examples, learning_rate=recipe.learning_rate, epochs=recipe.num_train_epochs,
            batch_size=cfg.ttt.batch_size, warmup_steps=cfg.ttt.warmup_steps, pad_id=tok.pad_token_id,
            precision=session.precision, seed=seed + k, grad_clip=cfg.ttt.grad_clip,
        )
        path = adapter_dir / str(k)
        with atomic_directory(path) as tmp:
            peft_model.save_pretrained(tmp)
        session.model = peft_model.unload()  # LoRA layers removed; the base weights are untouched
        say(f"  {task.task_id}[{k}]: {stats.steps} steps, loss {stats.first_loss:.3f} -> {stats.last_loss:.3f}")
        out.append({**slot, "status": "trained", "adapter": str(path), "steps": stats.steps,
                    "first_loss": stats.first_loss, "last_loss": stats.last_loss})
    return out


def evaluate_task_adapters(session, task: ArcTask, slots: list[dict]) -> dict:
    """Answer ``task`` with each trained adapter; per-recipe rewards plus a pooled 2-attempt vote."""
    from peft import PeftModel

    cfg = session.cfg
    recipes, pooled = {}, [[] for _ in task.test_inputs]
    peft_model, previous = None, None
    for k, slot in enumerate(slots):
        if slot.get("status") != "trained":
            recipes[str(k)] = {"correct": False if task.test_outputs is not None else None, "reward": 0,
                               "reason": slot.get("reason") or "no adapter"}
            continue
        name = f"recipe_{k}"
        if peft_model is None:
            with quiet_peft():
                peft_model = PeftModel.from_pretrained(session.model, slot["adapter"], adapter_name=name)
        else:
            peft_model.load_adapter(slot["adapter"], adapter_name=name)
            peft_model.set_adapter(name)
            peft_model.delete_adapter(previous)
        previous = name
        answer = answer_task(peft_model, session.tokenizer, task, cfg.evaluate, cfg.model.date_string, cfg.seed)
        recipes[str(k)] = {**answer, "reward": int(bool(answer["correct"]))}
        for t, tries in enumerate(answer["attempts"]):
            # Each adapter's attempts vote for the task's submission, its best attempt counting most.
            for rank, grid in enumerate(tries):
                pooled[t].append((np.asarray(grid, dtype=np.uint8), 1.0 / (rank + 1)))
    if peft_model is not None:
        session.model = peft_model.unload()
    attempts = [[r[0] for r in rank_answers(p)[: cfg.evaluate.attempts]] for p in pooled]
    correct = None
    if task.test_outputs is not None:
        correct = all(any(np.array_equal(a, truth) for a in tries) for tries, truth in zip(attempts, task.test_outputs))
    return {
        "task_id": task.task_id,
        "correct": correct,
        "oracle_correct": any(r["reward"] == 1 for r in recipes.values()),
        "attempts": [[np.asarray(a).tolist() for a in tries] for tries in attempts],
        "recipes": recipes,
    }


def fixed_recipe_slots(recipe: Recipe) -> list[dict]:
    return [{"prompt": None, "response": None, "attempts": 0, "recipe": asdict(recipe), "reason": None}]
