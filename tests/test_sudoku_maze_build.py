"""Sudoku-Extreme and Maze-Hard builders on CSVs generated in the Hub's format (tests/puzzle_csv_fixtures.py)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dataset import build_maze_dataset as maze
from dataset import build_sudoku_dataset as sudoku
from tests.puzzle_csv_fixtures import is_valid_sudoku, maze_rows, sudoku_rows, write_csv, write_maze_source, \
    write_sudoku_source

ROOT = Path(__file__).resolve().parent.parent
ARRAYS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")


def csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))[1:]


def load_split(out: Path, split: str) -> dict[str, np.ndarray]:
    return {k: np.load(out / split / f"all__{k}.npy") for k in ARRAYS}


def digits(s: str) -> np.ndarray:
    return np.array([0 if ch == "." else int(ch) for ch in s])


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def build_sudoku(src: Path, out: Path, *args: str) -> int:
    return sudoku.main(["--source", str(src), "--output-dir", str(out), "--no-progress", *args])


@pytest.fixture(scope="module")
def sudoku_src(tmp_path_factory) -> Path:
    return write_sudoku_source(tmp_path_factory.mktemp("sudoku") / "csv", n_train=60, n_test=25, seed=3)


# ----------------------------------------------------------------------------- Sudoku
def test_sudoku_format_and_dtypes(sudoku_src, tmp_path):
    out = tmp_path / "out"
    assert build_sudoku(sudoku_src, out, "--subsample-size", "20", "--num-aug", "3", "--workers", "1") == 0
    assert json.loads((out / "identifiers.json").read_text()) == ["<blank>"]
    for split, groups, size in (("train", 20, 4), ("test", 25, 1)):
        meta = json.loads((out / split / "dataset.json").read_text())
        assert meta == {"pad_id": 0, "ignore_label_id": 0, "blank_identifier_id": 0, "vocab_size": 11, "seq_len": 81,
                        "num_puzzle_identifiers": 1, "total_groups": groups, "mean_puzzle_examples": 1,
                        "total_puzzles": groups, "sets": ["all"]}
        arr = load_split(out, split)
        n = groups * size
        assert arr["inputs"].dtype == arr["labels"].dtype == np.uint8
        assert arr["inputs"].shape == arr["labels"].shape == (n, 81)
        assert all(arr[k].dtype == np.int32 for k in ARRAYS[2:])
        assert (arr["puzzle_identifiers"] == 0).all() and len(arr["puzzle_identifiers"]) == n
        assert arr["puzzle_indices"].tolist() == list(range(n + 1))
        assert arr["group_indices"].tolist() == list(range(0, n + 1, size))
        assert arr["inputs"].min() >= 1 and arr["inputs"].max() <= 10 and arr["labels"].min() >= 2


def invert(copy: np.ndarray, t: sudoku.SudokuTransforms, k: int) -> np.ndarray:
    """Undo transform k of ``t`` on a 9x9 board with plain loops (the reference's steps backwards)."""
    inverse_digit = np.zeros(10, dtype=int)
    inverse_digit[t.digit_map[k]] = np.arange(10)
    board = inverse_digit[copy.reshape(9, 9)]
    moved = np.zeros((9, 9), dtype=int)
    for i in range(9):
        for j in range(9):
            moved[t.row_perm[k][i], t.col_perm[k][j]] = board[i, j]
    return (moved.T if t.transpose[k] else moved).ravel()


def test_sudoku_copies_are_valid_and_map_back_to_their_original(sudoku_src, tmp_path):
    out, num_aug, seed = tmp_path / "out", 5, 11
    assert build_sudoku(sudoku_src, out, "--subsample-size", "12", "--num-aug", str(num_aug), "--seed", str(seed)) == 0
    arr = load_split(out, "train")
    q, a = arr["inputs"].astype(int) - 1, arr["labels"].astype(int) - 1
    originals = {(r[1], r[2]) for r in csv_rows(sudoku_src / "train.csv")}
    transforms = {}
    for start, stop in sudoku.blocks(12, num_aug):
        t = sudoku.block_transforms(seed, start, stop, num_aug)
        for g in range(start, stop):
            transforms[g] = (t, (g - start) * num_aug)
    assert len({r.tobytes() for r in q[:: 1 + num_aug]}) == 12  # 12 distinct originals drawn
    for g in range(12):
        first = g * (1 + num_aug)
        key = ("".join("." if d == 0 else str(d) for d in q[first]), "".join(map(str, a[first])))
        assert key in originals  # the group's first puzzle is an untouched CSV row
        t, k0 = transforms[g]
        for j in range(1, 1 + num_aug):
            row = first + j
            assert is_valid_sudoku(a[row])
            clues = q[row] != 0
            assert (q[row][clues] == a[row][clues]).all() and clues.sum() == (q[first] != 0).sum()
            assert (invert(q[row], t, k0 + j - 1) == q[first]).all()
            assert (invert(a[row], t, k0 + j - 1) == a[first]).all()


def test_sudoku_test_split_is_the_csv_in_order_and_min_difficulty_filters_both(sudoku_src, tmp_path):
    out = tmp_path / "out"
    assert build_sudoku(sudoku_src, out, "--num-aug", "2") == 0
    rows = csv_rows(sudoku_src / "test.csv")
    arr = load_split(out, "test")
    assert (arr["inputs"] - 1 == np.stack([digits(r[1]) for r in rows])).all()
    assert (arr["labels"] - 1 == np.stack([digits(r[2]) for r in rows])).all()
    out2 = tmp_path / "hard"
    assert build_sudoku(sudoku_src, out2, "--min-difficulty", "50") == 0
    for split in ("train", "test"):
        kept = [r for r in csv_rows(sudoku_src / f"{split}.csv") if int(r[3]) >= 50]
        assert 0 < len(kept) < len(csv_rows(sudoku_src / f"{split}.csv"))
        assert (load_split(out2, split)["inputs"] - 1 == np.stack([digits(r[1]) for r in kept])).all()


def test_sudoku_output_is_byte_identical_for_any_worker_count(sudoku_src, tmp_path, monkeypatch):
    monkeypatch.setattr(sudoku, "ROWS_PER_BLOCK", 40)  # several blocks, so workers share the work
    digests = []
    for workers in ("1", "3"):
        out = tmp_path / f"w{workers}"
        assert build_sudoku(sudoku_src, out, "--num-aug", "7", "--workers", workers, "--seed", "5") == 0
        digests.append(tree_digest(out))
    assert digests[0] == digests[1]
    assert build_sudoku(sudoku_src, tmp_path / "other", "--num-aug", "7", "--seed", "6") == 0
    assert tree_digest(tmp_path / "other") != digests[0]


def build_hub_cache(cache: Path, repo_id: str, files: dict[str, bytes]) -> None:
    """huggingface_hub's cache layout for a dataset repo: blobs, snapshots/<commit>/<file>, refs/main."""
    repo_dir = cache / ("datasets--" + repo_id.replace("/", "--"))
    commit = "c" * 40
    (repo_dir / "blobs").mkdir(parents=True)
    (repo_dir / "snapshots" / commit).mkdir(parents=True)
    for name, data in files.items():
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (repo_dir / "snapshots" / commit / name).symlink_to(Path("../../blobs") / blob.name)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)


