"""The module kinds, by name: one file each (the protocol is :class:`rerank.modules.kinds.base.Kind`).

Adding a kind is a new file here with a :class:`~rerank.modules.kinds.base.Kind` subclass and one line below.
"""

from __future__ import annotations

from rerank.errors import RerankError
from rerank.modules.kinds.adapter import ADAPTER
from rerank.modules.kinds.base import Kind, KindSpec, TrainContext, Trained
from rerank.modules.kinds.lora import LORA
from rerank.modules.kinds.sparse import SFT, SHIRA

KINDS: dict[str, Kind] = {k.name: k for k in (SFT, SHIRA, LORA, ADAPTER)}

__all__ = ["KINDS", "Kind", "KindSpec", "TrainContext", "Trained", "get", "names"]


def names() -> tuple[str, ...]:
    """The kinds' names, in registry order (the CLI's ``--kind`` choices)."""
    return tuple(KINDS)


def get(name: str, what: str = "--kind") -> Kind:
    """The kind called ``name``; an unknown name is one clear error naming the choices."""
    kind = KINDS.get(name)
    if kind is None:
        raise RerankError(f"unknown {what} {name!r}", hint=f"one of: {', '.join(KINDS)}")
    return kind
