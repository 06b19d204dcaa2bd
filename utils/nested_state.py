"""Nested training state (dicts, lists, tuples, dataclasses of tensors, arrays, numbers, strings, None)
stored as two files that hold no code: ``<name>.safetensors`` (the tensors and arrays) and
``<name>.json`` (everything else, with each tensor replaced by a reference to its safetensors key).

Reading builds only dicts, lists, tuples, numbers, strings, None, tensors and numpy arrays; a dataclass
comes back as ``{"__dataclass__": <class name>, "fields": {...}}`` and ``restore_dataclasses`` pours
it into an instance the caller built (the caller decides which classes exist, never the file).
Floats round-trip exactly (JSON keeps the shortest repr that reads back to the same double).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.tensor_files import TensorFileError, read_safetensors, write_safetensors

_MARKERS = ("__tensor__", "__ndarray__", "__tuple__", "__items__", "__dataclass__")


def flatten(obj: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """(tensors by key, JSON-able skeleton). Raises TypeError naming the path of an unsupported value."""
    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()

    def own(tensor: torch.Tensor) -> torch.Tensor:
        # safetensors refuses tensors that share memory; copy only views and repeats, not every tensor.
        tensor = tensor.detach().to("cpu")
        storage = tensor.untyped_storage()
        whole = tensor.is_contiguous() and storage.nbytes() == tensor.numel() * tensor.element_size()
        if not whole or storage.data_ptr() in storages:
            tensor = tensor.contiguous().clone()
        storages.add(tensor.untyped_storage().data_ptr())
        return tensor

    def key_for(path: str) -> str:
        key = path.lstrip(".") or "root"
        while key in tensors:
            key += "+"
        return key

    def enc(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            key = key_for(path)
            tensors[key] = own(value)
            return {"__tensor__": key}
        if isinstance(value, np.ndarray):
            key = key_for(path)
            wide = value.astype(np.int64) if value.dtype.kind in "biu" else value.astype(np.float64)
            tensors[key] = torch.from_numpy(np.ascontiguousarray(wide)).clone()
            return {"__ndarray__": key, "dtype": value.dtype.str}
        if isinstance(value, np.generic):
            return value.item()
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, tuple):
            return {"__tuple__": [enc(v, f"{path}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [enc(v, f"{path}.{i}") for i, v in enumerate(value)]
        if isinstance(value, dict):
            if all(isinstance(k, str) and k not in _MARKERS for k in value):
                return {k: enc(v, f"{path}.{k}") for k, v in value.items()}
            return {"__items__": [[enc(k, f"{path}.key"), enc(v, f"{path}.{k}")] for k, v in value.items()]}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {"__dataclass__": type(value).__name__,
                    "fields": {f.name: enc(getattr(value, f.name), f"{path}.{f.name}")
                               for f in dataclasses.fields(value)}}
        raise TypeError(f"train state: {path or 'root'} is a {type(value).__name__}; only tensors, arrays, "
                        "numbers, strings, None, lists, tuples, dicts and dataclasses can be saved")

    skeleton = enc(obj, "")
    return tensors, skeleton


def unflatten(tensors: dict[str, torch.Tensor], skeleton: Any, where: str = "train state") -> Any:
    def dec(value: Any) -> Any:
        if isinstance(value, list):
            return [dec(v) for v in value]
        if not isinstance(value, dict):
            return value
        for marker in ("__tensor__", "__ndarray__"):
            if marker in value:
                if value[marker] not in tensors:
                    raise TensorFileError(f"{where}: tensor {value[marker]!r} is missing")
                tensor = tensors[value[marker]]
                return tensor if marker == "__tensor__" else tensor.numpy().astype(np.dtype(value["dtype"]))
        if "__tuple__" in value:
            return tuple(dec(v) for v in value["__tuple__"])
        if "__items__" in value:
            return {_hashable(dec(k)): dec(v) for k, v in value["__items__"]}
        if "__dataclass__" in value:
            return {"__dataclass__": str(value["__dataclass__"]), "fields": {k: dec(v) for k, v in value["fields"].items()}}
        return {k: dec(v) for k, v in value.items()}

    return dec(skeleton)


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def restore_dataclasses(template: Any, data: Any) -> Any:
    """``data`` (as unflatten returns it) with each saved dataclass rebuilt as the matching part of
    ``template`` (an instance the caller made, e.g. a fresh ACT carry); a mismatch raises ValueError."""
    if isinstance(data, dict) and "__dataclass__" in data:
        if not (dataclasses.is_dataclass(template) and type(template).__name__ == data["__dataclass__"]):
            raise ValueError(f"saved {data['__dataclass__']} does not match {type(template).__name__}")
        fields = data["fields"]
        return dataclasses.replace(template, **{f.name: restore_dataclasses(getattr(template, f.name), fields.get(f.name))
                                               for f in dataclasses.fields(template) if f.init})
    if isinstance(data, dict) and isinstance(template, dict):
        return {k: restore_dataclasses(template.get(k), v) for k, v in data.items()}
    if isinstance(data, (list, tuple)) and isinstance(template, (list, tuple)) and len(data) == len(template):
        return type(data)(restore_dataclasses(t, d) for t, d in zip(template, data))
    return data


def write_nested(folder: str | os.PathLike, name: str, obj: Any) -> None:
    """``<folder>/<name>.safetensors`` and ``<folder>/<name>.json`` (not atomic by themselves: write
    them inside utils.io.atomic_directory)."""
    folder = Path(folder)
    tensors, skeleton = flatten(obj)
    write_safetensors(folder / f"{name}.safetensors", tensors)
    with open(folder / f"{name}.json", "w") as f:
        f.write(json.dumps(skeleton, indent=None))
        f.flush()
        os.fsync(f.fileno())


def read_nested(folder: str | os.PathLike, name: str, device: str = "cpu") -> Any:
    folder = Path(folder)
    json_path = folder / f"{name}.json"
    try:
        skeleton = json.loads(json_path.read_text())
    except FileNotFoundError:
        raise TensorFileError(f"{json_path}: file not found") from None
    except (ValueError, OSError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise TensorFileError(f"{json_path}: not valid JSON ({str(exc).splitlines()[0][:200]})") from None
    tensors = read_safetensors(folder / f"{name}.safetensors", device=device)
    try:
        return unflatten(tensors, skeleton, where=str(json_path))
    except (KeyError, TypeError, AttributeError) as exc:
        raise TensorFileError(f"{json_path}: not a train state written by this framework ({exc})") from None
