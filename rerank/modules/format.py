"""The module format: a folder with ``module_config.json`` and ``module.safetensors``.

For each base parameter ``P`` a sparse module touches, ``module.safetensors`` holds ``P.idx`` (int32
flat indices into ``P``, most important first) and ``P.val`` (the deltas, same length). Dense extras
(e.g. a ranking head) are stored as ``extra.NAME``. Parameter names are the encoder's normalised
names (``encoder.layer.0.attention.self.query.weight``: no ``bert.`` prefix), as fingerprints use.
Safetensors only; a folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

from rerank import __version__
from rerank.collections._io import atomic_dir
from rerank.errors import RerankError

FORMAT_VERSION = 1
CONFIG_FILE = "module_config.json"
WEIGHTS_FILE = "module.safetensors"
KINDS = ("sft", "shira", "lora", "adapter")
SPARSE_KINDS = ("sft", "shira")
ROLES = ("language", "task")


@dataclass
class ModuleConfig:
    """What ``module_config.json`` records."""

    kind: str  # sft (LT-SFT mask) | shira | lora | adapter
    role: str  # language | task
    language: str  # ISO 639-1 code ("" for a task module trained on several languages)
    base_model: str  # backbone name, e.g. multilingual-e5-small
    base_fingerprint: str  # the backbone's content fingerprint (rerank.backbone.fingerprint)
    shapes: dict[str, list[int]] = field(default_factory=dict)  # touched base parameter -> its shape
    density: float | None = None  # sparse kinds: touched entries / entries of the touched parameters
    rank: int | None = None  # lora
    value_dtype: str = "float32"
    bits: int | None = None  # low-bit storage: 1, 2, 4, 8 (codes + per-block scales) or 16 (float16)
    block: int | None = None  # entries per scale, for 1–8 bits
    recipe: dict = field(default_factory=dict)  # how it was trained (steps, lr, loss, mask selection, …)
    data: dict = field(default_factory=dict)  # what it was trained on (source, size, hash)
    format_version: int = FORMAT_VERSION
    created_by: str = f"rerank {__version__}"


@dataclass
class SparseModule:
    """A sparse module in memory: per parameter, flat indices (int32) and delta values."""

    config: ModuleConfig
    entries: dict  # name -> (idx: torch.IntTensor, val: torch.Tensor)
    extras: dict = field(default_factory=dict)  # name -> torch.Tensor (dense extras)
    path: Path | None = None
    packed: dict = field(default_factory=dict)  # name -> {"codes", "scales"} when stored at 1–8 bits

    @property
    def name(self) -> str:
        return str(self.path) if self.path else f"{self.config.role}:{self.config.language}:{self.config.kind}"

    def __len__(self) -> int:
        return sum(int(i.numel()) for i, _ in self.entries.values())

    @cached_property
    def content_key(self) -> str:
        """A stable key of the entries' content (the canonical stacking order), computed once."""
        h = hashlib.sha256()
        for name in sorted(self.entries):
            idx, val = self.entries[name]
            h.update(name.encode())
            h.update(idx.numpy().tobytes())
            h.update(val.float().numpy().tobytes())
        return h.hexdigest()


def _check_config(raw: object, where: Path) -> ModuleConfig:
    if not isinstance(raw, dict):
        raise RerankError(f"{where} is not a module description (a JSON object)", hint="rebuild the module")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise RerankError(
            f"{where}: module format version {version!r} is not one this rerank reads ({FORMAT_VERSION})",
            hint="use the rerank version that wrote it, or re-export the module",
        )
    try:
        cfg = ModuleConfig(**raw)
    except TypeError as e:
        raise RerankError(f"{where}: {e}", hint="the module description has unknown or missing fields") from e
    if cfg.kind not in KINDS:
        raise RerankError(f"{where}: unknown module kind {cfg.kind!r}", hint=f"one of: {', '.join(KINDS)}")
    if cfg.role not in ROLES:
        raise RerankError(f"{where}: unknown module role {cfg.role!r}", hint="language or task")
    return cfg


