"""Knowledge-incorporation prompts (plain text, as SEAL gives its base models) and training sequences.

A self-edit prompt shows the passage (title and text) and asks for one kind of derived text;
the model's completion is split into training sequences, each prefixed with the title (so a
question naming the topic recalls it), and the passage itself is one more sequence unless
``include_passage`` is off. Questions are asked with the topic but without the passage.
"""

from __future__ import annotations

import re

from seal.knowledge.data import Passage

SELF_EDIT_PROMPTS = {
    # The paper's default: implications derived directly or indirectly from the passage.
    "implications": ("Read the passage below and list implications that follow from it, "
                     "directly or indirectly.\n\nPassage:\n{title}\n{context}\n\nImplications:\n"),
    "rewrite": ("Read the passage below and rewrite it in several different ways, "
                "one rewrite per line.\n\nPassage:\n{title}\n{context}\n\nRewrites:\n"),
    "questions_answers": ("Read the passage below and turn it into questions with their answers, "
                          "each as 'Question N: ...' followed by 'Answer: ...'.\n\n"
                          "Passage:\n{title}\n{context}\n\nQuestion 1: "),
    "facts": ("Read the passage below and list every fact it states, one short self-contained "
              "sentence per line.\n\nPassage:\n{title}\n{context}\n\nFacts:\n"),
}
ANSWER_PROMPT = "Answer the question directly and concisely.\nQuestion: Topic: {title}\n{question}\nAnswer:\n"
SEGMENT_SEPARATOR = "---"


def self_edit_prompt(kind: str, passage: Passage) -> str:
    if kind not in SELF_EDIT_PROMPTS:
        raise ValueError(f"unknown knowledge.prompt {kind!r}; valid: {sorted(SELF_EDIT_PROMPTS)}")
    return SELF_EDIT_PROMPTS[kind].format(title=passage.title, context=passage.context)


def answer_prompt(passage: Passage, question: str) -> str:
    return ANSWER_PROMPT.format(title=passage.title, question=question)


def training_sequences(self_edit: str, passage: Passage, *, split_newlines: bool, include_passage: bool) -> list[str]:
    """SEAL's inner-loop data: '---'-separated segments (or lines), each '<title>\\n<segment>'."""
    segments = [s.strip() for s in self_edit.split(SEGMENT_SEPARATOR) if s.strip()]
    if split_newlines:
        if re.search(r"Question\s+\d+:", self_edit) and "Answer" in self_edit:
            # Question/answer self-edits: one sequence per pair, not per line.
            segments = [s.strip() for s in re.split(r"\n(?=Question\s+\d+:)", self_edit.strip()) if s.strip()]
        else:
            segments = [line.strip() for s in segments for line in s.splitlines() if line.strip()]
    sequences = [f"{passage.title}\n{s}" for s in segments]
    if include_passage:
        sequences.append(f"{passage.title}\n{passage.context.strip()}")
    return sequences


def first_line(text: str) -> str:
    """The answer a grader sees: generation's first non-empty line (models run on after answering)."""
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""
