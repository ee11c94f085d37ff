"""The module format: a folder with ``module_config.json`` and ``module.safetensors``.

For each base parameter ``P`` a sparse module (sft, shira) touches, ``module.safetensors`` holds
``P.idx`` (int32 flat indices into ``P``, most important first) and ``P.val`` (the deltas, same
length). A LoRA module holds ``P.lora_A`` (r × in) and ``P.lora_B`` (out × r) per target weight, its
delta being ``scaling · B @ A`` (ranks most important first). A bottleneck-adapter module holds the
``adapters`` library's weights as ``adapter.NAME`` (``{}`` standing for the adapter's name) and that
library's config in ``adapter_config``. Dense extras (e.g. a ranking head) are stored as
``extra.NAME``. Parameter names are the encoder's normalised names
(``encoder.layer.0.attention.self.query.weight``: no ``bert.`` prefix), as fingerprints use.
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
    rank: int | None = None  # lora: the largest rank of its targets
    scaling: float | None = None  # lora: the delta is scaling · B @ A (peft: lora_alpha / r)
    adapter_config: dict | None = None  # adapter: the `adapters` library's config (e.g. seq_bn, seq_bn_inv)
    value_dtype: str = "float32"
    bits: int | None = None  # low-bit storage: 1, 2, 4, 8 (codes + per-block scales) or 16 (float16)
    block: int | None = None  # entries per scale, for 1–8 bits
    recipe: dict = field(default_factory=dict)  # how it was trained (steps, lr, loss, mask selection, …)
    data: dict = field(default_factory=dict)  # what it was trained on (source, size, hash)
    format_version: int = FORMAT_VERSION
    created_by: str = f"rerank {__version__}"


@dataclass
class Module:
    """A module in memory. Sparse kinds: per parameter, flat indices (int32) and delta values; LoRA:
    per target weight, (A, B); adapter: the adapters library's tensors; any kind: dense extras."""

    config: ModuleConfig
    entries: dict = field(default_factory=dict)  # name -> (idx: torch.IntTensor, val: torch.Tensor)
    extras: dict = field(default_factory=dict)  # name -> torch.Tensor (dense extras)
    path: Path | None = None
    packed: dict = field(default_factory=dict)  # name -> {"codes", "scales"} when stored at 1–8 bits
    lora: dict = field(default_factory=dict)  # target weight name -> (A: r × in, B: out × r)
    weights: dict = field(default_factory=dict)  # adapter: tensor name ("{}" = adapter name) -> tensor

    @property
    def name(self) -> str:
        return str(self.path) if self.path else f"{self.config.role}:{self.config.language}:{self.config.kind}"

    def __len__(self) -> int:
        """Stored numbers: sparse entries, or LoRA/adapter parameters."""
        n = sum(int(i.numel()) for i, _ in self.entries.values())
        n += sum(int(a.numel() + b.numel()) for a, b in self.lora.values())
        return n + sum(int(t.numel()) for t in self.weights.values())

    @cached_property
    def content_key(self) -> str:
        """A stable key of the module's content (the canonical stacking order), computed once."""
        h = hashlib.sha256(self.config.kind.encode())
        for name in sorted(self.entries):
            idx, val = self.entries[name]
            h.update(name.encode())
            h.update(idx.numpy().tobytes())
            h.update(val.float().numpy().tobytes())
        for group in (self.lora, self.weights, self.extras):
            for name in sorted(group):
                h.update(name.encode())
                for t in group[name] if isinstance(group[name], tuple) else (group[name],):
                    h.update(t.detach().float().contiguous().numpy().tobytes())
        return h.hexdigest()


SparseModule = Module  # the name sparse-only code used


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


