"""PuzzleDataset against the contents of a fixture dataset written independently with numpy."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from dataset.puzzle_dataset import (
    IGNORE_LABEL_ID,
    PuzzleDataset,
    PuzzleDatasetConfig,
    create_dataloader,
)
from tests.dataset_fixtures import write_tiny_dataset

TRAIN_SIZES = [2, 3, 4, 5, 1, 3, 2]  # demonstration pairs per task (so per puzzle)
TEST_SIZES = [1, 2, 3, 1, 2, 1, 1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return write_tiny_dataset(root, num_tasks=7, augs_per_task=3, examples_per_puzzle=TRAIN_SIZES,
                              test_examples=TEST_SIZES, seed=1)


def make(path, *, split="train", test=False, gbs=6, rank=0, replicas=1, seed=0, epochs=1, max_augs=None):
    paths = [str(p) for p in (path if isinstance(path, list) else [path])]
    cfg = PuzzleDatasetConfig(seed=seed, dataset_paths=paths, global_batch_size=gbs, test_set_mode=test,
                              epochs_per_iter=epochs, rank=rank, num_replicas=replicas,
                              max_eval_augmentations=max_augs)
    return PuzzleDataset(cfg, split)


def row_index(split):
    """(identifier id, input bytes) -> (puzzle index, example index); unique by construction."""
    index = {}
    for p, ident in enumerate(split.puzzle_identifiers):
        for e in range(split.puzzle_indices[p], split.puzzle_indices[p + 1]):
            key = (int(ident), split.inputs[e].astype(np.int32).tobytes())
            assert key not in index
            index[key] = (p, e)
    return index


def expected_labels(raw):
    labels = raw.astype(np.int32)
    labels[labels == 0] = IGNORE_LABEL_ID
    return labels


def real_rows(batch):
    """(identifier, inputs, labels) of the non-padding rows; padding rows must be blank."""
    ids, inputs, labels = (batch[k].numpy() for k in ("puzzle_identifiers", "inputs", "labels"))
    assert batch["inputs"].dtype == batch["labels"].dtype == batch["puzzle_identifiers"].dtype == torch.int32
    pad = ids == 0
    assert (inputs[pad] == 0).all() and (labels[pad] == IGNORE_LABEL_ID).all()
    return [(int(i), x, y) for i, x, y in zip(ids[~pad], inputs[~pad], labels[~pad])]


def test_test_mode_two_ranks_cover_every_example_once(tiny):
    split = tiny.splits["test"]
    index = row_index(split)
    seen = Counter()
    per_rank, padding = [], 0
    for rank in (0, 1):
        ds = make(tiny.path, split="test", test=True, gbs=6, rank=rank, replicas=2)
        batches = list(ds)
        per_rank.append(len(batches))
        for set_name, batch, gbs in batches:
            assert set_name == "all" and batch["inputs"].shape == (3, 900)
            padding += int((batch["puzzle_identifiers"] == 0).sum())
            for ident, x, y in real_rows(batch):
                p, e = index[(ident, x.tobytes())]
                np.testing.assert_array_equal(y, expected_labels(split.labels[e]))
                seen[e] += 1
    n_batches = -(-split.num_examples // 6)
    assert per_rank[0] == per_rank[1] == n_batches
    assert padding == n_batches * 6 - split.num_examples > 0  # the last global batch is padded
    assert seen == Counter(range(split.num_examples))  # every example exactly once, across ranks


def test_test_mode_order_and_padding(tiny):
    split = tiny.splits["test"]
    ds = make(tiny.path, split="test", test=True, gbs=6)
    batches = list(ds)
    inputs = torch.cat([b["inputs"] for _, b, _ in batches]).numpy()
    ids = torch.cat([b["puzzle_identifiers"] for _, b, _ in batches]).numpy()
    n = split.num_examples
    np.testing.assert_array_equal(inputs[:n], split.inputs.astype(np.int32))
    np.testing.assert_array_equal(ids[:n], split.puzzle_identifiers[split.puzzle_of_example()])
    assert (ids[n:] == 0).all() and len(ids) - n == -n % 6 > 0
    assert [g for _, _, g in batches] == [min(6, n - s) for s in range(0, n, 6)]


@pytest.mark.parametrize("k", [1, 2])
def test_max_eval_augmentations_keeps_first_puzzles_of_each_group(tiny, k):
    split = tiny.splits["test"]
    rows = []
    for rank in (0, 1):
        for _, batch, _ in make(tiny.path, split="test", test=True, gbs=4, rank=rank, replicas=2, max_augs=k):
            rows += [(i, x.tobytes()) for i, x, _ in real_rows(batch)]
    position = np.arange(len(split.puzzle_identifiers)) - split.group_indices[split.group_of_puzzle()]
    kept = {p for p in range(len(position)) if position[p] < k}
    expected = [(int(split.puzzle_identifiers[p]), split.inputs[e].astype(np.int32).tobytes())
                for p in sorted(kept) for e in range(split.puzzle_indices[p], split.puzzle_indices[p + 1])]
    assert sorted(rows) == sorted(expected)
    if k == 1:  # only the originals, whose names carry no augmentation
        assert all("|||" not in tiny.identifiers[i] for i, _ in rows)


def decode_train_pass(tiny, batches, gbs):
    """Check each batch's structure; return the groups visited in order."""
    split = tiny.splits["train"]
    index, group_of = row_index(split), split.group_of_puzzle()
    visited, truncated = [], 0
    for set_name, batch, effective in batches:
        assert set_name == "all" and effective == gbs and batch["inputs"].shape == (gbs, 900)
        located = []
        for ident, x, y in real_rows(batch):
            p, e = index[(ident, x.tobytes())]
            np.testing.assert_array_equal(y, expected_labels(split.labels[e]))
            located.append((p, e))
        assert len(located) == gbs
        runs = []  # consecutive rows of one puzzle
        for p, e in located:
            if runs and runs[-1][0] == p:
                runs[-1][1].append(e)
            else:
                runs.append((p, [e]))
        for j, (p, examples) in enumerate(runs):
            full = set(range(split.puzzle_indices[p], split.puzzle_indices[p + 1]))
            assert len(set(examples)) == len(examples) and set(examples) <= full
            if j < len(runs) - 1:
                assert set(examples) == full  # only the last puzzle of a batch may be truncated
            truncated += set(examples) != full
            visited.append(int(group_of[p]))
    return visited, truncated


