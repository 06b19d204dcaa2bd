"""User errors: problems with what the user gave (a config key, a value, an input file).

Entry points catch :class:`UserError` and print one line, ``error: <message>``, exiting with code 2;
anything else is a bug and keeps its traceback. Messages name the key, file, task or row.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

USER_ERROR_EXIT_CODE = 2


class UserError(ValueError):
    """A problem with the user's input, reported as one line. A ValueError, so code that already
    catches ValueError for bad values keeps working."""


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a UserError (or FileNotFoundError) raised inside into ``error: <message>`` and exit code 2.

    Under torchrun every rank hits the same error; only rank 0 (or a lone process) prints it.
    """
    try:
        yield
    except (UserError, FileNotFoundError) as exc:  # a path the user named that is not there counts too
        if os.environ.get("RANK", "0") == "0":
            print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(USER_ERROR_EXIT_CODE) from None
