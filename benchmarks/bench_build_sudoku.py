"""Sudoku-Extreme builder: the reference's way vs ours on the same local CSVs; prints one table.

    python benchmarks/bench_build_sudoku.py                                   # 100k train rows, 1k x 1000
    python benchmarks/bench_build_sudoku.py --train-rows 1000000 --num-aug 0 --subsample-size 0

The CSVs are generated first (valid Sudokus in the Hub's format, ``source,question,answer,rating``).
"Reference" is a re-implementation, inside this file, of what the reference builder
(sapientinc/HRM and TinyRecursiveModels ``dataset/build_sudoku_dataset.py``) does, step for step:
csv.reader with one ``np.frombuffer`` per row, ``np.random.choice`` subsample, one Python call per
augmented copy that builds an 81-entry index list, a list of 1M small arrays concatenated at the
end, ``np.save``. The reference repository is not installed here, so this stands in for it. Ours
is ``python -m dataset.build_sudoku_dataset``. Each side runs in its own subprocess; peak RSS is
the largest sum over its process tree, sampled every 20 ms; CPU is user + system seconds of the tree
(on a busy shared machine the fairer comparison). Outputs are checked to have the same metadata and
test split.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_build_arc_dataset import _tree_rss  # noqa: E402  (one way to sum a process tree's RSS)

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the reference's way
def _reference_shuffle(board: np.ndarray, solution: np.ndarray):
    digit_map = np.pad(np.random.permutation(np.arange(1, 10)), (1, 0))
    transpose = np.random.rand() < 0.5
    bands = np.random.permutation(3)
    rows = np.concatenate([b * 3 + np.random.permutation(3) for b in bands])
    stacks = np.random.permutation(3)
    cols = np.concatenate([s * 3 + np.random.permutation(3) for s in stacks])
    mapping = np.array([rows[i // 9] * 9 + cols[i % 9] for i in range(81)])

    def apply(x):
        if transpose:
            x = x.T
        return digit_map[x.flatten()[mapping].reshape(9, 9).copy()]

    return apply(board), apply(solution)


def reference_build(source: Path, out: Path, subsample: int | None, num_aug: int) -> None:
    for split in ("train", "test"):
        inputs, labels = [], []
        with open(source / f"{split}.csv", newline="") as f:
            reader = csv.reader(f)
            next(reader)
            for _, q, a, _ in reader:
                assert len(q) == 81 and len(a) == 81
                inputs.append(np.frombuffer(q.replace(".", "0").encode(), dtype=np.uint8).reshape(9, 9) - ord("0"))
                labels.append(np.frombuffer(a.encode(), dtype=np.uint8).reshape(9, 9) - ord("0"))
        if split == "train" and subsample is not None and subsample < len(inputs):
            keep = np.random.choice(len(inputs), size=subsample, replace=False)
            inputs, labels = [inputs[i] for i in keep], [labels[i] for i in keep]
        copies = num_aug if split == "train" else 0
        res = {"inputs": [], "labels": [], "puzzle_identifiers": [], "puzzle_indices": [0], "group_indices": [0]}
        for q, a in zip(inputs, labels):
            for k in range(1 + copies):
                qq, aa = (q, a) if k == 0 else _reference_shuffle(q, a)
                res["inputs"].append(qq)
                res["labels"].append(aa)
                res["puzzle_indices"].append(len(res["inputs"]))
                res["puzzle_identifiers"].append(0)
            res["group_indices"].append(len(res["inputs"]))
        arrays = {k: np.concatenate(res[k]).reshape(len(res[k]), -1) + 1 for k in ("inputs", "labels")}
        arrays.update({k: np.array(res[k], dtype=np.int32) for k in ("group_indices", "puzzle_indices", "puzzle_identifiers")})
        meta = {"pad_id": 0, "ignore_label_id": 0, "blank_identifier_id": 0, "vocab_size": 11, "seq_len": 81,
                "num_puzzle_identifiers": 1, "total_groups": len(res["group_indices"]) - 1, "mean_puzzle_examples": 1,
                "total_puzzles": len(res["group_indices"]) - 1, "sets": ["all"]}
        (out / split).mkdir(parents=True, exist_ok=True)
        (out / split / "dataset.json").write_text(json.dumps(meta))
        for k, v in arrays.items():
            np.save(out / split / f"all__{k}.npy", v)
    (out / "identifiers.json").write_text('["<blank>"]')


# ----------------------------------------------------------------------------- harness
def write_csvs(folder: Path, train_rows: int, test_rows: int, seed: int = 0) -> None:
    sys.path.insert(0, str(REPO))
    from dataset.build_sudoku_dataset import draw_transforms

    rng = np.random.default_rng(seed)
    base = np.array([(3 * (r % 3) + r // 3 + c) % 9 + 1 for r in range(9) for c in range(9)], dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train_rows), ("test", test_rows)):
        with open(folder / f"{split}.csv", "w") as f:
            f.write("source,question,answer,rating\n")
            for start in range(0, n, 100_000):
                m = min(100_000, n - start)
                (answers,) = draw_transforms(rng, m).apply(np.tile(base, (m, 1)))
                questions = np.where(rng.random((m, 81)) < 0.7, 0, answers)
                a_txt = np.ascontiguousarray(answers + ord("0"), dtype=np.uint8).view("S81").ravel()
                q_txt = np.ascontiguousarray(np.where(questions == 0, ord("."), questions + ord("0")), dtype=np.uint8).view("S81").ravel()
                ratings = rng.integers(0, 200, m)
                f.writelines(f"gen,{q.decode()},{a.decode()},{r}\n" for q, a, r in zip(q_txt, a_txt, ratings))


def measure(cmd: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = psutil.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc))
        time.sleep(0.02)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the builder and the workers it waited for
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"wall": wall, "cpu": cpu, "peak_gb": peak / 1e9}


def check_same_format(ref: Path, ours: Path) -> str:
    notes = []
    for split in ("train", "test"):
        a, b = (json.loads((d / split / "dataset.json").read_text()) for d in (ref, ours))
        assert a == b, (split, a, b)
        for k in ("inputs", "labels", "group_indices", "puzzle_indices", "puzzle_identifiers"):
            x, y = (np.load(d / split / f"all__{k}.npy", mmap_mode="r") for d in (ref, ours))
            assert x.shape == y.shape, (split, k, x.shape, y.shape)
            if split == "test" or k != "inputs" and k != "labels":
                assert (np.asarray(x) == np.asarray(y)).all(), (split, k)
            if k == "inputs":
                notes.append(f"{split} inputs dtype reference {x.dtype}, ours {y.dtype}")
    return "; ".join(notes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-rows", type=int, default=100_000)
    p.add_argument("--test-rows", type=int, default=20_000)
    p.add_argument("--subsample-size", type=int, default=1000, help="0 = all rows")
    p.add_argument("--num-aug", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--workdir", default=None)
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--side", choices=["reference"], help=argparse.SUPPRESS)  # internal: run the reference side
    p.add_argument("--source", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    subsample = args.subsample_size or None
    if args.side == "reference":
        reference_build(Path(args.source), Path(args.out), subsample, args.num_aug)
        return
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_sudoku_"))
    src = work / "csv"
    t0 = time.perf_counter()
    write_csvs(src, args.train_rows, args.test_rows)
    print(f"generated {args.train_rows:,} + {args.test_rows:,} CSV rows in {time.perf_counter() - t0:.1f} s "
          f"({(src / 'train.csv').stat().st_size / 1e6:.0f} MB train.csv)")
    sub = ["--subsample-size", str(subsample)] if subsample else []
    ours = measure([sys.executable, "-m", "dataset.build_sudoku_dataset", "--source", str(src), "--output-dir",
                    str(work / "ours"), "--num-aug", str(args.num_aug), "--workers", str(args.workers), "--no-progress",
                    *sub])
    rows = [("ours", ours)]
    if not args.skip_reference:
        ref = measure([sys.executable, __file__, "--side", "reference", "--source", str(src), "--out", str(work / "ref"),
                       "--num-aug", str(args.num_aug), "--subsample-size", str(args.subsample_size)])
        rows.append(("reference (re-implemented)", ref))
        print("format check: same metadata, shapes and test split;", check_same_format(work / "ref", work / "ours"))
    examples = (subsample or args.train_rows) * (1 + args.num_aug)
    print("\n| builder | train examples | wall s | CPU s | peak RSS (GB) |\n|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {examples:,} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['peak_gb']:.2f} |")
    if len(rows) == 2:
        ref = rows[1][1]
        print(f"\nspeed-up {ref['wall'] / ours['wall']:.1f}x wall, {ref['cpu'] / ours['cpu']:.1f}x CPU; memory ratio "
              f"{ref['peak_gb'] / ours['peak_gb']:.1f}x")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
