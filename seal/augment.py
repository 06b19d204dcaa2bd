"""Grid augmenters of SEAL's four recipe groups, each with its inverse.

An augmenter is applied to every grid of a pseudo-task (inputs and outputs alike); any random
choice it makes (the translation offset) is drawn once per pseudo-task from the caller's
``numpy.random.Generator``, so results depend only on the seed. The dihedral ones reuse
``dataset.arc_grid``'s transform ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from dataset.arc_grid import dihedral_transform, inverse_dihedral_transform

# dataset.arc_grid ids: 1 rot90, 2 rot180, 3 rot270, 4 flip left-right, 5 flip up-down, 6 transpose.
GEOMETRIC_IDS = {"rot90": 1, "rot180": 2, "rot270": 3, "flip_1": 4, "flip_0": 5, "transpose": 6}


class GridAugmenter:
    name: str = "identity"

    def bind(self, rng: np.random.Generator) -> "GridAugmenter":
        """A copy with its random choices fixed (shared by all grids of one pseudo-task)."""
        return self

    def apply(self, grid: np.ndarray) -> np.ndarray:
        return grid

    def invert(self, grid: np.ndarray) -> np.ndarray:
        return grid


@dataclass
class Geometric(GridAugmenter):
    transform: str

    @property
    def name(self) -> str:
        return self.transform

    def apply(self, grid):
        return np.ascontiguousarray(dihedral_transform(grid, GEOMETRIC_IDS[self.transform]))

    def invert(self, grid):
        return np.ascontiguousarray(inverse_dihedral_transform(grid, GEOMETRIC_IDS[self.transform]))


@dataclass
class Reflect(GridAugmenter):
    """Concatenate the grid with its mirror image along ``axis`` (mirror first when ``reverse``)."""

    axis: int
    reverse: bool

    @property
    def name(self) -> str:
        return f"reflect_{self.axis}{'_reverse' if self.reverse else ''}"

    def apply(self, grid):
        mirrored = np.flip(grid, axis=self.axis)
        parts = (mirrored, grid) if self.reverse else (grid, mirrored)
        return np.concatenate(parts, axis=self.axis)

    def invert(self, grid):
        half = grid.shape[self.axis] // 2
        kept = grid[half:] if self.axis == 0 else grid[:, half:]
        if not self.reverse:
            kept = grid[:half] if self.axis == 0 else grid[:, :half]
        return np.ascontiguousarray(kept)


@dataclass
class Translate(GridAugmenter):
    """Cyclic shift by up to 3 cells on each axis (the same draw for every grid of a task)."""

    shift: tuple[int, int] = (0, 0)
    name: str = "translate"

    def bind(self, rng):
        return Translate((int(rng.integers(0, 4)), int(rng.integers(0, 4))))

    def _shifts(self, grid):
        # Smaller grids wrap the shift so the offset never exceeds the grid.
        return self.shift[0] % min(4, grid.shape[0]), self.shift[1] % min(4, grid.shape[1])

    def apply(self, grid):
        return np.roll(grid, self._shifts(grid), axis=(0, 1))

    def invert(self, grid):
        dy, dx = self._shifts(grid)
        return np.roll(grid, (-dy, -dx), axis=(0, 1))


@dataclass
class Upscale(GridAugmenter):
    """Repeat each cell ``factor`` times along the chosen axes (resolution / height / width)."""

    rows: int = 1
    cols: int = 1

    @property
    def name(self) -> str:
        return {(2, 2): "resolution_x2", (2, 1): "height_x2", (1, 2): "width_x2"}.get(
            (self.rows, self.cols), f"upscale_{self.rows}x{self.cols}"
        )

    def apply(self, grid):
        return np.repeat(np.repeat(grid, self.rows, axis=0), self.cols, axis=1)

    def invert(self, grid):
        return np.ascontiguousarray(grid[:: self.rows, :: self.cols])


@dataclass
class Tile(GridAugmenter):
    """Tile the grid twice along axis 0, 1, or both (axis 2)."""

    axis: int
    times: int = 2

    @property
    def name(self) -> str:
        return f"tile_{self.axis}"

    def _reps(self):
        return {0: (self.times, 1), 1: (1, self.times), 2: (self.times, self.times)}[self.axis]

    def apply(self, grid):
        return np.tile(grid, self._reps())

    def invert(self, grid):
        r, c = self._reps()
        return np.ascontiguousarray(grid[: grid.shape[0] // r, : grid.shape[1] // c])


@dataclass
class Chain(GridAugmenter):
    steps: Sequence[GridAugmenter] = field(default_factory=list)

    @property
    def name(self) -> str:
        return "+".join(s.name for s in self.steps)

    def bind(self, rng):
        return Chain([s.bind(rng) for s in self.steps])

    def apply(self, grid):
        for s in self.steps:
            grid = s.apply(grid)
        return grid

    def invert(self, grid):
        for s in reversed(self.steps):
            grid = s.invert(grid)
        return grid


def basic_augmenters() -> list[GridAugmenter]:
    geo = [Geometric(t) for t in ("rot90", "rot270", "rot180", "flip_0", "flip_1")]
    reflections = [Reflect(a, r) for r in (True, False) for a in (0, 1)]
    return geo + reflections + [Translate(), Geometric("transpose")]


def size_augmenters() -> list[GridAugmenter]:
    return [Upscale(2, 2), Upscale(2, 1), Upscale(1, 2)]


def chain_augmenters() -> list[GridAugmenter]:
    geo = ("rot90", "rot270", "rot180", "flip_0", "flip_1", "transpose")
    return [Chain([Geometric(t), Upscale(2, 2)]) for t in geo]


def repeat_augmenters() -> list[GridAugmenter]:
    return [Tile(0), Tile(1), Tile(2)]


AUGMENTER_GROUPS: dict[str, Callable[[], list[GridAugmenter]]] = {
    "use_basic_augmentations": basic_augmenters,
    "use_size_augmentations": size_augmenters,
    "use_chain_augmentations": chain_augmenters,
    "use_repeat_augmentations": repeat_augmenters,
}


def augmenters_for(recipe) -> list[GridAugmenter]:
    """The augmenters a recipe switches on, in a fixed order (basic, size, chain, repeat)."""
    return [a for flag, make in AUGMENTER_GROUPS.items() if getattr(recipe, flag) for a in make()]


def random_colour_map(rng: np.random.Generator) -> np.ndarray:
    """A permutation of colours 1..9 (0, the background, stays) as a lookup table."""
    return np.concatenate([[0], rng.permutation(np.arange(1, 10))]).astype(np.uint8)
