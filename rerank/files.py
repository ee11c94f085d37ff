"""File plumbing shared by every reader and writer: strict opening, line numbers, atomic writes."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
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
    if not p.is_file():  # a FIFO or a device would block or never end
        raise RerankError(f"{what} is not a regular file: {p}", hint="pass a file (not a pipe or a device)")
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


def validate_record(raw: object, cls: type, where: object, hint: str):
    """``raw`` (parsed JSON) as an instance of the dataclass ``cls``, checked field by field against its
    annotations by pydantic (strict types: ``"k1": "abc"`` or ``"analyzer": 5`` are refused, not coerced;
    its ``__pydantic_config__`` may add e.g. ``extra="forbid"``); the first problem as one line."""
    from pydantic import ValidationError

    try:  # as JSON (what the file held): in strict mode a JSON object may stand for a dataclass
        return _adapter(cls).validate_json(json.dumps(raw, allow_nan=True))
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        loc = ".".join(_loc_part(x) for x in first["loc"]) or "the top level"
        got = repr(first.get("input"))
        got = got if len(got) <= 60 else got[:57] + "..."
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise RerankError(f"{where}: {loc}: {first['msg']}, got {got}{more}", hint=hint) from None


def _loc_part(x: object) -> str:
    """A field name or index as it can be shown on one line (a key may hold anything, newlines included)."""
    text = x if isinstance(x, str) and x.isidentifier() else repr(x) if isinstance(x, str) else str(x)
    return text if len(text) <= 40 else text[:37] + "..."


def read_record(path: str | os.PathLike, cls: type, hint: str):
    """A JSON metadata file read as the dataclass ``cls`` (:func:`validate_record`); any fault is one line."""
    p = Path(path)
    try:
        raw = json.loads(check_readable(p, "metadata file").read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RerankError(f"{p} is damaged: not readable JSON ({e})", hint=hint) from None
    return validate_record(raw, cls, p, hint)


_ADAPTERS: dict[type, object] = {}


def _adapter(cls: type):
    if cls not in _ADAPTERS:
        from pydantic import TypeAdapter

        _ADAPTERS[cls] = TypeAdapter(cls)
    return _ADAPTERS[cls]


def refuse_existing(
    path: str | os.PathLike,
    overwrite: bool,
    *,
    marker: str | None = None,
    inputs: Iterable[str | os.PathLike | None] = (),
) -> None:
    """The one rule for every output.

    * An output is never one of the command's ``inputs`` (nor a folder holding one).
    * An existing file or folder is replaced only with ``overwrite``, and then only an earlier output of the
      same kind: for a folder output, a folder holding its ``marker`` (the metadata file every output of that
      kind has, e.g. ``rerank-index.json``); for a file output (``marker`` None), a file — never a folder.
    """
    p = Path(path)
    refuse_inputs(p, inputs)
    if not os.path.lexists(p):
        return
    if not overwrite:
        raise RerankError(f"output already exists: {p}", hint="choose another path or pass --overwrite")
    if marker is None:
        if p.is_dir():
            raise RerankError(f"output path is a folder: {p}", hint="give a file name")
        return
    if not (p.is_dir() and (p / marker).is_file()):
        what = "a file" if not p.is_dir() else f"a folder without {marker}"
        raise RerankError(
            f"--overwrite replaces only an earlier output of this command, and {p} is {what}",
            hint="choose another path, or move that one away yourself",
        )


def refuse_inputs(path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]) -> None:
    """Refuse an output path that is (or holds) one of the command's inputs."""
    out = Path(os.path.abspath(path))
    for i in inputs:
        if i is None:
            continue
        src = Path(os.path.abspath(i))
        if out == src or out in src.parents or _same_file(out, src):
            raise RerankError(
                f"the output {path} is an input of this command ({i})", hint="write the output somewhere else"
            )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_writable_target(
    path: str | os.PathLike, overwrite: bool, *, inputs: Iterable = (), create: bool = True
) -> Path:
    """Refuse to replace an existing output unless ``overwrite`` (a file output: never a folder); make sure
    its folder exists (``create``) or could be created and written (``create=False``: nothing is made yet)."""
    p = Path(path)
    refuse_existing(p, overwrite, inputs=inputs)
    if create:
        _make_parent(p)
    else:
        _check_parent(p)
    return p


def _make_parent(p: Path) -> None:
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RerankError(
            f"cannot create the folder for {p}: {e.strerror}", hint="choose a writable location"
        ) from None


def _check_parent(p: Path) -> None:
    """The nearest existing folder above ``p`` must be a writable folder."""
    parent = Path(os.path.abspath(p)).parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise RerankError(f"cannot write {p}: {parent} is not a folder", hint="choose a writable location")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RerankError(f"cannot write {p}: {parent} is not writable", hint="choose a writable location")


def umask_mode(mode: int = 0o666) -> int:
    """``mode`` with the process umask applied: what an ordinary file (0o666) or folder (0o777) gets."""
    current = os.umask(0o022)
    os.umask(current)
    return mode & ~current


