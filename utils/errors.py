"""User errors: problems with what the user gave (a config key, a value, an input file).

Entry points catch :class:`UserError` and print one line, ``error: <message>``, exiting with code 2;
anything else is a bug and keeps its traceback. Messages name the key, file, task or row.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

USER_ERROR_EXIT_CODE = 2


class UserError(ValueError):
    """A problem one line explains (the user's input, a damaged file, a full disk, a diverged run).
    A ValueError, so code that already catches ValueError for bad values keeps working.

    ``exit_code``: 2 for bad input; subclasses for other expected stops set their own (3: diverged).
    ``every_rank_sees_it``: under torchrun every rank usually meets the same error and only rank 0
    prints it; an error only one rank knows about (a collective that timed out) prints on that rank.
    """

    exit_code = USER_ERROR_EXIT_CODE
    every_rank_sees_it = True


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a UserError (or FileNotFoundError) raised inside into ``error: <message>`` and its exit
    code (2 unless the error says otherwise). Rank 0 (or a lone process) prints it, or the rank that
    alone knows about it."""
    try:
        yield
    except (UserError, FileNotFoundError) as exc:  # a path the user named that is not there counts too
        if os.environ.get("RANK", "0") == "0" or not getattr(exc, "every_rank_sees_it", True):
            print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(getattr(exc, "exit_code", USER_ERROR_EXIT_CODE)) from None


def run_command(body: Callable[[], object]) -> int:
    """A command-line main's body: exit status 0 when it finishes, or a UserError's one-line message
    and its exit code (the builders return it, so tests can call their ``main`` directly)."""
    try:
        body()
    except UserError as exc:  # no traceback: the message says what to change
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    return 0
