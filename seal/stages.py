"""The SEAL stages and the outer loop; every output lives under ``run_dir``.

Layout (a "round folder" is ``run_dir/round_<r>``, or ``run_dir/ttt`` for the fixed recipe)::

    config.json                         the resolved configuration
    round_<r>/recipes/<task>.json       recipe slots (self-edit prompt, response, recipe or reason)
    round_<r>/adapters/<task>/<k>/      one LoRA adapter per trained slot
    round_<r>/evaluate/<task>.json      per-recipe rewards and the task's voted attempts
    round_<r>/results.json              per task and per recipe correctness + summary
    round_<r>/submission.json           Kaggle format
    round_<r>/restem/model/             the merged model the next round starts from
    round_<r>/restem/summary.json       which model the next round uses

A task's json is written last (atomically), so re-running a stage skips tasks already done.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from evaluators.submission import write_submission
from seal.adapters import evaluate_task_adapters, fixed_recipe_slots, train_task_adapters
from seal.config import SealConfig
from seal.model import choose_precision, load_model, load_tokenizer
from seal.restem import restem_update
from seal.self_edit import propose_recipes, self_edit_messages
from seal.tasks import ArcTask, load_tasks
from utils.distributed import print0, select_device
from utils.io import atomic_write_json

STAGES = ("ttt", "self_edit", "evaluate", "restem", "loop")


class Session:
    """The configuration, the tasks and the one model (with its tokenizer) currently loaded."""

    def __init__(self, cfg: SealConfig, tasks: Optional[list[ArcTask]] = None):
        self.cfg = cfg
        self.run_dir = Path(cfg.run_dir)
        self.tasks = tasks if tasks is not None else load_tasks(cfg.data)
        self.device = select_device(cfg.model.device)
        self.precision = choose_precision(cfg.model.dtype, self.device)
        self.model_path: Optional[str] = None
        self.model = None
        self.tokenizer = None

    def use_model(self, path: str) -> None:
        if self.model_path == path and self.model is not None:
            return
        self.model = None  # free the previous one first
        self.tokenizer = load_tokenizer(path)
        self.model, self.precision = load_model(self.cfg.model, self.device, name_or_path=path)
        self.model_path = path

    def round_dir(self, r: int) -> Path:
        return self.run_dir / f"round_{r}"

    def model_for_round(self, r: int) -> str:
        """Round 0 starts from the configured model; round r from round r-1's ReSTEM output."""
        if r == 0:
            return self.cfg.model.name_or_path
        summary = self.round_dir(r - 1) / "restem" / "summary.json"
        if not summary.exists():
            raise FileNotFoundError(f"round {r} needs round {r - 1}'s ReSTEM output ({summary}); run stage=restem first")
        return json.loads(summary.read_text())["next_model"]


def _read(path: Path):
    return json.loads(path.read_text())


def train_round(session: Session, folder: Path, propose) -> None:
    """For each task not yet done: get its recipe slots from ``propose(task)`` and train adapters."""
    for task in session.tasks:
        done = folder / "recipes" / f"{task.task_id}.json"
        if done.exists():
            print0(f"skip {task.task_id}: recipes already trained")
            continue
        slots = propose(task)
        slots = train_task_adapters(session, task, slots, folder / "adapters" / task.task_id)
        atomic_write_json(done, slots, indent=1)


def run_ttt(session: Session) -> Path:
    folder = session.run_dir / "ttt"
    session.use_model(session.cfg.model.name_or_path)
    train_round(session, folder, lambda task: fixed_recipe_slots(session.cfg.ttt.fixed_recipe))
    return folder


def run_self_edit(session: Session, r: int) -> Path:
    folder = session.round_dir(r)
    session.use_model(session.model_for_round(r))
    cfg = session.cfg

    def propose(task):
        slots = propose_recipes(session.model, session.tokenizer, task, cfg.self_edit, cfg.model.date_string, cfg.seed + r)
        for k, s in enumerate(slots):
            print0(f"  {task.task_id}[{k}]: " + ("recipe ok" if s["recipe"] else s["reason"]))
        return slots

    train_round(session, folder, propose)
    return folder


