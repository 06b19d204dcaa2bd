"""``.npy`` files written in place by several processes, so no process holds a whole split.

The builder knows every array's final shape after choosing the augmented copies, so it writes
the ``.npy`` header first and sizes the file; workers then ``pwrite`` their rows at known
offsets. The result is an ordinary ``.npy`` file (``np.load(..., mmap_mode="r")`` works).
"""

from __future__ import annotations

import os

import numpy as np


def create_npy(path: str | os.PathLike, shape: tuple[int, ...], dtype: np.dtype | type) -> int:
    """Write the header of a C-order array and size the file; returns the data offset in bytes."""
    dtype = np.dtype(dtype)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_2_0(f, header) if _needs_v2(header) else \
            np.lib.format.write_array_header_1_0(f, header)
        data_offset = f.tell()
        f.truncate(data_offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
    return data_offset


def _needs_v2(header: dict) -> bool:
    return len(repr(header)) > 65000  # version 1.0 headers hold at most 65535 bytes


def pwrite_all(fd: int, data: np.ndarray, offset: int) -> int:
    """Write a C-contiguous array at ``offset`` (looping over short writes); returns bytes written."""
    view = memoryview(np.ascontiguousarray(data)).cast("B")
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)
    return done


class FileHandles:
    """Per-process cache of write handles, opened on first use."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}

    def get(self, path: str) -> int:
        if path not in self._fds:
            self._fds[path] = os.open(path, os.O_WRONLY)
        return self._fds[path]

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
