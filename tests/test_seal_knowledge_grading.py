"""Knowledge incorporation without a model: EM/F1, the judge's verdicts, training sequences, data files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seal.knowledge.data import Passage, Question, group_squad_rows, load_file
from seal.knowledge.grading import exact_match, f1_score, judge_prompt, normalize_answer, parse_verdict
from seal.knowledge.prompts import SELF_EDIT_PROMPTS, first_line, self_edit_prompt, training_sequences
from seal.loop import SealInputError

REPO = Path(__file__).resolve().parents[1]
PASSAGE = Passage("p0", "Vellmoor", "Vellmoor lies on the Oskel.", [Question("Which river?", "the Oskel", ["the Oskel"])])


def test_exact_match_and_f1_match_hand_worked_values():
    assert normalize_answer("  The Oskel!  ") == "oskel" and normalize_answer("an apple, a pear") == "apple pear"
    assert exact_match("the Oskel.", ["Oskel"]) == 1.0 and exact_match("Oskel river", ["Oskel"]) == 0.0
    # pred {salt, lichen, and, moss}, gold {salt, lichen}: P = 2/4, R = 2/2, F1 = 2PR/(P+R) = 2/3
    assert f1_score("salt lichen and moss", ["salt lichen"]) == pytest.approx(2 / 3)
    # articles dropped; multiset overlap: pred [b, b, c], gold [b, c, c] share one b and one c: P = R = 2/3
    assert f1_score("a b b c", ["b c c"]) == pytest.approx(2 / 3)
    assert f1_score("Fenn", ["Ivo Marsk", "fenn"]) == 1.0  # the best accepted answer counts
    assert f1_score("", ["Fenn"]) == 0.0 and f1_score("Marsk Ivo", ["Ivo Marsk"]) == 1.0


@pytest.mark.parametrize("reply, verdict", [
    ("Yes.", "yes"), ("  YES, it matches", "yes"), ("no, it does not", "no"), ("No", "no"),
    ("The student is correct: yes", "yes"), ("yes or no", "unparseable"), ("maybe", "unparseable"),
    ("", "unparseable"), ("Nope", "unparseable"), ("Yesterday", "unparseable"),
])
def test_judge_reply_parsed_as_yes_no_or_unparseable(reply, verdict):
    assert parse_verdict(reply) == verdict


def test_judge_prompt_shows_question_gold_and_answer():
    text = judge_prompt("Which river?", "the Oskel", "  Oskel\n")
    assert "Question: Which river?\nGold answer: the Oskel\nStudent answer: Oskel\n" in text
    assert text.rstrip().endswith("Reply:") and "'yes' or 'no'" in text


def test_self_edit_split_into_titled_training_sequences():
    assert training_sequences("one\ntwo\n---\nthree", PASSAGE, split_newlines=False, include_passage=True) == [
        "Vellmoor\none\ntwo", "Vellmoor\nthree", "Vellmoor\nVellmoor lies on the Oskel."]
    assert training_sequences("Implications:\n1. a\n2. b", PASSAGE, split_newlines=True, include_passage=False) == [
        "Vellmoor\nImplications:", "Vellmoor\n1. a", "Vellmoor\n2. b"]
    qa = "Question 1: Where?\nAnswer: here\nQuestion 2: When?\nAnswer: now"
    assert training_sequences(qa, PASSAGE, split_newlines=True, include_passage=False) == [
        "Vellmoor\nQuestion 1: Where?\nAnswer: here", "Vellmoor\nQuestion 2: When?\nAnswer: now"]
    for kind in SELF_EDIT_PROMPTS:
        prompt = self_edit_prompt(kind, PASSAGE)
        assert "Vellmoor\nVellmoor lies on the Oskel." in prompt
    assert first_line("\n  Oskel \nQuestion: more") == "Oskel"


def test_squad_rows_grouped_into_passages():
    rows = [
        {"title": "Isle_of_Quor", "context": "C1", "question": "q1", "answers": {"text": ["a", "a b"]}},
        {"title": "Other", "context": "C2", "question": "q2", "answers": {"text": ["x"]}},
        {"title": "Isle_of_Quor", "context": "C1", "question": "q3", "answers": {"text": ["c"]}},
    ]
    assert group_squad_rows(rows) == [
        {"title": "Isle of Quor", "context": "C1", "questions": [{"question": "q1", "answer": ["a", "a b"]},
                                                               {"question": "q3", "answer": ["c"]}]},
        {"title": "Other", "context": "C2", "questions": [{"question": "q2", "answer": ["x"]}]},
    ]


def test_seal_json_and_jsonl_load_alike(tmp_path):
    records = [{"title": "T", "context": "C", "questions": [{"question": "Q?", "answer": "A"}]},
               {"id": "mine", "title": "U", "context": "D", "questions": [{"question": "R?", "answer": ["B", "b2"]}]}]
    (tmp_path / "p.json").write_text(json.dumps(records))
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    for name in ("p.json", "p.jsonl"):
        a, b = load_file(tmp_path / name)
        assert (a.passage_id, a.title, a.questions[0].answer) == ("00000", "T", "A")
        assert (b.passage_id, b.questions[0].answer, b.questions[0].aliases) == ("mine", "B", ["B", "b2"])


GOOD = {"title": "T", "context": "C", "questions": [{"question": "Q?", "answer": "A"}]}


@pytest.mark.parametrize("name, text, message", [
    ("bad.json", "[{oops", "bad.json: not valid JSON"),
    ("obj.json", json.dumps({"title": "T"}), "obj.json: expected a JSON list"),
    ("notitle.json", json.dumps([GOOD, {"context": "C", "questions": []}]), "notitle.json record 1: 'title'"),
    ("noq.json", json.dumps([{**GOOD, "questions": []}]), "noq.json record 0: 'questions' must be a non-empty list"),
    ("ans.json", json.dumps([{**GOOD, "questions": [{"question": "Q", "answer": 3}]}]),
     "ans.json record 0 question 0: 'answer'"),
    ("lines.jsonl", json.dumps(GOOD) + "\n{broken\n", "lines.jsonl line 2: not valid JSON"),
    ("empty.json", "[]", "empty.json: holds no passages"),
])
def test_malformed_files_named_with_their_record(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(SealInputError, match=message.replace("(", r"\(")):
        load_file(tmp_path / name)


def test_bad_file_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "passages.json"
    bad.write_text(json.dumps([GOOD, {"title": "T", "context": "C", "questions": "none"}]))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "seal", "domain=knowledge", "knowledge.source=seal_json", f"knowledge.path={bad}",
         f"run_dir={tmp_path / 'run'}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"error: {bad} record 1: 'questions' must be a non-empty list of {{question, answer}}"]
