"""Content fingerprints of encoder weights.

A fingerprint is ``"sha256:" + hex`` of a SHA-256 over the encoder's tensors in name order; each
tensor contributes its name, dtype, shape and raw little-endian bytes. Names are normalised so that
one encoder has one fingerprint however it is wrapped:

* a leading ``bert.`` / ``roberta.`` / ``model.`` is stripped (``BertForSequenceClassification``
  stores ``bert.encoder…``, ``BertModel`` stores ``encoder…``);
* task heads are skipped (``classifier.``, ``cls.``, ``pooler.``, ``lm_head.``), and so are
  ``position_ids`` buffers, which some checkpoints save and others do not.

A cross-encoder folder built on an unchanged backbone therefore has the backbone's fingerprint;
modules and indexes record it and refuse to load against a different one. Fingerprints of folders
are cached in ``$RERANK_HOME/fingerprints.json`` keyed by the weight files' absolute path, size and
modification time, so a 500 MB model is hashed once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rerank.backbone.files import read_json, rerank_home, safetensors_header, weight_files, write_json_atomic
from rerank.errors import RerankError

BASE_PREFIXES = ("bert.", "roberta.", "model.")
HEAD_PREFIXES = ("classifier.", "cls.", "pooler.", "lm_head.", "list_head.", "residual_head.")
CACHE_NAME = "fingerprints.json"
CACHE_MAX_ENTRIES = 1000
_CHUNK = 16 << 20

# safetensors dtype codes for numpy / torch dtype names
_DTYPES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
}


def strip_base_prefix(name: str) -> str:
    """``bert.encoder.layer.0…`` → ``encoder.layer.0…`` (the model-class prefix removed)."""
    for prefix in BASE_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def encoder_name(name: str) -> str | None:
    """The normalised name a tensor is fingerprinted under, or None when it is a head or a buffer."""
    name = strip_base_prefix(name)
    if name.startswith(HEAD_PREFIXES) or name.endswith("position_ids"):
        return None
    return name


def _meta(name: str, dtype: str, shape: list[int], nbytes: int) -> bytes:
    meta = json.dumps([name, dtype, shape, nbytes]).encode()
    return len(meta).to_bytes(8, "little") + meta


def _digest(items: Iterator[tuple[str, str, list[int], int, Iterator[bytes | memoryview]]]) -> str:
    h = hashlib.sha256(b"rerank-fingerprint-v1\n")
    for name, dtype, shape, nbytes, chunks in items:
        h.update(_meta(name, dtype, shape, nbytes))
        for chunk in chunks:
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _sorted_unique(pairs: list[tuple[str, Any]], where: object) -> list[tuple[str, Any]]:
    pairs.sort(key=lambda p: p[0])
    for a, b in zip(pairs, pairs[1:]):
        if a[0] == b[0]:
            raise RerankError(f"{where}: two tensors are both named {a[0]!r} once prefixes are stripped")
    return pairs


def _state_dict_items(state: Mapping[str, Any]):
    import numpy as np

    pairs = [(n, v) for k, v in state.items() if (n := encoder_name(k)) is not None]
    for name, value in _sorted_unique(pairs, "state dict"):
        if hasattr(value, "detach"):  # a torch tensor: bytes through a uint8 view (works for bfloat16 too)
            import torch

            t = value.detach().cpu().contiguous()
            dtype = str(t.dtype).removeprefix("torch.")
            shape = list(t.shape)
            raw = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else np.zeros(0, np.uint8)
        else:
            a = np.asarray(value)
            if a.dtype.byteorder == ">":
                a = a.astype(a.dtype.newbyteorder("<"))
            dtype, shape = a.dtype.name, list(a.shape)
            raw = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
        if dtype not in _DTYPES:
            raise RerankError(f"state dict: tensor {name!r} has unsupported dtype {dtype}")
        data = memoryview(raw).cast("B")
        yield name, _DTYPES[dtype], shape, len(data), iter([data])


def _file_chunks(path: Path, start: int, length: int) -> Iterator[bytes]:
    with path.open("rb") as f:
        f.seek(start)
        while length > 0:
            chunk = f.read(min(_CHUNK, length))
            if not chunk:
                raise RerankError(f"{path}: file ends inside a tensor", hint="the safetensors file is truncated")
            length -= len(chunk)
            yield chunk


def _files_items(files: list[Path]):
    pairs: list[tuple[str, tuple[Path, int, dict]]] = []
    for path in files:
        header, data_start = safetensors_header(path)
        for key, entry in header.items():
            name = encoder_name(key)
            if name is not None:
                pairs.append((name, (path, data_start, entry)))
    for name, (path, data_start, entry) in _sorted_unique(pairs, files[0].parent):
        try:
            begin, end = entry["data_offsets"]
            dtype, shape = entry["dtype"], list(entry["shape"])
        except (KeyError, TypeError, ValueError):
            raise RerankError(f"{path}: malformed header entry for {name!r}") from None
        yield name, dtype, shape, end - begin, _file_chunks(path, data_start + begin, end - begin)


def _cache_key(files: list[Path]) -> str:
    parts = []
    for p in files:
        st = p.stat()
        parts.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    return json.dumps(parts)


def _load_cache() -> dict[str, str]:
    path = rerank_home() / CACHE_NAME
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
    except RerankError:
        return {}  # a damaged cache is only a cache
    entries = data.get("entries") if isinstance(data, dict) else None
    return dict(entries) if isinstance(entries, dict) else {}


def remember(files: list[Path], value: str) -> None:
    """Record ``value`` as the fingerprint of ``files`` in the cache (newest entries kept)."""
    entries = _load_cache()
    entries.pop(key := _cache_key(files), None)
    entries[key] = value
    if len(entries) > CACHE_MAX_ENTRIES:
        entries = dict(list(entries.items())[-CACHE_MAX_ENTRIES:])
    try:
        write_json_atomic(rerank_home() / CACHE_NAME, {"version": 1, "entries": entries})
    except OSError:
        pass  # a read-only home only costs re-hashing next time


def fingerprint(source: str | os.PathLike | Mapping[str, Any], *, cache: bool = True) -> str:
    """Fingerprint a model folder, a ``.safetensors`` file or a state dict (torch tensors or numpy arrays).

    Folders and files are read from their safetensors headers and data (single or sharded with
    ``model.safetensors.index.json``); torch is not needed for them.
    """
    if isinstance(source, Mapping):
        return _digest(_state_dict_items(source))
    path = Path(source).expanduser()
    if path.is_dir():
        files = weight_files(path)
        if not files:
            raise RerankError(f"{path} has no model.safetensors", hint="fingerprints are taken of safetensors weights")
    elif path.is_file() and path.suffix == ".safetensors":
        files = [path]
    else:
        raise RerankError(f"{path} is neither a model folder nor a .safetensors file")
    if cache:
        key = _cache_key(files)
        hit = _load_cache().get(key)
        if hit:
            return hit
    value = _digest(_files_items(files))
    if cache:
        remember(files, value)
    return value
