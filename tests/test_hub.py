"""Hub push/resolve without a network: a fake HfApi records uploads, a hand-built cache serves downloads."""

import hashlib
import json
import logging
import socket
import threading
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

import training.hub as hub
from checkpoint_tools import push_to_hf
from training.model_card import build_model_card, count_parameters

TOKEN = "hf_SECRETtoken1234567890abcdef"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)


def make_checkpoint(folder: Path, step: int = 100, rows: int = 5) -> Path:
    folder.mkdir(parents=True)
    save_file({
        "model.inner.lm_head.weight": torch.ones(12, 8),  # 96
        "model.inner.q_head.weight": torch.zeros(2, 8),  # 16
        "model.inner.q_head.bias": torch.zeros(2),  # 2
        "model.inner.puzzle_emb.weights": torch.arange(rows * 8, dtype=torch.float32).reshape(rows, 8),
    }, str(folder / "model.safetensors"))
    config = {"arch": {"name": "trm", "H_cycles": 3, "L_cycles": 4, "hidden_size": 8, "puzzle_emb_ndim": 8},
              "data_paths": ["data/arc1concept-aug-1000"], "global_batch_size": 768, "epochs": 100000,
              "lr": 1e-4, "seed": 0}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "identifiers.json").write_text(json.dumps(["<blank>"] + [f"task{i}" for i in range(rows - 1)]))
    (folder / "metrics.json").write_text(json.dumps({"ARC/pass@2": 0.4375, "all/exact_accuracy": 0.5}))
    (folder / "train_state.json").write_text(json.dumps({"step": step}))
    return folder


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


class FakeHub:
    """Stands in for HfApi.create_repo / create_commit and keeps what was uploaded."""

    def __init__(self, fail_times: int = 0, error_text: str = "boom"):
        self.fail_times = fail_times
        self.error_text = error_text
        self.repos: dict[str, dict] = {}
        self.commits: list[dict] = []
        self.calls = 0

    def install(self, monkeypatch):
        fake = self

        def create_repo(self, repo_id, *, token=None, private=None, exist_ok=False, **kw):
            fake.repos.setdefault(repo_id, {"private": private, "token": token})
            return f"https://huggingface.co/{repo_id}"

        def create_commit(self, repo_id, operations, *, commit_message, token=None, **kw):
            fake.calls += 1
            if fake.calls <= fake.fail_times:
                raise ConnectionError(fake.error_text)
            files = {}
            for op in operations:
                src = op.path_or_fileobj
                files[op.path_in_repo] = src if isinstance(src, bytes) else Path(src).read_bytes()
            fake.commits.append({"repo": repo_id, "files": files, "message": commit_message, "token": token})

        from huggingface_hub import HfApi

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "create_commit", create_commit)
        return self


def test_push_uploads_every_file_plus_a_model_card(tmp_path, monkeypatch):
    ckpt = make_checkpoint(tmp_path / "run" / "step_00000100")
    fake = FakeHub().install(monkeypatch)
    before = digest(ckpt)
    url = hub.push_checkpoint(ckpt, "my-org/trm-test", token=TOKEN, retry_delay_s=0)

    assert url == "https://huggingface.co/my-org/trm-test"
    assert fake.repos["my-org/trm-test"]["private"] is True
    (commit,) = fake.commits
    assert sorted(commit["files"]) == ["README.md", "config.yaml", "identifiers.json", "metrics.json",
                                       "model.safetensors", "train_state.json"]
    assert commit["files"]["model.safetensors"] == (ckpt / "model.safetensors").read_bytes()
    assert commit["token"] == TOKEN
    card = commit["files"]["README.md"].decode()
    assert "TRM (Tiny Recursive Model)" in card and "| H_cycles | 3 |" in card
    assert "| ARC/pass@2 | 0.4375 |" in card
    assert 'data_paths="[data/arc1concept-aug-1000]"' in card and "pretrain.py" in card and "arch=trm" in card
    assert "global_batch_size=768" in card
    assert "dense parameters: 114" in card  # 96 + 16 + 2, the table counted separately
    assert digest(ckpt) == before  # the local folder is not modified


def test_exclude_patterns_and_public_flag(tmp_path, monkeypatch):
    ckpt = make_checkpoint(tmp_path / "step_00000100")
    fake = FakeHub().install(monkeypatch)
    hub.push_checkpoint(ckpt, "org/repo", token=TOKEN, private=False, exclude=("train_state.*",), retry_delay_s=0)
    assert not [f for f in fake.commits[0]["files"] if f.startswith("train_state")]
    assert "model.safetensors" in fake.commits[0]["files"]
    assert fake.repos["org/repo"]["private"] is False


def test_failed_push_is_retried_and_token_never_logged(tmp_path, monkeypatch, caplog, capsys):
    ckpt = make_checkpoint(tmp_path / "step_00000100")
    fake = FakeHub(fail_times=10, error_text=f"401 for token {TOKEN}").install(monkeypatch)
    before = digest(ckpt)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(RuntimeError) as err:
            hub.push_checkpoint(ckpt, "org/repo", token=TOKEN, retries=3, retry_delay_s=0)
    assert fake.calls == 3
    out = capsys.readouterr()
    assert TOKEN not in str(err.value) and TOKEN not in caplog.text and TOKEN not in out.out + out.err
    assert "***" in str(err.value)
    assert digest(ckpt) == before