def test_train_batches_are_puzzles_from_a_group_permutation(tiny):
    gbs, n_groups = 6, len(TRAIN_SIZES)
    visited, truncated = decode_train_pass(tiny, list(make(tiny.path, gbs=gbs, seed=3)), gbs)
    assert truncated > 0  # the case is exercised
    assert len(set(visited)) == len(visited)  # one epoch: distinct groups
    # The pass stops only when what is left cannot fill a batch (all puzzles of a group share a size).
    left = sum(TRAIN_SIZES[g] for g in range(n_groups) if g not in visited)
    assert left < gbs


def test_train_several_epochs_concatenate_permutations(tiny):
    n_groups = len(TRAIN_SIZES)
    visited, _ = decode_train_pass(tiny, list(make(tiny.path, gbs=4, epochs=3, seed=5)), 4)
    assert sorted(visited[:n_groups]) == list(range(n_groups))
    assert sorted(visited[n_groups:2 * n_groups]) == list(range(n_groups))
    assert len(set(visited[2 * n_groups:])) == len(visited[2 * n_groups:])


def test_train_draws_augmented_variants(tiny):
    ds = make(tiny.path, gbs=4, epochs=60, seed=0)  # a puzzle missed: p ~ 28 * (3/4)**60
    names = {tiny.identifiers[i] for _, b, _ in ds for i in b["puzzle_identifiers"].tolist()}
    assert len(names) == len(tiny.identifiers) - 1  # every puzzle of every group gets drawn


def test_train_ranks_split_the_single_rank_batch(tiny):
    single = list(make(tiny.path, gbs=6, seed=7, epochs=2))
    ranks = [list(make(tiny.path, gbs=6, seed=7, epochs=2, rank=r, replicas=2)) for r in (0, 1)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) > 2
    for (_, whole, g), (_, b0, g0), (_, b1, g1) in zip(single, *ranks):
        assert g == g0 == g1 == 6
        for key in whole:
            torch.testing.assert_close(torch.cat([b0[key], b1[key]]), whole[key], rtol=0, atol=0)