def run_evaluate(session: Session, folder: Path, model_path: str) -> dict:
    session.use_model(model_path)
    per_task = {}
    for task in session.tasks:
        recipes_file = folder / "recipes" / f"{task.task_id}.json"
        out_file = folder / "evaluate" / f"{task.task_id}.json"
        if out_file.exists():
            print0(f"skip {task.task_id}: already evaluated")
        elif not recipes_file.exists():
            raise FileNotFoundError(f"{recipes_file} is missing: train the adapters first")
        else:
            atomic_write_json(out_file, evaluate_task_adapters(session, task, _read(recipes_file)))
        per_task[task.task_id] = _read(out_file)
    results = {"tasks": per_task, "summary": summarise(per_task)}
    atomic_write_json(folder / "results.json", results, indent=1)
    write_submission(folder / "submission.json", {t: r["attempts"] for t, r in per_task.items()})
    print0(f"{folder.name}: " + json.dumps(results["summary"]))
    return results


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


def run_restem(session: Session, r: int) -> str:
    """Fine-tune round r's model on its rewarded self-edits; returns the next round's model path."""
    folder = session.round_dir(r)
    summary_file = folder / "restem" / "summary.json"
    if summary_file.exists():
        print0(f"skip restem of round {r}: already done")
        return _read(summary_file)["next_model"]
    current = session.model_for_round(r)
    pairs = []
    for task in session.tasks:
        slots = _read(folder / "recipes" / f"{task.task_id}.json")
        rewards = _read(folder / "evaluate" / f"{task.task_id}.json")["recipes"]
        pairs += [(self_edit_messages(task), s["response"]) for k, s in enumerate(slots)
                  if rewards[str(k)]["reward"] == 1 and s.get("response")]
    summary = {"num_pairs": len(pairs), "base_model": current}
    if not pairs:
        summary.update(next_model=current, note="no self-edit earned a reward; the model is unchanged")
    else:
        session.use_model(current)
        out_dir = folder / "restem" / "model"
        stats = restem_update(session.model, session.tokenizer, session.precision, pairs, session.cfg,
                              out_dir, session.cfg.seed + r)
        session.model, session.model_path = None, None  # merged in place: reload before reuse
        summary.update(next_model=str(out_dir), steps=stats.steps, first_loss=stats.first_loss, last_loss=stats.last_loss)
    atomic_write_json(summary_file, summary, indent=1)
    print0(f"restem round {r}: {summary['num_pairs']} pairs -> {summary['next_model']}")
    return summary["next_model"]


def run_stage(cfg: SealConfig, tasks: Optional[list[ArcTask]] = None) -> dict:
    """Run ``cfg.stage.name``; returns a small dict naming what was produced."""
    name = cfg.stage.name
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; valid: {list(STAGES)}")
    session = Session(cfg, tasks)
    session.run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(session.run_dir / "config.json", asdict(cfg), indent=1)
    r = cfg.stage.round
    if name == "ttt":
        return {"folder": str(run_ttt(session))}
    if name == "self_edit":
        return {"folder": str(run_self_edit(session, r))}
    if name == "evaluate":
        target = cfg.stage.target or f"round_{r}"
        model = cfg.model.name_or_path if target == "ttt" else session.model_for_round(r)
        return run_evaluate(session, session.run_dir / target, model)
    if name == "restem":
        return {"next_model": run_restem(session, r)}
    rounds = []
    for r in range(cfg.stage.rounds):
        folder = run_self_edit(session, r)
        results = run_evaluate(session, folder, session.model_for_round(r))
        rounds.append({"round": r, "summary": results["summary"], "next_model": run_restem(session, r)})
    atomic_write_json(session.run_dir / "loop_summary.json", rounds, indent=1)
    return {"rounds": rounds}
