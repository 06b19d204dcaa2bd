"""The ARC builder on pathological input: one line `error: <file>: task <id>: <reason>`, exit code 2.

Parser-breaking JSON (nesting past the recursion limit, integers beyond int64 or beyond Python's
digit limit), file-system traps (a symlink loop, a directory where a file should be) and task ids
the identifier format cannot hold (empty, or containing the separator `|||`, which would make
parse_identifier read the wrong task and transform) all end the build cleanly; task-level
problems are skipped with --skip-invalid.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dataset.build_arc_dataset import BuildConfig, build_dataset, main

GOOD = {"train": [{"input": [[1, 2]], "output": [[2, 1]]}], "test": [{"input": [[3]], "output": [[4]]}]}


def _build(args: list[str], capsys) -> tuple[int, str]:
    code = main([*args, "--num-aug", "1", "--workers", "1", "--no-progress"])
    return code, capsys.readouterr().err


def _folder_source(root: Path, files: dict[str, str]) -> Path:
    """<root>/training/<name>.json for each entry, plus one good task."""
    (root / "training").mkdir(parents=True)
    (root / "training" / "good.json").write_text(json.dumps(GOOD))
    for name, text in files.items():
        (root / "training" / f"{name}.json").write_text(text)
    return root


def _deep(depth: int) -> str:
    return '{"train": [{"input": ' + "[" * depth + "]" * depth + ', "output": [[1]]}], "test": []}'


def _big_int(value: str) -> str:
    return '{"train": [{"input": [[' + value + ']], "output": [[1]]}], "test": []}'


FOLDER_CASES = {
    # name: (file text, words the reason must contain)
    "deep": (_deep(200_000), "nested too deeply"),
    "int64": (_big_int(str(10**30)), "too large"),
    "digits": (_big_int("9" * 5000), "malformed json"),
}


@pytest.mark.parametrize("case", list(FOLDER_CASES))
def test_parser_breaking_json_names_file_and_task(tmp_path, capsys, case):
    text, reason = FOLDER_CASES[case]
    src = _folder_source(tmp_path / "src", {case: text})
    out = tmp_path / "out"
    code, err = _build(["--source", str(src), "--subsets", "training", "--test-set-name", "none",
                        "--output-dir", str(out)], capsys)
    bad = src / "training" / f"{case}.json"
    assert code == 2 and not out.exists()
    assert err.startswith(f"error: {bad}: task {case}: ") and reason in err.lower(), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    code, err = _build(["--source", str(src), "--subsets", "training", "--test-set-name", "none",
                        "--output-dir", str(out), "--skip-invalid"], capsys)
    assert code == 0 and json.loads((out / "identifiers.json").read_text())[1].startswith("good")


def test_symlink_loop_and_directory_instead_of_a_file(tmp_path, capsys):
    src = _folder_source(tmp_path / "src", {})
    loop = src / "training" / "loop.json"
    os.symlink(loop, loop)  # points at itself
    (src / "training" / "adir.json").mkdir()
    out = tmp_path / "out"
    code, err = _build(["--source", str(src), "--subsets", "training", "--test-set-name", "none",
                        "--output-dir", str(out)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"error: {src / 'training' / 'adir.json'}: task adir: ") and "directory" in err, err
    summary = build_dataset(BuildConfig(output_dir=str(out), source=str(src), subsets=["training"],
                                        test_set_name="none", num_aug=1, workers=1, skip_invalid=True, progress=False))
    assert summary["tasks"] == 1 and summary["skipped_tasks"] == 2
    assert any("symbolic links" in s and "task loop:" in s for s in summary["skipped"]), summary["skipped"]


@pytest.mark.parametrize("trap", ["directory", "symlink loop"])
def test_kaggle_challenges_or_solutions_path_that_is_no_file(tmp_path, capsys, trap):
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "arc_training_challenges.json").write_text(json.dumps({"t1": GOOD}))
    bad = folder / "arc_training_solutions.json"
    if trap == "directory":
        bad.mkdir()
    else:
        os.symlink(bad, bad)
    out = tmp_path / "out"
    code, err = _build(["--input-file-prefix", str(folder / "arc"), "--subsets", "training",
                        "--test-set-name", "training", "--output-dir", str(out)], capsys)
    assert code == 2 and err.startswith(f"error: {bad}: ") and len(err.strip().splitlines()) == 1, err
    assert ("directory" if trap == "directory" else "symbolic links") in err


@pytest.mark.parametrize("task_id, reason", [("", "empty task id"), ("a|||t1|||0123456789", "|||")])
def test_task_ids_the_identifier_format_cannot_hold_are_rejected(tmp_path, capsys, task_id, reason):
    folder = tmp_path / "src"
    folder.mkdir()
    challenges = folder / "arc_training_challenges.json"
    challenges.write_text(json.dumps({task_id: GOOD, "fine": GOOD}))
    out = tmp_path / "out"
    code, err = _build(["--input-file-prefix", str(folder / "arc"), "--subsets", "training",
                        "--test-set-name", "training", "--output-dir", str(out)], capsys)
    assert code == 2 and err.startswith(f"error: {challenges}: task {task_id}: ") and reason in err, err
    code, err = _build(["--input-file-prefix", str(folder / "arc"), "--subsets", "training",
                        "--test-set-name", "training", "--output-dir", str(out), "--skip-invalid"], capsys)
    assert code == 0
    assert json.loads((out / "test_puzzles.json").read_text()).keys() == {"fine"}
