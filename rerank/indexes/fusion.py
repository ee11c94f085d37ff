"""Reciprocal-rank fusion (Cormack, Clarke & Büttcher 2009): score(d) = Σ_i w_i / (k + rank_i(d)).

A document missing from a run contributes nothing from it. Ties are broken by the best rank the
document had in any run, then by the order of the runs, then by docid — deterministic, so fused runs
written to disk are strictly ordered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rerank.errors import RerankError
from rerank.types import ScoredDoc

DEFAULT_K = 60


def rrf(
    runs: Sequence[Sequence[ScoredDoc]],
    weights: Sequence[float] | None = None,
    k: float = DEFAULT_K,
    query_id: str | None = None,
    depth: int | None = None,
) -> list[ScoredDoc]:
    """Fuse one query's ranked lists (each sorted best first). ``depth`` cuts each list first."""
    weights = list(weights) if weights is not None else [1.0] * len(runs)
    if len(weights) != len(runs):
        raise RerankError(f"{len(weights)} fusion weights for {len(runs)} runs", hint="give one weight per run")
    if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
        raise RerankError("fusion weights must be ≥ 0 and not all 0", hint="e.g. --fusion-weights 1,1")
    if k < 0:
        raise RerankError(f"RRF k must be ≥ 0, not {k}", hint="the usual value is 60")
    score: dict[str, float] = {}
    best: dict[str, tuple[int, int]] = {}
    qid = query_id
    for j, (run, w) in enumerate(zip(runs, weights, strict=True)):
        for rank, sd in enumerate(run[:depth] if depth else run, start=1):
            qid = sd.query_id if qid is None else qid
            if w > 0:
                score[sd.doc_id] = score.get(sd.doc_id, 0.0) + w / (k + rank)
            if w > 0 and (sd.doc_id not in best or (rank, j) < best[sd.doc_id]):
                best[sd.doc_id] = (rank, j)
    order = sorted(score, key=lambda d: (-score[d], best[d], d))
    return [ScoredDoc(qid or "", d, score[d]) for d in order]


def fuse(
    runs: Sequence[Mapping[str, Sequence[ScoredDoc]]],
    weights: Sequence[float] | None = None,
    k: float = DEFAULT_K,
    depth: int | None = None,
) -> dict[str, list[ScoredDoc]]:
    """Fuse whole runs (query id → ranked list); queries missing from a run count as empty lists."""
    qids = list(dict.fromkeys(q for run in runs for q in run))
    return {q: rrf([run.get(q, ()) for run in runs], weights, k, query_id=q, depth=depth) for q in qids}
