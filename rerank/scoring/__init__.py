"""Scoring query–document pairs: a bi-encoder (cosine of embeddings) and a cross-encoder (one logit
from a ranking head on the backbone), with length-sorted, dynamically padded batches.

Heavy imports (torch, transformers) happen when a scorer is built, not when this package is imported.
"""

from __future__ import annotations

__all__ = ["BiEncoder", "CrossEncoder", "Encoder", "Reranker"]


def __getattr__(name: str):
    if name in ("Encoder", "BiEncoder"):
        from rerank.scoring import encoder

        return getattr(encoder, name)
    if name == "CrossEncoder":
        from rerank.scoring.cross import CrossEncoder

        return CrossEncoder
    if name == "Reranker":
        from rerank.scoring.reranker import Reranker

        return Reranker
    raise AttributeError(f"module 'rerank.scoring' has no attribute {name!r}")
