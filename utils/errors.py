"""Expected stops: problems one line explains (a bad input file, a full disk, a diverged run).

Code anywhere raises ``UserError`` (or a subclass with its own ``exit_code``); the entry points wrap
their work in ``one_line_errors()``, which prints ``error: <message>`` on stderr and exits with the
code, without a traceback. Tracebacks are kept for bugs.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator


class UserError(Exception):
    """A stop that its message explains in one line; the process exits with ``exit_code``."""

    exit_code = 2


@contextmanager
def one_line_errors() -> Iterator[None]:
    try:
        yield
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None
