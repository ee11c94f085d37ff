"""File plumbing shared by every reader and writer: strict opening, line numbers, atomic writes."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from rerank.errors import RerankError


def check_readable(path: str | os.PathLike, what: str = "file") -> Path:
    """Return ``path`` as a Path if it is a readable regular file, else raise a one-line error."""
    p = Path(path)
    if not p.exists():
        raise RerankError(f"{what} not found: {p}", hint="check the path (relative paths start at the current folder)")
    if p.is_dir():
        raise RerankError(f"{what} is a folder, not a file: {p}", hint="pass the file inside it")
    if not os.access(p, os.R_OK):
        raise RerankError(f"{what} is not readable: {p}", hint="fix its permissions")
    return p


def open_text(path: str | os.PathLike, what: str = "file") -> IO[str]:
    """Open a UTF-8 text file (``.gz`` transparently) for reading."""
    p = check_readable(path, what)
    raw: IO[bytes] = gzip.open(p, "rb") if p.suffix == ".gz" else open(p, "rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline=None)


def numbered_lines(path: str | os.PathLike, what: str = "file", encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line_without_newline)``; a byte not valid in ``encoding`` (UTF-8 unless a
    legacy collection says otherwise, e.g. CLEF's ISO-8859-1) is reported with its line.

    Lines are decoded one at a time (not in blocks) so that the line number of a bad byte is exact.
    """
    p = check_readable(path, what)
    lineno = 0
    try:
        with gzip.open(p, "rb") if p.suffix == ".gz" else open(p, "rb") as f:
            for lineno, raw in enumerate(f, start=1):  # noqa: B007
                try:
                    line = raw.decode(encoding)
                except UnicodeDecodeError as e:
                    raise RerankError(
                        f"{p}:{lineno}: not valid {'UTF-8' if encoding == 'utf-8' else encoding} "
                        f"(byte {e.start + 1} of the line)",
                        hint="re-encode the file as UTF-8",
                    ) from None
                if lineno == 1:
                    line = line.removeprefix("\ufeff")  # a byte-order mark is not content
                yield lineno, line.rstrip("\n").rstrip("\r")
    except (OSError, EOFError) as e:  # truncated .gz, I/O errors
        raise RerankError(
            f"{p}: cannot be read after line {lineno} ({e})", hint="check that the file is complete"
        ) from None


def json_lines(path: str | os.PathLike, what: str, expected: str) -> Iterator[tuple[int, object]]:
    """Yield ``(line_number, parsed_json)`` for each non-blank line; a broken line is reported with its number."""
    p = Path(path)
    for lineno, line in numbered_lines(p, what):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as e:
            raise RerankError(
                f"{p}:{lineno}: not valid JSON ({e.msg} at column {e.colno})", hint=f"expected {expected}"
            ) from None


def refuse_existing(path: str | os.PathLike, overwrite: bool) -> None:
    """The one rule for every output: an existing file or folder is replaced only with ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise RerankError(f"output already exists: {path}", hint="choose another path or pass --overwrite")


def check_writable_target(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse to replace an existing output unless ``overwrite``; make sure the parent can be created."""
    p = Path(path)
    refuse_existing(p, overwrite)
    if p.is_dir():
        raise RerankError(f"output path is a folder: {p}", hint="give a file name")
    _make_parent(p)
    return p


def _make_parent(p: Path) -> None:
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RerankError(
            f"cannot create the folder for {p}: {e.strerror}", hint="choose a writable location"
        ) from None


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, overwrite: bool = False) -> Iterator[IO[str]]:
    """Write a text file through a temporary file in the same folder, renamed into place on success.

    A crash or an exception while writing leaves the old file (or nothing) — never half a file.
    """
    p = check_writable_target(path, overwrite)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name beside ``path``; rename it into place on success.

    An interrupted build leaves only a ``.name.tmp-*`` folder, which nothing mistakes for the result.
    With ``overwrite`` an existing folder is replaced only once the new one is complete.
    """
    p = Path(path)
    refuse_existing(p, overwrite)
    _make_parent(p)
    tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.tmp-", dir=p.parent))
    try:
        yield tmp
        if p.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{p.name}.old-", dir=p.parent))
            os.replace(p, old / p.name)
            os.replace(tmp, p)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, p)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
