"""dataset/arc_grid.py: token layout, dihedral numbering, augmentation inverses, identifier names."""

import numpy as np
import pytest

from dataset.arc_grid import (
    BLANK_IDENTIFIER,
    EOS_ID,
    MAX_GRID_SIZE,
    PAD_ID,
    Augmentation,
    decode_grid,
    dihedral_transform,
    encode_grid,
    inverse_dihedral_transform,
    parse_identifier,
)

GRID_2x3 = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8)
# Worked by hand from the reference numbering: 1 = rotate 90 anticlockwise, 2 = 180, 3 = 90 clockwise,
# 4 = mirror left-right, 5 = mirror up-down, 6 = transpose, 7 = anti-transpose.
HAND_WORKED = {
    0: [[1, 2, 3], [4, 5, 6]],
    1: [[3, 6], [2, 5], [1, 4]],
    2: [[6, 5, 4], [3, 2, 1]],
    3: [[4, 1], [5, 2], [6, 3]],
    4: [[3, 2, 1], [6, 5, 4]],
    5: [[4, 5, 6], [1, 2, 3]],
    6: [[1, 4], [2, 5], [3, 6]],
    7: [[6, 3], [5, 2], [4, 1]],
}


@pytest.mark.parametrize("tid", range(8))
def test_dihedral_ids_match_hand_worked_2x3(tid):
    assert dihedral_transform(GRID_2x3, tid).tolist() == HAND_WORKED[tid]
    assert inverse_dihedral_transform(np.array(HAND_WORKED[tid]), tid).tolist() == GRID_2x3.tolist()


def _random_grid(rng, max_side=MAX_GRID_SIZE):
    return rng.integers(0, 10, size=(rng.integers(1, max_side + 1), rng.integers(1, max_side + 1))).astype(np.uint8)


def test_encode_decode_round_trip_at_random_offsets():
    rng = np.random.default_rng(0)
    for _ in range(300):
        grid = _random_grid(rng)
        h, w = grid.shape
        row, col = int(rng.integers(0, MAX_GRID_SIZE - h + 1)), int(rng.integers(0, MAX_GRID_SIZE - w + 1))
        canvas = encode_grid(grid, row, col).reshape(MAX_GRID_SIZE, MAX_GRID_SIZE)
        # Independent expectation: colours + 2 in place, EOS below / right where it fits, PAD elsewhere.
        expected = np.full((MAX_GRID_SIZE + 1, MAX_GRID_SIZE + 1), PAD_ID, dtype=np.uint8)
        expected[row:row + h, col:col + w] = grid + 2
        expected[row + h, col:col + w] = EOS_ID
        expected[row:row + h, col + w] = EOS_ID
        assert np.array_equal(canvas, expected[:MAX_GRID_SIZE, :MAX_GRID_SIZE])
        # Shift back to the corner and decode.
        moved = np.zeros_like(canvas)
        moved[: MAX_GRID_SIZE - row, : MAX_GRID_SIZE - col] = canvas[row:, col:]
        assert np.array_equal(decode_grid(moved.reshape(-1)), grid)


@pytest.mark.parametrize("tid", range(8))
def test_every_augmentation_inverse_restores_the_grid(tid):
    rng = np.random.default_rng(tid)
    for _ in range(20):
        grid = _random_grid(rng, 12)
        colour_map = (0, *(int(c) for c in rng.permutation(np.arange(1, 10))))
        aug = Augmentation(tid, colour_map)
        out = aug.apply(grid)
        assert np.array_equal(aug.invert(out), grid)
        # apply = transform of the recoloured grid; colour 0 never moves.
        assert np.array_equal(out, dihedral_transform(np.asarray(colour_map, dtype=np.uint8)[grid], tid))
        assert np.array_equal(out == 0, dihedral_transform(grid == 0, tid))


def test_identifier_name_round_trip():
    rng = np.random.default_rng(1)
    for task_id in ["007bbfc7", "task_with_underscores", "x"]:
        assert Augmentation.identity().name(task_id) == task_id
        assert parse_identifier(task_id) == (task_id, Augmentation.identity())
        for _ in range(20):
            aug = Augmentation.random(rng)
            name = aug.name(task_id)
            if not aug.is_identity:
                assert name == f"{task_id}|||t{aug.transform}|||{''.join(map(str, aug.colour_map))}"
            assert parse_identifier(name) == (task_id, aug)
    assert BLANK_IDENTIFIER == "<blank>"
    with pytest.raises(ValueError):
        parse_identifier("abc|||t1|||0123")