def batches_equal(a, b):
    return len(a) == len(b) and all(
        sa == sb and ga == gb and all(torch.equal(ba[k], bb[k]) for k in ba)
        for (sa, ba, ga), (sb, bb, gb) in zip(a, b)
    )


def test_seeded_determinism(tiny):
    a, b, c = make(tiny.path, seed=11), make(tiny.path, seed=11), make(tiny.path, seed=12)
    first_a, first_b, first_c = list(a), list(b), list(c)
    assert batches_equal(first_a, first_b)
    assert not batches_equal(first_a, first_c)
    assert not batches_equal(first_a, list(a))  # the next pass draws anew


def test_resume_mid_pass_equals_uninterrupted(tiny):
    reference = make(tiny.path, gbs=4, epochs=2, seed=2)
    passes = [list(reference) for _ in range(3)]
    stopped = make(tiny.path, gbs=4, epochs=2, seed=2)
    list(stopped)
    it = iter(stopped)
    head = [next(it) for _ in range(3)]
    assert batches_equal(head, passes[1][:3])
    state = stopped.state_dict()
    assert state == {"pass": 1, "batches_done": 3}

    resumed = make(tiny.path, gbs=4, epochs=2, seed=2)
    resumed.load_state_dict(json.loads(json.dumps(state)))  # the state survives a JSON round trip
    assert batches_equal(list(resumed), passes[1][3:])
    assert batches_equal(list(resumed), passes[2])


def test_resume_after_last_batch_starts_the_next_pass(tiny):
    reference = make(tiny.path, gbs=4, seed=4)
    passes = [list(reference) for _ in range(2)]
    run = make(tiny.path, gbs=4, seed=4)
    it = iter(run)
    for _ in passes[0]:
        next(it)  # consumed every batch but never asked for the end
    resumed = make(tiny.path, gbs=4, seed=4)
    resumed.load_state_dict(run.state_dict())
    assert batches_equal(list(resumed), passes[1])


@pytest.mark.parametrize("num_workers", [0, 1])
def test_dataloader_matches_direct_iteration_and_tracks_state(tiny, num_workers):
    direct = make(tiny.path, gbs=4, seed=9)
    expected = [list(direct) for _ in range(2)]
    cfg = make(tiny.path, gbs=4, seed=9).config
    loader = create_dataloader(cfg, "train", num_workers=num_workers)
    assert batches_equal(list(loader), expected[0])
    assert loader.state_dict() == {"pass": 1, "batches_done": 0}
    it = iter(loader)
    got = [next(it), next(it)]
    assert loader.state_dict() == {"pass": 1, "batches_done": 2}  # prefetched batches do not count
    del it
    again = create_dataloader(cfg, "train", num_workers=num_workers)
    again.load_state_dict(loader.state_dict())
    assert batches_equal(got + list(again), expected[1])


def test_combining_datasets_offsets_identifiers(tiny, tmp_path):
    other = write_tiny_dataset(tmp_path / "b", num_tasks=2, augs_per_task=4, examples_per_puzzle=2,
                               test_examples=[1, 3], seed=5, task_prefix="other")
    n_a = len(tiny.identifiers)
    assert n_a != len(other.identifiers)
    ds = make([tiny.path, other.path], split="test", test=True, gbs=4)
    assert ds.identifiers == tiny.identifiers + other.identifiers
    meta = ds.metadata
    assert meta.num_puzzle_identifiers == n_a + len(other.identifiers)
    assert meta.total_groups == 7 + 2
    assert meta.total_puzzles == 7 * 4 + 2 * 5
    names_by_set = {}
    for set_name, batch, _ in ds:
        for ident, x, _ in real_rows(batch):
            names_by_set.setdefault(set_name, []).append((ds.identifiers[ident], x.tobytes()))
    for set_name, source in (("all", tiny), ("all1", other)):
        split = source.splits["test"]
        expected = [(source.identifiers[split.puzzle_identifiers[p]], split.inputs[e].astype(np.int32).tobytes())
                    for p in range(len(split.puzzle_identifiers))
                    for e in range(split.puzzle_indices[p], split.puzzle_indices[p + 1])]
        assert names_by_set[set_name] == expected
    # Train mode: the second dataset's ids land above the first's, each naming one of its puzzles.
    train = make([tiny.path, other.path], gbs=4, seed=1)
    for set_name, batch, _ in train:
        ids = batch["puzzle_identifiers"]
        assert ((ids >= n_a) if set_name == "all1" else (ids < n_a) & (ids > 0)).all()
        assert all(train.identifiers[i].startswith("other" if set_name == "all1" else "task") for i in ids.tolist())


