"""Reading and writing tensor files without running code, every failure naming its file.

Only two formats are read: safetensors (a JSON header and raw bytes: nothing to execute) and PyTorch
``.pt`` files through ``torch.load(weights_only=True)``, which builds tensors and plain containers
only and refuses anything else. A refused, truncated or foreign file is a ``TensorFileError`` whose
message names the file and says why in one line (never PyTorch's advice to unpickle it fully).
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes

from utils.errors import UserError


class TensorFileError(UserError):
    """A tensor file that cannot be read (refused, damaged or of another format)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def read_safetensors(path: str | os.PathLike, device: str = "cpu") -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise TensorFileError(f"{path}: file not found")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, ValueError, OSError) as exc:
        raise TensorFileError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None
    # Copied out of the memory map: a file truncated or rewritten in place later (a sync tool, a user)
    # would otherwise turn any access to these tensors into a crash (SIGBUS) far from here.
    return {k: v.to(device) if device != "cpu" else v.clone() for k, v in tensors.items()}


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise TensorFileError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None


def read_torch_file(path: str | os.PathLike) -> Any:
    """``torch.load(weights_only=True)`` on the CPU: tensors, numbers, strings and containers only."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TensorFileError(f"{path}: file not found") from None
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise TensorFileError(f"{path}: refused: it holds a Python object{what} beyond tensors and plain "
                              "containers, and reading it could run code") from None
    except Exception as exc:  # noqa: BLE001 - torch.load reports damage as RuntimeError, KeyError, EOFError...
        raise TensorFileError(f"{path}: not a readable PyTorch file ({_first_line(exc)})") from None


def write_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                      metadata: dict[str, str] | None = None) -> None:
    """Serialise in memory, then write with a plain open(): the file gets the usual mode (0644 under
    umask 022; safetensors' own writer makes it 0600) and a full disk raises OSError(ENOSPC)."""
    data = save_bytes({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, metadata=metadata)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def non_finite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or inf."""
    return [k for k, v in tensors.items() if torch.is_floating_point(v) and not bool(torch.isfinite(v).all())]
