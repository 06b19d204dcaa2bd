"""Hand-built ARC evaluation cases, shared by the evaluator tests and the torchrun worker.

Run as a script (under torchrun or alone) it evaluates one synthetic case, splitting the
prediction rows over the ranks, and rank 0 writes metrics.json and submission.json to argv[1]:

    OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 tests/arc_eval_worker.py OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dataset.arc_grid import BLANK_IDENTIFIER, Augmentation, encode_grid  # noqa: E402


@dataclass
class Case:
    """test_puzzles + identifiers + prediction rows (identifier id, augmented input, output, conf)."""

    test_puzzles: dict = field(default_factory=dict)
    identifiers: list = field(default_factory=lambda: [BLANK_IDENTIFIER])
    rows: list = field(default_factory=list)

    def add_task(self, task_id: str, tests: list[tuple[np.ndarray, np.ndarray | None]], train=None) -> None:
        train = train or [{"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}]
        pairs = []
        for inp, out in tests:
            pair = {"input": np.asarray(inp).tolist()}
            if out is not None:
                pair["output"] = np.asarray(out).tolist()
            pairs.append(pair)
        self.test_puzzles[task_id] = {"train": train, "test": pairs}

    def identifier(self, task_id: str, aug: Augmentation) -> int:
        name = aug.name(task_id)
        if name not in self.identifiers:
            self.identifiers.append(name)
        return self.identifiers.index(name)

    def predict(self, task_id: str, test_index: int, answer, conf: float, aug: Augmentation | None = None) -> None:
        """One augmented copy of test input ``test_index`` predicting ``answer`` (given un-augmented)."""
        aug = aug or Augmentation.identity()
        inp = np.asarray(self.test_puzzles[task_id]["test"][test_index]["input"], dtype=np.uint8)
        pid = self.identifier(task_id, aug)
        out_tokens = encode_grid(aug.apply(np.asarray(answer, dtype=np.uint8)))
        self.rows.append((pid, encode_grid(aug.apply(inp)), out_tokens, conf))

    def write(self, folder: str) -> None:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "test_puzzles.json"), "w") as f:
            json.dump(self.test_puzzles, f)

    def batches(self, batch_size: int, rank: int = 0, world_size: int = 1, pad_to: int | None = None):
        """Yield (batch, preds) dicts of this rank's rows (global batches split like the loader)."""
        local = batch_size // world_size
        for start in range(0, len(self.rows), batch_size):
            rows = self.rows[start : start + batch_size][rank * local : (rank + 1) * local]
            n = pad_to or local
            ids = torch.zeros(n, dtype=torch.int32)
            inputs = torch.zeros(n, 900, dtype=torch.int32)
            outputs = torch.zeros(n, 900, dtype=torch.int64)
            logits = torch.full((n,), -5.0)
            for i, (pid, inp, out, conf) in enumerate(rows):
                ids[i], inputs[i], outputs[i] = pid, torch.from_numpy(inp.astype(np.int32)), torch.from_numpy(out.astype(np.int64))
                logits[i] = float(np.log(conf / (1 - conf)))
            batch = {"inputs": inputs, "labels": torch.full((n, 900), -100), "puzzle_identifiers": ids}
            yield batch, {"preds": outputs, "q_halt_logits": logits}


def grid(rows: int, cols: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 10, size=(rows, cols)).astype(np.uint8)


def mixed_case(seed: int = 0) -> Case:
    """Several tasks (one with two test inputs), random augmentations, right and wrong votes."""
    rng = np.random.default_rng(seed)
    case = Case()
    for t in range(6):
        n_test = 2 if t % 3 == 0 else 1
        tests = [(grid(3 + t, 4 + j, 10 * t + j), grid(2 + j, 5, 100 + 10 * t + j)) for j in range(n_test)]
        case.add_task(f"task{t}", tests)
        for j, (_, out) in enumerate(tests):
            for _ in range(int(rng.integers(1, 6))):
                answer = out if rng.random() < 0.5 else grid(2, 2, int(rng.integers(0, 3)))
                case.predict(f"task{t}", j, answer, float(rng.uniform(0.05, 0.95)), Augmentation.random(rng))
    case.add_task("no_predictions", [(grid(2, 2, 7), grid(1, 1, 8))])
    rng.shuffle(case.rows)
    return case


def main(out_dir: str) -> None:
    from evaluators.registry import build_evaluator
    from utils.distributed import dist_info, init_distributed

    init_distributed(torch.device("cpu"))
    info = dist_info()
    case = mixed_case()
    data_dir = os.path.join(out_dir, "data")
    if info.is_main:
        case.write(data_dir)
    if info.world_size > 1:
        torch.distributed.barrier()
    evaluator = build_evaluator("arc@ARC", data_dir, None, case.identifiers, flush_rows=5)
    for _ in range(2):  # a second evaluation must not see the first one's votes
        evaluator.begin_eval()
        for batch, preds in case.batches(4, info.rank, info.world_size):
            evaluator.update_batch(batch, preds)
        metrics = evaluator.result(os.path.join(out_dir, f"ws{info.world_size}"))
    if info.is_main:
        with open(os.path.join(out_dir, f"ws{info.world_size}", "metrics.json"), "w") as f:
            json.dump(metrics, f)
    else:
        assert metrics is None
    if info.world_size > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