def save_module(module: Module, path: str | os.PathLike, overwrite: bool = False) -> Path:
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
    if (module.lora or module.weights) and cfg.bits in (1, 2, 4, 8):
        raise RerankError(
            f"{cfg.bits}-bit storage is for sparse modules; a {cfg.kind} module is stored at 16 or 32 bits",
            hint="use --bits 16",
        )
    for name, (a, b) in module.lora.items():
        tensors[f"{name}.lora_A"] = a.to(getattr(torch, cfg.value_dtype)).contiguous()
        tensors[f"{name}.lora_B"] = b.to(getattr(torch, cfg.value_dtype)).contiguous()
    for name, t in module.weights.items():
        tensors[f"adapter.{name}"] = t.to(getattr(torch, cfg.value_dtype)).contiguous()
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
) -> Module:
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
    lora, weights = _load_lora(p, cfg, tensors, shapes), {}
    for k, t in tensors.items():
        if k.startswith("extra."):
            extras[k[len("extra.") :]] = t
        elif k.startswith("adapter."):
            weights[k[len("adapter.") :]] = t.float()
        elif not k.endswith((".idx", ".val", ".codes", ".scales", ".lora_A", ".lora_B")):
            raise RerankError(f"module {p}: unexpected tensor {k!r}", hint="the module is damaged; rebuild it")
    _check_kind(p, cfg, entries, lora, weights)
    stray = {k[: -len(".val")] for k in tensors if k.endswith(".val")} - names
    if stray:
        raise RerankError(
            f"module {p}, parameter {sorted(stray)[0]}: values without indices",
            hint="the module is damaged; rebuild it",
        )
    return Module(cfg, entries, extras, p, packed_all, lora, weights)


def _load_lora(p: Path, cfg: ModuleConfig, tensors: dict, shapes: dict | None) -> dict:
    """``P.lora_A`` / ``P.lora_B`` pairs, checked against each other and the backbone's shapes."""
    lora = {}
    names = {k[: -len(".lora_A")] for k in tensors if k.endswith(".lora_A")}
    names |= {k[: -len(".lora_B")] for k in tensors if k.endswith(".lora_B")}
    for name in sorted(names):
        a, b = tensors.get(f"{name}.lora_A"), tensors.get(f"{name}.lora_B")
        where = f"module {p}, LoRA target {name}"
        if a is None or b is None:
            raise RerankError(f"{where}: lora_A and lora_B must both be present", hint="the module is damaged")
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1] or a.shape[0] < 1:
            raise RerankError(
                f"{where}: lora_A {list(a.shape)} and lora_B {list(b.shape)} are not r × in and out × r",
                hint="the module is damaged",
            )
        shape = tuple(shapes[name]) if shapes is not None and name in shapes else tuple(cfg.shapes.get(name, ()))
        if shapes is not None and name not in shapes:
            raise RerankError(f"{where}: the backbone has no such parameter", hint="a module for another model?")
        if shape and (len(shape) != 2 or (b.shape[0], a.shape[1]) != shape):
            raise RerankError(
                f"{where}: B @ A is {[b.shape[0], a.shape[1]]}, the weight is {list(shape)}",
                hint="a module for another model?",
            )
        lora[name] = (a.float(), b.float())
    return lora


def _check_kind(p: Path, cfg: ModuleConfig, entries: dict, lora: dict, weights: dict) -> None:
    """A module holds the tensors its kind uses, and only those."""
    held = {"sparse entries": bool(entries), "LoRA pairs": bool(lora), "adapter weights": bool(weights)}
    wanted = {"sft": "sparse entries", "shira": "sparse entries", "lora": "LoRA pairs", "adapter": "adapter weights"}
    wrong = [k for k, v in held.items() if v and k != wanted[cfg.kind]]
    if wrong:
        raise RerankError(f"module {p} is a {cfg.kind} module but holds {wrong[0]}", hint="the module is damaged")
    if cfg.kind == "lora" and (cfg.scaling is None or not lora):
        raise RerankError(f"module {p}: a LoRA module needs LoRA pairs and a scaling", hint="the module is damaged")
    if cfg.kind == "adapter" and (not cfg.adapter_config or not weights):
        raise RerankError(
            f"module {p}: an adapter module needs adapter_config and adapter weights", hint="the module is damaged"
        )


