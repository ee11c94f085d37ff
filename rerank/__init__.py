"""rerank — multilingual and cross-lingual search: a first stage (BM25 through Pyserini, dense, or both
fused), reranked by a bi- or cross-encoder.

The public API is re-exported here; heavy imports (pyserini, torch) happen only when used.
"""

from __future__ import annotations

__version__ = "0.1.0"

from rerank.errors import RerankError
from rerank.types import Document, Qrel, Query, ScoredDoc

__all__ = [
    "BM25Index",
    "BiEncoder",
    "CrossEncoder",
    "DenseIndex",
    "Encoder",
    "Pipeline",
    "Reranker",
    "Document",
    "Qrel",
    "Query",
    "RerankError",
    "ScoredDoc",
    "SearchSettings",
    "__version__",
    "build_dense",
    "build_index",
    "index_file",
    "rrf",
]

_LAZY = {
    "BM25Index": "rerank.indexes.bm25",
    "build_index": "rerank.indexes.bm25",
    "index_file": "rerank.indexes.bm25",
    "DenseIndex": "rerank.indexes.dense",
    "build_dense": "rerank.indexes.dense",
    "rrf": "rerank.indexes.fusion",
    "Encoder": "rerank.scoring.encoder",
    "BiEncoder": "rerank.scoring.encoder",
    "CrossEncoder": "rerank.scoring.cross",
    "Reranker": "rerank.scoring.reranker",
    "Pipeline": "rerank.pipeline",
    "SearchSettings": "rerank.pipeline",
}


def __getattr__(name: str):  # lazy: `import rerank` must not start a JVM or import torch
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rerank' has no attribute {name!r}")
