"""Hugging Face Hub: push a checkpoint folder to a model repo, and resolve ``org/repo[@revision]`` back
to a local checkpoint folder.

- ``resolve_checkpoint`` accepts a local folder (a ``step_*`` checkpoint, or a run folder whose newest
  ``step_*`` is taken) or a Hub id. Hub ids go through ``snapshot_download``, which keeps the
  standard cache (``HF_HUB_CACHE`` / ``HF_HOME``) and, with ``HF_HUB_OFFLINE=1``, only reads it.
- ``push_checkpoint`` uploads the folder's files plus a generated model card (README.md) in one
  commit, retrying with back-off. The local folder is never modified. ``HubPusher`` does the same
  on a background thread for the trainer: files are hard-linked into a staging folder first so the
  trainer may delete old checkpoints meanwhile, and a failed upload only logs a warning.
- The token comes from the ``token`` argument, then ``HF_TOKEN``, then ``HUGGING_FACE_HUB_TOKEN``,
  then the cached ``huggingface-cli login``. It is never printed: messages pass through ``_redact``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)

CHECKPOINT_WEIGHTS = "model.safetensors"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_TRUE = {"1", "true", "yes", "on"}


# ----------------------------------------------------------------------------------------- tokens
def resolve_token(token: str | None = None) -> str | None:
    """Explicit token, else HF_TOKEN, else HUGGING_FACE_HUB_TOKEN, else the cached login (or None)."""
    for candidate in (token, os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN")):
        if candidate:
            return candidate
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # noqa: BLE001 - no cached login is not an error here
        return None


def _redact(text: str, token: str | None) -> str:
    text = str(text)
    if token:
        text = text.replace(token, "***")
    return re.sub(r"hf_[A-Za-z0-9]{8,}", "hf_***", text)


# ---------------------------------------------------------------------------------------- resolve
def hub_offline() -> bool:
    # Read at call time: huggingface_hub reads the variable once at import.
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def parse_repo_spec(spec: str) -> tuple[str, str | None]:
    """``org/repo@revision`` -> (``org/repo``, ``revision``); raises ValueError when not a repo id."""
    repo_id, _, revision = spec.partition("@")
    if not _REPO_ID.match(repo_id):
        raise ValueError(f"{spec!r} is neither an existing local folder nor a Hub id 'org/repo[@revision]'")
    return repo_id, revision or None


def _step_number(path: Path) -> int:
    digits = path.stem.rsplit("_", 1)[-1]
    return int(digits) if digits.isdigit() else -1


def _find_weights(folder: Path) -> Path | None:
    """Where the weights of a checkpoint folder are: the folder itself (ours), its newest step_*
    sub-folder (a run folder), or the newest reference-format state-dict file below it (the TRM/HRM
    code saves bare ``step_<N>`` files next to ``all_config.yaml``; published repos keep that layout)."""
    if (folder / CHECKPOINT_WEIGHTS).is_file():
        return folder
    ours = [p for p in folder.glob("step_*") if (p / CHECKPOINT_WEIGHTS).is_file()]
    if ours:
        return max(ours, key=_step_number)
    reference = [p for p in folder.rglob("*") if p.is_file() and not any(x.startswith(".") for x in p.parts)
                 and ((p.name.startswith("step_") and p.suffix == "") or p.suffix in (".pt", ".pth"))]
    return max(reference, key=lambda p: (_step_number(p), str(p))) if reference else None


def resolve_checkpoint(
    path_or_repo_id: str | os.PathLike,
    token: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    allow_patterns: list[str] | None = None,
) -> Path:
    """Return a local checkpoint folder (one holding model.safetensors), or a reference-format weights
    file (with all_config.yaml beside it), for a path or Hub id.

    A local path wins over a Hub id of the same spelling. ``allow_patterns`` limits what is
    downloaded (for example skip ``train_state.*`` for inference).
    """
    local = Path(path_or_repo_id).expanduser()
    if local.is_file():
        return local
    if local.exists():
        found = _find_weights(local)
        if found is None:
            raise FileNotFoundError(f"{local}: no {CHECKPOINT_WEIGHTS}, no step_* checkpoint and no reference weights inside")
        return found

    repo_id, revision = parse_repo_spec(str(path_or_repo_id))
    from huggingface_hub import snapshot_download

    cache_dir = cache_dir or os.environ.get("HF_HUB_CACHE") or None
    offline = hub_offline()
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=offline,
            token=None if offline else resolve_token(token),
            allow_patterns=allow_patterns,
        )
    except Exception as exc:  # noqa: BLE001 - re-raise with a message that says what to do
        hint = (
            "HF_HUB_OFFLINE=1 and it is not in the cache; download it once online or attach the cache"
            if offline
            else "check the repo id, the revision and your token (HF_TOKEN) for private repos"
        )
        raise FileNotFoundError(
            f"could not resolve Hub checkpoint {path_or_repo_id!r}: {hint} ({_redact(exc, token)})"
        ) from None
    found = _find_weights(Path(folder))
    if found is None:
        raise FileNotFoundError(f"Hub repo {repo_id} has no {CHECKPOINT_WEIGHTS}, step_* checkpoint or reference weights")
    return found


# ------------------------------------------------------------------------------------------- push
def checkpoint_files(folder: Path, exclude: tuple[str, ...] = ()) -> list[str]:
    """Relative paths of the files to upload (hidden and temporary files skipped), sorted."""
    import fnmatch

    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if not path.is_file() or any(part.startswith(".") for part in rel.split("/")):
            continue
        if rel.endswith(".tmp") or any(fnmatch.fnmatchcase(rel, p) for p in exclude):
            continue
        files.append(rel)
    return files


def push_checkpoint(
    folder: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    private: bool = True,
    retries: int = 3,
    retry_delay_s: float = 5.0,
    exclude: tuple[str, ...] = (),
    commit_message: str | None = None,
    model_card: bool = True,
) -> str:
    """Create the repo if needed and upload the checkpoint folder in one commit. Returns the repo URL.

    Raises RuntimeError (token redacted) once all ``retries`` attempts have failed.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    folder = Path(folder)
    if not (folder / CHECKPOINT_WEIGHTS).is_file():
        raise FileNotFoundError(f"{folder} is not a checkpoint folder (no {CHECKPOINT_WEIGHTS})")
    parse_repo_spec(repo_id)
    token = resolve_token(token)
    if token is None:
        raise RuntimeError("no Hugging Face token: pass --token, set HF_TOKEN, or run `huggingface-cli login`")

    files = checkpoint_files(folder, exclude)
    operations = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(folder / rel)) for rel in files]
    if model_card and "README.md" not in files:
        from training.model_card import build_model_card

        card = build_model_card(folder, repo_id).encode()
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card))
    message = commit_message or f"Upload checkpoint {folder.name}"

    api = HfApi()
    last_error = None
    for attempt in range(1, max(1, retries) + 1):
        try:
            url = api.create_repo(repo_id, token=token, private=private, exist_ok=True)
            api.create_commit(repo_id, operations, commit_message=message, token=token)
            log.info("pushed %s to %s (%d files)", folder, repo_id, len(operations))
            return str(url)
        except Exception as exc:  # noqa: BLE001 - network errors come in many types
            last_error = _redact(f"{type(exc).__name__}: {exc}", token)
            log.warning("push of %s to %s failed (attempt %d/%d): %s", folder, repo_id, attempt, retries, last_error)
            if attempt < retries:
                time.sleep(retry_delay_s * 2 ** (attempt - 1))
    raise RuntimeError(f"could not push {folder} to {repo_id} after {retries} attempts: {last_error}")


