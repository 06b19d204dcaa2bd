"""Voting: grouping of identical grids, vote/confidence order, order independence."""

import numpy as np
import pytest

from evaluators.voting import VoteTable, canvas_to_grid, grid_to_canvas, rank_answers


def test_rank_answers_votes_then_mean_confidence():
    a, b, c = np.array([[1, 2]]), np.array([[2, 1]]), np.array([[1], [2]])  # same cells, other shapes
    ranked = rank_answers([(a, 0.1), (b, 0.9), (a, 0.3), (b, 0.5), (c, 1.0), (a, 0.2)])
    assert [votes for _, votes, _ in ranked] == [3, 2, 1]
    np.testing.assert_array_equal(ranked[0][0], a)
    assert ranked[0][2] == pytest.approx(0.2) and ranked[1][2] == pytest.approx(0.7)


def test_equal_votes_broken_by_confidence():
    low, high = np.zeros((2, 2), np.uint8), np.ones((2, 2), np.uint8)
    ranked = rank_answers([(low, 0.4), (high, 0.6), (low, 0.4), (high, 0.6)])
    np.testing.assert_array_equal(ranked[0][0], high)
    assert [v for _, v, _ in ranked] == [2, 2]


def test_shapes_are_part_of_the_answer():
    # A 1x4 and a 2x2 grid of zeros hold the same cells; they must not be one answer.
    ranked = rank_answers([(np.zeros((1, 4)), 0.5), (np.zeros((2, 2)), 0.5), (np.zeros((4, 1)), 0.5)])
    assert sorted(g.shape for g, _, _ in ranked) == [(1, 4), (2, 2), (4, 1)]


def test_canvas_round_trip():
    g = np.arange(12).reshape(3, 4) % 10
    np.testing.assert_array_equal(canvas_to_grid(grid_to_canvas(g)), g)


def test_vote_table_is_independent_of_arrival_order_and_splitting():
    rng = np.random.default_rng(0)
    grids = [rng.integers(0, 10, (2, 3)) for _ in range(5)]
    groups = rng.integers(0, 3, 200)
    which = rng.integers(0, 5, 200)
    conf = rng.random(200).astype(np.float32)
    canvases = np.stack([grid_to_canvas(grids[w]) for w in which])
    whole = VoteTable.from_predictions(groups, canvases, conf)
    perm = rng.permutation(200)
    parts = [VoteTable.from_predictions(groups[p], canvases[p], conf[p]) for p in np.array_split(perm, 3)]
    split = VoteTable.concatenate(parts)
    for t in (whole, split):
        assert t.votes.sum() == 200
    o1, o2 = whole.ranked_order(), split.ranked_order()
    np.testing.assert_array_equal(whole.canvases[o1], split.canvases[o2])
    np.testing.assert_array_equal(whole.votes[o1], split.votes[o2])
    np.testing.assert_array_equal(whole.conf_sums[o1], split.conf_sums[o2])  # exact, not approx
    # Slow reference: count by Python dict.
    counts = {}
    for g, w in zip(groups, which):
        counts[(g, w)] = counts.get((g, w), 0) + 1
    assert sorted(counts.values()) == sorted(whole.votes.tolist())
