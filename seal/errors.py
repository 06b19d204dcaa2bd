"""SEAL's user errors: a bad data file, a stage run before its input exists (one line, exit code 2)."""

from __future__ import annotations

from utils.errors import UserError


class SealInputError(UserError):
    """A user error in SEAL's inputs; ``python -m seal`` prints it as one line and exits with code 2."""
