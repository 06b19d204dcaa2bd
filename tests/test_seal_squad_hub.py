"""SQuAD v1.1 from the Hub, read through huggingface_hub's offline cache (no network).

The parquet file is written here in the layout of ``rajpurkar/squad`` (one row per question, answers as
``{"text": [...], "answer_start": [...]}``) with invented passages, then placed in a cache folder exactly
as huggingface_hub lays one out; ``HF_HUB_OFFLINE=1`` makes any attempt to reach the network fail.
"""

from __future__ import annotations

import hashlib
import io

import pytest

pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")

from seal.knowledge.data import SQUAD_PARQUET, load_squad_from_hub  # noqa: E402
from seal.loop import SealInputError  # noqa: E402

ROWS = [  # invented facts; two questions on the first passage, one on the second
    {"id": "a1", "title": "Vellmoor_Bridge", "context": "The Vellmoor bridge was built of grey slate in 1712.",
     "question": "What was the bridge built of?", "answers": {"text": ["grey slate", "slate"], "answer_start": [30, 35]}},
    {"id": "a2", "title": "Vellmoor_Bridge", "context": "The Vellmoor bridge was built of grey slate in 1712.",
     "question": "When was it built?", "answers": {"text": ["1712"], "answer_start": [47]}},
    {"id": "b1", "title": "Quor", "context": "Quor exports lichen dye.",
     "question": "What does Quor export?", "answers": {"text": ["lichen dye"], "answer_start": [13]}},
]


def parquet_bytes(rows) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


def cache_dataset_file(cache, repo_id: str, filename: str, data: bytes, commit: str = "e" * 40) -> None:
    repo_dir = cache / ("datasets--" + repo_id.replace("/", "--"))
    blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    target = repo_dir / "snapshots" / commit / filename
    target.parent.mkdir(parents=True)
    target.symlink_to(blob)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)


def test_squad_from_an_offline_cache_groups_questions_by_passage(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    cache_dataset_file(cache, "rajpurkar/squad", SQUAD_PARQUET.format(split="validation"), parquet_bytes(ROWS))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))

    passages = load_squad_from_hub("rajpurkar/squad", "validation")
    assert [(p.title, p.context) for p in passages] == [
        ("Vellmoor Bridge", "The Vellmoor bridge was built of grey slate in 1712."), ("Quor", "Quor exports lichen dye.")]
    assert [[q.question for q in p.questions] for p in passages] == [
        ["What was the bridge built of?", "When was it built?"], ["What does Quor export?"]]
    assert [(q.answer, q.aliases) for q in passages[0].questions] == [("grey slate", ["grey slate", "slate"]), ("1712", ["1712"])]

    # A split that is not in the cache: one line naming the repo and file, no network attempt.
    with pytest.raises(SealInputError, match="rajpurkar/squad/plain_text/train-00000-of-00001.parquet"):
        load_squad_from_hub("rajpurkar/squad", "train")
