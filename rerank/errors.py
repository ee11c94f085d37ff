"""The one exception type a user sees.

Every error a user can cause (a bad path, a malformed file, an unknown language, an empty query…)
is raised as :class:`RerankError` with a message that says what is wrong *and what to do*. The CLI
prints that message on one line and exits with status 2; library users catch one type.
"""

from __future__ import annotations


class RerankError(Exception):
    """A problem caused by the input, with a message that tells the user how to fix it."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message} — {hint}")


def at_line(path: object, lineno: int, problem: str, expected: str) -> RerankError:
    """A parse error that names the file, the 1-based line and what was expected there."""
    return RerankError(f"{path}:{lineno}: {problem}", hint=f"expected {expected}")


def warn(message: str) -> None:
    """A one-line warning on stderr (the CLI's and the API's)."""
    import sys

    print(f"rerank: warning: {message}", file=sys.stderr)
