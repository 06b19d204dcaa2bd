"""--help texts: every builder flag documented, the Kaggle runner's trailing overrides explained, and
pretrain.py / evaluate.py listing only their own config groups (SEAL's live in seal/configs/)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dataset.build_arc_dataset import build_parser

REPO = Path(__file__).resolve().parents[1]


def run_help(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, *args, "--help"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_builder_flag_has_a_help_text():
    parser = build_parser()
    undocumented = [a.option_strings for a in parser._actions if not (a.help or "").strip()]
    assert undocumented == []
    assert "examples:" in parser.format_help() and "--output-dir data/arc1-aug-1000" in parser.format_help()


def test_kaggle_help_text(capsys):
    from kaggle.run_kaggle import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "[key=value ...]" in text and "Hydra override" in text and "arch.lora_rank=0" in text


def groups(help_text: str) -> set[str]:
    section = help_text.split("== Configuration groups ==")[1].split("== Config ==")[0]
    return {m.group(1) for m in re.finditer(r"^([\w/]+): ", section, re.M)}


@pytest.mark.parametrize("entry", ["pretrain.py", "evaluate.py"])
def test_training_entry_points_list_only_their_groups(entry):
    assert groups(run_help(entry)) == {"arch", "preset"}


def test_seal_lists_its_own_groups():
    assert groups(run_help("-m", "seal")) == {"data", "lora", "model", "preset", "stage"}