def _publish_modes(root: Path) -> None:
    """Give ``root`` and everything under it the permissions the umask gives ordinary files and folders
    (temporary folders are made owner-only, and safetensors writes owner-only files)."""
    dmode, fmode = umask_mode(0o777), umask_mode(0o666)
    if root.is_dir():
        for folder, dirs, files in os.walk(root):
            os.chmod(folder, dmode)
            for f in files:
                fp = os.path.join(folder, f)
                if not os.path.islink(fp):
                    os.chmod(fp, fmode)
    else:
        os.chmod(root, fmode)


# Temporary names carry the writer's process id, so that a later run can tell a dead writer's leftovers
# (removed) from a live writer's work (left alone).
def _tmp_prefix(p: Path) -> str:
    return f".{p.name}.tmp-{os.getpid()}-"


def clear_stale(p: Path) -> list[Path]:
    """Remove the ``.NAME.tmp-PID-*`` / ``.NAME.old-PID-*`` leftovers of writers of ``p`` that no longer run."""
    removed = []
    try:
        siblings = list(p.parent.iterdir())
    except OSError:
        return removed
    for q in siblings:
        for tag in (".tmp-", ".old-"):
            head = f".{p.name}{tag}"
            if not q.name.startswith(head):
                continue
            pid = q.name[len(head) :].split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                if q.is_dir() and not q.is_symlink():
                    shutil.rmtree(q, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        q.unlink()
                removed.append(q)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


_AT_FDCWD = -100
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """Linux's renameat2(2) (no Python binding exists); False where the system or the file system lacks it."""
    import ctypes
    import errno

    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    e = ctypes.get_errno()
    if e in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(e, os.strerror(e), str(dst))


def _place_new(tmp: Path, p: Path) -> None:
    """Rename ``tmp`` to ``p`` only if nothing is at ``p`` (atomically: a concurrent writer cannot slip in)."""
    try:
        if _renameat2(tmp, p, _RENAME_NOREPLACE):
            return
        if tmp.is_dir():
            os.mkdir(p)  # claims the name, or raises FileExistsError; a folder may replace an empty folder
            os.replace(tmp, p)
        else:
            os.link(tmp, p)  # fails if p exists
            os.unlink(tmp)
    except (FileExistsError, IsADirectoryError, NotADirectoryError) as e:
        raise _Taken(p) from e
    except OSError as e:
        import errno

        if e.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise _Taken(p) from None
        raise


class _Taken(RerankError):
    def __init__(self, p: Path):
        super().__init__(
            f"{p} was written by another run while this one ran; it was kept",
            hint="use that one, or run again with --overwrite to replace it",
        )


def _place(tmp: Path, p: Path, overwrite: bool, marker: str | None) -> None:
    """Put the finished ``tmp`` at ``p``: a new name atomically; with ``overwrite`` an earlier output of the
    same kind is swapped out in one step (Linux) or moved aside just before (elsewhere), then removed."""
    if not overwrite or not os.path.lexists(p):
        _place_new(tmp, p)
        return
    refuse_existing(p, True, marker=marker)  # still ours, now that the new one is complete
    if tmp.is_dir() and _renameat2(tmp, p, _RENAME_EXCHANGE):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old output
        return
    if not tmp.is_dir():
        os.replace(tmp, p)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{p.name}.old-{os.getpid()}-", dir=p.parent))
    with contextlib.suppress(FileNotFoundError):
        os.replace(p, old / p.name)
    try:
        _place_new(tmp, p)
    finally:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, overwrite: bool = False, *, inputs: Iterable = ()) -> Iterator[IO[str]]:
    """Write a text file through a temporary file in the same folder, renamed into place on success.

    A crash or an exception while writing leaves the old file (or nothing) — never half a file. Without
    ``overwrite``, a file that appears at ``path`` while this one is written is kept and this write refused.
    """
    p = check_writable_target(path, overwrite, inputs=inputs)
    clear_stale(p)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(p), dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _publish_modes(Path(tmp))
        _place(Path(tmp), p, overwrite, None)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(
    path: str | os.PathLike, overwrite: bool = False, *, marker: str, inputs: Iterable = ()
) -> Iterator[Path]:
    """Build a folder under a temporary name beside ``path``; rename it into place on success.

    ``marker``: the metadata file every folder of this kind holds (written into the folder by the caller);
    ``--overwrite`` replaces only a folder that has it (:func:`refuse_existing`). An interrupted build
    leaves only a ``.NAME.tmp-PID-*`` folder, which nothing mistakes for the result and the next build
    removes. With ``overwrite`` an existing folder is replaced only once the new one is complete; without
    it, a folder another run put at ``path`` meanwhile is kept and this build refused (one line).
    """
    p = Path(path)
    refuse_existing(p, overwrite, marker=marker, inputs=inputs)
    _make_parent(p)
    clear_stale(p)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(p), dir=p.parent))
    try:
        yield tmp
        if not (tmp / marker).is_file():
            raise RuntimeError(f"{marker} was not written into {p}")  # a bug of ours, not the user's
        _publish_modes(tmp)
        _place(tmp, p, overwrite, marker)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
