"""The one SEAL self-edit loop, shared by every domain.

A round: for each context (an ARC task, a passage) the model writes k self-edits, each is applied
through a short LoRA SFT (``self_edit`` stage), the adapters are scored against the context's
baseline (``evaluate``), and the rewarded self-edits train the next round's model (``restem``,
merged). What a context is, how a self-edit becomes training data, how it is scored and rewarded
is the domain's business (``seal/domains/``); this file only orders the work, skips what is done
and reports what was rejected.

Layout under ``run_dir`` (``round_<r>`` per round)::

    config.json                          the resolved configuration
    round_<r>/<edits_dir>/<id>.json      the context's self-edit slots (prompt, response, status or reason)
    round_<r>/evaluate/<id>.json         per-slot scores and rewards
    round_<r>/results.json               per context details + summary
    round_<r>/self_edit_summary.json     trained / rejected counts and every rejection's reason
    round_<r>/restem/summary.json        which model the next round uses (restem/model when trained)

A context's json is written last (atomically) and carries a fingerprint of the settings that made
it: a re-run skips only what succeeded under the same settings, and redoes the rest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional, Protocol

from tqdm.auto import tqdm

from seal.errors import SealInputError  # noqa: F401  (re-exported: callers catch it from here)
from seal.model import choose_precision, load_model, load_tokenizer
from seal.restem import restem_update
from utils.distributed import is_main, select_device
from utils.io import atomic_write_json


class Domain(Protocol):
    """What a SEAL domain supplies; ``seal/domains/arc.py`` and ``knowledge.py`` are the examples."""

    noun: str  # "task", "passage": what one context is called in messages
    edits_dir: str  # folder name of the per-context self-edit files

    def load_items(self, cfg) -> list: ...
    def item_id(self, item) -> str: ...
    def propose(self, session, item, r: int) -> list[dict]: ...  # k self-edit slots
    def apply(self, session, item, slots: list[dict], adapter_dir: Path) -> list[dict]: ...  # train; status
    def evaluate(self, session, item, slots: list[dict]) -> dict: ...  # must hold "rewards": {k: float}
    def results(self, per_item: dict) -> dict: ...  # results.json content (with "summary")
    def restem_pairs(self, item, slots: list[dict], scores: dict) -> list[tuple[Any, str]]: ...
    def apply_settings(self, cfg) -> dict: ...
    def evaluate_settings(self, cfg) -> dict: ...
    def after_round(self, session, folder: Path, results: dict) -> None: ...


def say(message: str) -> None:
    """Print above any running progress bar (never glued to it), on the main process only."""
    if is_main():
        tqdm.write(message)


def fingerprint(settings: Any) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read(path: Path):
    return json.loads(path.read_text())


class Session:
    """The configuration, the domain, its contexts and the one model (with tokenizer) in memory."""

    def __init__(self, cfg, domain: Domain, items: Optional[list] = None):
        self.cfg = cfg
        self.domain = domain
        self.run_dir = Path(cfg.run_dir)
        self.items = items if items is not None else domain.load_items(cfg)
        self.tasks = self.items  # the ARC domain's name for them
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
            raise SealInputError(
                f"round {r} needs round {r - 1}'s ReSTEM output ({summary}): run stage=restem stage.round={r - 1} first")
        return _read(summary)["next_model"]


def _bar(session, what: str):
    return tqdm(session.items, desc=what, unit=session.domain.noun, leave=False, dynamic_ncols=True)


def self_edit_round(session: Session, folder: Path, propose, model_path: str) -> dict:
    """For each context not done under these settings: get its slots from ``propose`` and apply them."""
    d = session.domain
    settings = fingerprint({"model": model_path, **d.apply_settings(session.cfg)})
    trained, rejected = 0, []
    for item in _bar(session, f"{folder.name}: self-edits"):
        iid = d.item_id(item)
        done = folder / d.edits_dir / f"{iid}.json"
        slots = _read(done) if done.exists() else None
        if slots is not None:
            same = all(s.get("settings") == settings for s in slots)
            if same and not any(s.get("status") == "rejected" for s in slots):
                say(f"skip {iid}: {d.edits_dir} already trained")
                trained += len(slots)
                continue
            why = "had rejected self-edits" if same else "the settings changed"
            say(f"redo {iid}: {why}")
        slots = d.apply(session, item, propose(item), folder / "adapters" / iid)
        for s in slots:
            s["settings"] = settings
        atomic_write_json(done, slots, indent=1)
        for k, s in enumerate(slots):
            if s.get("status") == "rejected":
                rejected.append({d.noun: iid, "slot": k, "reason": s.get("reason") or "rejected"})
                say(f"  {iid}[{k}] rejected: {s.get('reason')}")
            else:
                trained += 1
    summary = {"trained": trained, "rejected": len(rejected), "rejections": rejected}
    atomic_write_json(folder / "self_edit_summary.json", summary, indent=1)
    if rejected:
        say(f"{folder.name}: {len(rejected)} of {trained + len(rejected)} self-edits rejected "
               f"(reasons above and in {folder / 'self_edit_summary.json'})")
    return summary


def evaluate_round(session: Session, folder: Path, model_path: str, stage_hint: str) -> dict:
    """Score every context's applied self-edits; writes results.json and returns it."""
    d = session.domain
    per_item = {}
    missing = [d.item_id(i) for i in session.items if not (folder / d.edits_dir / f"{d.item_id(i)}.json").exists()]
    if missing:
        raise SealInputError(f"{folder / d.edits_dir} has no self-edits for {d.noun} {missing[0]}"
                             f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}: run {stage_hint} first")
    session.use_model(model_path)
    base = d.evaluate_settings(session.cfg)
    for item in _bar(session, f"{folder.name}: evaluate"):
        iid = d.item_id(item)
        slots = _read(folder / d.edits_dir / f"{iid}.json")
        settings = fingerprint({"model": model_path, "edits": [s.get("settings") for s in slots], **base})
        out_file = folder / "evaluate" / f"{iid}.json"
        if out_file.exists() and _read(out_file).get("settings") == settings:
            say(f"skip {iid}: already evaluated")
        else:
            atomic_write_json(out_file, {**d.evaluate(session, item, slots), "settings": settings})
        per_item[iid] = _read(out_file)
    results = d.results(per_item)
    atomic_write_json(folder / "results.json", results, indent=1)
    d.after_round(session, folder, results)
    say(f"{folder.name}: " + json.dumps(results["summary"]))
    return results


