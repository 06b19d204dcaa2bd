"""SEAL's text format for ARC grids and chat messages, and its parser.

A grid prints like ``str(np.array(grid))`` without line wrapping: ``[[3 3 8]\\n [3 7 0]]``.
A demonstration is ``input -> output#``; the demonstrations go in the system message, the query
``input -> `` is the user message and the answer ``output#`` the assistant message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from dataset.arc_grid import MAX_GRID_SIZE, NUM_COLOURS

IO_SEPARATOR = " -> "
OUTPUT_FOOTER = "#"
INSTRUCTION = (
    "Work out the rule that turns each input grid into its output grid in the examples below, "
    "then apply it to the test input. Answer in exactly the format of the examples.\n"
    "The grids are written as python arrays:\n"
)

Message = dict[str, str]


def grid_to_text(grid: np.ndarray) -> str:
    rows = [" ".join(str(int(v)) for v in row) for row in np.asarray(grid)]
    return "[[" + "]\n [".join(rows) + "]]"


@dataclass(frozen=True)
class ParsedGrid:
    grid: Optional[np.ndarray]
    error: Optional[str] = None  # why the text is unparseable (None when grid is set)

    @property
    def ok(self) -> bool:
        return self.grid is not None


_ROW = re.compile(r"\[\s*([0-9][0-9\s]*)\]")


def parse_grid(text: str) -> ParsedGrid:
    """Parse a model's answer (up to the first '#') into a grid; never raises."""
    body = text.split(OUTPUT_FOOTER, 1)[0].strip()
    if not body.startswith("[["):
        return ParsedGrid(None, "unparseable: answer does not start with '[['")
    end = body.find("]]")
    if end < 0:
        return ParsedGrid(None, "unparseable: no closing ']]'")
    rows = _ROW.findall(body[1 : end + 1])
    if not rows:
        return ParsedGrid(None, "unparseable: no rows")
    cells = [r.split() for r in rows]
    widths = {len(r) for r in cells}
    if len(widths) != 1:
        return ParsedGrid(None, f"unparseable: ragged rows (widths {sorted(widths)})")
    if any(len(c) != 1 for r in cells for c in r):
        return ParsedGrid(None, "unparseable: cells must be single digits 0..9")
    grid = np.array([[int(c) for c in r] for r in cells], dtype=np.uint8)
    if grid.shape[0] > MAX_GRID_SIZE or grid.shape[1] > MAX_GRID_SIZE or grid.max() >= NUM_COLOURS:
        return ParsedGrid(None, f"unparseable: grid {grid.shape} outside the ARC limits")
    return ParsedGrid(grid)


def demonstration_text(inp: np.ndarray, out: np.ndarray) -> str:
    return grid_to_text(inp) + IO_SEPARATOR + grid_to_text(out) + OUTPUT_FOOTER


def query_messages(demos: Sequence[tuple[np.ndarray, np.ndarray]], query: np.ndarray) -> list[Message]:
    system = INSTRUCTION + "".join(demonstration_text(i, o) + "\n" for i, o in demos)
    return [{"role": "system", "content": system}, {"role": "user", "content": grid_to_text(query) + IO_SEPARATOR}]


def answer_message(answer: np.ndarray) -> Message:
    return {"role": "assistant", "content": grid_to_text(answer) + OUTPUT_FOOTER}


def chat_prompt(tokenizer, messages: list[Message], date_string: str) -> str:
    """The prompt text up to the assistant's turn, date pinned."""
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, date_string=date_string
    )


def prompt_and_completion(tokenizer, messages: list[Message], answer: Message, date_string: str) -> tuple[str, str]:
    """Split the full conversation text into (prompt, completion) at the assistant's turn.

    The completion is exactly what the template writes for the answer (its text plus the
    end-of-turn marker), so training supervises what generation must produce.
    """
    prompt = chat_prompt(tokenizer, messages, date_string)
    full = tokenizer.apply_chat_template(
        messages + [answer], tokenize=False, add_generation_prompt=False, date_string=date_string
    )
    if not full.startswith(prompt):
        raise ValueError("chat template renders the prompt differently once the answer is added")
    return prompt, full[len(prompt) :]


def encode_pair(tokenizer, prompt: str, completion: str, all_tokens: bool) -> tuple[list[int], list[int]]:
    """Token ids and labels: -100 over the prompt (unless ``all_tokens``), ids over the completion.

    Prompt and completion are tokenized apart and joined, so the mask boundary comes from the
    prompt's own tokenized length. Special tokens are already in the template text, so the
    tokenizer must not add a second BOS.
    """
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    labels = (list(p_ids) if all_tokens else [-100] * len(p_ids)) + list(c_ids)
    return list(p_ids) + list(c_ids), labels
