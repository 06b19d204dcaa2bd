"""Choosing the augmented copies of a task: the reference rule, computed without hashing grids.

The reference draws up to ``5 * num_aug`` random augmentations (a dihedral transform plus a
permutation of colours 1..9) and keeps each one whose augmented task differs from the original
and from every copy kept so far, where two tasks are equal when their multisets of
(input, output) pairs are equal (SHA-256 over the sorted pair hashes). It stops at ``num_aug``.

We keep exactly the same copies, but find duplicates with integer keys instead of hashing every
augmented grid. For each transform ``t`` and pair ``j`` we write ``t(pair j)`` as a colour
pattern (colours renumbered 1, 2, ... by first appearance, 0 kept) plus the list of colours
that fill the pattern. Two coloured pairs are equal exactly when pattern and colour list are
equal, and a colour permutation only changes the list: after augmentation ``(t, p)`` pair ``j``
is ``(pattern id of t(pair j), p[colours of t(pair j)])``, packed into one int64. Sorting the
keys of the pairs compares multisets, like the reference's sorted hashes.

Every random draw comes from a generator seeded by (seed, subset, task id), so a task's copies
do not depend on which worker builds it or in what order.
"""

from __future__ import annotations

import hashlib

import numpy as np

from dataset.arc_grid import NUM_COLOURS, NUM_DIHEDRAL
from dataset.build_arc_encode import SWAPS_AXES, transformed_cells

AUGMENT_RETRIES_FACTOR = 5  # the reference's tries per wanted copy
_DIGITS = 10 ** np.arange(NUM_COLOURS - 1, dtype=np.int64)  # colour of pattern label i -> digit i-1
_PATTERN_BASE = np.int64(10 ** (NUM_COLOURS - 1))


def stable_rng(seed: int, *names: str) -> np.random.Generator:
    """A generator from ``seed`` and some names, stable across processes and Python versions."""
    digest = hashlib.sha256("\x1f".join(names).encode()).digest()
    words = np.frombuffer(digest, dtype="<u4").tolist()
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *words])))


def _pair_tables(pairs: list[tuple[np.ndarray, np.ndarray | None]]) -> tuple[np.ndarray, np.ndarray]:
    """pattern_id[t, j] and fill[t, j, 9] for every transform t and pair j.

    All pairs are handled together per transform: the transformed grids are laid out one
    after another (pair j's input, then its output), colours are renumbered per pair by
    first appearance, and each pair's renumbered cells plus shapes name its pattern.
    """
    grids = [(j, g) for j, (inp, out) in enumerate(pairs) for g in (inp, out) if g is not None]
    sizes = np.array([g.size for _, g in grids])
    owner, pos = _runs(sizes)
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    pair_of_cell = np.array([j for j, _ in grids])[owner]  # grids of a pair are adjacent
    pair_end = np.searchsorted(pair_of_cell, np.arange(len(pairs)), side="right")
    pair_start = np.concatenate([[0], pair_end[:-1]])
    shapes = np.array([g.shape for _, g in grids])
    h, w = shapes[owner, 0], shapes[owner, 1]
    r, c = np.divmod(pos, w)
    colours = np.concatenate([g.ravel() for _, g in grids])
    grid_pair = np.array([j for j, _ in grids])
    ids: dict[tuple, int] = {}
    pattern_id = np.zeros((NUM_DIHEDRAL, len(pairs)), dtype=np.int64)
    fill = np.zeros((NUM_DIHEDRAL, len(pairs), NUM_COLOURS - 1), dtype=np.intp)
    for t in range(NUM_DIHEDRAL):
        rt, ct = transformed_cells(r, c, h, w, t)
        width = h if SWAPS_AXES[t] else w
        seq = np.empty_like(colours)
        seq[start[owner] + rt * width + ct] = colours  # each transformed grid in row-major order
        pair_colour, first = np.unique(pair_of_cell * NUM_COLOURS + seq, return_index=True)
        pair_colour = pair_colour[np.argsort(first)]  # by first appearance, so grouped by pair
        pair, colour = np.divmod(pair_colour[pair_colour % NUM_COLOURS != 0], NUM_COLOURS)
        rank = np.arange(len(pair)) - np.searchsorted(pair, pair, side="left")
        label = np.zeros((len(pairs), NUM_COLOURS), dtype=np.uint8)
        label[pair, colour] = rank + 1
        fill[t, pair, rank] = colour
        pattern = label[pair_of_cell, seq]
        t_shapes = shapes[:, ::-1] if SWAPS_AXES[t] else shapes
        for j in range(len(pairs)):
            key = (t_shapes[grid_pair == j].tobytes(), pattern[pair_start[j]:pair_end[j]].tobytes())
            pattern_id[t, j] = ids.setdefault(key, len(ids))
    return pattern_id, fill


def _runs(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, position within owner) for consecutive runs of the given lengths."""
    owner = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return owner, np.arange(int(lengths.sum())) - starts[owner]


def task_keys(pattern_id: np.ndarray, fill: np.ndarray, transforms: np.ndarray,
              colour_maps: np.ndarray) -> np.ndarray:
    """Content key of each augmented task: [n_candidates, n_pairs] int64, pairs sorted."""
    # colour_maps[c, fill[t_c]] as a 1-D take: numpy's broadcast 2-D fancy indexing is slow.
    flat_index = np.arange(len(transforms))[:, None, None] * NUM_COLOURS + fill[transforms]
    colours = np.take(colour_maps.ravel(), flat_index).astype(np.int64)  # [n, pairs, 9]
    keys = pattern_id[transforms] * _PATTERN_BASE + colours @ _DIGITS
    return np.sort(keys, axis=1)


def first_occurrences(keys: np.ndarray) -> np.ndarray:
    """Sorted indices of the first row of each distinct row of ``keys``."""
    order = np.lexsort(keys.T[::-1])  # stable: equal rows stay in index order
    ranked = keys[order]
    starts = np.ones(len(keys), dtype=bool)
    starts[1:] = np.any(ranked[1:] != ranked[:-1], axis=1)
    return np.sort(order[starts])


def random_augmentations(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random (transform, colour map) draws; colour 0 always maps to 0."""
    transforms = rng.integers(0, NUM_DIHEDRAL, size=count)
    perms = np.argsort(rng.random((count, NUM_COLOURS - 1)), axis=1) + 1  # a uniform permutation per row
    colour_maps = np.concatenate([np.zeros((count, 1), dtype=np.uint8), perms.astype(np.uint8)], axis=1)
    return transforms.astype(np.uint8), colour_maps


def choose_augmentations(pairs: list[tuple[np.ndarray, np.ndarray | None]], num_aug: int,
                         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The group of a task: row 0 the original, then up to ``num_aug`` distinct copies.

    Returns transforms uint8[n] and colour maps uint8[n, 10], in the order they were drawn.
    """
    identity_t = np.zeros(1, dtype=np.uint8)
    identity_map = np.arange(NUM_COLOURS, dtype=np.uint8)[None, :]
    if num_aug <= 0:
        return identity_t, identity_map
    pattern_id, fill = _pair_tables(pairs)
    transforms, colour_maps = random_augmentations(rng, AUGMENT_RETRIES_FACTOR * num_aug)
    keys = task_keys(pattern_id, fill, np.concatenate([identity_t, transforms]),
                     np.concatenate([identity_map, colour_maps]))
    # First draw of each distinct content; index 0 (the original) shadows its look-alikes.
    first = first_occurrences(keys)
    kept = first[first > 0][:num_aug] - 1
    return (np.concatenate([identity_t, transforms[kept]]),
            np.concatenate([identity_map, colour_maps[kept]]))
