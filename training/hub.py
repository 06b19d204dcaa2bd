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
  then the cached ``hf auth login``. It is never printed: every message passes through ``redact``,
  which hides each of those tokens whatever its prefix.
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

from utils.errors import UserError

log = logging.getLogger(__name__)

CHECKPOINT_WEIGHTS = "model.safetensors"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_TRUE = {"1", "true", "yes", "on"}
LOGIN_HINT = "set HF_TOKEN or run `hf auth login`"
# Suffixes of files, not Hub repos: a value ending in one is a path the user meant.
_FILE_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".yaml", ".yml", ".json"}
# Folders this project writes into: `checkpoints/run` is a run folder, never an org on the Hub.
_LOCAL_ROOTS = {"checkpoints", "outputs", "data", "runs"}


class CheckpointNotFoundError(UserError, FileNotFoundError):
    """A checkpoint path or Hub id that does not resolve (one-line message, exit status 2)."""


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


def _known_tokens(token: str | None) -> list[str]:
    """Every token this process could be using: explicit, both variables and the cached login."""
    found = [token, os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN")]
    try:
        from huggingface_hub import get_token

        found.append(get_token())
    except Exception:  # noqa: BLE001 - no cached login, nothing to hide
        pass
    # Longest first, so a token containing another is hidden whole. Very short values are skipped:
    # replacing them everywhere would garble the message without hiding a real secret.
    return sorted({t.strip() for t in found if t and len(t.strip()) >= 4}, key=len, reverse=True)


def redact(text: object, token: str | None = None) -> str:
    """``text`` with the token in use (any prefix, any source) and anything shaped like a Hub token hidden."""
    text = str(text)
    for secret in _known_tokens(token):
        text = text.replace(secret, "***")
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


def looks_like_path(spec: str) -> bool:
    """True when ``spec`` can only be meant as a local path, not an ``org/name[@revision]`` Hub id."""
    spec = str(spec)
    if spec.startswith(("/", "./", "../", "~", ".\\")) or spec in (".", "..") or "\\" in spec:
        return True
    repo_id = spec.partition("@")[0]
    if not _REPO_ID.match(repo_id):  # no slash, more than one slash, characters a repo id cannot hold
        return True
    first = repo_id.split("/")[0]
    return first in _LOCAL_ROOTS or Path(first).exists() or Path(repo_id).suffix.lower() in _FILE_SUFFIXES


def _no_such_folder(spec: str) -> CheckpointNotFoundError:
    path = Path(spec).expanduser()
    parent = next((p for p in path.parents if p.is_dir()), None)
    message = f"no such folder: {spec}"
    if parent is not None and parent not in (Path("."), Path(path.anchor)):
        inside = sorted(p.name for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))
        listed = ", ".join(inside[:8]) + (", ..." if len(inside) > 8 else "")
        message += f" ({parent} holds: {listed or 'no folders'})"
    return CheckpointNotFoundError(message)


def _hub_failure(spec: str, exc: Exception, token: str | None, offline: bool) -> CheckpointNotFoundError:
    """One line saying why the Hub id did not resolve and what to do; the token never appears."""
    from huggingface_hub import errors as hf_errors

    if offline:
        hint = "HF_HUB_OFFLINE=1 and it is not in the cache; download it once online or attach the cache"
    elif isinstance(exc, (hf_errors.GatedRepoError,)):
        hint = f"the repo is gated: accept its terms on the Hub, then {LOGIN_HINT}"
    elif isinstance(exc, hf_errors.RevisionNotFoundError):
        hint = "no such revision in that repo"
    elif isinstance(exc, hf_errors.RepositoryNotFoundError):
        hint = f"no such repo, or it is private and needs a token ({LOGIN_HINT})"
    elif isinstance(exc, hf_errors.HfHubHTTPError):
        hint = f"the Hub refused the request; check the repo id and your token ({LOGIN_HINT})"
    else:
        hint = "could not reach the Hub: check your internet connection, or set HF_HUB_OFFLINE=1 to use the cache"
    detail = " ".join(redact(f"{type(exc).__name__}: {exc}", token).split())  # the Hub's text spans lines
    detail = detail if len(detail) <= 300 else detail[:297] + "..."
    return CheckpointNotFoundError(
        f"could not resolve Hub checkpoint {spec!r} (no local folder of that name either): {hint} ({detail})")


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

    A local path wins over a Hub id of the same spelling; a value that can only be a path (see
    ``looks_like_path``) and does not exist raises "no such folder". ``allow_patterns`` limits what is
    downloaded (for example skip ``train_state.*`` for inference). Failures raise
    CheckpointNotFoundError with a one-line message.
    """
    spec = str(path_or_repo_id)
    local = Path(spec).expanduser()
    if local.is_file():
        return local
    if local.exists():
        found = _find_weights(local)
        if found is None:
            raise CheckpointNotFoundError(
                f"{local}: no {CHECKPOINT_WEIGHTS}, no step_* checkpoint and no reference weights inside")
        return found
    if looks_like_path(spec):
        raise _no_such_folder(spec)

    repo_id, revision = parse_repo_spec(spec)
    from huggingface_hub import snapshot_download

    cache_dir = cache_dir or os.environ.get("HF_HUB_CACHE") or None
    offline = hub_offline()
    in_use = None if offline else resolve_token(token)
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=offline,
            token=in_use,
            allow_patterns=allow_patterns,
        )
    except Exception as exc:  # noqa: BLE001 - re-raise with a message that says what to do
        raise _hub_failure(spec, exc, in_use or token, offline) from None
    found = _find_weights(Path(folder))
    if found is None:
        raise CheckpointNotFoundError(
            f"Hub repo {repo_id} has no {CHECKPOINT_WEIGHTS}, step_* checkpoint or reference weights")
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
        raise RuntimeError("no Hugging Face token: pass --token, set HF_TOKEN, or run `hf auth login`")

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
            last_error = redact(f"{type(exc).__name__}: {exc}", token)
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
            log.warning("no Hugging Face token (HF_TOKEN or `hf auth login`): checkpoints to %s "
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
            message = redact(exc, self._token)
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
