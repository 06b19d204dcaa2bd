"""Passages with their questions: SEAL's JSON list, a local JSON/JSONL file, or SQuAD v1.1 from the Hub.

Every source becomes a list of ``Passage(passage_id, title, context, questions)``; a record that
does not have that shape stops the run with one line naming the file and the record.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from seal.errors import SealInputError

SQUAD_PARQUET = "plain_text/{split}-00000-of-00001.parquet"


@dataclass
class Question:
    question: str
    answer: str  # the reference answer (SQuAD: the first of the annotators' answers)
    aliases: list[str] = field(default_factory=list)  # every accepted answer (EM/F1 take the best)


@dataclass
class Passage:
    passage_id: str
    title: str
    context: str
    questions: list[Question]


def _string(record: dict, key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise SealInputError(f"{where}: '{key}' must be a non-empty string")
    return value


def parse_record(record, where: str, passage_id: str) -> Passage:
    """One ``{title, context, questions: [{question, answer}]}`` record (answer may be a list)."""
    if not isinstance(record, dict):
        raise SealInputError(f"{where}: expected an object with title, context and questions")
    title, context = _string(record, "title", where), _string(record, "context", where)
    raw = record.get("questions")
    if not isinstance(raw, list) or not raw:
        raise SealInputError(f"{where}: 'questions' must be a non-empty list of {{question, answer}}")
    questions = []
    for j, q in enumerate(raw):
        at = f"{where} question {j}"
        if not isinstance(q, dict):
            raise SealInputError(f"{at}: expected an object with question and answer")
        answers = q.get("answer")
        answers = answers if isinstance(answers, list) else [answers]
        if not answers or not all(isinstance(a, str) and a.strip() for a in answers):
            raise SealInputError(f"{at}: 'answer' must be a non-empty string (or a list of them)")
        questions.append(Question(_string(q, "question", at), answers[0], list(dict.fromkeys(answers))))
    return Passage(str(record.get("id", passage_id)), title, context, questions)


def load_file(path: str | Path) -> list[Passage]:
    """SEAL's JSON list, or JSON Lines (one record per line)."""
    path = Path(path)
    if not path.is_file():
        raise SealInputError(f"{path}: no such file (knowledge.path)")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append((f"{path} line {n}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise SealInputError(f"{path} line {n}: not valid JSON ({exc.msg})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SealInputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, list):
            raise SealInputError(f"{path}: expected a JSON list of {{title, context, questions}} records")
        records = [(f"{path} record {i}", r) for i, r in enumerate(data)]
    if not records:
        raise SealInputError(f"{path}: holds no passages")
    return [parse_record(r, where, f"{i:05d}") for i, (where, r) in enumerate(records)]


def group_squad_rows(rows: Iterable[dict]) -> list[dict]:
    """SQuAD's one-row-per-question layout -> SEAL's one record per passage, in first-seen order."""
    passages: dict[tuple[str, str], dict] = {}
    for row in rows:
        key = (row["title"], row["context"])
        record = passages.setdefault(key, {"title": row["title"].replace("_", " "), "context": row["context"],
                                           "questions": []})
        answers = list(row["answers"]["text"])
        record["questions"].append({"question": row["question"], "answer": answers})
    return list(passages.values())


def load_squad_from_hub(repo: str, split: str) -> list[Passage]:
    """SQuAD v1.1 (``rajpurkar/squad``) through huggingface_hub; HF_HUB_OFFLINE=1 reads the cache only."""
    from huggingface_hub import hf_hub_download

    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SealInputError("knowledge.source=hub reads SQuAD's parquet file: pip install pyarrow") from None
    filename = SQUAD_PARQUET.format(split=split)
    try:
        local = hf_hub_download(repo, filename, repo_type="dataset")
    except Exception as exc:  # network, offline without a cache, a wrong repo or split
        raise SealInputError(f"{repo}/{filename}: could not be fetched ({type(exc).__name__}); "
                             "check the repo and knowledge.hub_split, or use knowledge.source=seal_json") from None
    records = group_squad_rows(pq.read_table(local).to_pylist())
    return [parse_record(r, f"{repo}/{filename} passage {i}", f"{i:05d}") for i, r in enumerate(records)]


def load_passages(cfg) -> list[Passage]:
    """The passages a KnowledgeConfig names: shuffled when asked, then the first ``num_passages``."""
    if cfg.source == "hub":
        passages = load_squad_from_hub(cfg.hub_repo, cfg.hub_split)
    elif cfg.source == "invented":
        passages = load_file(sample_passages(cfg.path))
    elif cfg.source in ("seal_json", "local"):
        if not cfg.path:
            raise SealInputError(f"knowledge.source={cfg.source} needs knowledge.path=<file.json|file.jsonl>")
        passages = load_file(cfg.path)
    else:
        raise SealInputError(f"unknown knowledge.source {cfg.source!r}; valid: hub, seal_json, local, invented")
    ids = [p.passage_id for p in passages]
    if len(set(ids)) != len(ids):
        raise SealInputError(f"{cfg.path or cfg.hub_repo}: passage ids repeat")
    if cfg.shuffle_seed is not None:
        random.Random(cfg.shuffle_seed).shuffle(passages)
    return passages[: cfg.num_passages] if cfg.num_passages is not None else passages


def sample_passages(path: Optional[str] = None) -> Path:
    """The invented passages shipped for preset=test (facts no model can know)."""
    return Path(path) if path else Path(__file__).with_name("invented_passages.json")
