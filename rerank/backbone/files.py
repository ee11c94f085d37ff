"""Small file helpers shared by the backbone code: the cache home, atomic JSON writes, safetensors headers."""

from __future__ import annotations

import json
import os
import struct
import uuid
from pathlib import Path
from typing import Any

from rerank.errors import RerankError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
META_NAME = "rerank-backbone.json"  # written last by the converter: its presence marks a complete folder


def rerank_home() -> Path:
    """Where rerank keeps its caches: ``$RERANK_HOME``, else ``~/.cache/rerank``."""
    env = os.environ.get("RERANK_HOME")
    return Path(env).expanduser() if env else Path("~/.cache/rerank").expanduser()


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file in the same folder, then rename.

    The temporary file is created with ``open(..., "x")`` (not ``mkstemp``), so the result gets the
    usual umask permissions rather than owner-only ones.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        with tmp.open("x", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    """Parse a JSON file, raising :class:`RerankError` (one line) when it cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RerankError(f"cannot read {path}: {e}", hint="the file must be valid UTF-8 JSON") from None


def safetensors_header(path: Path) -> tuple[dict[str, dict], int]:
    """The tensor entries of a safetensors file (``__metadata__`` removed) and the offset where data starts."""
    try:
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100_000_000:
                raise ValueError(f"header length {n} is implausible")
            header = json.loads(f.read(n))
            if not isinstance(header, dict):
                raise ValueError("its header is not a JSON object")
    except (OSError, ValueError, struct.error) as e:
        raise RerankError(f"cannot read {path}: {e}", hint="the file is not a valid safetensors file") from None
    header.pop("__metadata__", None)
    return header, 8 + n


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files holding a model's weights: ``model.safetensors`` or the shards of an index.

    Returns an empty list when there are none; raises when an index names a shard that is missing.
    """
    index = folder / INDEX_NAME
    if index.is_file():
        data = read_json(index)
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise RerankError(f"{index} has no weight_map", hint="a sharded safetensors index maps names to files")
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise RerankError(
                f"{index} names {len(missing)} missing shard(s), e.g. {missing[0]}",
                hint="copy every model-XXXXX-of-YYYYY.safetensors file into the folder",
            )
        return [folder / s for s in shards]
    single = folder / SINGLE_NAME
    return [single] if single.is_file() else []
