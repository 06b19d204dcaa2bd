"""What ``ignore_empty_predictions`` changes in the ARC scores when copies decode to nothing.

    python benchmarks/bench_arc_empty_decodes.py                  # 400 tasks, 8 copies per test input
    python benchmarks/bench_arc_empty_decodes.py --empty 0.1 0.3 0.5

Synthetic predictions: every augmented copy of a test input (random dihedral + colour map)
decodes to nothing with probability ``--empty``; otherwise to the right answer with probability
``--right`` or to one of three wrong answers. Confidences are uniform in (0, 1). The same
predictions are scored by the evaluator's default (the reference: an empty grid is an answer
like any other) and with ``ignore_empty_predictions=True`` (empty copies do not vote).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataset.arc_grid import Augmentation, encode_grid  # noqa: E402
from evaluators.arc import ARCEvaluator  # noqa: E402
from tests.arc_eval_worker import Case  # noqa: E402


def synthetic_case(n_tasks: int, copies: int, empty: float, right: float, seed: int) -> Case:
    rng = np.random.default_rng(seed)
    case = Case()
    for t in range(n_tasks):
        shape = tuple(int(v) for v in rng.integers(2, 12, size=2))
        inp = rng.integers(0, 10, size=shape).astype(np.uint8)
        out = rng.integers(0, 10, size=shape).astype(np.uint8)
        wrong = [rng.integers(0, 10, size=shape).astype(np.uint8) for _ in range(3)]
        case.add_task(f"t{t:04d}", [(inp, out)])
        for _ in range(copies):
            aug = Augmentation.random(rng)
            pid = case.identifier(f"t{t:04d}", aug)
            r = rng.random()
            if r < empty:
                tokens = np.zeros(900, np.uint8)
            else:
                answer = out if rng.random() < right else wrong[int(rng.integers(0, 3))]
                tokens = encode_grid(aug.apply(answer))
            case.rows.append((pid, encode_grid(aug.apply(inp)), tokens, float(rng.uniform(0.01, 0.99))))
    return case


def score(case: Case, folder: Path, ignore: bool) -> dict[str, float]:
    ev = ARCEvaluator(str(folder), None, case.identifiers, report=False, ignore_empty_predictions=ignore)
    ev.begin_eval()
    for batch, preds in case.batches(256):
        ev.update_batch(batch, preds)
    return ev.result(None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=400)
    p.add_argument("--copies", type=int, default=8)
    p.add_argument("--empty", type=float, nargs="+", default=[0.1, 0.3, 0.5])
    p.add_argument("--right", type=float, default=0.4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(f"{args.tasks} tasks x {args.copies} copies, right answer in {args.right:.0%} of the decodable copies")
    print("| empty decodes | pass@1 default (reference) | pass@1 ignore_empty | pass@2 default | pass@2 ignore_empty |")
    print("| --- | --- | --- | --- | --- |")
    for empty in args.empty:
        case = synthetic_case(args.tasks, args.copies, empty, args.right, args.seed)
        with tempfile.TemporaryDirectory() as tmp:
            case.write(tmp)
            ref, ign = score(case, Path(tmp), False), score(case, Path(tmp), True)
        print(f"| {empty:.0%} | {ref['ARC/pass@1']:.3f} | {ign['ARC/pass@1']:.3f} | {ref['ARC/pass@2']:.3f} | {ign['ARC/pass@2']:.3f} |")


if __name__ == "__main__":
    main()
