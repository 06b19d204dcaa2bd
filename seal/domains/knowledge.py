"""Knowledge incorporation (SEAL's first experiment): a self-edit is text derived from a passage.

Per passage: k self-edits are sampled (``knowledge.prompt``, temperature 1.0, top-p 0.95); each is
split into training sequences and trained into a fresh LoRA (r 32, alpha 64, 10 epochs, lr 1e-3,
batch 1 in SEAL's preset), which answers the passage's questions greedily without the passage;
the adapter is then removed (SEAL keeps none). Evaluation answers the same questions with the
round's model alone (the baseline) and grades both by SQuAD EM/F1 and the judge model. A
self-edit's reward is ``adapted - baseline`` accuracy (``reward=continuous``) or whether it is
above zero (``binary``, the paper's), on ``knowledge.reward_metric``. ReSTEM trains on each
rewarded passage's best self-edit.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict
from pathlib import Path

import torch

from seal.generate import generate
from seal.knowledge.data import Passage, load_passages
from seal.knowledge.grading import exact_match, f1_score, judge_prompt, parse_verdict
from seal.knowledge.prompts import answer_prompt, first_line, self_edit_prompt, training_sequences
from seal.knowledge.trend import write_trend
from seal.model import attach_lora, load_model, load_tokenizer
from seal.self_edit import task_seed
from seal.train import train_supervised
from seal.ttt_data import TrainExample

METRICS = ("judge", "exact_match", "f1")


def plain(tokenizer, text: str) -> str:
    """A plain-text prompt as SEAL gives base models: BOS (when the tokenizer has one), then the text."""
    return (tokenizer.bos_token or "") + text


def sequence_examples(tokenizer, sequences: list[str]) -> list[TrainExample]:
    """Every token of each sequence is supervised (continued pre-training on the self-edit)."""
    out = []
    for text in sequences:
        ids = tokenizer(plain(tokenizer, text), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        out.append(TrainExample(list(ids), list(ids)))
    return out


def answer_questions(model, tokenizer, passage: Passage, cfg) -> list[str]:
    prompts = [plain(tokenizer, answer_prompt(passage, q.question)) for q in passage.questions]
    outs = generate(model, tokenizer, prompts, max_new_tokens=cfg.knowledge.answer_max_new_tokens,
                    batch_size=cfg.evaluate.batch_size)
    return [o.text for o in outs]


def train_adapter(session, examples: list[TrainExample], seed: int):
    """A fresh LoRA on ``session.model`` trained on ``examples``; returns (peft model, stats)."""
    cfg, k = session.cfg, session.cfg.knowledge
    peft_model = attach_lora(session.model, cfg.lora, session.precision, cfg.model.gradient_checkpointing, seed)
    stats = train_supervised(peft_model, examples, learning_rate=k.learning_rate, epochs=k.epochs,
                             batch_size=k.batch_size, warmup_steps=k.warmup_steps,
                             pad_id=session.tokenizer.pad_token_id, precision=session.precision, seed=seed)
    return peft_model, stats


def judge_for(session):
    """(model, tokenizer) of the judge: the configured one, by default the configured base model."""
    path = session.cfg.knowledge.judge or session.cfg.model.name_or_path
    if path == session.model_path:
        return session.model, session.tokenizer
    cached = getattr(session, "judge", None)
    if cached is None or cached[0] != path:
        model, _ = load_model(session.cfg.model, session.device, name_or_path=path)
        session.judge = cached = (path, model, load_tokenizer(path))
    return cached[1], cached[2]


def grade(session, passage: Passage, answers: list[str]) -> dict:
    """Per-question EM, F1 and judge verdicts of ``answers``, and their means."""
    model, tok = judge_for(session)
    shown = [first_line(a) for a in answers]
    prompts = [plain(tok, judge_prompt(q.question, q.answer, s)) for q, s in zip(passage.questions, shown)]
    replies = generate(model, tok, prompts, max_new_tokens=session.cfg.knowledge.judge_max_new_tokens,
                       batch_size=session.cfg.evaluate.batch_size)
    verdicts = [parse_verdict(r.text) for r in replies]
    per_q = [{"answer": s, "exact_match": exact_match(s, q.aliases or [q.answer]),
              "f1": f1_score(s, q.aliases or [q.answer]), "verdict": v}
             for q, s, v in zip(passage.questions, shown, verdicts)]
    n = len(per_q)
    return {"judge": sum(p["verdict"] == "yes" for p in per_q) / n,
            "exact_match": sum(p["exact_match"] for p in per_q) / n,
            "f1": sum(p["f1"] for p in per_q) / n,
            "unparseable": sum(p["verdict"] == "unparseable" for p in per_q),
            "questions": per_q}


def reward_of(improvement: float, kind: str) -> float:
    if kind == "binary":
        return float(improvement > 0)
    if kind == "continuous":
        return improvement
    raise ValueError(f"knowledge.reward must be binary or continuous, got {kind!r}")


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


class KnowledgeDomain:
    noun = "passage"
    edits_dir = "self_edits"

    def load_items(self, cfg) -> list[Passage]:
        return load_passages(cfg.knowledge)

    def item_id(self, item: Passage) -> str:
        return item.passage_id

    def propose(self, session, item: Passage, r: int) -> list[dict]:
        k = session.cfg.knowledge
        prompt = self_edit_prompt(k.prompt, item)
        torch.manual_seed(task_seed(session.cfg.seed + r, item.passage_id))
        outs = generate(session.model, session.tokenizer, [plain(session.tokenizer, prompt)],
                        max_new_tokens=k.max_new_tokens, batch_size=1, temperature=k.temperature, top_p=k.top_p,
                        num_return_sequences=k.num_self_edits)
        return [{"prompt": prompt, "response": o.text} for o in outs]

    def apply(self, session, item: Passage, slots: list[dict], adapter_dir: Path) -> list[dict]:
        k = session.cfg.knowledge
        seed = task_seed(session.cfg.seed, item.passage_id)
        out = []
        for j, slot in enumerate(slots):
            if not slot["response"].strip():
                out.append({**slot, "status": "rejected", "reason": "empty self-edit (no training text)"})
                continue
            sequences = training_sequences(slot["response"], item, split_newlines=k.split_newlines,
                                           include_passage=k.include_passage)
            peft_model, stats = train_adapter(session, sequence_examples(session.tokenizer, sequences), seed + j)
            answers = answer_questions(peft_model, session.tokenizer, item, session.cfg)
            session.model = peft_model.unload()  # LoRA layers removed; the base weights are untouched
            out.append({**slot, "status": "trained", "sequences": sequences, "answers": answers,
                        "steps": stats.steps, "first_loss": stats.first_loss, "last_loss": stats.last_loss})
        return out

    def apply_settings(self, cfg) -> dict:
        k = asdict(cfg.knowledge)
        for key in ("judge", "judge_max_new_tokens", "reward", "reward_metric", "num_passages", "source", "path"):
            k.pop(key)
        return {"lora": asdict(cfg.lora), "knowledge": k, "seed": cfg.seed, "dtype": cfg.model.dtype,
                "quantization": cfg.model.quantization, "batch_size": cfg.evaluate.batch_size}

    def evaluate_settings(self, cfg) -> dict:
        k = cfg.knowledge
        return {"judge": k.judge or cfg.model.name_or_path, "judge_max_new_tokens": k.judge_max_new_tokens,
                "reward": k.reward, "reward_metric": k.reward_metric, "answers": k.answer_max_new_tokens}

    def evaluate(self, session, item: Passage, slots: list[dict]) -> dict:
        k = session.cfg.knowledge
        if k.reward_metric not in METRICS:
            raise ValueError(f"knowledge.reward_metric must be one of {list(METRICS)}, got {k.reward_metric!r}")
        baseline = grade(session, item, answer_questions(session.model, session.tokenizer, item, session.cfg))
        edits = {}
        for j, slot in enumerate(slots):
            if slot.get("status") != "trained":
                edits[str(j)] = {"reward": 0.0, "reason": slot.get("reason")}
                continue
            adapted = grade(session, item, slot["answers"])
            improvement = adapted[k.reward_metric] - baseline[k.reward_metric]
            edits[str(j)] = {**adapted, "improvement": improvement, "reward": reward_of(improvement, k.reward)}
        return {"passage_id": item.passage_id, "title": item.title,
                "questions": [q.question for q in item.questions], "gold": [q.answer for q in item.questions],
                "baseline": baseline, "self_edits": edits, "rewards": {j: e["reward"] for j, e in edits.items()}}

    def results(self, per_item: dict) -> dict:
        rewards = [r for p in per_item.values() for r in p["rewards"].values()]
        summary = {"num_passages": len(per_item), "num_self_edits": len(rewards)}
        for m in METRICS:
            summary[f"baseline_{m}"] = _mean(p["baseline"][m] for p in per_item.values())
            summary[f"adapted_{m}"] = _mean(_mean(e.get(m) for e in p["self_edits"].values())
                                            for p in per_item.values())
        summary.update(
            reward_mean=_mean(rewards), reward_std=statistics.pstdev(rewards) if rewards else None,
            success_rate=_mean([float(r > 0) for r in rewards]),
            judge_unparseable=sum(p["baseline"]["unparseable"] + sum(e.get("unparseable", 0) for e in
                                  p["self_edits"].values()) for p in per_item.values()),
        )
        return {"passages": per_item, "summary": summary}

    def restem_pairs(self, item: Passage, slots: list[dict], scores: dict) -> list:
        """The best rewarded self-edit of the passage (highest reward, then improvement, then first)."""
        edits = scores["self_edits"]
        ranked = sorted((j for j in edits if edits[j]["reward"] > 0),
                        key=lambda j: (-edits[j]["reward"], -edits[j].get("improvement", 0.0), int(j)))
        return [(slots[int(ranked[0])]["prompt"], slots[int(ranked[0])]["response"])] if ranked else []

    def after_round(self, session, folder: Path, results: dict) -> None:
        write_trend(session.run_dir, session.cfg.knowledge.reward_metric)
