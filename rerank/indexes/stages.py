"""First stages behind one protocol: ``batch_search(queries, k)`` → {query id: ranked documents} and
``search(query, k)`` → ranked documents.

:class:`BM25Stage` and :class:`DenseStage` search one part of an index; :class:`Hybrid` fuses any two stages
by reciprocal rank (as pyserini's hybrid searcher composes any sparse and dense searcher). A pipeline builds
a stage by name from the parts of its index (:data:`STAGES`): adding a first stage is one class with a
``name``, ``needs_dense`` and ``build(parts, weights)``, and one entry there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from rerank.indexes.fusion import DEFAULT_K, rrf
from rerank.types import Query, ScoredDoc


class FirstStageSearcher(Protocol):
    name: str

    def search(self, query: Query, k: int = 10) -> list[ScoredDoc]: ...

    def batch_search(
        self, queries: Sequence[Query], k: int = 100, *, progress: bool = False, threads: int = 2
    ) -> dict[str, list[ScoredDoc]]: ...


@dataclass
class IndexParts:
    """What first stages are built from: an index folder's BM25 part and (loaded on first use) its dense part."""

    bm25: object  # rerank.indexes.bm25.BM25Index
    dense: Callable[[], object]  # -> rerank.indexes.dense.DenseIndex
    fusion_k: float = DEFAULT_K


class Stage:
    """The shared half of the protocol: one query is a batch of one."""

    name = ""
    needs_dense = False

    def search(self, query: Query, k: int = 10) -> list[ScoredDoc]:
        return self.batch_search([query], k)[query.query_id]

    def batch_search(
        self, queries: Sequence[Query], k: int = 100, *, progress: bool = False, threads: int = 2
    ) -> dict[str, list[ScoredDoc]]:
        raise NotImplementedError


class BM25Stage(Stage):
    """BM25 over the index's Lucene part (Pyserini), queries analysed as the index records."""

    name = "bm25"

    def __init__(self, index):
        self.index = index

    @classmethod
    def build(cls, parts: IndexParts, weights=None) -> BM25Stage:
        return cls(parts.bm25)

    def batch_search(self, queries, k=100, *, progress=False, threads=2):
        return self.index.batch_search(queries, k=k, threads=threads, progress=progress)


class DenseStage(Stage):
    """Exact or approximate nearest neighbours of the query embedding in the index's dense part (faiss)."""

    name = "dense"
    needs_dense = True

    def __init__(self, index):
        self.index = index

    @classmethod
    def build(cls, parts: IndexParts, weights=None) -> DenseStage:
        return cls(parts.dense())

    def batch_search(self, queries, k=100, *, progress=False, threads=2):
        return self.index.batch_search(queries, k=k)


class Hybrid(Stage):
    """Reciprocal-rank fusion of two stages' top ``k`` (weights: the first's, the second's; RRF ``fusion_k``)."""

    name = "hybrid"
    needs_dense = True

    def __init__(
        self, first: Stage, second: Stage, weights: Sequence[float] = (1.0, 1.0), fusion_k: float = DEFAULT_K
    ):
        self.first, self.second = first, second
        self.weights, self.fusion_k = tuple(float(w) for w in weights), fusion_k

    @classmethod
    def build(cls, parts: IndexParts, weights=None) -> Hybrid:
        return cls(BM25Stage.build(parts), DenseStage.build(parts), weights or (1.0, 1.0), parts.fusion_k)

    def batch_search(self, queries, k=100, *, progress=False, threads=2):
        a = self.first.batch_search(queries, k, progress=progress, threads=threads)
        b = self.second.batch_search(queries, k, progress=progress, threads=threads)
        return {
            q.query_id: rrf(
                [a.get(q.query_id, []), b.get(q.query_id, [])], self.weights, self.fusion_k, query_id=q.query_id
            )[:k]
            for q in queries
        }


STAGES: dict[str, type[Stage]] = {s.name: s for s in (BM25Stage, DenseStage, Hybrid)}
