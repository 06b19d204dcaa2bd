"""User errors: a mistake in what the user gave (a path, a key, a value), not a bug.

Entry points catch ``UserError`` with ``exit_on_user_error`` and print one line, exit status 2, no
traceback; anything else still shows its traceback because it is a bug to report.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator


class UserError(Exception):
    """Raised with a message that says what is wrong and, where it helps, what to do."""


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    try:
        yield
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        # SystemExit is not an Exception: Hydra's error reporting lets it through with this status.
        raise SystemExit(2) from None
