"""Test-time-training data for one task: leave-out pseudo-tasks x augmentations x permutations.

Each pseudo-task takes one demonstration as its query and one or more of the others (all but
``n - 1`` more, for each ``n`` in ``leave_n``) as its demonstrations. Every augmenter of the
recipe is applied to every pseudo-task; colour and example permutations make further copies.
Pseudo-tasks with a grid over 30x30 are dropped, duplicates removed (first occurrence kept, so
the order never depends on Python's hash seed), sequences of ``max_tokens`` or more dropped, and
a seeded shuffle keeps at most ``max_examples``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from dataset.arc_grid import MAX_GRID_SIZE
from seal.augment import GridAugmenter, augmenters_for, random_colour_map
from seal.tasks import ArcTask, Pair
from seal.text_format import answer_message, encode_pair, prompt_and_completion, query_messages


@dataclass(frozen=True)
class PseudoTask:
    demos: tuple[Pair, ...]
    query: Pair

    def grids(self):
        for i, o in (*self.demos, self.query):
            yield i
            yield o

    def key(self) -> bytes:
        return b"|".join(g.tobytes() + bytes(str(g.shape), "ascii") for g in self.grids())

    def fits(self) -> bool:
        return all(g.shape[0] <= MAX_GRID_SIZE and g.shape[1] <= MAX_GRID_SIZE for g in self.grids())

    def map(self, fn) -> "PseudoTask":
        return PseudoTask(tuple((fn(i), fn(o)) for i, o in self.demos), (fn(self.query[0]), fn(self.query[1])))


@dataclass
class TrainExample:
    input_ids: list[int]
    labels: list[int]


def leave_out_tasks(demos: list[Pair], n: int) -> list[PseudoTask]:
    """Query demo i; drop it and every choice of ``n - 1`` others from the demonstrations."""
    out = []
    for i in range(len(demos)):
        rest = [j for j in range(len(demos)) if j != i]
        for dropped in itertools.combinations(rest, n - 1):
            kept = [demos[j] for j in rest if j not in dropped]
            if kept:
                out.append(PseudoTask(tuple(kept), demos[i]))
    return out


def _dedupe(tasks: list[PseudoTask]) -> list[PseudoTask]:
    seen: dict[bytes, PseudoTask] = {}
    for t in tasks:
        seen.setdefault(t.key(), t)
    return list(seen.values())


def augmented_pseudo_tasks(
    demos: list[Pair], augmenters: list[GridAugmenter], n: int, permute_n: int, rng: np.random.Generator
) -> list[PseudoTask]:
    base = leave_out_tasks(demos, n)
    augmented = []
    for aug in augmenters:
        for t in base:
            bound = aug.bind(rng)
            new = t.map(bound.apply)
            if new.fits():
                augmented.append(new)
    pool = _dedupe(base + augmented)
    permuted = []
    for _ in range(permute_n):
        for t in pool:
            if augmenters:  # SEAL leaves colours alone when no augmentation is asked for
                lut = random_colour_map(rng)
                t = t.map(lambda g, lut=lut: lut[g])
            order = rng.permutation(len(t.demos))
            permuted.append(PseudoTask(tuple(t.demos[k] for k in order), t.query))
    return _dedupe(permuted + pool)


def build_ttt_examples(task: ArcTask, recipe, ttt_cfg, tokenizer, date_string: str, seed: int) -> list[TrainExample]:
    """Tokenized training sequences for one task under one recipe (deterministic in ``seed``)."""
    rng = np.random.default_rng(seed)
    augmenters = augmenters_for(recipe)
    all_tokens = recipe.strategy == "train_using_all_tokens"
    examples: list[TrainExample] = []
    for n in ttt_cfg.leave_n:
        for t in augmented_pseudo_tasks(task.demos, augmenters, n, ttt_cfg.permute_n, rng):
            prompt, completion = prompt_and_completion(
                tokenizer, query_messages(t.demos, t.query[0]), answer_message(t.query[1]), date_string
            )
            ids, labels = encode_pair(tokenizer, prompt, completion, all_tokens)
            if len(ids) < ttt_cfg.max_tokens:
                examples.append(TrainExample(ids, labels))
    if len(examples) > ttt_cfg.max_examples:
        order = rng.permutation(len(examples))[: ttt_cfg.max_examples]
        examples = [examples[k] for k in order]
    return examples