def test_retry_succeeds_after_transient_failure(tmp_path, monkeypatch):
    ckpt = make_checkpoint(tmp_path / "step_00000100")
    fake = FakeHub(fail_times=2).install(monkeypatch)
    hub.push_checkpoint(ckpt, "org/repo", token=TOKEN, retries=3, retry_delay_s=0)
    assert fake.calls == 3 and len(fake.commits) == 1


def test_token_precedence(monkeypatch):
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", "from_legacy_var")
    assert hub.resolve_token() == "from_legacy_var"
    monkeypatch.setenv("HF_TOKEN", "from_hf_token")
    assert hub.resolve_token() == "from_hf_token"
    assert hub.resolve_token("explicit") == "explicit"


def test_background_pusher_survives_deleted_folder_and_failures(tmp_path, monkeypatch, caplog):
    ckpt = make_checkpoint(tmp_path / "run" / "step_00000100")
    fake = FakeHub().install(monkeypatch)
    release = threading.Event()

    from huggingface_hub import HfApi

    real_commit = HfApi.create_commit

    def slow_commit(self, *args, **kwargs):
        release.wait(5)
        return real_commit(self, *args, **kwargs)

    monkeypatch.setattr(HfApi, "create_commit", slow_commit)  # waits until the folder is deleted
    pusher = hub.HubPusher("org/repo", token=TOKEN, retry_delay_s=0)
    future = pusher.submit(ckpt)
    expected = (ckpt / "model.safetensors").read_bytes()
    import shutil

    shutil.rmtree(ckpt)  # checkpoint rotation deletes it while the upload is pending
    release.set()
    assert future.result(timeout=10) == "https://huggingface.co/org/repo"
    assert fake.commits[0]["files"]["model.safetensors"] == expected
    assert "step_00000100" in fake.commits[0]["message"]
    assert not list((tmp_path / "run").glob(".push_*"))  # staging cleaned up

    failing = FakeHub(fail_times=99, error_text=f"bad {TOKEN}").install(monkeypatch)
    ckpt2 = make_checkpoint(tmp_path / "run" / "step_00000200")
    pusher2 = hub.HubPusher("org/repo", token=TOKEN, retries=2, retry_delay_s=0)
    with caplog.at_level(logging.WARNING):
        assert pusher2.submit(ckpt2).result(timeout=10) is None
    pusher2.close()
    pusher.close()
    assert failing.calls == 2 and len(pusher2.failures) == 1
    assert TOKEN not in caplog.text and TOKEN not in pusher2.failures[0]
    assert (ckpt2 / "model.safetensors").is_file()


def test_cli_pushes_newest_step_and_hides_token(tmp_path, monkeypatch, capsys):
    make_checkpoint(tmp_path / "run" / "step_00000100")
    make_checkpoint(tmp_path / "run" / "step_00000200", step=200)
    fake = FakeHub().install(monkeypatch)
    assert push_to_hf.main([str(tmp_path / "run"), "org/repo", "--token", TOKEN, "--public"]) == 0
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err and "step_00000200" in out.out
    assert fake.repos["org/repo"]["private"] is False
    assert push_to_hf.main([str(tmp_path / "missing"), "org/repo", "--token", TOKEN]) == 2


def test_cli_without_token_fails_cleanly(tmp_path, monkeypatch, capsys):
    make_checkpoint(tmp_path / "step_00000100")
    monkeypatch.setattr(hub, "resolve_token", lambda token=None: token)
    FakeHub().install(monkeypatch)
    assert push_to_hf.main([str(tmp_path / "step_00000100"), "org/repo"]) == 1
    assert "no Hugging Face token" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ resolve
def build_cache(cache: Path, repo_id: str, commit: str, files: dict[str, bytes], branch: str = "main") -> Path:
    """The huggingface_hub cache layout: blobs, snapshots/<commit>/<file> links, refs/<branch>."""
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    (repo_dir / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(Path("../../blobs") / blob.name)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / branch).write_text(commit)
    return snapshot


def test_resolve_from_offline_cache(tmp_path, monkeypatch):
    ckpt = make_checkpoint(tmp_path / "src")
    files = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    cache = tmp_path / "hf_cache"
    main_rev, old_rev = "a" * 40, "b" * 40
    snapshot = build_cache(cache, "org/trm", main_rev, files)
    old_snapshot = build_cache(tmp_path / "other", "org/trm", old_rev, files)  # a second revision
    (cache / "models--org--trm" / "snapshots" / old_rev).symlink_to(old_snapshot)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    folder = hub.resolve_checkpoint("org/trm")
    assert folder == snapshot
    assert (folder / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert hub.resolve_checkpoint(f"org/trm@{old_rev}").resolve() == old_snapshot.resolve()
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        hub.resolve_checkpoint("org/not-cached")


def test_resolve_local_paths(tmp_path):
    run = tmp_path / "run"
    make_checkpoint(run / "step_00000100")
    make_checkpoint(run / "step_00000200")
    assert hub.resolve_checkpoint(run / "step_00000100") == run / "step_00000100"
    assert hub.resolve_checkpoint(run) == run / "step_00000200"
    with pytest.raises(hub.CheckpointNotFoundError, match="no such folder"):
        hub.resolve_checkpoint(str(tmp_path / "no" / "such" / "folder"))


def test_model_card_counts_parameters_from_header(tmp_path):
    ckpt = make_checkpoint(tmp_path / "step_1", rows=7)
    assert count_parameters(ckpt) == (114, 56)
    card = build_model_card(ckpt, "org/repo")
    assert card.startswith("---\n") and "7 identifiers x 8" in card