def test_hub_path_through_an_offline_cache_as_a_script(sudoku_src, tmp_path):
    cache = tmp_path / "hub"
    build_hub_cache(cache, "someorg/sudoku-mini", {n: (sudoku_src / n).read_bytes() for n in ("train.csv", "test.csv")})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PYTHONPATH": str(ROOT), "HF_HOME": str(tmp_path)}
    cmd = [sys.executable, str(ROOT / "dataset" / "build_sudoku_dataset.py"), "--source-repo", "someorg/sudoku-mini",
           "--output-dir", str(tmp_path / "hub_out"), "--num-aug", "2", "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert build_sudoku(sudoku_src, tmp_path / "local_out", "--num-aug", "2") == 0
    assert tree_digest(tmp_path / "hub_out") == tree_digest(tmp_path / "local_out")
    proc = subprocess.run([*cmd[:3], "someorg/not-cached", *cmd[4:]], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: someorg/not-cached: train.csv:")
    assert "HF_HUB_OFFLINE" in proc.stderr and "Traceback" not in proc.stderr


def _corrupt(rows: list[list[str]], row: int, column: int, fn) -> list[list[str]]:
    rows = [r[:] for r in rows]
    rows[row][column] = fn(rows[row][column])
    return rows


def _first_clue(q: str) -> int:
    return next(i for i, ch in enumerate(q) if ch != ".")


SUDOKU_BAD = {
    "short question": (1, 1, lambda s: s[:-1], "row 2: question has 80 characters, expected 81"),
    "letter in question": (2, 1, lambda s: "x" + s[1:], "row 3: question has character 'x' at position 0"),
    "blank in answer": (0, 2, lambda s: "." + s[1:], "row 1: answer has character '.' at position 0"),
    "non-ascii": (3, 2, lambda s: "é" + s[1:], "row 4: answer has"),
}


@pytest.mark.parametrize("case", [*SUDOKU_BAD, "contradicting clue"])
def test_sudoku_bad_input_names_file_and_row_and_writes_nothing(case, tmp_path, capsys):
    rows = sudoku_rows(6, seed=1)
    if case == "contradicting clue":
        k = _first_clue(rows[4][1])
        wrong = str(int(rows[4][2][k]) % 9 + 1)
        rows = _corrupt(rows, 4, 1, lambda s: s[:k] + wrong + s[k + 1:])
        expected = f"row 5: clue {wrong} at cell {k}"
    else:
        row, column, fn, expected = SUDOKU_BAD[case]
        rows = _corrupt(rows, row, column, fn)
    src = tmp_path / "src"
    write_csv(src / "train.csv", sudoku_rows(4, seed=2))
    test_csv = write_csv(src / "test.csv", rows)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")  # an earlier build stays as it was
    assert build_sudoku(src, out, "--num-aug", "2") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {test_csv}: {expected}"), err
    assert len(err.splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temporary left behind


# ----------------------------------------------------------------------------- Maze
@pytest.mark.parametrize("aug", [False, True])
def test_maze_format_augmentation_and_order(tmp_path, aug):
    src = write_maze_source(tmp_path / "csv", n_train=9, n_test=4, side=7, seed=4)
    out = tmp_path / "out"
    args = ["--source", str(src), "--output-dir", str(out), "--no-progress"] + (["--aug"] if aug else [])
    assert maze.main(args) == 0
    charset = "# SGo"
    for split in ("train", "test"):
        rows = csv_rows(src / f"{split}.csv")
        meta = json.loads((out / split / "dataset.json").read_text())
        size = 8 if aug and split == "train" else 1
        assert (meta["seq_len"], meta["vocab_size"], meta["total_groups"], meta["num_puzzle_identifiers"]) == \
            (49, 6, len(rows), 1)
        arr = load_split(out, split)
        assert arr["inputs"].dtype == np.uint8 and arr["inputs"].shape == (len(rows) * size, 49)
        assert arr["group_indices"].tolist() == list(range(0, len(rows) * size + 1, size))
        for g, r in enumerate(rows):
            grids = [np.array([charset.index(ch) + 1 for ch in s]).reshape(7, 7) for s in (r[1], r[2])]
            # the 8 dihedral transforms in the reference's order: identity, rot90 x3, flips, transposes
            variants = [lambda x: x, lambda x: np.rot90(x, 1), lambda x: np.rot90(x, 2), lambda x: np.rot90(x, 3),
                        np.fliplr, np.flipud, lambda x: x.T, lambda x: np.fliplr(np.rot90(x, 1))][:size]
            for k, fn in enumerate(variants):
                assert (arr["inputs"][g * size + k] == fn(grids[0]).ravel()).all()
                assert (arr["labels"][g * size + k] == fn(grids[1]).ravel()).all()


MAZE_BAD = {
    "not square": (0, 1, lambda s: s[:-1], "row 1: question has 48 characters, not a square grid"),
    "wrong length": (2, 2, lambda s: s + " ", "row 3: answer has 50 characters, expected 49"),
    "outside charset": (1, 1, lambda s: "x" + s[1:], "row 2: question has character 'x' at position 0"),
}


@pytest.mark.parametrize("case", [*MAZE_BAD, "path through a wall"])
def test_maze_bad_input(case, tmp_path, capsys):
    rows = maze_rows(4, side=7, seed=5, wall_fraction=0.3)
    if case == "path through a wall":
        k = rows[3][1].index("#")
        rows = _corrupt(rows, 3, 2, lambda s: s[:k] + "o" + s[k + 1:])
        expected = f"row 4: answer has 'o' at row {k // 7 + 1}, column {k % 7 + 1} where the question has '#'"
    else:
        row, column, fn, expected = MAZE_BAD[case]
        rows = _corrupt(rows, row, column, fn)
    src = tmp_path / "src"
    train = write_csv(src / "train.csv", rows)
    write_csv(src / "test.csv", maze_rows(2, side=7, seed=6))
    assert maze.main(["--source", str(src), "--output-dir", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {train}: {expected}"), err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- CSV reading
def test_whole_array_reader_equals_the_csv_module_reader(tmp_path):
    from dataset.puzzle_csv import _read_regular, _read_rows, read_puzzle_csv

    rows = sudoku_rows(40, seed=8)
    rows[3][3], rows[5][3], rows[7][3], rows[9][3] = "-3", "+12", "x", ""  # int() decides these
    plain = write_csv(tmp_path / "plain.csv", rows)
    assert b"\r\n" in plain.read_bytes()  # csv.writer ends lines with CRLF
    lf = tmp_path / "lf.csv"
    lf.write_bytes(plain.read_bytes().replace(b"\r\n", b"\n"))
    quoted = tmp_path / "quoted.csv"
    write_csv(quoted, [[f"src, with comma {i}", *r[1:]] for i, r in enumerate(rows)])
    slow = _read_rows(str(plain), None, False)
    assert slow.rating_errors == [8, 10] and slow.ratings[3] == -3 and slow.ratings[5] == 12
    for path in (plain, lf):
        fast = _read_regular(str(path), path.read_bytes(), None, False)
        assert fast is not None
        for got in (fast, read_puzzle_csv(str(path))):
            assert (got.questions == slow.questions).all() and (got.answers == slow.answers).all()
            assert (got.ratings == slow.ratings).all() and got.rating_errors == slow.rating_errors
    assert _read_regular(str(quoted), quoted.read_bytes(), None, False) is None  # the csv module's job
    via_csv = read_puzzle_csv(str(quoted))
    assert (via_csv.questions == slow.questions).all() and (via_csv.ratings == slow.ratings).all()
