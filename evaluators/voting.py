"""Majority voting over augmented predictions, vectorised for ~400k predictions in seconds.

Every prediction is turned into a *canonical canvas*: the decoded grid, mapped back through its
copy's augmentation, written at the top-left of a 30x30 uint8 canvas whose other cells hold
``EMPTY`` (255). Two predictions are the same answer exactly when their canvases are byte-equal
(the shape is encoded by where ``EMPTY`` starts), so grouping is a sort over fixed-width rows
instead of a Python loop over grids.

Confidences are summed as fixed-point integers so that the ranking does not depend on the order
in which predictions arrive (one rank or many give bit-identical results).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from dataset.arc_grid import COLOUR_OFFSET, MAX_GRID_SIZE, NUM_COLOURS, SEQ_LEN, inverse_dihedral_transform

EMPTY = 255
CONF_SCALE = float(2**40)  # fixed-point unit for confidences in [0, 1]; 2**23 summands fit in int64
_CHUNK = 4096  # rows per vectorised pass (cache-sized); bounds the temporaries to tens of MB


def grid_to_canvas(grid: np.ndarray) -> np.ndarray:
    """Canonical 900-byte canvas of one grid (values 0..9)."""
    canvas = np.full((MAX_GRID_SIZE, MAX_GRID_SIZE), EMPTY, dtype=np.uint8)
    grid = np.asarray(grid, dtype=np.uint8)
    canvas[: grid.shape[0], : grid.shape[1]] = grid
    return canvas.reshape(-1)


def canvas_to_grid(canvas: np.ndarray) -> np.ndarray:
    """Inverse of grid_to_canvas: the top-left rectangle of non-EMPTY cells."""
    canvas = np.asarray(canvas).reshape(MAX_GRID_SIZE, MAX_GRID_SIZE)
    filled = canvas != EMPTY
    rows = int(filled[:, 0].sum())
    cols = int(filled[0, :].sum())
    return canvas[:rows, :cols].copy()


def _crop_shapes(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batched dataset.arc_grid.decode_grid crop rule: (rows, cols) per sequence, 0 when empty."""
    shapes = [_crop_shapes_chunk(tokens[s : s + _CHUNK]) for s in range(0, len(tokens), _CHUNK)]
    return np.concatenate([r for r, _ in shapes]), np.concatenate([c for _, c in shapes])


