"""The module format: a folder with ``module_config.json`` and ``module.safetensors``.

``module.safetensors`` holds the tensors of the module's kind (:mod:`rerank.modules.kinds`: a sparse
module's ``P.idx``/``P.val``, a LoRA module's ``P.lora_A``/``P.lora_B``, a bottleneck adapter's
``adapter.NAME``) and dense extras (e.g. a ranking head) as ``extra.NAME``. Parameter names are the
encoder's normalised names (``encoder.layer.0.attention.self.query.weight``: no ``bert.`` prefix), as
fingerprints use. Safetensors only; a folder is written under a temporary name and renamed when complete.
This file is the kind-agnostic driver: what differs between kinds is asked of the kind.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

from rerank import __version__
from rerank.errors import RerankError
from rerank.files import atomic_dir, check_readable, validate_record
from rerank.modules import kinds
from rerank.modules.kinds.base import LOW_BITS, hash_tensors

FORMAT_VERSION = 1
CONFIG_FILE = "module_config.json"
WEIGHTS_FILE = "module.safetensors"
EXTRA = "extra."
ROLES = ("language", "task")


@dataclass(frozen=True)
class Fusion:
    """How a task module's cross-encoder ranking is fused with the first stage's (RRF, ``k``): the first
    stage's weight, the cross-encoder's being 1 — chosen on the module's dev split (0: its order alone)."""

    first_stage_weight: float = 0.0
    k: float = 60.0


@dataclass(frozen=True)
class DevFigures:
    """A task module's figures on its own dev split, behind ``--reranker auto``: the MRR of the composed
    cross-encoder and of the bi-encoder (the first stage) on the same groups (None: not recorded)."""

    mrr: float | None = None
    mrr_first_stage: float | None = None

    def earned(self) -> bool:
        """Whether the cross-encoder ranks at least as well as the first stage it would replace (trusted when a
        figure is missing: pairs without teacher scores record no bi-encoder MRR)."""
        return self.mrr is None or self.mrr_first_stage is None or self.mrr >= self.mrr_first_stage


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass
class ModuleConfig:
    """What ``module_config.json`` records. ``recipe`` and ``data`` are the training's free-form record;
    what search relies on is read from them once, typed: :attr:`fusion`, :attr:`dev`, :attr:`trained_on`.
    Validated on load (strict types, no unknown fields): a damaged file is one line, never a traceback."""

    __pydantic_config__ = {"strict": True, "allow_inf_nan": False, "extra": "forbid"}

    kind: str  # a name in rerank.modules.kinds.KINDS: sft (LT-SFT mask) | shira | lora | adapter
    role: str  # language | task
    language: str  # ISO 639-1 code ("" for a task module trained on several languages)
    base_model: str  # backbone name, e.g. multilingual-e5-small
    base_fingerprint: str  # the backbone's content fingerprint (rerank.backbone.fingerprint)
    shapes: dict[str, list[int]] = field(default_factory=dict)  # touched base parameter -> its shape
    density: float | None = None  # sparse kinds: touched entries / entries of the touched parameters
    rank: int | None = None  # lora: the largest rank of its targets
    scaling: float | None = None  # lora: the delta is scaling · B @ A (peft: lora_alpha / r)
    dynamic: list[float] | None = None  # [lo, hi]: the budgets one run trained (ranks for lora, densities sparse)
    adapter_config: dict | None = None  # adapter: the `adapters` library's config (e.g. seq_bn, seq_bn_inv)
    value_dtype: str = "float32"
    bits: int | None = None  # low-bit storage: 1, 2, 4, 8 (codes + per-block scales) or 16 (float16)
    block: int | None = None  # entries per scale, for 1–8 bits
    recipe: dict = field(default_factory=dict)  # how it was trained (steps, lr, loss, mask selection, …)
    data: dict = field(default_factory=dict)  # what it was trained on (source, size, hash)
    format_version: int = FORMAT_VERSION
    created_by: str = f"rerank {__version__}"

    @property
    def fusion(self) -> Fusion:
        """A task module's fusion with the first stage (language modules: none, weight 0)."""
        raw = self.recipe.get("fusion") if self.role == "task" and isinstance(self.recipe, dict) else None
        if not isinstance(raw, dict):
            return Fusion()
        weight, k = _number(raw.get("first_stage_weight")), _number(raw.get("k"))
        return Fusion(max(0.0, weight or 0.0), k if k is not None and k >= 0 else Fusion.k)

    @property
    def dev(self) -> DevFigures:
        recipe = self.recipe if isinstance(self.recipe, dict) else {}
        return DevFigures(_number(recipe.get("dev_mrr_composed")), _number(recipe.get("dev_mrr_teacher")))

    @property
    def trained_on(self) -> str | None:
        """A task module's: the kind of the language module below it in training (None: the bare backbone)."""
        below = self.recipe.get("language_module") if isinstance(self.recipe, dict) else None
        return str(below["kind"]) if isinstance(below, dict) and below.get("kind") else None

    @property
    def trained_alone(self) -> bool:
        """A task module whose recipe says it was trained with no language module below it."""
        recipe = self.recipe if isinstance(self.recipe, dict) else {}
        return self.role == "task" and "language_module" in recipe and not recipe["language_module"]


