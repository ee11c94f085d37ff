"""``rerank search``: one query on screen, or a topics file into a TREC run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from rerank.cli._common import err, out, user_errors


@user_errors
def search(
    query: Annotated[str | None, typer.Argument(help="The query text (or use --topics).")] = None,
    index: Annotated[Path, typer.Option("--index", help="Index folder written by `rerank index`.")] = ...,  # type: ignore[assignment]
    lang: Annotated[str | None, typer.Option("--lang", help="Query language (ISO 639-1: ky, ug, tr, en, …).")] = None,
    topics: Annotated[
        Path | None, typer.Option("--topics", help="Topics file: TSV, TREC, CLEF SGML or HC4 JSONL.")
    ] = None,
    topics_format: Annotated[str, typer.Option("--topics-format", help="auto, tsv, trec, clef or hc4.")] = "auto",
    field: Annotated[str, typer.Option("--field", help="Topic field to search: title, desc or title+desc.")] = "title",
    k: Annotated[
        int | None, typer.Option("-k", "--k", min=1, help="Results per query [default: 100 for runs, 10 on screen].")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write a TREC run file here.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --output.")] = False,
    tag: Annotated[str, typer.Option("--tag", help="Run tag (6th column).")] = "rerank-bm25",
    threads: Annotated[int, typer.Option("--threads", min=1, help="Search threads for --topics.")] = 2,
    analyzer: Annotated[
        str | None,
        typer.Option("--analyzer", help="Refuse the index unless it was built with this analyzer (e.g. lucene-en)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Search an index with BM25: a table for one query, a TREC run for a topics file.

    One query prints rank, docid, score and a snippet. --topics searches every topic (in threads) and
    writes a TREC run to --output, or prints it to stdout.
    """
    from rerank import languages
    from rerank.collections._io import check_writable_target
    from rerank.collections.topics import read_topics
    from rerank.collections.trec import format_run_lines, write_run
    from rerank.errors import RerankError
    from rerank.indexes.bm25 import BM25Index
    from rerank.types import Query

    if (query is None) == (topics is None):
        raise RerankError(
            "give either a query or --topics FILE", hint='e.g. rerank search --index DIR --lang tr "sorgu"'
        )
    code = languages.code(lang) if lang else ""
    if output is not None:
        check_writable_target(output, overwrite)
    if query is not None:
        if not query.strip():
            raise RerankError("empty query", hint="give the query some words")
        queries = [Query("q1", query, code)]
    else:
        queries = read_topics(topics, topics_format, lang, field)
        code = code or (queries[0].lang if queries else "")
    k = k or (100 if (output or topics) else 10)
    idx = BM25Index(index, analyzer=analyzer)
    if code and code != idx.meta.language and not quiet:
        err.print(
            f"note: {code} queries over {idx.meta.language} documents: BM25 only matches words the two "
            "languages share (names, numbers); a reranker or dense first stage is needed across languages"
        )
    try:
        if query is not None and output is None:
            hits = idx.search(query, k=k, query_id="q1")
            _table(idx, query, hits)
            return
        run = idx.batch_search(queries, k=k, threads=threads, progress=not quiet)
        flat = [sd for q in queries for sd in run[q.query_id]]
        if output is not None:
            n = write_run(flat, output, tag=tag, overwrite=overwrite)
            empty = sum(1 for q in queries if not run[q.query_id])
            msg = f"wrote {n:,} lines for {len(queries)} queries to {output}"
            out.print(msg + (f" ({empty} queries found nothing)" if empty else ""))
        else:
            sys.stdout.writelines(format_run_lines(flat, tag))
    finally:
        idx.close()


def snippet(text: str, query: str, width: int = 90) -> str:
    """One line of the document, starting a little before the earliest query word it contains."""
    from rerank.indexes.tokenize import tokenize

    flat = " ".join(text.split())
    low = flat.casefold()
    hits = [pos for tok in set(tokenize(query)) if len(tok) > 2 and (pos := low.find(tok)) >= 0]
    start = min(hits) if hits else 0
    start = 0 if start < width // 3 else flat.rfind(" ", 0, max(0, start - 15)) + 1
    piece = flat[start : start + width]
    return ("…" if start else "") + piece + ("…" if start + width < len(flat) else "")


def _table(idx, query: str, hits) -> None:
    from rich import box
    from rich.table import Table

    from rerank.collections.trec import strict_order

    if not hits:
        out.print(f"no document matches {query!r} in {idx.path}")
        return
    hits = strict_order(hits)
    docs = idx.docstore.get_many([h.doc_id for h in hits])
    id_width = max(5, max(len(h.doc_id) for h in hits))
    room = max(30, out.width - id_width - 4 - 9 - 12)
    table = Table(
        box=box.SIMPLE_HEAD,
        title_justify="left",
        pad_edge=False,
        title=f"BM25 · {idx.path} · {idx.meta.documents:,} docs · analyzer {idx.meta.analyzer}",
    )
    table.add_column("rank", justify="right", no_wrap=True, min_width=4)
    table.add_column("docid", no_wrap=True, min_width=id_width)
    table.add_column("score", justify="right", no_wrap=True, min_width=7)
    table.add_column("snippet", no_wrap=True, overflow="ellipsis", min_width=20)
    for rank, h in enumerate(hits, start=1):
        d = docs.get(h.doc_id)
        table.add_row(str(rank), h.doc_id, f"{h.score:.3f}", snippet(d.contents if d else "", query, room))
    out.print(table)
