"""Rank-aware helpers: the one place that knows about torch.distributed process groups.

Code elsewhere asks ``is_main()`` or calls ``print0`` instead of testing ranks itself, and makes
decisions that must agree across ranks (run names, folders) once through ``broadcast_object``.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

import torch
import torch.distributed as dist

from utils.errors import UserError


class CollectiveTimeoutError(UserError):
    every_rank_sees_it = False  # raised on the ranks still answering, rank 0 may be the hung one
    exit_code = 1


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


def is_main() -> bool:
    return dist_info().is_main


def print0(*args: Any, **kwargs: Any) -> None:
    if is_main():
        print(*args, **kwargs, flush=True)


def select_device(preferred: str = "auto") -> torch.device:
    """cuda:<local rank> when CUDA is there, else Apple MPS, else CPU (unless ``preferred`` says)."""
    if preferred == "cuda":  # torchrun: each rank its own GPU (NCCL and DDP need the index)
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if preferred != "auto":
        return torch.device(preferred)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def init_distributed(device: torch.device, timeout_minutes: float | None = None) -> DistInfo:
    """Join the torchrun process group when launched by torchrun (NCCL on CUDA, gloo otherwise).

    ``timeout_minutes``: how long a collective waits for the other ranks before it fails (None =
    PyTorch's default); a rank that hangs then ends the job instead of blocking it for ever.
    """
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        timeout = timedelta(minutes=timeout_minutes) if timeout_minutes is not None else None
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None,
                                timeout=timeout)
    return dist_info()


@contextmanager
def collective_timeouts_explained(timeout_minutes: float | None) -> Iterator[None]:
    """A collective that timed out becomes one line: which rank waited, how long, and what it means.

    Only under torchrun (the group may already be torn down when the error arrives here)."""
    try:
        yield
    except (dist.DistError, RuntimeError) as exc:
        if int(os.environ.get("WORLD_SIZE", 1)) < 2 or not _is_timeout(exc):
            raise
        raise CollectiveTimeoutError(
            f"rank {os.environ.get('RANK', '?')}: the other ranks did not answer within dist_timeout_minutes="
            f"{timeout_minutes} (a rank hung or died); stopping the job") from None


def _is_timeout(exc: BaseException) -> bool:
    # gloo reports "Timed out waiting Nms for send operation", NCCL a watchdog "timeout"; both as
    # RuntimeError / DistBackendError, so the words are all there is to go on.
    text = str(exc).lower()
    return "timed out" in text or "timeout" in text


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Return rank ``src``'s ``obj`` on every rank (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def destroy_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