@dataclass
class Module:
    """A module in memory: its config, its kind's payload (:mod:`rerank.modules.kinds`; ``None`` builds an
    empty one) and dense extras."""

    config: ModuleConfig
    payload: object = None
    extras: dict = field(default_factory=dict)  # name -> torch.Tensor (dense extras)
    path: Path | None = None

    def __post_init__(self) -> None:
        if self.payload is None:
            self.payload = self.kind.empty()

    @property
    def kind(self):
        """The module's :class:`~rerank.modules.kinds.base.Kind`."""
        return kinds.get(self.config.kind, "module kind")

    @property
    def name(self) -> str:
        return str(self.path) if self.path else f"{self.config.role}:{self.config.language}:{self.config.kind}"

    def __len__(self) -> int:
        """Stored numbers: sparse entries, or LoRA/adapter parameters."""
        return self.kind.count(self.payload)

    @cached_property
    def content_key(self) -> str:
        """A stable key of the module's content (the canonical stacking order), computed once."""
        h = hashlib.sha256(self.config.kind.encode())
        self.kind.digest(self.payload, h)
        hash_tensors(h, self.extras)
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
    cfg = validate_record(raw, ModuleConfig, where, "the module description is damaged; rebuild the module")
    if cfg.kind not in kinds.KINDS:
        raise RerankError(f"{where}: unknown module kind {cfg.kind!r}", hint=f"one of: {', '.join(kinds.KINDS)}")
    if cfg.role not in ROLES:
        raise RerankError(f"{where}: unknown module role {cfg.role!r}", hint="language or task")
    return cfg


def _refuse_low_bits(module: Module, bits: int | None) -> None:
    if bits in LOW_BITS and not module.kind.low_bit:
        raise RerankError(
            f"{bits}-bit storage is for sparse modules; {module.name} is a {module.config.kind} module",
            hint="use --bits 16 (float16) for LoRA and adapter modules",
        )


