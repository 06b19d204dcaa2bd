"""Benchmark: ARC voting at full ARC-AGI-1 evaluation scale (400 tasks x 1000 augmented copies).

Builds synthetic predictions (random grids, random augmentations, a mix of right and wrong
answers), then times ARCEvaluator.begin_eval + update_batch over all batches + result, the work
done at every evaluation. Prints one table with the median over --repeats runs.

    OMP_NUM_THREADS=1 python benchmarks/bench_voting.py            # full scale
    OMP_NUM_THREADS=1 python benchmarks/bench_voting.py --tasks 40 # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dataset.arc_grid import BLANK_IDENTIFIER, Augmentation, encode_grid  # noqa: E402
from evaluators.arc import ARCEvaluator  # noqa: E402


def random_grid(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 10, size=(rng.integers(1, 31), rng.integers(1, 31))).astype(np.uint8)


def build(num_tasks: int, copies: int, seed: int):
    rng = np.random.default_rng(seed)
    puzzles, identifiers = {}, [BLANK_IDENTIFIER]
    ids, inputs, outputs = [], [], []
    for t in range(num_tasks):
        task_id = f"{t:08x}"
        n_test = 2 if t % 20 == 0 else 1  # ~5% of ARC-1 evaluation tasks have 2+ test inputs
        tests = [(random_grid(rng), random_grid(rng)) for _ in range(n_test)]
        wrong = [random_grid(rng) for _ in range(3)]
        puzzles[task_id] = {"train": [], "test": [{"input": i.tolist(), "output": o.tolist()} for i, o in tests]}
        names = {task_id}
        augs = [Augmentation.identity()]
        while len(augs) < copies:
            aug = Augmentation.random(rng)
            if aug.name(task_id) not in names:
                names.add(aug.name(task_id))
                augs.append(aug)
        for aug in augs:
            identifiers.append(aug.name(task_id))
            for test_in, test_out in tests:
                answer = test_out if rng.random() < 0.3 else wrong[rng.integers(0, 3)]
                ids.append(len(identifiers) - 1)
                inputs.append(encode_grid(aug.apply(test_in)))
                outputs.append(encode_grid(aug.apply(answer)))
    confidence = rng.random(len(ids)).astype(np.float32)
    return puzzles, identifiers, np.array(ids, np.int32), np.stack(inputs), np.stack(outputs), confidence


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--copies", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    t0 = time.perf_counter()
    puzzles, identifiers, ids, inputs, outputs, conf = build(args.tasks, args.copies, seed=0)
    setup_s = time.perf_counter() - t0
    # The model hands over int tensors; build the batches once so only evaluation is timed.
    batches = []
    for s in range(0, len(ids), args.batch_size):
        sl = slice(s, s + args.batch_size)
        batch = {"inputs": torch.from_numpy(inputs[sl].astype(np.int32)), "puzzle_identifiers": torch.from_numpy(ids[sl])}
        preds = {"preds": torch.from_numpy(outputs[sl].astype(np.int64)), "q_halt_logits": torch.logit(torch.from_numpy(conf[sl]))}
        batches.append((batch, preds))

    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "test_puzzles.json"), "w") as f:
            json.dump(puzzles, f)
        times, cpu_times, metrics = [], [], None
        for _ in range(args.repeats):
            evaluator = ARCEvaluator(folder, None, identifiers)  # fresh: identifier parsing is timed too
            start, cpu_start = time.perf_counter(), time.process_time()
            evaluator.begin_eval()
            for batch, preds in batches:
                evaluator.update_batch(batch, preds)
            metrics = evaluator.result(None)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)

    # CPU seconds of this process are printed too: on a shared machine wall time includes waiting.
    print("| tasks | copies | predictions | batch | median wall s (update+result) | min wall s | median CPU s | setup s | pass@2 |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {args.tasks} | {args.copies} | {len(ids)} | {args.batch_size} | {statistics.median(times):.2f} "
        f"| {min(times):.2f} | {statistics.median(cpu_times):.2f} | {setup_s:.1f} | {metrics['ARC/pass@2']:.3f} |"
    )


if __name__ == "__main__":
    main()
