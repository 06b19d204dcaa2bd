"""scripts/install_torch.sh (used by `make demo` / `make test`): which torch it installs, from where.

Fake `python` and `nvidia-smi` on a PATH holding nothing else record what would be installed, so the
decision is tested the same way on machines with and without a GPU.
"""

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install_torch.sh"
CPU = ["--timeout", "10", "--retries", "0", "--index-url", "https://download.pytorch.org/whl/cpu"]


def write_tool(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def install(tmp_path: Path, gpu: str | None, have_torch=False, cpu_index_ok=True, plain_ok=True):
    """gpu: None (no nvidia-smi), "broken" (nvidia-smi fails: no driver) or "ok"."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    write_tool(bin_dir / "python", (
        f'echo "$*" >>"{calls}"\n'
        f'if [ "$1" = "-c" ]; then {"echo 2.9.1+cu128; exit 0" if have_torch else "exit 1"}; fi\n'
        f'case "$*" in *--index-url*) exit {0 if cpu_index_ok else 1} ;; esac\n'
        f"exit {0 if plain_ok else 1}\n"))
    if gpu is not None:
        write_tool(bin_dir / "nvidia-smi", "echo 'GPU 0: NVIDIA H100'; exit 0\n" if gpu == "ok" else
                   "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver\"; exit 9\n")
    result = subprocess.run(["/bin/bash", str(SCRIPT), str(bin_dir / "python"), "2.13.0"], env={"PATH": str(bin_dir)},
                            capture_output=True, text=True, timeout=30)
    pip = [line.split() for line in calls.read_text().splitlines() if line.startswith("-m pip")]
    return result, pip


def test_existing_torch_is_kept(tmp_path):
    result, pip = install(tmp_path, gpu=None, have_torch=True)
    assert result.returncode == 0 and pip == []
    assert "torch 2.9.1+cu128 is installed: kept" in result.stdout


@pytest.mark.parametrize("gpu", [None, "broken"])
def test_without_a_gpu_the_cpu_index_is_used(tmp_path, gpu):
    result, pip = install(tmp_path, gpu=gpu)
    assert result.returncode == 0, result.stderr
    assert pip == [["-m", "pip", "install", "-q", *CPU, "torch==2.13.0"]]
    assert "no NVIDIA GPU: installing torch==2.13.0, CPU build" in result.stdout


def test_unreachable_cpu_index_falls_back_to_the_plain_install(tmp_path):
    result, pip = install(tmp_path, gpu=None, cpu_index_ok=False)
    assert result.returncode == 0
    assert pip == [["-m", "pip", "install", "-q", *CPU, "torch==2.13.0"], ["-m", "pip", "install", "-q", "torch==2.13.0"]]
    assert "could not be used: installing torch==2.13.0 from the default index instead" in result.stdout


def test_with_a_gpu_the_default_index_is_used(tmp_path):
    result, pip = install(tmp_path, gpu="ok")
    assert result.returncode == 0
    assert pip == [["-m", "pip", "install", "-q", "torch==2.13.0"]]
    assert "NVIDIA GPU found" in result.stdout


def test_a_failed_install_fails_the_make_target(tmp_path):
    result, pip = install(tmp_path, gpu=None, cpu_index_ok=False, plain_ok=False)
    assert result.returncode != 0 and len(pip) == 2
