"""Keys a dataclass schema does not know, with the nearest valid key for the message.

Hydra's ``+key=value`` appends a key even to a structured (schema-typed) config, and turning the
config into its dataclass then drops that key without a word: ``+lrr=1e-3`` would train with the
default ``lr``. Walking the composed config against the dataclass fields catches such keys at any
depth (nested dataclasses, lists of dataclasses); ``Dict[str, Any]`` fields hold free-form keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, Iterator, Mapping


def _unwrap(tp: Any) -> Any:
    """Optional[X] -> X."""
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def unknown_keys(data: Any, schema: type, prefix: str = "") -> Iterator[tuple[str, str]]:
    """Yield (dotted key, nearest valid dotted key) for every key of ``data`` not in ``schema``.

    ``data`` is a plain container (``OmegaConf.to_container(cfg, resolve=False)``); ``schema`` a
    dataclass type.
    """
    if not isinstance(data, Mapping) or not dataclasses.is_dataclass(schema):
        return
    hints = typing.get_type_hints(schema)
    names = [f.name for f in dataclasses.fields(schema)]
    for key, value in data.items():
        key = str(key)
        if key not in hints:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.0)
            yield prefix + key, prefix + close[0] if close else ""
            continue
        tp = _unwrap(hints[key])
        if dataclasses.is_dataclass(tp):
            yield from unknown_keys(value, tp, f"{prefix}{key}.")
        elif typing.get_origin(tp) in (list, tuple) and isinstance(value, (list, tuple)):
            item = _unwrap((typing.get_args(tp) or (Any,))[0])
            if dataclasses.is_dataclass(item):
                for i, element in enumerate(value):
                    yield from unknown_keys(element, item, f"{prefix}{key}.{i}.")


def unknown_key_message(data: Any, schema: type, where: str = "config") -> str | None:
    """One line naming the first unknown key and the nearest valid one; None when all are known."""
    found = list(unknown_keys(data, schema))
    if not found:
        return None
    key, nearest = found[0]
    more = f" (and {len(found) - 1} more unknown: {', '.join(k for k, _ in found[1:4])})" if len(found) > 1 else ""
    hint = f"; did you mean {nearest}?" if nearest else ""
    return f"{where}: unknown key {key}{hint}{more}"