def _stage_copy(folder: Path, exclude: tuple[str, ...]) -> Path:
    """Hard-link (or copy) the checkpoint's files into a private temporary folder."""
    stage = Path(tempfile.mkdtemp(prefix=f".push_{folder.name}_", dir=folder.parent))
    for rel in checkpoint_files(folder, exclude):
        target = stage / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(folder / rel, target)
        except OSError:
            shutil.copy2(folder / rel, target)
    return stage


class HubPusher:
    """Push checkpoints in the background, one at a time, without ever stopping training.

    ``submit(folder)`` returns a Future resolving to the repo URL, or to None when the push failed
    (the failure is logged, the local checkpoint is untouched). ``close()`` waits for pending pushes.
    """

    def __init__(self, repo_id: str, token: str | None = None, private: bool = True, retries: int = 3,
                 retry_delay_s: float = 30.0, exclude: tuple[str, ...] = ()):
        parse_repo_spec(repo_id)
        self.repo_id = repo_id
        self._token = resolve_token(token)
        if self._token is None:
            log.warning("no Hugging Face token (HF_TOKEN or huggingface-cli login): checkpoints to %s "
                        "will stay local only", repo_id)
        self.private = private
        self.retries = retries
        self.retry_delay_s = retry_delay_s
        self.exclude = exclude
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-push")
        self._lock = threading.Lock()
        self.failures: list[str] = []

    def submit(self, folder: str | os.PathLike) -> Future:
        folder = Path(folder)
        stage = _stage_copy(folder, self.exclude)
        return self._executor.submit(self._push_staged, folder.name, stage)

    def _push_staged(self, name: str, stage: Path) -> str | None:
        # The staged copy carries the original step name so the commit message says which step.
        named = stage / name
        try:
            named.mkdir()
            for child in list(stage.iterdir()):
                if child != named:
                    os.replace(child, named / child.name)
            return push_checkpoint(named, self.repo_id, token=self._token, private=self.private,
                                   retries=self.retries, retry_delay_s=self.retry_delay_s, exclude=self.exclude)
        except Exception as exc:  # noqa: BLE001 - a failed upload must never stop training
            message = _redact(exc, self._token)
            with self._lock:
                self.failures.append(message)
            log.warning("background push of %s failed; the local checkpoint is kept: %s", name, message)
            return None
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    def close(self, wait: bool = True) -> None:
        self._executor.shutdown(wait=wait)


def push_checkpoint_async(folder: str | os.PathLike, repo_id: str, **kwargs) -> Future:
    """One-off background push (a HubPusher that closes after this upload)."""
    pusher = HubPusher(repo_id, **kwargs)
    future = pusher.submit(folder)
    future.add_done_callback(lambda _: pusher.close(wait=False))
    return future
