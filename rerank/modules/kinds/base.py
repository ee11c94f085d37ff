"""The kind protocol: everything that differs between module kinds, behind one class.

A kind owns its *payload* — the tensors a module of that kind holds (sparse entries, LoRA pairs, adapter
weights) — and answers for it at every stage of a module's life:

* on disk: which tensor names of ``module.safetensors`` are its own, reading them back (checked against the
  backbone's shapes) and writing them; storage at fewer bits;
* in a backbone (:class:`rerank.modules.compose.ComposedModel`): checking a payload against the model, then
  ``plan`` (once per module set), ``prepare`` (may fail: nothing is written yet), ``write`` and ``restore``
  (never fail). Kinds are written in ``order`` and restored in reverse;
* budgets chosen at load time (a density, a rank), peft's format both ways, ``rerank modules info``;
* training: :meth:`Kind.train` makes the model trainable the kind's way, runs the loop it is given and
  collects the trained payload.

A kind imports nothing of the drivers (``format``, ``compose``, ``interop``) nor of training: the drivers
call it, and training hands it the loop as a function (:class:`TrainContext`). Adding a kind is one file in
this folder and one line in :mod:`rerank.modules.kinds`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rerank.errors import RerankError

LOW_BITS = (1, 2, 4, 8)  # codes + per-block scales; 16 and 32 bits are plain float storage


@dataclass
class KindSpec:
    """The hyper-parameters a kind's training reads (language and task modules share them)."""

    density: float = 0.02  # sparse kinds: share of entries trained
    rank: int = 8  # lora
    reduction: int = 16  # adapter: bottleneck reduction factor
    mask: str = "gradient"  # shira: random | magnitude | gradient
    embeddings: bool = True  # sparse kinds: the language's rows of the word embeddings too
    layers: int | None = None  # only the top this many encoder layers (None: all)
    l1: float = 0.0  # sft phase 2: L1 towards the base
    head_lr: float = 1e-3  # dense extras trained with the module (a new head)
    seed: int = 0
    dynamic: object = None  # rerank.training.dynamic.Dynamic, or None (a fixed budget)
    mosa: int = 0  # adapter: MoSA's sub-adapters (rerank.training.mosa; 0: a plain adapter)

    @classmethod
    def of(cls, cfg) -> KindSpec:
        """The spec of any training config that has these fields (LangConfig, TaskConfig)."""
        return cls(**{k: getattr(cfg, k) for k in cls.__dataclass_fields__ if hasattr(cfg, k)})


@dataclass
class TrainContext:
    """What a kind's training gets from the trainer. ``fit(params, loop, name, …)`` runs the training loop
    on ``params`` (checkpointed under ``work/<checkpoint>``, so an interrupted run resumes) and returns its
    log; ``step_loss(i)`` is one step's (loss, tokens); ``dev()`` the dev figure the loop selects by."""

    model: object  # the torch model to adapt (an encoder, or a cross-encoder)
    spec: KindSpec
    loop: object  # rerank.training.loop.LoopConfig (a dataclass: kinds shorten it with dataclasses.replace)
    fit: Callable
    step_loss: Callable
    dev: Callable | None
    work: Path
    role: str = "language"  # language | task
    language: str = ""
    recipe: dict = field(default_factory=dict)  # the kind records its own choices here
    extra_params: dict = field(default_factory=dict)  # dense extras (a new head) trained with the module
    vocab: object = None  # the language's pieces: the embedding rows sparse kinds may adapt
    mlm_head: object = None  # a language module's MLM head (tied to the embeddings)
    below: tuple = ()  # adapters active under this one (MAD-X: the language adapter under the task one)
    fingerprint: str = ""
    base_model: str = ""


@dataclass
class Trained:
    """A kind's training result: its payload, the config fields it sets, the loop's log, and the model the
    trainer continues with (a kind that wrapped the model gives the unwrapped one back)."""

    payload: object
    fields: dict
    log: object
    model: object