def _crop_shapes_chunk(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # uint8 wrap-around: tokens 0/1 (PAD/EOS) become 254/255, so one comparison finds colours.
    is_colour = (tokens - np.uint8(COLOUR_OFFSET)) < NUM_COLOURS
    is_colour = is_colour.reshape(-1, MAX_GRID_SIZE, MAX_GRID_SIZE)
    run = np.where(is_colour.all(axis=2), MAX_GRID_SIZE, np.argmin(is_colour, axis=2))
    width = np.minimum.accumulate(run, axis=1)
    area = width * np.arange(1, MAX_GRID_SIZE + 1)
    best = np.argmax(area, axis=1)
    index = np.arange(len(best))
    has_grid = area[index, best] > 0
    return np.where(has_grid, best + 1, 0), np.where(has_grid, width[index, best], 0)


def canonicalise_tokens(tokens: np.ndarray, transforms: np.ndarray, inverse_luts: np.ndarray) -> np.ndarray:
    """Decode, un-augment and canonicalise a batch of 900-token sequences.

    tokens: int [n, 900]; transforms: int [n] dihedral ids (0..7) of each copy; inverse_luts:
    uint8 [n, 10] mapping augmented colours back to original ones. Returns uint8 [n, 900].

    Rows are processed in groups sharing (transform, rows, cols), so each group is one slice,
    one colour lookup and one dihedral op: a few thousand numpy calls for any number of rows.
    Give it many rows at once (tens of thousands) for the per-group overhead to vanish.
    """
    tokens = np.asarray(tokens).reshape(-1, SEQ_LEN).astype(np.uint8, copy=False)
    n = len(tokens)
    transforms = np.asarray(transforms, dtype=np.int64).reshape(n)
    inverse_luts = np.asarray(inverse_luts, dtype=np.uint8).reshape(n, NUM_COLOURS)
    out = np.full((n, MAX_GRID_SIZE, MAX_GRID_SIZE), EMPTY, dtype=np.uint8)
    if n == 0:
        return out.reshape(0, SEQ_LEN)
    rows, cols = _crop_shapes(tokens)
    grids = tokens.reshape(n, MAX_GRID_SIZE, MAX_GRID_SIZE)
    key = (transforms * (MAX_GRID_SIZE + 1) + rows) * (MAX_GRID_SIZE + 1) + cols
    order = np.argsort(key, kind="stable")
    _, starts = np.unique(key[order], return_index=True)
    for start, stop in zip(starts, [*starts[1:], n]):
        members = order[start:stop]
        first = members[0]
        nrow, ncol = int(rows[first]), int(cols[first])
        if nrow == 0:
            continue  # nothing decodable: stays all EMPTY, a valid (empty) answer
        block = grids[members, :nrow, :ncol] - np.uint8(COLOUR_OFFSET)
        # Per-row colour lookup through one flat table: row k's colour c is entry k*10 + c.
        flat_index = block + (np.arange(len(members)) * NUM_COLOURS)[:, None, None]
        block = inverse_luts[members].reshape(-1)[flat_index]
        block = inverse_dihedral_transform(block, int(transforms[first]))
        out[members, : block.shape[1], : block.shape[2]] = block
    return out.reshape(n, SEQ_LEN)


def row_hashes(rows: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """A 64-bit multiplicative hash per (900-byte row, int key): uint64 [n].

    Only proposes groups: every use verifies byte equality afterwards, so collisions cost time,
    never correctness.
    """
    n, width = rows.shape
    whole = width // 8 * 8
    rng = np.random.default_rng(0x5EED)
    mult = rng.integers(1, 2**62, size=whole // 8 + 2, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    out = np.empty(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for start in range(0, n, _CHUNK):
            chunk = np.ascontiguousarray(rows[start : start + _CHUNK])
            h = (chunk[:, :whole].view(np.uint64) * mult[:-2]).sum(axis=1, dtype=np.uint64)
            if whole != width:  # the last 4 bytes of a 900-byte row
                rest = np.zeros((len(chunk), 8), np.uint8)
                rest[:, : width - whole] = chunk[:, whole:]
                h += rest.view(np.uint64)[:, 0] * mult[-2]
            h += np.asarray(extra[start : start + _CHUNK]).astype(np.uint64) * mult[-1]
            out[start : start + _CHUNK] = h ^ (h >> np.uint64(29))
    return out


def unique_rows(keys: np.ndarray, canvases: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact grouping of (int key, canvas) pairs: (index of one member per group, inverse)."""
    _, first, inverse = np.unique(row_hashes(canvases, keys), return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    # Verify byte equality with each group's representative; on a hash collision, sort exactly.
    rep = first[inverse]
    same = keys == keys[rep]
    for start in range(0, len(keys), _CHUNK):
        sl = slice(start, start + _CHUNK)
        same[sl] &= (canvases[sl] == canvases[rep[sl]]).all(axis=1)
    if not same.all():
        combined = np.concatenate([keys.astype(">i8").view(np.uint8).reshape(-1, 8), canvases], axis=1)
        _, first, inverse = np.unique(combined, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
    return first, inverse


@dataclass
class VoteTable:
    """Distinct answers per vote group: the canvas, its vote count and its summed confidence."""

    groups: np.ndarray  # int64 [m] vote group (one test input of one task)
    canvases: np.ndarray  # uint8 [m, 900]
    votes: np.ndarray  # int64 [m]
    conf_sums: np.ndarray  # int64 [m] confidences summed in units of 1 / CONF_SCALE

    @staticmethod
    def empty() -> "VoteTable":
        return VoteTable(np.zeros(0, np.int64), np.zeros((0, SEQ_LEN), np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64))

    @staticmethod
    def from_predictions(groups: np.ndarray, canvases: np.ndarray, confidences: np.ndarray) -> "VoteTable":
        fixed = np.rint(np.clip(np.asarray(confidences, np.float64), 0.0, 1.0) * CONF_SCALE).astype(np.int64)
        return VoteTable(np.asarray(groups, np.int64), canvases, np.ones(len(groups), np.int64), fixed).reduced()

    @staticmethod
    def concatenate(tables: Iterable["VoteTable"]) -> "VoteTable":
        tables = list(tables)
        if not tables:
            return VoteTable.empty()
        return VoteTable(
            np.concatenate([t.groups for t in tables]),
            np.concatenate([t.canvases for t in tables]),
            np.concatenate([t.votes for t in tables]),
            np.concatenate([t.conf_sums for t in tables]),
        ).reduced()

    def reduced(self) -> "VoteTable":
        """Merge identical (group, canvas) rows, summing votes and confidences (order-independent)."""
        if len(self.groups) == 0:
            return self
        first, inverse = unique_rows(self.groups, self.canvases)
        return VoteTable(
            self.groups[first],
            self.canvases[first],
            _int_bincount(inverse, self.votes, len(first)),
            _int_bincount(inverse, self.conf_sums, len(first)),
        )

    @property
    def mean_confidence(self) -> np.ndarray:
        return self.conf_sums / np.maximum(self.votes, 1) / CONF_SCALE

    def ranked_order(self) -> np.ndarray:
        """Row order: by group, then votes desc, then mean confidence desc, then a canvas hash.

        The last key (a hash of the canvas) only orders exact ties, so that the result does not
        depend on the order in which predictions arrived.
        """
        tiebreak = row_hashes(self.canvases, self.groups)
        return np.lexsort((tiebreak, -self.mean_confidence, -self.votes, self.groups))


def _int_bincount(index: np.ndarray, values: np.ndarray, length: int) -> np.ndarray:
    """Exact integer bincount (np.bincount's weights go through float64)."""
    order = np.argsort(index, kind="stable")
    starts = np.searchsorted(index[order], np.arange(length))
    return np.add.reduceat(values[order], starts) if length else np.zeros(0, np.int64)


def rank_answers(predictions: Iterable[tuple[np.ndarray, float]]) -> list[tuple[np.ndarray, int, float]]:
    """Rank (grid, confidence) predictions: [(grid, votes, mean confidence)], best first.

    Sorted by vote count, then by mean confidence (both descending).
    """
    predictions = list(predictions)
    if not predictions:
        return []
    canvases = np.stack([grid_to_canvas(g) for g, _ in predictions])
    table = VoteTable.from_predictions(np.zeros(len(predictions)), canvases, np.array([c for _, c in predictions]))
    order = table.ranked_order()
    mean = table.mean_confidence
    return [(canvas_to_grid(table.canvases[i]), int(table.votes[i]), float(mean[i])) for i in order]
