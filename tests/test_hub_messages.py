"""What a user reads when a checkpoint does not resolve, and that no token ever appears in it.

A value that can only be a path gets "no such folder" and never reaches the Hub; a Hub id that fails
gets advice about the Hub. The token in use is hidden whatever its prefix and wherever it came from.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import training.hub as hub
from checkpoint_tools import push_to_hf
from tests.test_hub import FakeHub, make_checkpoint

REPO = Path(__file__).resolve().parents[1]
SECRET = "abc123secret"  # no hf_ prefix: only knowing the token in use can hide it


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no cached login from this machine
    monkeypatch.chdir(tmp_path)


def forbid_download(monkeypatch):
    import huggingface_hub

    def called(*args, **kwargs):
        raise AssertionError("a path must not be looked up on the Hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", called)


@pytest.mark.parametrize("value,is_path", [
    ("org/name", False), ("org/name@v1", False), ("my-org/trm.arc-1", False),
    ("checkpoints/nope", True),  # the project's own output folder
    ("./nope", True), ("../x/y", True), ("/abs/run", True), ("~/run", True),
    ("a/b/c", True),  # more than one slash
    ("nope", True),  # no org
    ("org/model.safetensors", True), ("org/step.pt", True),  # a file
    ("existing/nope", True),  # its first part exists here
])
def test_path_or_hub_id(tmp_path, value, is_path):
    (tmp_path / "existing").mkdir()
    assert hub.looks_like_path(value) is is_path


@pytest.mark.parametrize("value", ["checkpoints/nope", "./nope", "a/b/c", "nope", "run/step.pt"])
def test_missing_path_says_no_such_folder_without_the_hub(tmp_path, monkeypatch, value):
    forbid_download(monkeypatch)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "step_00000100").mkdir()
    with pytest.raises(hub.CheckpointNotFoundError) as err:
        hub.resolve_checkpoint(value)
    message = str(err.value)
    assert message.startswith(f"no such folder: {value}") and "\n" not in message
    assert "internet" not in message and "Hub" not in message
    if value.startswith("run/"):
        assert "run holds: step_00000100" in message  # what is there instead


def fail_download(monkeypatch, exc):
    import huggingface_hub

    seen = {}

    def download(repo_id, **kwargs):
        seen.update(kwargs, repo_id=repo_id)
        raise exc

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    return seen


@pytest.mark.parametrize("source", ["argument", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "cached login"])
def test_hub_failure_advises_about_the_hub_and_hides_the_token(monkeypatch, source):
    import huggingface_hub

    if source in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.setenv(source, SECRET)
    if source == "cached login":
        monkeypatch.setattr(huggingface_hub, "get_token", lambda: SECRET)
    seen = fail_download(monkeypatch, ConnectionError(f"401 Client Error\nAuthorization: Bearer {SECRET}"))
    with pytest.raises(hub.CheckpointNotFoundError) as err:
        hub.resolve_checkpoint("org/trm", token=SECRET if source == "argument" else None)
    message = str(err.value)
    assert seen["token"] == SECRET and seen["repo_id"] == "org/trm"  # the token was really in use
    assert SECRET not in message and "Bearer ***" in message and "\n" not in message
    assert "org/trm" in message and "internet connection" in message


def test_hub_messages_name_the_cause(monkeypatch):
    import httpx
    from huggingface_hub.errors import RepositoryNotFoundError

    monkeypatch.setenv("HF_TOKEN", SECRET)
    response = httpx.Response(404, request=httpx.Request("GET", "https://huggingface.co/api/models/org/private"))
    fail_download(monkeypatch, RepositoryNotFoundError(f"404 for org/private (token {SECRET})", response=response))
    with pytest.raises(hub.CheckpointNotFoundError, match=r"no such repo, or it is private .*hf auth login") as err:
        hub.resolve_checkpoint("org/private")
    assert SECRET not in str(err.value)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hub.CheckpointNotFoundError, match="HF_HUB_OFFLINE=1 and it is not in the cache"):
        hub.resolve_checkpoint("org/private")


def test_upload_errors_hide_a_token_from_the_environment(tmp_path, monkeypatch, capsys):
    ckpt = make_checkpoint(tmp_path / "step_00000100")
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", SECRET)
    monkeypatch.setattr(hub.time, "sleep", lambda seconds: None)  # the CLI has no retry-delay flag
    fake = FakeHub(fail_times=99, error_text=f"403 Forbidden: token {SECRET} cannot write").install(monkeypatch)
    assert push_to_hf.main([str(ckpt), "org/repo", "--retries", "2"]) == 1
    out = capsys.readouterr()
    assert fake.calls == 2 and fake.repos["org/repo"]["token"] == SECRET
    assert SECRET not in out.out + out.err and "token *** cannot write" in out.err


def test_push_hint_names_the_current_login_command(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "resolve_token", lambda token=None: None)
    with pytest.raises(RuntimeError, match=r"`hf auth login`"):
        hub.push_checkpoint(make_checkpoint(tmp_path / "step_1"), "org/repo")


def run_entry(args, cwd, **env):
    full = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **env}
    full.pop("HF_TOKEN", None)
    return subprocess.run([sys.executable, *args, "hydra.run.dir=hydra_out"], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=120)


def test_evaluate_entry_point_one_line_exit_2(tmp_path):
    result = run_entry([str(REPO / "evaluate.py"), "checkpoint=checkpoints/nope"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == "error: no such folder: checkpoints/nope"

    result = run_entry([str(REPO / "evaluate.py"), "checkpoint=org/not-cached"], tmp_path, HF_HUB_OFFLINE="1",
                       HF_HOME=str(tmp_path / "hf"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "could not resolve Hub checkpoint 'org/not-cached'" in result.stderr and "HF_HUB_OFFLINE" in result.stderr


def test_pretrain_load_checkpoint_missing_folder_one_line_exit_2(tmp_path):
    from tests.dataset_fixtures import write_tiny_dataset

    data = tmp_path / "data" / "tiny"
    write_tiny_dataset(data, num_tasks=3, augs_per_task=1, examples_per_puzzle=2)
    result = run_entry([str(REPO / "pretrain.py"), "--config-name", "cfg_tiny_cpu", f"data_paths=[{data}]",
                        f"checkpoint_path={tmp_path / 'run'}", "wandb_mode=disabled", "evaluators=[]", "device=cpu",
                        "load_checkpoint=checkpoints/nope"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: no such folder: checkpoints/nope"
    assert "Traceback" not in result.stderr and "internet" not in result.stderr
