"""container-onstart.sh: shellcheck-clean, and --dry-run prints the plan without changing anything."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "container-onstart.sh"
SECRET = "ghp_notarealtoken0123456789"


def fake_nvidia_smi(folder: Path, cuda_version: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / "nvidia-smi"
    tool.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-L" ]; then echo "GPU 0: NVIDIA H100 80GB HBM3"; exit 0; fi\n'
        f'echo "| NVIDIA-SMI 560.35  Driver Version: 560.35  CUDA Version: {cuda_version}     |"\n'
    )
    tool.chmod(0o755)
    return folder


def no_gpu_nvidia_smi(folder: Path) -> Path:
    """What a machine with the tool but no usable GPU shows: nvidia-smi fails. Put first on PATH, it
    also hides a real nvidia-smi, so the plan is the same on a GPU machine and on a CPU one."""
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / "nvidia-smi"
    tool.write_text("#!/bin/sh\necho \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver\"\n"
                    "exit 9\n")
    tool.chmod(0o755)
    return folder


def fake_python(path: Path, torch_line: str | None) -> Path:
    """An interpreter stand-in: answers the script's torch probe (or fails it: no torch installed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + (f'echo "{torch_line}"\n' if torch_line else "exit 1\n"))
    path.chmod(0o755)
    return path


def dry_run(tmp_path: Path, extra_env: dict | None = None, args=("--dry-run",), path_prefix: Path | None = None,
            torch_line: str | None = "2.8.0+cu128 cuda 12.8"):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "HF_TOKEN", "GITHUB_TOKEN", "GITHUB_PAT")}
    # A fake nvidia-smi comes first on PATH (a GPU one when given, else a failing one): a real one
    # in /usr/bin never decides the plan.
    path = [str(path_prefix or no_gpu_nvidia_smi(tmp_path / "nogpu")), str(Path(sys.executable).parent),
            "/usr/bin", "/bin"]
    python = fake_python(tmp_path / "fakepy" / "python3", torch_line)
    env.update(HOME=str(home), WORKSPACE=str(tmp_path / "ws"), PATH=os.pathsep.join(path), PYTHON=str(python),
               START_SCRIPT="", REPO_URL="https://example.invalid/org/arc-reasoning.git")
    env.update(extra_env or {})
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60)


def snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_passes():
    result = subprocess.run(["shellcheck", "--severity=info", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_dry_run_prints_every_step_and_changes_nothing(tmp_path):
    (tmp_path / "home").mkdir()
    fake_python(tmp_path / "fakepy" / "python3", "2.8.0+cu128 cuda 12.8")
    no_gpu_nvidia_smi(tmp_path / "nogpu")
    before = snapshot(tmp_path)
    result = dry_run(tmp_path, {"GITHUB_TOKEN": SECRET, "WANDB_API_KEY": "wandb-secret-key"})
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for n in range(1, 8):
        assert f"== {n}/7" in out
    ws = tmp_path / "ws" / "arc-reasoning"
    assert f"+ git clone --quiet --branch main https://example.invalid/org/arc-reasoning.git {ws}" in out
    assert f"-m venv --system-site-packages {ws}/.venv" in out
    assert f"-m pip install --quiet -e {ws}" in out
    assert "keeping the installed torch: 2.8.0+cu128 cuda 12.8" in out  # the pod's torch is kept
    assert "no GPU found: skipped" in out
    assert "wandb.login" in out
    assert SECRET not in out + result.stderr and "wandb-secret-key" not in out + result.stderr
    assert snapshot(tmp_path) == before  # nothing created, not even the workspace or ~/.bashrc


def test_gpu_pod_plan_picks_wheel_for_driver_and_tries_extras(tmp_path):
    bin12_6 = fake_nvidia_smi(tmp_path / "bin126", "12.6")
    # A CPU-only torch on a GPU pod is replaced by the wheel matching the driver.
    out = dry_run(tmp_path, {"PROJECT_EXTRAS": "test"}, path_prefix=bin12_6, torch_line="2.8.0+cpu cuda None").stdout
    assert "--ignore-installed torch --index-url https://download.pytorch.org/whl/cu126" in out
    assert "--no-build-isolation flash-attn" in out and "--no-build-isolation adam-atan2" in out
    assert f"-e {tmp_path}/ws/arc-reasoning[test]" in out

    bin12_9 = fake_nvidia_smi(tmp_path / "bin129", "12.9")
    out = dry_run(tmp_path, {"GPU_EXTRAS": "0"}, path_prefix=bin12_9, torch_line=None).stdout  # no torch at all
    assert "+ " + str(tmp_path / "fakepy" / "python3") + " -m pip install --quiet torch --index-url" in out
    assert "whl/cu128" in out and "skipped (GPU_EXTRAS=0)" in out and "flash-attn" not in out

    bin11 = fake_nvidia_smi(tmp_path / "bin118", "11.8")
    out = dry_run(tmp_path, {"KEEP_POD_TORCH": "0"}, path_prefix=bin11).stdout
    assert "whl/cu118" in out


def test_second_run_updates_instead_of_cloning(tmp_path):
    repo = tmp_path / "ws" / "arc-reasoning"
    (repo / ".git").mkdir(parents=True)
    venv_bin = repo / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    fake_python(venv_bin / "python", "2.8.0+cu128 cuda 12.8")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text(f"source {repo}/.venv/bin/activate\n")
    out = dry_run(tmp_path, {"REPO_BRANCH": "dev"}).stdout
    assert f"+ git -C {repo} fetch --quiet origin dev" in out and "merge --ff-only" in out
    assert "git clone" not in out
    assert "exists, reused" in out and "already activates the venv" in out


def test_unknown_argument_is_rejected(tmp_path):
    result = dry_run(tmp_path, args=("--bogus",))
    assert result.returncode == 2 and "unknown argument" in result.stderr


def test_without_repo_url_or_origin_it_stops_with_a_clear_message(tmp_path):
    copy = tmp_path / "outside" / "container-onstart.sh"  # not inside a git checkout: no origin to fall back on
    copy.parent.mkdir()
    shutil.copy(SCRIPT, copy)
    env = {k: v for k, v in os.environ.items() if k != "REPO_URL"}
    result = subprocess.run(["bash", str(copy), "--dry-run"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "REPO_URL is not set" in result.stderr


URL_SECRET = "abc123secret"
URL_WITH_CREDENTIALS = f"https://someone:{URL_SECRET}@example.invalid/org/arc-reasoning.git"


def test_credentials_in_repo_url_are_masked_in_the_plan(tmp_path):
    result = dry_run(tmp_path, {"REPO_URL": URL_WITH_CREDENTIALS})
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert URL_SECRET not in out and "someone" not in out
    assert "== 2/7 repository https://***@example.invalid/org/arc-reasoning.git (main)" in out
    ws = tmp_path / "ws" / "arc-reasoning"
    assert f"+ git clone --quiet --branch main https://example.invalid/org/arc-reasoning.git {ws}" in out
    assert "credentials from REPO_URL via GIT_ASKPASS" in out


def git(*args, cwd=None):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_GLOBAL": os.devnull}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_real_run_clones_without_storing_credentials(tmp_path):
    """The whole script for real (not --dry-run), offline: git's url.<base>.insteadOf sends the https URL
    to a local bare repository; apt, pip and venv are stand-ins that only record their calls."""
    remote = tmp_path / "remote"
    bare = remote / "arc-reasoning.git"
    git("init", "--quiet", "--bare", "-b", "main", str(bare))
    src = tmp_path / "src"
    git("init", "--quiet", "-b", "main", str(src))
    (src / "README.md").write_text("hello\n")
    git("add", "README.md", cwd=src)
    git("commit", "--quiet", "-m", "first", cwd=src)
    git("push", "--quiet", str(bare), "main", cwd=src)

    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "dpkg").write_text("#!/bin/sh\nexit 0\n")  # every apt package "installed"
    (tools / "python3").write_text(
        "#!/bin/sh\n"
        'echo "$0 $* askpass=${GIT_ASKPASS_TOKEN:-}" >>"$CALLS"\n'
        'if [ "$1 $2" = "-m venv" ]; then mkdir -p "$4/bin" && cp "$0" "$4/bin/python"; exit 0; fi\n'
        'if [ "$1" = "-c" ]; then echo "2.8.0+cpu cuda None"; fi\n'
        "exit 0\n")
    # git as the script calls it: records what the askpass helper answers, then runs the real git.
    (tools / "git").write_text(
        "#!/bin/sh\n"
        'if [ -n "$GIT_ASKPASS" ]; then echo "$("$GIT_ASKPASS" "Username for x: ")|$("$GIT_ASKPASS" "Password for x: ")"'
        ' >>"$ASKED"; fi\n'
        f'exec {shutil.which("git")} "$@"\n')
    for tool in tools.iterdir():
        tool.chmod(0o755)
    no_gpu_nvidia_smi(tools)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "HF_TOKEN", "GITHUB_TOKEN", "GITHUB_PAT")}
    env.update(HOME=str(home), WORKSPACE=str(tmp_path / "ws"), PATH=os.pathsep.join([str(tools), "/usr/bin", "/bin"]),
               PYTHON=str(tools / "python3"), START_SCRIPT="", REPO_URL=URL_WITH_CREDENTIALS,
               CALLS=str(tmp_path / "calls.txt"), ASKED=str(tmp_path / "asked.txt"), GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_COUNT="1",
               GIT_CONFIG_KEY_0=f"url.file://{remote}/.insteadOf", GIT_CONFIG_VALUE_0="https://example.invalid/org/")

    def run_script():
        result = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert URL_SECRET not in result.stdout + result.stderr
        return result.stdout

    out = run_script()
    clone = tmp_path / "ws" / "arc-reasoning"
    assert (clone / "README.md").read_text() == "hello\n"
    assert URL_SECRET not in (clone / ".git" / "config").read_text()
    assert git("remote", "get-url", "origin", cwd=clone).strip() == "https://example.invalid/org/arc-reasoning.git"
    assert "no GPU found: skipped" in out and "keeping the installed torch" in out
    # git was handed the URL's credentials by the helper; pip and the rest never see them.
    assert set((tmp_path / "asked.txt").read_text().splitlines()) == {f"someone|{URL_SECRET}"}
    calls = (tmp_path / "calls.txt").read_text()
    assert "-m pip install" in calls and URL_SECRET not in calls

    # A checkout that already stores credentials (an older script, a manual clone) is cleaned up.
    git("remote", "set-url", "origin", URL_WITH_CREDENTIALS, cwd=clone)
    env["REPO_URL"] = "https://example.invalid/org/arc-reasoning.git"
    out = run_script()
    assert "origin URL holds credentials (https://***@example.invalid/org/arc-reasoning.git)" in out
    assert URL_SECRET not in (clone / ".git" / "config").read_text()
