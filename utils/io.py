"""Atomic file writes: a reader sees the old file or the whole new one, never half of either."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask



@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        # mkstemp makes the file private; give it the mode a plain open() would have.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, obj: Any, **kwargs: Any) -> None:
    atomic_write_text(path, json.dumps(obj, **kwargs))


@contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Build a directory under a temporary name, then move it into place in one rename.

    On an exception the temporary directory is removed and an existing ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; match a plain mkdir
    try:
        yield tmp
        if path.exists():
            if not overwrite:
                raise FileExistsError(f"{path} already exists")
            # Swap: move the old one aside first so there is never a moment with neither.
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            old.rmdir()
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def clean_interrupted(parent: str | os.PathLike, prefix: str = "") -> list[str]:
    """Tidy what a process killed inside ``atomic_directory`` left in ``parent``; returns notes.

    ``.<name>.*.tmp``: a half-built directory, removed. ``.<name>.*.old``: the previous version moved
    aside during an overwrite; removed when ``<name>`` is in place, renamed back when the kill came
    between the two renames (so the previous version is not lost). Only names starting with ``prefix``.
    """
    parent = Path(parent)
    notes = []
    if not parent.is_dir():
        return notes
    for leftover in sorted(parent.glob(f".{prefix}*.tmp")) + sorted(parent.glob(f".{prefix}*.old")):
        if not leftover.is_dir():
            continue
        name = leftover.name[1:].rsplit(".", 2)[0]  # .<name>.<random>.<suffix>
        target = parent / name
        if leftover.suffix == ".old" and not target.exists():
            os.replace(leftover, target)
            notes.append(f"restored {target} from an interrupted overwrite")
        else:
            shutil.rmtree(leftover, ignore_errors=True)
    return notes
