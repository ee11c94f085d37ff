"""What every command shares: one-line errors with exit code 2, and console handles."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from rerank.errors import RerankError

F = TypeVar("F", bound=Callable[..., Any])

# A pipe or a file gets a fixed width of 120 columns instead of rich's 80, so tables keep their snippets.
out = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` as one line on stderr and return the Exit to raise."""
    print(f"rerank: error: {' '.join(message.split())}", file=sys.stderr)
    return typer.Exit(code)


def user_errors(fn: F) -> F:
    """Turn the errors a user can cause into one line on stderr and exit status 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RerankError as e:
            raise fail(str(e), e.exit_code) from None
        except PermissionError as e:
            raise fail(f"permission denied: {e.filename} — choose a location you can write to") from None
        except OSError as e:
            raise fail(f"{e.strerror or e}: {e.filename or ''} — check the path and free disk space") from None
        except KeyboardInterrupt:
            raise fail("interrupted — nothing half-written was left behind", 130) from None

    return wrapper  # type: ignore[return-value]
