"""Grading answers without any external API: SQuAD exact match and token F1, and a local yes/no judge.

EM and F1 follow the official SQuAD v1.1 script's definitions: lower-case, drop punctuation and the
articles a/an/the, collapse whitespace; F1 over the multiset of tokens; the best over the accepted
answers. The judge is a causal LM (by default the base model) asked ``JUDGE_PROMPT``; its reply is
read as yes, no or unparseable (which counts as wrong and is reported).
"""

from __future__ import annotations

import re
import string
from collections import Counter

JUDGE_PROMPT = (
    "You are grading a student's answer against the gold answer. Use no outside knowledge. The "
    "student's answer may add details, but it must convey the gold answer and must not contradict it; "
    "ignore style and phrasing. Reply with only 'yes' or 'no'.\n\n"
    "Question: {question}\nGold answer: {gold}\nStudent answer: {prediction}\n"
    "Is the student's answer correct? Reply 'yes' or 'no'.\nReply:"
)
_PUNCT = set(string.punctuation)
_YES, _NO = re.compile(r"\byes\b", re.I), re.compile(r"\bno\b", re.I)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: list[str]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(a) for a in answers))


def _f1(prediction: str, answer: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, answers: list[str]) -> float:
    return max(_f1(prediction, a) for a in answers)


def judge_prompt(question: str, gold: str, prediction: str) -> str:
    return JUDGE_PROMPT.format(question=question, gold=gold, prediction=prediction.strip())


def parse_verdict(reply: str) -> str:
    """'yes' or 'no' when the reply holds exactly one of those words, else 'unparseable'."""
    has_yes, has_no = bool(_YES.search(reply)), bool(_NO.search(reply))
    if has_yes != has_no:
        return "yes" if has_yes else "no"
    return "unparseable"
