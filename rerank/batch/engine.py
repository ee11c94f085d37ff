"""``rerank rerank-run``: rerank a TREC run (ours or any other system's) with the cross-encoder and its modules.

The run is read as a stream, one query at a time, and cut into *chunks*: consecutive queries of one query
language (so of one module set) holding about ``batch_pairs`` pairs to rerank. A chunk is the unit of work of
both engines — the local one scores chunks in this process; the Ray one (:mod:`rerank.batch.rayengine`) sends
them to an actor pool — and one chunk is scored by the same code in either, so the two write the same run.
Memory holds one chunk (local) or what Ray keeps in flight, never the whole run.

Each query keeps every line it had: its top ``depth`` by the run's score (ties in file order) is reranked
(fused with the run's order at the task module's first-stage weight, as ``rerank search`` fuses), the rest
follows in the run's order. A document the index does not have cannot be scored: it is counted, reported,
and by default kept below the reranked ones (``missing="keep"``; ``"drop"`` leaves such lines out, ``"error"``
stops before anything is written).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rerank.errors import RerankError
from rerank.types import Query, ScoredDoc

MISSING = ("keep", "drop", "error")
DEFAULT_BATCH_PAIRS = 512
EXAMPLES = 5  # missing document ids quoted in the record


@dataclass(frozen=True)
class Chunk:
    """Consecutive queries of one language: ``queries`` as (query id, text, language, run lines in file order)."""

    index: int
    lang: str
    queries: tuple[tuple[str, str, str, tuple[tuple[str, float], ...]], ...]

    def to_json(self) -> str:
        return json.dumps({"index": self.index, "lang": self.lang, "queries": self.queries}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Chunk:
        d = json.loads(text)
        qs = tuple((q[0], q[1], q[2], tuple((doc, float(s)) for doc, s in q[3])) for q in d["queries"])
        return cls(int(d["index"]), d["lang"], qs)


@dataclass
class Tally:
    """What a chunk (or a whole run) did: lines in and out, pairs reranked, documents the index lacks."""

    queries: int = 0
    lines_in: int = 0
    lines_out: int = 0
    pairs: int = 0
    missing_lines: int = 0  # lines naming a document the index does not have
    missing_in_depth: int = 0  # of those, within the reranked depth (so not reranked)
    missing_queries: int = 0
    missing_examples: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        for name in ("queries", "lines_in", "lines_out", "pairs", "missing_lines", "missing_in_depth"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.missing_queries += other.missing_queries
        room = EXAMPLES - len(self.missing_examples)
        self.missing_examples += [d for d in other.missing_examples if d not in self.missing_examples][:room]


def topics_map(queries: Iterable[Query], lang: str | None) -> dict[str, Query]:
    """Query id → query, each with its language: the topics' own (a TSV language column, a CLEF tag) or
    ``lang``; a query with neither is refused — the module set is chosen by it."""
    from rerank import languages

    default = languages.code(lang) if lang else ""
    out: dict[str, Query] = {}
    for q in queries:
        code = languages.code(q.lang) if q.lang else default
        if not code:
            raise RerankError(
                f"topic {q.query_id} has no language",
                hint="pass --lang, or give the topics file a language column (qid<TAB>text<TAB>lang)",
            )
        out[q.query_id] = q._replace(lang=code)
    return out


def scan(run: str | os.PathLike, topics: Mapping[str, Query]) -> tuple[int, int]:
    """Check the whole run before any scoring (so that a bad line or an unknown query stops it before anything
    is written): (queries, lines)."""
    from rerank.collections.trec import iter_run_groups

    n_q = n_lines = 0
    for qid, docs in iter_run_groups(run):
        if qid not in topics:
            raise RerankError(
                f"query {qid} of {run} is not in the topics",
                hint="give the topics file the run was made from (its query ids must match the run's)",
            )
        n_q += 1
        n_lines += len(docs)
    return n_q, n_lines


def chunks(run: str | os.PathLike, topics: Mapping[str, Query], depth: int, batch_pairs: int) -> Iterator[Chunk]:
    """The run as chunks: consecutive queries of one language, cut when the pairs to rerank reach
    ``batch_pairs`` (at least one query a chunk)."""
    from rerank.collections.trec import iter_run_groups

    index, lang, pending, pairs = 0, None, [], 0
    for qid, docs in iter_run_groups(run):
        q = topics[qid]
        if pending and (q.lang != lang or pairs >= batch_pairs):
            yield Chunk(index, lang, tuple(pending))
            index, pending, pairs = index + 1, [], 0
        lang = q.lang
        pending.append((qid, q.text, q.lang, tuple((d.doc_id, d.score) for d in docs)))
        pairs += min(depth, len(docs))
    if pending:
        yield Chunk(index, lang, tuple(pending))


class ChunkScorer:
    """One pipeline (the reranker with its modules, the index's store and vectors) scoring chunks into TREC
    lines. The local engine holds one; each Ray actor holds one."""

    def __init__(self, index: str | os.PathLike, settings, *, missing: str = "keep", tag: str = "rerank"):
        from rerank.collections.trec import check_tag
        from rerank.pipeline import Pipeline

        if missing not in MISSING:
            raise RerankError(f"unknown --missing {missing!r}", hint=f"use one of: {', '.join(MISSING)}")
        self.pipe = Pipeline(index, settings)
        if self.pipe.reranker_kind == "none":
            self.pipe.close()
            raise RerankError(
                "the reranker resolved to none: there is nothing to rerank with",
                hint="pass --reranker cross (a ranking head or a task module) or --reranker bi",
            )
        self.missing, self.tag = missing, check_tag(tag)

    @property
    def depth(self) -> int:
        return self.pipe.depth

    def score(
        self, chunk: Chunk, texts: Mapping[str, str] | None = None, have: set[str] | None = None
    ) -> tuple[list[str], Tally]:
        """The chunk's TREC lines (strict order, every query in run order) and its tally. ``texts`` and ``have``
        (what :func:`join_chunk` returns) when a join stage read them already."""
        from rerank.collections.trec import strict_order

        if texts is None or have is None:
            texts, have = join_chunk(self.pipe.bm25.docstore, chunk, self.depth)
        tally = Tally()
        queries, top, rest = [], {}, {}
        for qid, text, lang, lines in chunk.queries:
            ordered = ordered_lines(lines)
            head, tail = ordered[: self.depth], ordered[self.depth :]
            absent = [d for d, _ in ordered if d not in have]
            tally.queries += 1
            tally.lines_in += len(ordered)
            if absent:
                tally.missing_lines += len(absent)
                tally.missing_in_depth += sum(1 for d, _ in head if d not in texts)
                tally.missing_queries += 1
                room = EXAMPLES - len(tally.missing_examples)
                tally.missing_examples += [d for d in absent if d not in tally.missing_examples][:room]
            queries.append(Query(qid, text, lang))
            top[qid] = [ScoredDoc(qid, d, s) for d, s in head if d in texts]
            keep = [d for d, _ in head if d not in texts] if self.missing == "keep" else []
            rest[qid] = keep + [d for d, _ in tail if self.missing == "keep" or d in have]
        if tally.missing_lines and self.missing == "error":
            raise RerankError(
                f"{tally.missing_lines} lines of the run name documents the index does not have "
                f"(e.g. {', '.join(tally.missing_examples)})",
                hint="rerank with the index the run was made from, or pass --missing keep|drop",
            )
        ranked = self.pipe.rerank_candidates(queries, top, texts=texts)
        out: list[str] = []
        for q in queries:
            best = ranked[q.query_id]
            tally.pairs += len(top[q.query_id])
            floor = min((s.score for s in best), default=0.0)
            below = [ScoredDoc(q.query_id, d, floor - 1.0 - i) for i, d in enumerate(rest[q.query_id])]
            for rank, sd in enumerate(strict_order(best + below), start=1):
                out.append(f"{q.query_id} Q0 {sd.doc_id} {rank} {sd.score:.9g} {self.tag}\n")
        tally.lines_out += len(out)
        return out, tally

    def close(self) -> None:
        self.pipe.close()


def join_chunk(store, chunk: Chunk, depth: int) -> tuple[dict[str, str], set[str]]:
    """What a chunk needs from the index's store: the texts of the documents within its reranked ``depth`` that
    the store has (id → text), and every one of its document ids the store has (the tail too: missing lines are
    counted wherever they are)."""
    head = list(dict.fromkeys(d for q in chunk.queries for d, _ in ordered_lines(q[3])[:depth]))
    every = list(dict.fromkeys(d for q in chunk.queries for d, _ in q[3]))
    return {d: doc.contents for d, doc in store.get_many(head).items()}, store.has_many(every)


def ordered_lines(lines) -> list[tuple[str, float]]:
    """One query's run lines by score, highest first, ties in file order (as :func:`strict_order` breaks them)."""
    return [lines[i] for i in sorted(range(len(lines)), key=lambda i: (-lines[i][1], i))]


@dataclass
class Report:
    """The ``.json`` record beside the written run."""

    engine: str
    workers: int
    system: str
    depth: int
    batch_pairs: int
    missing: str
    seconds: float  # from the first chunk read to the last line written
    tally: Tally
    modules: dict[str, list[str]]
    topics_without_lines: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def pairs_per_s(self) -> float:
        return self.tally.pairs / self.seconds if self.seconds > 0 else 0.0

    def facts(self) -> dict:
        t = asdict(self.tally)
        return {
            "engine": self.engine,
            "workers": self.workers,
            "system": self.system,
            "depth": self.depth,
            "batch_pairs": self.batch_pairs,
            "queries": t["queries"],
            "lines_in": t["lines_in"],
            "lines_out": t["lines_out"],
            "pairs_reranked": t["pairs"],
            "seconds": round(self.seconds, 3),
            "pairs_per_s": round(self.pairs_per_s, 2),
            "missing": {
                "policy": self.missing,
                "lines": t["missing_lines"],
                "in_depth": t["missing_in_depth"],
                "queries": t["missing_queries"],
                "examples": t["missing_examples"],
            },
            "topics_without_lines": self.topics_without_lines,
            "modules": self.modules,
            **self.extra,
        }


def module_plan(pipe, langs: Iterable[str]) -> dict[str, list[str]]:
    from rerank.pipeline import display_path

    return {lang: [display_path(m) for m in pipe.modules_for(lang)] for lang in sorted(set(langs))}


def system_name(pipe) -> str:
    kind = pipe.reranker_kind
    w = pipe.fusion_weight(pipe.modules_for(None)) if kind == "cross" else 0.0
    return f"run+{kind}" + (f"@{w:g}" if w else "")


def rerank_run_local(
    run: str | os.PathLike,
    topics: Mapping[str, Query],
    out: str | os.PathLike,
    scorer: ChunkScorer,
    *,
    batch_pairs: int = DEFAULT_BATCH_PAIRS,
    overwrite: bool = False,
    progress: bool = False,
) -> Report:
    """Rerank ``run`` in this process into ``out`` (written whole or not at all)."""
    from tqdm.auto import tqdm

    from rerank.files import atomic_write

    n_queries, n_lines = scan(run, topics)
    tally = Tally()
    langs: set[str] = set()
    start = time.perf_counter()
    scoring = 0.0
    with (
        atomic_write(out, overwrite) as f,
        tqdm(total=n_queries, desc="reranking the run", unit="query", disable=not progress) as bar,
    ):
        for chunk in chunks(run, topics, scorer.depth, batch_pairs):
            t0 = time.perf_counter()
            lines, t = scorer.score(chunk)
            scoring += time.perf_counter() - t0
            f.writelines(lines)
            tally.add(t)
            langs.add(chunk.lang)
            bar.update(len(chunk.queries))
    seconds = time.perf_counter() - start
    return Report(
        "local",
        1,
        system_name(scorer.pipe),
        scorer.depth,
        batch_pairs,
        scorer.missing,
        seconds,
        tally,
        module_plan(scorer.pipe, langs),
        topics_without_lines=len(topics) - n_queries,
        extra={"scoring_seconds": round(scoring, 3)},
    )


def check_out(out: Path, run: Path, overwrite: bool) -> None:
    from rerank.files import check_writable_target

    if Path(out).resolve() == Path(run).resolve():
        raise RerankError(f"--out {out} is the run being reranked", hint="write the reranked run to a new file")
    check_writable_target(out, overwrite, inputs=(run,), create=False)
