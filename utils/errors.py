"""Errors the user can fix: entry points print their message on one line and exit with status 2.

Raise a subclass where the problem is found (a missing dataset folder, an override a checkpoint
cannot load); the message names the file, key or value and says what to do. No traceback is shown,
because the code is not at fault.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator


class UserError(ValueError):
    """A problem with the command, the config or the files given, not with the code."""


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Around an entry point's body: a UserError becomes ``error: <message>`` and exit status 2."""
    try:
        yield
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