def restem_round(session: Session, r: int) -> str:
    """Fine-tune round r's model on its rewarded self-edits; returns the next round's model path."""
    d = session.domain
    folder = session.round_dir(r)
    summary_file = folder / "restem" / "summary.json"
    if summary_file.exists():
        say(f"skip restem of round {r}: already done")
        return _read(summary_file)["next_model"]
    current = session.model_for_round(r)
    pairs = []
    for item in session.items:
        iid = d.item_id(item)
        scores_file = folder / "evaluate" / f"{iid}.json"
        if not scores_file.exists():
            raise SealInputError(f"{scores_file} is missing: run stage=evaluate stage.round={r} first")
        pairs += d.restem_pairs(item, _read(folder / d.edits_dir / f"{iid}.json"), _read(scores_file))
    summary: dict = {"num_pairs": len(pairs), "base_model": current}
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
    say(f"restem round {r}: {summary['num_pairs']} pairs -> {summary['next_model']}")
    return summary["next_model"]


def run_rounds(session: Session, propose_for_round, rounds: int, log_round=None) -> list[dict]:
    """``rounds`` x (self_edit -> evaluate -> restem), each round from the previous round's model."""
    out = []
    for r in range(rounds):
        folder = session.round_dir(r)
        model = session.model_for_round(r)
        session.use_model(model)
        edits = self_edit_round(session, folder, propose_for_round(r), model)
        results = evaluate_round(session, folder, session.model_for_round(r), f"stage=self_edit stage.round={r}")
        entry = {"round": r, "summary": results["summary"], "self_edits": {k: edits[k] for k in ("trained", "rejected")},
                 "next_model": restem_round(session, r)}
        out.append(entry)
        if log_round is not None:
            log_round(entry)
    atomic_write_json(session.run_dir / "loop_summary.json", out, indent=1)
    return out
