"""Knowledge incorporation, continued pre-training mode: one adapter over many passages at once.

``knowledge.mode=cpt``: every passage gets its k self-edits as in single-passage mode; then for
each j < k one adapter is trained on the j-th self-edit of *all* passages together (SEAL's CPT
setting, n=200 passages in the paper) and answers every passage's questions without context.
Scoring is single-passage mode's (baseline, adapted, EM/F1/judge, rewards), per passage, in
``run_dir/cpt/results.json``. Each step's output is written as it completes, so a run resumes.
"""

from __future__ import annotations

import json

from seal.domains.knowledge import answer_questions, sequence_examples, train_adapter
from seal.knowledge.prompts import training_sequences
from seal.loop import evaluate_round, fingerprint, say
from utils.io import atomic_write_json


def run_cpt(session) -> dict:
    cfg, d = session.cfg, session.domain
    folder = session.run_dir / "cpt"
    model = cfg.model.name_or_path
    session.use_model(model)
    k = cfg.knowledge
    settings = fingerprint({"model": model, **d.apply_settings(cfg), "passages": [p.passage_id for p in session.items]})
    proposals = {}
    for item in session.items:  # the self-edits, one file per passage
        path = folder / "proposals" / f"{item.passage_id}.json"
        if path.exists() and json.loads(path.read_text())["settings"] == settings:
            proposals[item.passage_id] = json.loads(path.read_text())["slots"]
            continue
        proposals[item.passage_id] = d.propose(session, item, 0)
        atomic_write_json(path, {"settings": settings, "slots": proposals[item.passage_id]}, indent=1)
    answers: dict[str, list] = {p.passage_id: [] for p in session.items}
    for j in range(k.num_self_edits):  # one adapter per self-edit index, over every passage
        path = folder / "adapters" / f"{j}.json"
        if path.exists() and json.loads(path.read_text())["settings"] == settings:
            done = json.loads(path.read_text())
        else:
            sequences = [s for p in session.items if proposals[p.passage_id][j]["response"].strip()
                         for s in training_sequences(proposals[p.passage_id][j]["response"], p,
                                                     split_newlines=k.split_newlines, include_passage=k.include_passage)]
            peft_model, stats = train_adapter(session, sequence_examples(session.tokenizer, sequences), cfg.seed + j)
            done = {"settings": settings, "num_sequences": len(sequences), "steps": stats.steps,
                    "first_loss": stats.first_loss, "last_loss": stats.last_loss,
                    "answers": {p.passage_id: answer_questions(peft_model, session.tokenizer, p, cfg)
                                for p in session.items}}
            session.model = peft_model.unload()
            atomic_write_json(path, done, indent=1)
            say(f"cpt adapter {j}: {len(sequences)} sequences, {stats.steps} steps, "
                f"loss {stats.first_loss:.3f} -> {stats.last_loss:.3f}")
        for pid, a in done["answers"].items():
            answers[pid].append(a)
    for item in session.items:  # in the loop's layout, so evaluation and results are single-passage mode's
        slots = [{**s, "status": "trained", "answers": a, "settings": settings}
                 for s, a in zip(proposals[item.passage_id], answers[item.passage_id])]
        atomic_write_json(folder / d.edits_dir / f"{item.passage_id}.json", slots, indent=1)
    return evaluate_round(session, folder, model, "knowledge.mode=cpt stage=loop")