def quantize_module(module: Module, bits: int, block: int | None = None) -> Module:
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
    if (module.lora or module.weights) and bits < 16:
        raise RerankError(
            f"{bits}-bit storage is for sparse modules; {module.name} is a {module.config.kind} module",
            hint="use --bits 16 (float16) for LoRA and adapter modules",
        )
    block = block or DEFAULT_BLOCK
    dtype = torch.float16 if bits == 16 else torch.float32
    entries, packed = {}, {}
    for name, (idx, val) in module.entries.items():
        if bits in (1, 2, 4, 8):
            q = quantize(val, bits, block)
            packed[name] = q
            entries[name] = (idx, dequantize(q["codes"], q["scales"], idx.numel(), bits, block))
        else:
            entries[name] = (idx, val.to(dtype).to(torch.float32))
    cfg = dataclasses.replace(
        module.config,
        bits=bits,
        block=block if bits < 16 else None,
        value_dtype="float16" if bits == 16 else "float32",
    )
    lora = {n: (a.to(dtype).float(), b.to(dtype).float()) for n, (a, b) in module.lora.items()}
    weights = {n: t.to(dtype).float() for n, t in module.weights.items()}
    return Module(cfg, entries, dict(module.extras), None, packed, lora, weights)


def has_head(module) -> bool:
    """Whether a module (folder or :class:`Module`) carries a ranking head (``extra.classifier.*``, or the
    residual head's ``extra.residual_head.*``). A folder's weights file is not read, only its header; an
    unreadable folder says no (loading it reports why)."""
    heads = ("classifier.", "residual_head.")
    if isinstance(module, Module):
        return any(n.startswith(heads) for n in module.extras)
    try:
        from safetensors import safe_open

        with safe_open(str(Path(module) / WEIGHTS_FILE), framework="pt") as f:
            return any(k.startswith(tuple(f"extra.{h}" for h in heads)) for k in f.keys())
    except Exception:  # noqa: BLE001 - a missing or damaged file is reported when the module is loaded
        return False


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


def truncate_module(module: Module, density: float, shapes: dict | None = None) -> Module:
    """Keep, per parameter, the ``density`` × size most important entries (entries are stored most
    important first) — a smaller budget of the same module, chosen at load time."""
    import dataclasses
    import math

    if module.config.kind not in SPARSE_KINDS:
        return module  # a density budget is for sparse modules; LoRA has rank budgets
    entries = {}
    for name, (idx, val) in module.entries.items():
        shape = (shapes or {}).get(name) or module.config.shapes.get(name)
        if not shape:
            raise RerankError(f"module {module.name}: no shape recorded for {name}", hint="cannot apply a budget")
        keep = max(1, math.ceil(math.prod(shape) * density))
        entries[name] = (idx[:keep], val[:keep])
    cfg = dataclasses.replace(module.config, density=min(density, module.config.density or density))
    return Module(cfg, entries, dict(module.extras), module.path, {})


def truncate_rank(module: Module, rank: int) -> Module:
    """Keep the first ``rank`` ranks of each LoRA target (ranks are stored most important first, as
    DyLoRA trains them); the scaling stays, so the delta is a prefix of the same sum. Other kinds are
    returned unchanged."""
    import dataclasses

    if rank < 1:
        raise RerankError(f"rank {rank} is not a positive integer", hint="e.g. --module-rank 8")
    if module.config.kind != "lora" or (module.config.rank or 0) <= rank:
        return module
    lora = {n: (a[:rank].contiguous(), b[:, :rank].contiguous()) for n, (a, b) in module.lora.items()}
    cfg = dataclasses.replace(module.config, rank=rank)
    return Module(cfg, {}, dict(module.extras), module.path, {}, lora, {})
