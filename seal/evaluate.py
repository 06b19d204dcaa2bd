"""Answering a task's test inputs with one adapter: many views of the task, greedy answers, votes.

For each test input the model sees the full demonstration set, each leave-one-out subset, a few
example-order permutations and geometric variants (demonstrations and query transformed alike).
Each answer is parsed, mapped back through its variant's inverse and voted on; the top
``attempts`` grids are the submission. A task is correct when every test input's true output
is among its attempts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from seal.augment import Geometric
from seal.generate import generate
from seal.self_edit import task_seed
from seal.tasks import ArcTask, Pair
from seal.text_format import chat_prompt, parse_grid, query_messages

from evaluators.voting import rank_answers


@dataclass
class Query:
    test_index: int
    prompt: str
    invert: Callable[[np.ndarray], np.ndarray]


def _identity(grid: np.ndarray) -> np.ndarray:
    return grid


def demo_sets(demos: list[Pair], cfg, rng: np.random.Generator) -> list[list[Pair]]:
    sets = [list(demos)]
    if cfg.leave_one_out and len(demos) > 1:
        sets += [[d for j, d in enumerate(demos) if j != i] for i in range(len(demos))]
    for _ in range(cfg.num_permutations):
        sets.append([demos[k] for k in rng.permutation(len(demos))])
    return sets


def build_queries(task: ArcTask, tokenizer, cfg, date_string: str, seed: int) -> list[Query]:
    rng = np.random.default_rng(task_seed(seed, task.task_id))
    sets = demo_sets(task.demos, cfg, rng)
    queries = []
    for t, test_input in enumerate(task.test_inputs):
        for demos in sets:
            prompt = chat_prompt(tokenizer, query_messages(demos, test_input), date_string)
            queries.append(Query(t, prompt, _identity))
        for name in cfg.geometric:
            geo = Geometric(name)
            demos = [(geo.apply(i), geo.apply(o)) for i, o in task.demos]
            prompt = chat_prompt(tokenizer, query_messages(demos, geo.apply(test_input)), date_string)
            queries.append(Query(t, prompt, geo.invert))
    return queries


def vote(predictions: list[tuple[np.ndarray, float]], attempts: int) -> list[np.ndarray]:
    ranked = rank_answers(predictions)
    return [np.asarray(r[0]) for r in ranked[:attempts]]


def answer_task(model, tokenizer, task: ArcTask, cfg, date_string: str, seed: int) -> dict:
    """Run every query of ``task`` through ``model`` (its adapter active) and vote."""
    queries = build_queries(task, tokenizer, cfg, date_string, seed)
    unique = list(dict.fromkeys(q.prompt for q in queries))  # identical views cost one generation
    outputs = dict(zip(unique, generate(model, tokenizer, unique, max_new_tokens=cfg.max_new_tokens,
                                        batch_size=cfg.batch_size)))
    per_test: list[list[tuple[np.ndarray, float]]] = [[] for _ in task.test_inputs]
    unparseable = 0
    for q in queries:
        out = outputs[q.prompt]
        parsed = parse_grid(out.text)
        if not parsed.ok:
            unparseable += 1
            continue
        # Confidence = geometric-mean token probability, in [0, 1] as rank_answers expects.
        per_test[q.test_index].append((q.invert(parsed.grid), float(np.exp(out.mean_logprob))))
    attempts = [vote(preds, cfg.attempts) for preds in per_test]
    correct: Optional[bool] = None
    if task.test_outputs is not None:
        correct = all(
            any(a.shape == truth.shape and np.array_equal(a, truth) for a in tries)
            for tries, truth in zip(attempts, task.test_outputs)
        )
    return {
        "correct": correct,
        "attempts": [[a.tolist() for a in tries] for tries in attempts],
        "num_queries": len(queries),
        "unparseable": unparseable,
    }
