"""ARC grid encoding and augmentations: the one home of both.

The token layout and the identifier names match the TRM/HRM reference builders, so datasets,
checkpoints and predictions move between the two tools:

- a grid is written into a 30x30 canvas at a (row, col) offset, colours shifted by 2
  (PAD=0, EOS=1, colours 0..9 -> tokens 2..11), with an EOS row under the grid and an EOS
  column to its right (where they fit), then flattened to 900 tokens;
- an augmentation is one of 8 dihedral transforms plus a permutation of colours 1..9
  (0, the background, stays), applied as ``dihedral(colour_map[grid])``; an augmented copy of
  task ``T`` is named ``T|||t<k>|||<colour map as 10 digits>``, so the inverse can be read back
  from the identifier alone.

The builder, the loader, the evaluator, the report and SEAL all use this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_GRID_SIZE = 30
SEQ_LEN = MAX_GRID_SIZE * MAX_GRID_SIZE
PAD_ID = 0
EOS_ID = 1
COLOUR_OFFSET = 2
NUM_COLOURS = 10
VOCAB_SIZE = NUM_COLOURS + COLOUR_OFFSET
ID_SEPARATOR = "|||"
BLANK_IDENTIFIER = "<blank>"

# DIHEDRAL_INVERSE[k] undoes transform k (rotations by 90 and 270 degrees undo each other;
# the flips and transposes are their own inverses).
DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)
NUM_DIHEDRAL = 8


def dihedral_transform(grid: np.ndarray, tid: int) -> np.ndarray:
    """Apply dihedral transform ``tid`` (0..7) to the last two axes, numbered as the references."""
    if tid == 0:
        return grid
    if tid == 1:
        return np.rot90(grid, k=1, axes=(-2, -1))
    if tid == 2:
        return np.rot90(grid, k=2, axes=(-2, -1))
    if tid == 3:
        return np.rot90(grid, k=3, axes=(-2, -1))
    if tid == 4:
        return np.flip(grid, axis=-1)  # left-right mirror
    if tid == 5:
        return np.flip(grid, axis=-2)  # up-down mirror
    if tid == 6:
        return np.swapaxes(grid, -1, -2)  # transpose
    if tid == 7:
        return np.flip(np.rot90(grid, k=1, axes=(-2, -1)), axis=-1)  # anti-transpose
    raise ValueError(f"dihedral transform id must be in 0..7, got {tid}")


def inverse_dihedral_transform(grid: np.ndarray, tid: int) -> np.ndarray:
    return dihedral_transform(grid, DIHEDRAL_INVERSE[tid])


@dataclass(frozen=True)
class Augmentation:
    """A dihedral transform plus a colour map (``colour_map[old] = new``, with 0 fixed)."""

    transform: int
    colour_map: tuple[int, ...]

    @staticmethod
    def identity() -> "Augmentation":
        return Augmentation(0, tuple(range(NUM_COLOURS)))

    @staticmethod
    def random(rng: np.random.Generator) -> "Augmentation":
        perm = rng.permutation(np.arange(1, NUM_COLOURS))
        return Augmentation(int(rng.integers(0, NUM_DIHEDRAL)), (0, *(int(c) for c in perm)))

    @property
    def is_identity(self) -> bool:
        return self.transform == 0 and self.colour_map == tuple(range(NUM_COLOURS))

    def apply(self, grid: np.ndarray) -> np.ndarray:
        lut = np.asarray(self.colour_map, dtype=np.uint8)
        return np.ascontiguousarray(dihedral_transform(lut[grid], self.transform))

    def invert(self, grid: np.ndarray) -> np.ndarray:
        inverse_lut = np.argsort(np.asarray(self.colour_map)).astype(np.uint8)
        return np.ascontiguousarray(inverse_lut[inverse_dihedral_transform(grid, self.transform)])

    def name(self, task_id: str) -> str:
        """Identifier of this augmented copy; the unaugmented original keeps the bare task id."""
        if self.is_identity:
            return task_id
        digits = "".join(str(c) for c in self.colour_map)
        return f"{task_id}{ID_SEPARATOR}t{self.transform}{ID_SEPARATOR}{digits}"


def parse_identifier(name: str) -> tuple[str, Augmentation]:
    """Split an identifier into (original task id, augmentation to invert)."""
    if ID_SEPARATOR not in name:
        return name, Augmentation.identity()
    parts = name.split(ID_SEPARATOR)
    if len(parts) < 3 or not parts[-2].startswith("t") or len(parts[-1]) != NUM_COLOURS:
        raise ValueError(f"malformed augmented identifier {name!r}")
    task_id = ID_SEPARATOR.join(parts[:-2])
    colour_map = tuple(int(c) for c in parts[-1])
    if sorted(colour_map) != list(range(NUM_COLOURS)):
        raise ValueError(f"identifier {name!r}: colour map is not a permutation of 0..9")
    return task_id, Augmentation(int(parts[-2][1:]), colour_map)


def encode_grid(grid: np.ndarray, row: int = 0, col: int = 0) -> np.ndarray:
    """Encode one grid (values 0..9) into 900 uint8 tokens with its top-left corner at (row, col)."""
    nrow, ncol = grid.shape
    if row + nrow > MAX_GRID_SIZE or col + ncol > MAX_GRID_SIZE:
        raise ValueError(f"grid {grid.shape} at offset ({row}, {col}) leaves the 30x30 canvas")
    canvas = np.zeros((MAX_GRID_SIZE, MAX_GRID_SIZE), dtype=np.uint8)
    canvas[row : row + nrow, col : col + ncol] = grid.astype(np.uint8) + COLOUR_OFFSET
    if row + nrow < MAX_GRID_SIZE:
        canvas[row + nrow, col : col + ncol] = EOS_ID
    if col + ncol < MAX_GRID_SIZE:
        canvas[row : row + nrow, col + ncol] = EOS_ID
    return canvas.reshape(-1)


def decode_grid(tokens: np.ndarray) -> np.ndarray:
    """Crop a 900-token prediction to a grid: the largest top-left rectangle of colour tokens.

    The same rule as the reference evaluators: scanning rows downwards, the usable width is the
    run of colour tokens at the start of the row, never wider than the rows above; the crop is the
    (rows, width) pair with the largest area (the first such, on ties). Empty when the top-left
    token is not a colour.
    """
    canvas = np.asarray(tokens).reshape(MAX_GRID_SIZE, MAX_GRID_SIZE)
    is_colour = (canvas >= COLOUR_OFFSET) & (canvas < COLOUR_OFFSET + NUM_COLOURS)
    # Width of the leading colour run in each row, then limited by every row above it.
    run = np.where(is_colour.all(axis=1), MAX_GRID_SIZE, np.argmin(is_colour, axis=1))
    width = np.minimum.accumulate(run)
    area = width * np.arange(1, MAX_GRID_SIZE + 1)
    best = int(np.argmax(area))
    if area[best] == 0:
        return np.zeros((0, 0), dtype=np.uint8)
    return (canvas[: best + 1, : width[best]] - COLOUR_OFFSET).astype(np.uint8)


def validate_grid(grid: object, where: str) -> np.ndarray:
    """Turn a JSON grid into a uint8 array, or raise ValueError naming ``where``."""
    if not isinstance(grid, list) or not grid or not all(isinstance(r, list) for r in grid):
        raise ValueError(f"{where}: grid must be a non-empty list of rows")
    widths = {len(r) for r in grid}
    if len(widths) != 1:
        raise ValueError(f"{where}: ragged rows (row lengths {sorted(widths)})")
    if 0 in widths:
        raise ValueError(f"{where}: grid has empty rows")
    nrow, ncol = len(grid), widths.pop()
    if nrow > MAX_GRID_SIZE or ncol > MAX_GRID_SIZE:
        raise ValueError(f"{where}: grid is {nrow}x{ncol}, larger than {MAX_GRID_SIZE}x{MAX_GRID_SIZE}")
    try:
        arr = np.array(grid, dtype=np.int64)
    except OverflowError:
        raise ValueError(f"{where}: cell value outside 0..9 (an integer too large for int64)") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: cells must be integers ({exc})") from None
    if any(not isinstance(v, int) or isinstance(v, bool) for row in grid for v in row):
        raise ValueError(f"{where}: cells must be integers 0..9")
    if arr.min() < 0 or arr.max() >= NUM_COLOURS:
        raise ValueError(f"{where}: cell value outside 0..9 (found {int(arr.min())}..{int(arr.max())})")
    return arr.astype(np.uint8)