def test_datasets_must_agree_on_seq_len(tiny, tmp_path):
    other = write_tiny_dataset(tmp_path / "b", num_tasks=1, augs_per_task=1, seed=2)
    meta_file = other.path / "train" / "dataset.json"
    meta = json.loads(meta_file.read_text())
    meta["seq_len"] = 81
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="seq_len") as err:
        make([tiny.path, other.path])
    assert str(tiny.path) in str(err.value) and str(other.path) in str(err.value)


def test_ignore_label_mapping_by_hand(tmp_path):
    data = write_tiny_dataset(tmp_path, num_tasks=1, augs_per_task=0, examples_per_puzzle=1, seed=0)
    labels = np.zeros((1, 900), np.uint8)
    labels[0, :4] = [0, 1, 2, 11]
    np.save(tmp_path / "train" / "all__labels.npy", labels)
    _, batch, _ = next(iter(make(data.path, gbs=1)))
    assert batch["labels"][0, :5].tolist() == [-100, 1, 2, 11, -100]
    assert batch["inputs"].dtype == torch.int32


def test_reference_metadata_without_total_puzzles(tmp_path):
    data = write_tiny_dataset(tmp_path, num_tasks=3, augs_per_task=2, seed=0, write_total_puzzles=False)
    assert "total_puzzles" not in json.loads((data.path / "train" / "dataset.json").read_text())
    ds = make(data.path, gbs=3)
    assert ds.metadata.total_puzzles == 9
    assert len(list(ds)) == 3  # 3 groups x 3 examples, batch 3


def test_missing_file_and_bad_shape_name_the_path(tmp_path):
    data = write_tiny_dataset(tmp_path, num_tasks=2, augs_per_task=1, seed=0)
    labels = data.path / "train" / "all__labels.npy"
    labels.unlink()
    with pytest.raises(FileNotFoundError, match=str(labels)):
        list(make(data.path, gbs=2))
    np.save(labels, np.zeros((len(data.splits["train"].inputs), 81), np.uint8))
    with pytest.raises(ValueError, match=str(labels)):
        list(make(data.path, gbs=2))
    with pytest.raises(FileNotFoundError, match=str(Path(tmp_path) / "nowhere")):
        make(tmp_path / "nowhere")
    np.save(data.path / "train" / "all__labels.npy", data.splits["train"].labels)
    np.save(data.path / "train" / "all__puzzle_indices.npy", np.array([0, 3, 2, 6, 9], np.int32))
    with pytest.raises(ValueError, match="puzzle_indices"):
        list(make(data.path, gbs=2))


def test_config_errors():
    with pytest.raises(ValueError, match="multiple"):
        PuzzleDataset(PuzzleDatasetConfig(seed=0, dataset_paths=["x"], global_batch_size=5,
                                          test_set_mode=False, epochs_per_iter=1, rank=0, num_replicas=2))


def test_batches_in_pass_counts_what_a_pass_yields(tmp_path):
    # Uneven puzzles (1 to 5 examples) make the reference's estimate (epochs x groups x mean examples /
    # batch) overshoot: the pass drops its incomplete last batch. The exact count must match iteration.
    write_tiny_dataset(tmp_path, num_tasks=5, augs_per_task=2, examples_per_puzzle=[1, 2, 3, 4, 5])
    ds = make(tmp_path, gbs=4, epochs=3)
    for pass_index in range(3):
        ds.load_state_dict({"pass": pass_index, "batches_done": 0})
        assert ds.batches_in_pass(pass_index) == sum(1 for _ in ds)
    meta = ds.metadata
    estimate = int(3 * meta.total_groups * meta.mean_puzzle_examples / 4)
    assert ds.batches_in_pass(0) < estimate  # the overshoot the exact count removes
