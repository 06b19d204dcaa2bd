"""The SEAL stages: ``ttt`` (ARC's fixed recipe), ``self_edit``, ``evaluate``, ``restem`` and ``loop``.

The work itself is the shared loop (``seal/loop.py``) driving the configured domain
(``seal/domains/``); this module only picks the stage, the round and the model.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Optional

from seal import loop
from seal.adapters import fixed_recipe_slots
from seal.domains import make_domain
from seal.loop import SealInputError, evaluate_round, restem_round, run_rounds, self_edit_round
from utils.io import atomic_write_json

STAGES = ("ttt", "self_edit", "evaluate", "restem", "loop")


class Session(loop.Session):
    """A loop session whose domain comes from ``cfg.domain``."""

    def __init__(self, cfg, items: Optional[list] = None):
        super().__init__(cfg, make_domain(cfg.domain), items)


def run_ttt(session: Session) -> Path:
    if session.cfg.domain != "arc":
        raise SealInputError("stage=ttt is the ARC domain's fixed-recipe baseline; use stage=self_edit or loop")
    folder = session.run_dir / "ttt"
    model = session.cfg.model.name_or_path
    session.use_model(model)
    self_edit_round(session, folder, lambda task: fixed_recipe_slots(session.cfg.ttt.fixed_recipe), model)
    return folder


def run_self_edit(session: Session, r: int) -> Path:
    folder = session.round_dir(r)
    model = session.model_for_round(r)
    session.use_model(model)
    self_edit_round(session, folder, lambda item: session.domain.propose(session, item, r), model)
    return folder


def _wandb_logger(cfg):
    if not cfg.wandb:
        return None
    import wandb

    run = wandb.init(project=cfg.wandb_project, config=asdict(cfg), dir=cfg.run_dir)

    def log(entry: dict) -> None:
        flat = {k: v for k, v in entry["summary"].items() if isinstance(v, (int, float))}
        run.log({**flat, "round": entry["round"]}, step=entry["round"])

    return log


def run_stage(cfg, tasks: Optional[list] = None) -> dict:
    """Run ``cfg.stage.name``; returns a small dict naming what was produced."""
    name = cfg.stage.name
    if name not in STAGES:
        raise SealInputError(f"unknown stage {name!r}; valid: {list(STAGES)}")
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
        hint = "stage=ttt" if target == "ttt" else f"stage=self_edit stage.round={r}"
        return evaluate_round(session, session.run_dir / target, model, hint)
    if name == "restem":
        return {"next_model": restem_round(session, r)}
    if cfg.domain == "knowledge" and cfg.knowledge.mode == "cpt":
        from seal.domains.knowledge_cpt import run_cpt

        return run_cpt(session)
    propose = lambda r: (lambda item: session.domain.propose(session, item, r))  # noqa: E731
    rounds = run_rounds(session, propose, cfg.stage.rounds, _wandb_logger(cfg))
    return {"rounds": rounds}
