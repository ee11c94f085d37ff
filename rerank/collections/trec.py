"""TREC qrels (``qid iter docid rel``, graded) and run files (``qid Q0 docid rank score tag``).

Runs this product writes are always *well-formed for every evaluator*: ranks 1..k, each document
once per query, and scores strictly decreasing within a query. The last point matters because
evaluation tools break ties in opposite directions (trec_eval/pytrec_eval by docid descending,
comparing scores at float32 precision; others ascending), so a run with ties gets different
nDCG/RR from different tools. :func:`strict_order` breaks ties deterministically — by the order
the caller gave (e.g. first-stage rank), then by docid — and nudges tied scores down to the next
representable float32 so that no tool sees a tie.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from rerank.errors import RerankError, at_line
from rerank.files import atomic_write, numbered_lines
from rerank.types import Qrel, ScoredDoc

_QRELS_EXPECTED = "4 whitespace-separated columns: qid iteration docid relevance(integer)"
_RUN_EXPECTED = "6 whitespace-separated columns: qid Q0 docid rank score tag"


def read_qrels(path: str | os.PathLike) -> list[Qrel]:
    p = Path(path)
    out: list[Qrel] = []
    seen: set[tuple[str, str]] = set()
    for lineno, line in numbered_lines(p, "qrels file"):
        if not line.strip():
            continue
        cols = line.split()
        if len(cols) != 4:
            raise at_line(p, lineno, f"{len(cols)} columns", _QRELS_EXPECTED)
        qid, it, docid, rel = cols
        try:
            relevance = int(rel)
        except ValueError:
            raise at_line(p, lineno, f"relevance {rel[:40]!r} is not an integer", _QRELS_EXPECTED) from None
        if not -(2**31) <= relevance < 2**31:  # evaluators store grades as 32-bit integers
            raise at_line(p, lineno, f"relevance {rel[:40]} is out of range", "a grade such as 0, 1, 2 or 3")
        if (qid, docid) in seen:
            raise at_line(p, lineno, f"document {docid} judged twice for query {qid}", "one judgement per pair")
        seen.add((qid, docid))
        out.append(Qrel(qid, docid, relevance, it))
    if not out:
        raise RerankError(f"qrels file has no judgements: {p}", hint="give a TREC qrels file")
    return out


def write_qrels(qrels: Iterable[Qrel], path: str | os.PathLike, overwrite: bool = False) -> int:
    n = 0
    with atomic_write(path, overwrite) as f:
        for q in qrels:
            f.write(f"{q.query_id} {q.iteration or 0} {q.doc_id} {int(q.relevance)}\n")
            n += 1
    return n


def _run_line(p: Path, lineno: int, line: str) -> ScoredDoc:
    cols = line.split()
    if len(cols) != 6:
        raise at_line(p, lineno, f"{len(cols)} columns", _RUN_EXPECTED)
    qid, _q0, docid, rank, score, _tag = cols
    try:
        int(rank)
    except ValueError:
        raise at_line(p, lineno, f"rank {rank!r} is not an integer", _RUN_EXPECTED) from None
    try:
        value = float(score)
    except ValueError:
        raise at_line(p, lineno, f"score {score!r} is not a number", _RUN_EXPECTED) from None
    if not math.isfinite(value):
        raise at_line(p, lineno, f"score {score!r} is not finite", "a finite number")
    return ScoredDoc(qid, docid, value)


def read_run(path: str | os.PathLike) -> list[ScoredDoc]:
    """Read a TREC run. Lines keep their file order; use :func:`count_ties` to look for ties."""
    p = Path(path)
    out: list[ScoredDoc] = []
    seen: set[tuple[str, str]] = set()
    for lineno, line in numbered_lines(p, "run file"):
        if not line.strip():
            continue
        sd = _run_line(p, lineno, line)
        if (sd.query_id, sd.doc_id) in seen:
            raise at_line(
                p, lineno, f"document {sd.doc_id} appears twice for query {sd.query_id}", "each document once a query"
            )
        seen.add((sd.query_id, sd.doc_id))
        out.append(sd)
    if not out:
        raise RerankError(f"run file has no lines: {p}", hint="give a TREC run file")
    return out


def iter_run_groups(path: str | os.PathLike) -> Iterator[tuple[str, list[ScoredDoc]]]:
    """A TREC run read as a stream, one query at a time (its lines in file order), holding one query's lines
    in memory. The run must be grouped by query, as every TREC tool writes it; the same checks as
    :func:`read_run`, each error naming the file and line."""
    p = Path(path)
    done: set[str] = set()
    qid: str | None = None
    docs: list[ScoredDoc] = []
    seen: set[str] = set()
    for lineno, line in numbered_lines(p, "run file"):
        if not line.strip():
            continue
        sd = _run_line(p, lineno, line)
        if sd.query_id != qid:
            if sd.query_id in done:
                raise at_line(
                    p,
                    lineno,
                    f"query {sd.query_id} appears again after other queries",
                    f"a run grouped by query — sort it first: sort -s -k1,1 {p}",
                )
            if qid is not None:
                done.add(qid)
                yield qid, docs
            qid, docs, seen = sd.query_id, [], set()
        if sd.doc_id in seen:
            raise at_line(
                p, lineno, f"document {sd.doc_id} appears twice for query {sd.query_id}", "each document once a query"
            )
        seen.add(sd.doc_id)
        docs.append(sd)
    if qid is None:
        raise RerankError(f"run file has no lines: {p}", hint="give a TREC run file")
    yield qid, docs


def group_by_query(run: Iterable[ScoredDoc]) -> dict[str, list[ScoredDoc]]:
    groups: dict[str, list[ScoredDoc]] = {}
    for sd in run:
        groups.setdefault(sd.query_id, []).append(sd)
    return groups


def count_ties(run: Iterable[ScoredDoc]) -> int:
    """Number of documents whose score equals (at float32 precision, as trec_eval sees it) another's
    score for the same query."""
    ties = 0
    for docs in group_by_query(run).values():
        scores = np.asarray([d.score for d in docs], dtype=np.float32)
        _, counts = np.unique(scores, return_counts=True)
        ties += int(counts[counts > 1].sum())
    return ties


def strict_order(docs: Sequence[ScoredDoc]) -> list[ScoredDoc]:
    """Sort one query's documents by score (desc), ties by input order then docid, and make scores
    strictly decreasing at float32 precision. Duplicated docids are refused."""
    ids = [d.doc_id for d in docs]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise RerankError(f"document {dup} is ranked twice for one query", hint="deduplicate the ranking first")
    order = sorted(range(len(docs)), key=lambda i: (-docs[i].score, i, docs[i].doc_id))
    out: list[ScoredDoc] = []
    prev = math.inf
    for i in order:
        d = docs[i]
        s = np.float32(d.score)
        if not s < prev:
            s = np.nextafter(np.float32(prev), np.float32(-np.inf), dtype=np.float32)
        prev = s
        out.append(ScoredDoc(d.query_id, d.doc_id, float(s)))
    return out


def check_tag(tag: str) -> str:
    """A run's tag is one printable field (TREC's sixth column)."""
    if not tag or any(c.isspace() for c in tag) or not tag.isprintable():
        raise RerankError(
            f"run tag {tag!r} must be one word of printable characters", hint="pass a tag without spaces"
        )
    return tag


def format_run_lines(run: Iterable[ScoredDoc], tag: str = "rerank") -> Iterator[str]:
    """TREC lines for ``run``, grouped by query in first-seen order, each query in strict order."""
    check_tag(tag)
    for qid, docs in group_by_query(run).items():
        for rank, d in enumerate(strict_order(docs), start=1):
            yield f"{qid} Q0 {d.doc_id} {rank} {d.score:.9g} {tag}\n"


def write_run(run: Iterable[ScoredDoc], path: str | os.PathLike, tag: str = "rerank", overwrite: bool = False) -> int:
    """Write a TREC run atomically; returns the number of lines."""
    n = 0
    with atomic_write(path, overwrite) as f:
        for line in format_run_lines(run, tag):
            f.write(line)
            n += 1
    return n