def save_module(module: Module, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``module`` as a folder (atomically), its tensors stored as its config says."""
    from safetensors.torch import save_file

    _refuse_low_bits(module, module.config.bits)
    tensors = module.kind.write(module.payload, module.config)
    tensors |= {f"{EXTRA}{name}": t.contiguous() for name, t in module.extras.items()}
    with atomic_dir(path, overwrite, marker=CONFIG_FILE) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(
            json.dumps(asdict(module.config), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    module.path = Path(path)
    return Path(path)


def peek_config(path: str | os.PathLike) -> ModuleConfig | None:
    """A module folder's config, or None when it cannot be read (loading the module says why): for the
    choices search makes before it loads anything."""
    try:
        return read_config(path)
    except (RerankError, OSError):
        return None


def read_config(path: str | os.PathLike) -> ModuleConfig:
    """A module folder's checked config (the weights are not read): the one reader of ``module_config.json``."""
    p = Path(path)
    if not os.path.lexists(p):
        raise RerankError(f"module not found: {p}", hint="check the path (relative paths start at the current folder)")
    if not (p / CONFIG_FILE).is_file():
        raise RerankError(f"{p} is not a module folder (no {CONFIG_FILE})", hint="give a folder written by rerank")
    try:
        raw = json.loads((p / CONFIG_FILE).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise RerankError(f"{p / CONFIG_FILE} is not valid JSON ({e})", hint="the module is damaged") from e
    return _check_config(raw, p / CONFIG_FILE)


def check_module_files(path: str | os.PathLike) -> ModuleConfig:
    """A module folder's config, checked, and its weights file present, regular and with a readable
    safetensors header — what can be known without reading the tensors (a module given by the user is
    checked so before anything depends on it, e.g. on the ranking head it should bring)."""
    from rerank.backbone.files import safetensors_header

    p = Path(path)
    cfg = read_config(p)
    weights = p / WEIGHTS_FILE
    if not os.path.lexists(weights):
        raise RerankError(f"{p} has no {WEIGHTS_FILE}", hint="the module is incomplete; rebuild it")
    check_readable(weights, "module weights")
    safetensors_header(weights)
    return cfg


def load_module(
    path: str | os.PathLike, *, fingerprint: str | None = None, shapes: dict[str, tuple[int, ...]] | None = None
) -> Module:
    """Read and validate a module folder. ``fingerprint``: the loaded backbone's, refused if different.
    ``shapes``: the backbone's parameter shapes, to check names and index ranges against."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    cfg = read_config(p)
    if fingerprint is not None and cfg.base_fingerprint != fingerprint:
        raise RerankError(
            f"module {p} was trained on backbone {cfg.base_model} ({cfg.base_fingerprint[:19]}), "
            f"not on the loaded one ({fingerprint[:19]})",
            hint="load the backbone it was made for (--model), or use a module made for this one",
        )
    weights = p / WEIGHTS_FILE
    if not os.path.lexists(weights):
        raise RerankError(f"{p} has no {WEIGHTS_FILE}", hint="the module is incomplete; rebuild it")
    check_readable(weights, "module weights")  # a FIFO or a device would block the reader
    try:
        tensors = load_file(str(weights))
    except FileNotFoundError as e:
        raise RerankError(f"{p} has no {WEIGHTS_FILE}", hint="the module is incomplete; rebuild it") from e
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise RerankError(
            f"{p / WEIGHTS_FILE} is truncated or corrupt ({' '.join(str(e).split())[:120]})",
            hint="rebuild or re-download the module",
        ) from e
    kind = kinds.get(cfg.kind, "module kind")
    own, extras = {}, {}
    for k, t in tensors.items():
        if k.startswith(EXTRA):
            extras[k[len(EXTRA) :]] = t
        elif kind.owns(k):
            own[k] = t
        else:
            other = next((o for o in kinds.KINDS.values() if o.group != kind.group and o.owns(k)), None)
            if other is not None:
                raise RerankError(
                    f"module {p} is a {cfg.kind} module but holds {other.holds}", hint="the module is damaged"
                )
            raise RerankError(f"module {p}: unexpected tensor {k!r}", hint="the module is damaged; rebuild it")
    payload = kind.read(own, cfg, shapes, p)
    kind.check_config(cfg, payload, p)
    return Module(cfg, payload, extras, p)


def quantize_module(module: Module, bits: int, block: int | None = None) -> Module:
    """A copy of ``module`` stored at ``bits`` (1, 2, 4, 8: codes + per-block float16 scales; 16: float16;
    32: float32). Its in-memory values are what loading the saved module gives back."""
    import dataclasses

    from rerank.modules.quant import DEFAULT_BLOCK, check_bits

    check_bits(bits)
    if module.config.bits is not None and module.config.bits < 16 and bits > module.config.bits:
        raise RerankError(
            f"{module.name} is stored at {module.config.bits} bits; more bits cannot restore precision",
            hint="quantize the original module instead",
        )
    _refuse_low_bits(module, bits)
    block = block or DEFAULT_BLOCK
    cfg = dataclasses.replace(
        module.config,
        bits=bits,
        block=block if bits < 16 else None,
        value_dtype="float16" if bits == 16 else "float32",
    )
    return Module(cfg, module.kind.quantize(module.payload, bits, block), dict(module.extras), None)


def extra_names(module) -> set[str]:
    """The names of the dense extras a module (folder or :class:`Module`) carries. A folder's weights file is
    not read, only its header; an unreadable folder carries none (loading it reports why)."""
    if isinstance(module, Module):
        return set(module.extras)
    weights = Path(module) / WEIGHTS_FILE
    if not weights.is_file():
        return set()  # missing, or a FIFO that would block: loading it reports why
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            return {k[len(EXTRA) :] for k in f.keys() if k.startswith(EXTRA)}
    except Exception:  # noqa: BLE001 - a missing or damaged file is reported when the module is loaded
        return set()


def has_head(module) -> bool:
    """Whether a module (folder or :class:`Module`) carries a ranking head (``extra.classifier.*``, or the
    residual head's ``extra.residual_head.*``)."""
    return any(n.startswith(("classifier.", "residual_head.")) for n in extra_names(module))


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
    important first) — a smaller budget of the same module, chosen at load time. Kinds without a density
    budget are returned unchanged."""
    import dataclasses

    cut = module.kind.with_density(module.payload, module.config, density, shapes)
    if cut is None:
        return module
    payload, changes = cut
    return Module(dataclasses.replace(module.config, **changes), payload, dict(module.extras), module.path)


def truncate_rank(module: Module, rank: int) -> Module:
    """Keep the first ``rank`` ranks of a module with a rank budget (LoRA: ranks are stored most important
    first, as DyLoRA trains them). Other kinds, and modules of at most that rank, are returned unchanged."""
    import dataclasses

    if rank < 1:
        raise RerankError(f"rank {rank} is not a positive integer", hint="e.g. --module-rank 8")
    cut = module.kind.with_rank(module.payload, module.config, rank)
    if cut is None:
        return module
    payload, changes = cut
    return Module(dataclasses.replace(module.config, **changes), payload, dict(module.extras), module.path)
