"""What every command shares: one-line errors with exit code 2, and console handles."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from datetime import UTC
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from rerank.errors import RerankError

F = TypeVar("F", bound=Callable[..., Any])

# `--precision`, as `rerank search` and `rerank serve` take it (rerank.scoring.precision)
PrecisionOption = Annotated[
    str,
    typer.Option(
        "--precision",
        help="The cross-encoder's arithmetic: auto (bf16 where the processor computes it natively, else fp32), "
        "fp32 or bf16.",
    ),
]

# A pipe or a file gets a fixed width of 120 columns instead of rich's 80, so tables keep their snippets.
ARGV: list[str] = []  # the arguments of this invocation (set by main), to record how outputs were made


def invocation() -> str:
    """This command line, as a user would type it."""
    import shlex

    return shlex.join(["rerank", *ARGV])


def write_provenance(path, **facts) -> None:
    """``<path>.json`` beside an output: the command that made it, and ``facts``."""
    import json
    from datetime import datetime
    from pathlib import Path

    from rerank import __version__
    from rerank.files import atomic_write

    record = {"command": invocation(), **facts, "created": datetime.now(UTC).isoformat(timespec="seconds")}
    record["rerank"] = __version__
    with atomic_write(Path(f"{path}.json"), overwrite=True) as f:
        f.write(json.dumps(record, indent=1, ensure_ascii=False) + "\n")


out = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` as one line on stderr and return the Exit to raise."""
    print(f"rerank: error: {' '.join(message.split())}", file=sys.stderr)
    return typer.Exit(code)


OUT_OF_MEMORY = (
    "out of memory — use a smaller --batch-size / --batch-queries (with --grad-accum to keep the "
    "batch), or a shorter --seq-len / --max-length"
)


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
        except MemoryError:
            raise fail(OUT_OF_MEMORY) from None
        except RuntimeError as e:  # torch's allocators report running out as a RuntimeError
            if "can't allocate memory" not in str(e) and "out of memory" not in str(e).lower():
                raise
            raise fail(OUT_OF_MEMORY) from None
        except KeyboardInterrupt:
            raise fail("interrupted — nothing half-written was left behind", 130) from None

    return wrapper  # type: ignore[return-value]
