"""Command-line checks that run before Hydra takes over an entry point (pretrain.py, evaluate.py).

Hydra reports a composition error (``lrr=1`` on a key the schema lacks, ``epochs=abc``, an unknown
``arch=`` choice) as several lines and exit code 1, before the entry point's own code runs. The
entry points compose their command line once here first, so those errors read like every other
user error: one line naming the key (and the nearest valid one), exit code 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from pathlib import Path
from typing import Sequence

from utils.errors import UserError

# Flags after which we compose exactly what Hydra would; any other flag (--help, --cfg, -m ...) is
# left to Hydra alone.
_NAME_FLAGS = ("--config-name", "-cn")
_NOT_IN_SCHEMA = re.compile(r"Key '([^']+)' not in '(\w+)'")


def _schema_types(schema: type) -> dict[str, type]:
    """Every dataclass reachable from ``schema`` by field types, by class name."""
    found: dict[str, type] = {}
    todo = [schema]
    while todo:
        tp = todo.pop()
        if tp.__name__ in found:
            continue
        found[tp.__name__] = tp
        for hint in typing.get_type_hints(tp).values():
            for arg in (hint, *typing.get_args(hint), *(a for h in typing.get_args(hint) for a in typing.get_args(h))):
                if dataclasses.is_dataclass(arg) and isinstance(arg, type):
                    todo.append(arg)
    return found


def composition_error_message(exc: BaseException, schema: type) -> str:
    """One line for a Hydra composition error: the unknown key and its nearest valid key, or the reason."""
    cause = exc.__cause__
    text = str(cause) if cause is not None else ""
    match = _NOT_IN_SCHEMA.search(text)
    if match:
        key, owner = match.group(1), match.group(2)
        full_key = str(getattr(cause, "full_key", None) or key)
        owner_type = _schema_types(schema).get(owner)
        names = [f.name for f in dataclasses.fields(owner_type)] if owner_type else []
        close = difflib.get_close_matches(key, names, n=1, cutoff=0.0)
        prefix = full_key[: len(full_key) - len(key)] if full_key.endswith(key) else ""
        hint = f"; did you mean {prefix}{close[0]}?" if close else ""
        return f"config: unknown key {full_key}{hint}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    message = lines[0] if lines else type(exc).__name__
    if "Available options" in str(exc):
        listed = lines[lines.index(next(x for x in lines if x.startswith("Available options"))) + 1 :]
        options = [x for x in listed[: next((i for i, x in enumerate(listed) if x.endswith(":")), len(listed))]]
        message += f" (available: {', '.join(options)})"
    if text:
        message += f": {text.splitlines()[0]}"
    return f"config: {message}"


def precheck_command_line(argv: Sequence[str], config_dir: str | Path, config_name: str, schema: type) -> None:
    """Compose ``config_name`` with the command line's overrides; raise UserError if that fails."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    overrides, args = [], list(argv)
    while args:
        arg = args.pop(0)
        if arg.startswith("-"):
            flag, _, value = arg.partition("=")
            if flag not in _NAME_FLAGS:
                return  # other Hydra flags: Hydra decides what they mean
            config_name = value or (args.pop(0) if args else config_name)
        elif not arg.lstrip("+~").startswith("hydra"):
            overrides.append(arg)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base="1.3"):
            compose(config_name=config_name, overrides=overrides)
    except HydraException as exc:
        raise UserError(composition_error_message(exc, schema)) from None
    finally:
        GlobalHydra.instance().clear()