def save_module(module: SparseModule, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``module`` as a folder (atomically). Indices are stored as int32, values as ``value_dtype``."""
    import torch
    from safetensors.torch import save_file

    from rerank.modules.quant import quantize

    tensors = {}
    cfg = module.config
    for name, (idx, val) in module.entries.items():
        tensors[f"{name}.idx"] = idx.to(torch.int32).contiguous()
        if cfg.bits in (1, 2, 4, 8):
            packed = module.packed.get(name) or quantize(val, cfg.bits, cfg.block)
            tensors[f"{name}.codes"], tensors[f"{name}.scales"] = packed["codes"], packed["scales"]
        else:
            tensors[f"{name}.val"] = val.to(getattr(torch, cfg.value_dtype)).contiguous()
    for name, t in module.extras.items():
        tensors[f"extra.{name}"] = t.contiguous()
    with atomic_dir(path, overwrite) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(
            json.dumps(asdict(module.config), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    module.path = Path(path)
    return Path(path)


def load_module(
    path: str | os.PathLike, *, fingerprint: str | None = None, shapes: dict[str, tuple[int, ...]] | None = None
) -> SparseModule:
    """Read and validate a module folder. ``fingerprint``: the loaded backbone's, refused if different.
    ``shapes``: the backbone's parameter shapes, to check names and index ranges against."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    if not (p / CONFIG_FILE).is_file():
        raise RerankError(f"{p} is not a module folder (no {CONFIG_FILE})", hint="give a folder written by rerank")
    try:
        raw = json.loads((p / CONFIG_FILE).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise RerankError(f"{p / CONFIG_FILE} is not valid JSON ({e})", hint="the module is damaged") from e
    cfg = _check_config(raw, p / CONFIG_FILE)
    if fingerprint is not None and cfg.base_fingerprint != fingerprint:
        raise RerankError(
            f"module {p} was trained on backbone {cfg.base_model} ({cfg.base_fingerprint[:19]}), "
            f"not on the loaded one ({fingerprint[:19]})",
            hint="load the backbone it was made for (--model), or use a module made for this one",
        )
    try:
        tensors = load_file(str(p / WEIGHTS_FILE))
    except FileNotFoundError as e:
        raise RerankError(f"{p} has no {WEIGHTS_FILE}", hint="the module is incomplete; rebuild it") from e
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise RerankError(
            f"{p / WEIGHTS_FILE} is truncated or corrupt ({' '.join(str(e).split())[:120]})",
            hint="rebuild or re-download the module",
        ) from e
    entries, extras = {}, {}
    names = {k[: -len(".idx")] for k in tensors if k.endswith(".idx")}
    from rerank.modules.quant import check_bits, dequantize

    if cfg.bits is not None:
        check_bits(cfg.bits)
    packed_all = {}
    for name in sorted(names):
        idx, val = tensors.get(f"{name}.idx"), tensors.get(f"{name}.val")
        where = f"module {p}, parameter {name}"
        if val is None and f"{name}.codes" in tensors and idx is not None and idx.dim() == 1:
            if cfg.bits not in (1, 2, 4, 8) or not cfg.block or f"{name}.scales" not in tensors:
                raise RerankError(f"{where}: codes without bits/block/scales", hint="the module is damaged")
            codes, scales = tensors[f"{name}.codes"], tensors[f"{name}.scales"]
            val = dequantize(codes, scales, idx.numel(), cfg.bits, cfg.block)
            packed_all[name] = {"codes": codes, "scales": scales}
        if val is None:
            raise RerankError(f"{where}: indices without values", hint="the module is damaged; rebuild it")
        if idx.dtype != torch.int32 or idx.dim() != 1 or val.dim() != 1 or idx.numel() != val.numel():
            raise RerankError(
                f"{where}: expected 1-D int32 indices and as many values", hint="the module is damaged; rebuild it"
            )
        shape = tuple(cfg.shapes.get(name, ()))
        if shapes is not None:
            if name not in shapes:
                raise RerankError(f"{where}: the backbone has no such parameter", hint="a module for another model?")
            if shape and tuple(shape) != tuple(shapes[name]):
                raise RerankError(
                    f"{where}: made for shape {list(shape)}, the backbone's is {list(shapes[name])}",
                    hint="a module for another model?",
                )
            shape = tuple(shapes[name])
        numel = 1
        for s in shape:
            numel *= s
        if idx.numel():
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or (shape and hi >= numel):
                raise RerankError(
                    f"{where}: index {hi if lo >= 0 else lo} is out of range (0..{numel - 1})",
                    hint="the module is damaged or made for another model",
                )
            if torch.unique(idx).numel() != idx.numel():
                raise RerankError(f"{where}: duplicate indices", hint="each entry may appear once; rebuild it")
        entries[name] = (idx, val)
    for k, t in tensors.items():
        if k.startswith("extra."):
            extras[k[len("extra.") :]] = t
        elif not k.endswith((".idx", ".val", ".codes", ".scales")):
            raise RerankError(f"module {p}: unexpected tensor {k!r}", hint="the module is damaged; rebuild it")
    stray = {k[: -len(".val")] for k in tensors if k.endswith(".val")} - names
    if stray:
        raise RerankError(
            f"module {p}, parameter {sorted(stray)[0]}: values without indices",
            hint="the module is damaged; rebuild it",
        )
    return SparseModule(cfg, entries, extras, p, packed_all)


def quantize_module(module: SparseModule, bits: int, block: int | None = None) -> SparseModule:
    """A copy of ``module`` stored at ``bits`` (1, 2, 4, 8: codes + per-block float16 scales; 16: float16;
    32: float32). Its in-memory values are what loading the saved module gives back."""
    import dataclasses

    import torch

    from rerank.modules.quant import DEFAULT_BLOCK, check_bits, dequantize, quantize

    check_bits(bits)
    if module.config.bits is not None and module.config.bits < 16 and bits > module.config.bits:
        raise RerankError(
            f"{module.name} is stored at {module.config.bits} bits; more bits cannot restore precision",
            hint="quantize the original module instead",
        )
    block = block or DEFAULT_BLOCK
    entries, packed = {}, {}
    for name, (idx, val) in module.entries.items():
        if bits in (1, 2, 4, 8):
            q = quantize(val, bits, block)
            packed[name] = q
            entries[name] = (idx, dequantize(q["codes"], q["scales"], idx.numel(), bits, block))
        else:
            dtype = torch.float16 if bits == 16 else torch.float32
            entries[name] = (idx, val.to(dtype).to(torch.float32))
    cfg = dataclasses.replace(
        module.config,
        bits=bits,
        block=block if bits < 16 else None,
        value_dtype="float16" if bits == 16 else "float32",
    )
    return SparseModule(cfg, entries, dict(module.extras), None, packed)


def module_size(path: str | os.PathLike) -> int:
    """Bytes on disk of a module folder."""
    return sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())


def parse_density(text: str | float) -> float:
    """``0.005``, ``"0.005"`` or ``"0.5%"`` → 0.005 (a fraction in (0, 1])."""
    try:
        value = float(text[:-1]) / 100 if isinstance(text, str) and text.strip().endswith("%") else float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise RerankError(f"density {text!r} is not a fraction in (0, 1]", hint="e.g. 0.005 or 0.5%")
    return value


def truncate_module(module: SparseModule, density: float, shapes: dict | None = None) -> SparseModule:
    """Keep, per parameter, the ``density`` × size most important entries (entries are stored most
    important first) — a smaller budget of the same module, chosen at load time."""
    import dataclasses
    import math

    entries = {}
    for name, (idx, val) in module.entries.items():
        shape = (shapes or {}).get(name) or module.config.shapes.get(name)
        if not shape:
            raise RerankError(f"module {module.name}: no shape recorded for {name}", hint="cannot apply a budget")
        keep = max(1, math.ceil(math.prod(shape) * density))
        entries[name] = (idx[:keep], val[:keep])
    cfg = dataclasses.replace(module.config, density=min(density, module.config.density or density))
    return SparseModule(cfg, entries, dict(module.extras), module.path, {})
