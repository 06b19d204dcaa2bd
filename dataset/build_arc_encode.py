"""Encoding a whole group of augmented copies at once into 900-token rows.

Same layout as ``dataset.arc_grid.encode_grid`` (colours + 2, an EOS row under the grid and an
EOS column right of it where they fit), but vectorised: for each dihedral transform the cells of
all pairs are gathered once, and every copy with that transform is written with two numpy
fancy assignments (colour cells, then the EOS cells that fall inside the canvas). A copy with
transform ``t`` and colour map ``p`` holds ``p[t(grid)]``, the reference's order of operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dataset.arc_grid import COLOUR_OFFSET, EOS_ID, MAX_GRID_SIZE, NUM_DIHEDRAL, SEQ_LEN

SWAPS_AXES = (False, True, False, True, False, False, True, True)  # transforms that turn h x w into w x h


def transformed_shape(shape: tuple[int, int], t: int) -> tuple[int, int]:
    return (shape[1], shape[0]) if SWAPS_AXES[t] else shape


def transformed_cells(r: np.ndarray, c: np.ndarray, h: int, w: int, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Where cell (r, c) of an h x w grid lands under transform t (numbered as dihedral_transform)."""
    if t == 0:
        return r, c
    if t == 1:
        return w - 1 - c, r
    if t == 2:
        return h - 1 - r, w - 1 - c
    if t == 3:
        return c, h - 1 - r
    if t == 4:
        return r, w - 1 - c
    if t == 5:
        return h - 1 - r, c
    if t == 6:
        return c, r
    return w - 1 - c, h - 1 - r


@dataclass
class _CellTable:
    """The cells of each pair of one grid kind (inputs or outputs) under one transform.

    pairs[j] = (local, colours, eos_row, eos_col): ``local`` is row * 30 + col of each cell
    relative to the pair's top-left corner, ``colours`` its original colour; ``eos_*`` are
    (local positions, limit): the EOS row (column) lies inside the canvas only when the pair's
    row (column) offset is below the limit.
    """

    pairs: dict[int, tuple]


def _cell_tables(grids: list[np.ndarray | None]) -> list[_CellTable | None]:
    tables = [_CellTable({}) for _ in range(NUM_DIHEDRAL)]
    for j, grid in enumerate(grids):
        if grid is None:  # hidden output: the label row stays PAD
            continue
        h, w = grid.shape
        r, c = np.divmod(np.arange(h * w), w)
        colours = grid.ravel().astype(np.intp)
        for t in range(NUM_DIHEDRAL):
            rt, ct = transformed_cells(r, c, h, w, t)
            th, tw = (w, h) if SWAPS_AXES[t] else (h, w)
            eos_row = (th * MAX_GRID_SIZE + np.arange(tw), MAX_GRID_SIZE - th)
            eos_col = (np.arange(th) * MAX_GRID_SIZE + tw, MAX_GRID_SIZE - tw)
            tables[t].pairs[j] = (rt * MAX_GRID_SIZE + ct, colours, eos_row, eos_col)
    return [table if table.pairs else None for table in tables]


class SplitEncoder:
    """Encodes the pairs of one task in one split for any set of augmented copies."""

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray | None]]):
        self.num_pairs = len(pairs)
        self._inputs = _cell_tables([p[0] for p in pairs])
        self._outputs = _cell_tables([p[1] for p in pairs])
        # Largest height / width of input and output per transform: bounds the translation.
        extent = np.array([[max(i.shape[d], 0 if o is None else o.shape[d]) for d in (0, 1)] for i, o in pairs])
        self.max_extent = np.stack([extent[:, ::-1] if SWAPS_AXES[t] else extent for t in range(NUM_DIHEDRAL)])

    def random_offsets(self, rng: np.random.Generator, transforms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reference translation: a random top-left offset per pair, one random pair per copy at (0, 0)."""
        n = len(transforms)
        keep = rng.integers(0, self.num_pairs, size=n)
        extent = self.max_extent[transforms]  # [n, pairs, 2]
        row = rng.integers(0, MAX_GRID_SIZE - extent[..., 0] + 1)
        col = rng.integers(0, MAX_GRID_SIZE - extent[..., 1] + 1)
        untranslated = np.arange(self.num_pairs)[None, :] == keep[:, None]
        row[untranslated] = 0
        col[untranslated] = 0
        return row, col

    def encode(self, transforms: np.ndarray, colour_maps: np.ndarray, row: np.ndarray | None,
               col: np.ndarray | None, inputs: np.ndarray, labels: np.ndarray) -> None:
        """Fill zeroed ``inputs``/``labels`` [n_copies * pairs, 900]; copy c's pairs are rows c*pairs + j."""
        n = len(transforms)
        if row is None:
            row = col = np.zeros((n, self.num_pairs), dtype=np.intp)
        example = np.arange(n)[:, None] * self.num_pairs + np.arange(self.num_pairs)[None, :]
        corner = example * SEQ_LEN + row * MAX_GRID_SIZE + col  # flat position of each pair's top-left
        lut = (colour_maps + COLOUR_OFFSET).astype(np.uint8)
        flat_in, flat_out = inputs.reshape(-1), labels.reshape(-1)
        for t in np.unique(transforms):
            copies = np.flatnonzero(transforms == t)
            # Per pair, broadcast adds and 1-D fancy indexing only: numpy is several times slower
            # with gathered 2-D index arrays.
            corner_t, lut_t, row_t, col_t = corner[copies], lut[copies], row[copies], col[copies]
            for table, flat in ((self._inputs[t], flat_in), (self._outputs[t], flat_out)):
                if table is None:
                    continue
                for j, (local, colours, eos_row, eos_col) in table.pairs.items():
                    at = corner_t[:, j, None]
                    flat[(at + local).ravel()] = lut_t[:, colours].ravel()
                    # EOS row / column: skipped for copies whose offset pushes them off the canvas.
                    for eos, offset in ((eos_row, row_t), (eos_col, col_t)):
                        fits = offset[:, j] < eos[1]
                        flat[(at[fits] + eos[0]).ravel()] = EOS_ID
