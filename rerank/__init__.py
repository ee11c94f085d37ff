"""rerank — multilingual and cross-lingual search: a first stage (BM25 through Pyserini), reranked.

The public API is re-exported here; heavy imports (pyserini, torch) happen only when used.
"""

from __future__ import annotations

__version__ = "0.1.0"

from rerank.errors import RerankError
from rerank.types import Document, Qrel, Query, ScoredDoc

__all__ = [
    "BM25Index",
    "Document",
    "Qrel",
    "Query",
    "RerankError",
    "ScoredDoc",
    "__version__",
    "build_index",
    "index_file",
]


def __getattr__(name: str):  # lazy: `import rerank` must not start a JVM
    if name in ("BM25Index", "build_index", "index_file"):
        from rerank.indexes import bm25

        return getattr(bm25, name)
    raise AttributeError(f"module 'rerank' has no attribute {name!r}")