class Kind:
    """One module kind. Subclasses set the class attributes and implement the methods they need."""

    name = ""
    order = 0  # composition order: lower is written first and restored last
    group = ""  # kinds planned together (sft and shira share the sparse plan); default: the name
    default_lr = 1e-3
    low_bit = False  # stored at 1–8 bits (codes + scales)
    peft_type: str | None = None  # peft's name for it, when peft has it (written by export)
    reads_peft = True  # peft adapters of peft_type import as this kind
    holds = "tensors"  # what its payload is, in words ("sparse entries")
    dynamic_budget: str | None = None  # the budget one run can train a range of (DyLoRA): "rank", "density"

    def __init__(self) -> None:
        self.group = self.group or self.name

    def __repr__(self) -> str:
        return f"<module kind {self.name}>"

    # -- the payload ------------------------------------------------------------------------------
    def empty(self) -> object:
        """The payload of a module holding nothing yet."""
        return {}

    def owns(self, key: str) -> bool:
        """Whether ``key`` in ``module.safetensors`` is one of this kind's tensors."""
        raise NotImplementedError

    def read(self, tensors: dict, cfg, shapes: dict | None, where: Path) -> object:
        """The payload from its tensors (all of which ``owns``), checked; ``shapes``: the backbone's."""
        raise NotImplementedError

    def write(self, payload, cfg) -> dict:
        """The payload as named tensors, stored as ``cfg`` says (``value_dtype``, ``bits``, ``block``)."""
        raise NotImplementedError

    def check_config(self, cfg, payload, where: Path) -> None:
        """What a module of this kind must record beside its tensors (e.g. a LoRA scaling)."""

    def count(self, payload) -> int:
        """Stored numbers (sparse entries, or parameters)."""
        raise NotImplementedError

    def digest(self, payload, h) -> None:
        """Feed the payload's content to the hash ``h`` (a stable order)."""
        raise NotImplementedError

    def is_empty(self, payload) -> bool:
        return self.count(payload) == 0

    def quantize(self, payload, bits: int, block: int | None) -> object:
        """The payload as it reads back after storage at ``bits`` (16: float16, 32: float32; 1–8 only for
        a ``low_bit`` kind)."""
        raise NotImplementedError

    def describe(self, payload, cfg) -> str:
        """One line for ``rerank modules info``."""
        return f"{self.count(payload):,} numbers"

    # -- budgets chosen at load time --------------------------------------------------------------
    def with_density(self, payload, cfg, density: float, shapes: dict | None) -> tuple[object, dict] | None:
        """(payload, config changes) keeping ``density`` of each parameter; None: no density budget."""
        return None

    def with_rank(self, payload, cfg, rank: int) -> tuple[object, dict] | None:
        """(payload, config changes) keeping the first ``rank`` ranks; None: no rank budget."""
        return None

    # -- in a backbone ----------------------------------------------------------------------------
    def check(self, payload, model, name: str) -> None:
        """The payload against a composed model (its ``shapes``, ``names``), before anything is written."""

    def plan(self, modules: list, model) -> object:
        """What ``modules`` (of this kind's group, in canonical order, budgets applied) write, prepared once."""
        raise NotImplementedError

    def prepare(self, plan, model, state: dict) -> None:
        """What may still fail (nothing written yet): e.g. adding adapters to the model."""

    def apply(self, plan, model, state: dict) -> bool:
        """Write the plan into the model (cannot fail); True when it freed large temporaries."""
        raise NotImplementedError

    def restore(self, model, state: dict, next_plan=None) -> None:
        """Undo what :meth:`apply` wrote, exactly (``next_plan``: what is written next, when known)."""

    def stacked(self, state: dict) -> tuple[str, ...]:
        """Names inside the model of the layers this kind added and runs as a stack (adapters), in order."""
        return ()

    # -- peft -------------------------------------------------------------------------------------
    def to_peft(self, payload, cfg, prefix: str, name: str) -> tuple[dict, dict, list[str]]:
        """(tensors named with ``prefix``, peft config fields, target weight names)."""
        raise RerankError(
            f"{name} is a {self.name} module; peft export takes LoRA and sparse modules",
            hint="adapter modules are the adapters library's own format",
        )

    def from_peft(self, src: Path, pcfg: dict, tensors: dict, shapes: dict) -> tuple[object, dict]:
        """(payload, config fields) of a peft adapter folder's tensors of this kind."""
        raise NotImplementedError

    # -- training ---------------------------------------------------------------------------------
    def train(self, ctx: TrainContext) -> Trained:
        raise NotImplementedError


def peft_target(src: Path, name: str, shapes: dict) -> tuple[int, int]:
    """The (out, in) shape of an encoder linear weight a peft adapter adapts; refused for anything else."""
    shape = shapes.get(name)
    if shape is None or len(shape) != 2 or name.startswith("embeddings."):
        raise RerankError(
            f"{src}: adapts {name[: -len('.weight')]}, which is not a linear layer of this backbone's encoder",
            hint="only encoder linear layers can be imported (train with target_modules on the encoder)",
        )
    return shape


def float_dtype(cfg):
    """The torch dtype of a config's ``value_dtype``."""
    import torch

    return getattr(torch, cfg.value_dtype)


def hash_tensors(h, tensors: dict) -> None:
    """Names and values (as float32 bytes) of ``tensors`` (name → tensor or tuple of tensors), sorted by name."""
    for name in sorted(tensors):
        h.update(name.encode())
        value = tensors[name]
        for t in value if isinstance(value, tuple) else (value,):
            h.update(t.detach().float().contiguous().numpy().tobytes())
