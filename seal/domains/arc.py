"""Few-shot ARC (SEAL's second experiment): a self-edit is a JSON training recipe for one task.

The recipe picks augmentations and hyper-parameters; an adapter is trained on the task's
leave-out pseudo-tasks under it (``seal/adapters.py``) and is rewarded when it solves the task's
test inputs (``seal/evaluate.py``). ``stage=ttt`` trains one fixed recipe per task instead.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from evaluators.submission import write_submission
from seal.adapters import evaluate_task_adapters, train_task_adapters
from seal.self_edit import propose_recipes, self_edit_messages
from seal.loop import say
from seal.tasks import ArcTask, load_tasks


class ArcDomain:
    noun = "task"
    edits_dir = "recipes"

    def load_items(self, cfg) -> list[ArcTask]:
        return load_tasks(cfg.data)

    def item_id(self, item: ArcTask) -> str:
        return item.task_id

    def propose(self, session, item: ArcTask, r: int) -> list[dict]:
        cfg = session.cfg
        slots = propose_recipes(session.model, session.tokenizer, item, cfg.self_edit, cfg.model.date_string, cfg.seed + r)
        for k, s in enumerate(slots):
            say(f"  {item.task_id}[{k}]: " + ("recipe ok" if s["recipe"] else s["reason"]))
        return slots

    def apply(self, session, item: ArcTask, slots: list[dict], adapter_dir: Path) -> list[dict]:
        return train_task_adapters(session, item, slots, adapter_dir)

    def apply_settings(self, cfg) -> dict:
        return {"lora": asdict(cfg.lora), "ttt": asdict(cfg.ttt), "self_edit": asdict(cfg.self_edit),
                "seed": cfg.seed, "dtype": cfg.model.dtype, "quantization": cfg.model.quantization}

    def evaluate_settings(self, cfg) -> dict:
        return {"evaluate": asdict(cfg.evaluate), "seed": cfg.seed}

    def evaluate(self, session, item: ArcTask, slots: list[dict]) -> dict:
        return evaluate_task_adapters(session, item, slots)

    def results(self, per_item: dict) -> dict:
        return {"tasks": per_item, "summary": summarise(per_item)}

    def restem_pairs(self, item: ArcTask, slots: list[dict], scores: dict) -> list:
        rewards = scores["recipes"]
        return [(self_edit_messages(item), s["response"]) for k, s in enumerate(slots)
                if rewards[str(k)]["reward"] == 1 and s.get("response")]

    def after_round(self, session, folder: Path, results: dict) -> None:
        write_submission(folder / "submission.json", {t: r["attempts"] for t, r in results["tasks"].items()})


def summarise(per_task: dict) -> dict:
    solved = [r for r in per_task.values() if r["correct"] is not None]
    rewards = [rec["reward"] for r in solved for rec in r["recipes"].values()]
    return {
        "accuracy": sum(r["correct"] for r in solved) / len(solved) if solved else None,
        "correct_tasks": sum(r["correct"] for r in solved),
        "total_tasks": len(solved),
        "oracle_correct_tasks": sum(r["oracle_correct"] for r in solved),
        "success_rate": sum(rewards) / len(rewards) if rewards else None,
        "successful_adapters": sum(rewards),
        "total_adapters": len(rewards),
    }
