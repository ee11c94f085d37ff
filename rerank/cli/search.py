"""``rerank search``: one query on screen, or a topics file into a TREC run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from rerank.cli._common import (
    DenseModelOption,
    DeviceOption,
    FirstStageWeightOption,
    MaxLengthOption,
    ModelOption,
    ModuleDensityOption,
    ModuleRankOption,
    ModulesOption,
    PrecisionOption,
    RerankerOption,
    err,
    out,
    reranker_fields,
    user_errors,
)


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
    first_stage: Annotated[
        str,
        typer.Option(
            "--first-stage",
            help="bm25, dense, hybrid (RRF of both), or auto: dense where the index has vectors, else bm25.",
        ),
    ] = "auto",
    reranker: RerankerOption = "auto",
    model: ModelOption = None,
    dense_model: DenseModelOption = None,
    modules: ModulesOption = "auto",
    module_density: ModuleDensityOption = None,
    module_rank: ModuleRankOption = None,
    first_stage_weight: FirstStageWeightOption = "auto",
    depth: Annotated[
        int | None,
        typer.Option(
            "--depth",
            min=1,
            help="How many first-stage results are reranked [default: 20 by the "
            "cross-encoder, 100 by the bi-encoder].",
        ),
    ] = None,
    fusion_weights: Annotated[
        str | None, typer.Option("--fusion-weights", help="RRF weights bm25,dense for hybrid, e.g. 0.25,1.")
    ] = None,
    fusion_k: Annotated[float, typer.Option("--fusion-k", min=0.0, help="RRF constant k.")] = 60.0,
    max_length: MaxLengthOption = None,
    device: DeviceOption = None,
    precision: PrecisionOption = "auto",
    k: Annotated[
        int | None, typer.Option("-k", "--k", min=1, help="Results per query [default: 100 for runs, 10 on screen].")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write a TREC run file here.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --output.")] = False,
    tag: Annotated[str | None, typer.Option("--tag", help="Run tag [default: the system name].")] = None,
    threads: Annotated[int, typer.Option("--threads", min=1, help="BM25 search threads for --topics.")] = 2,
    analyzer: Annotated[
        str | None,
        typer.Option("--analyzer", help="Refuse the index unless it was built with this analyzer (e.g. lucene-en)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    explain: Annotated[
        bool, typer.Option("--explain", help="Print what the search would do (every auto resolved) and stop.")
    ] = False,
) -> None:
    """Search an index: first stage (BM25, dense or hybrid), then rerank the top --depth.

    One query prints a table (rank, first-stage rank, docid, score, snippet). --topics searches every
    topic and writes a TREC run to --output, or prints it to stdout.
    """
    from rerank import languages
    from rerank.cli._common import write_provenance
    from rerank.collections.topics import read_topics
    from rerank.collections.trec import check_tag, format_run_lines, write_run
    from rerank.errors import RerankError
    from rerank.files import check_writable_target
    from rerank.pipeline import Pipeline, SearchSettings
    from rerank.types import Query

    if (query is None) == (topics is None):
        raise RerankError(
            "give either a query or --topics FILE", hint='e.g. rerank search --index DIR --lang tr "sorgu"'
        )
    weights = _weights(fusion_weights)
    code = languages.code(lang) if lang is not None else ""  # --lang "" is refused, not ignored
    if output is not None:  # refused now, not after the search; its folder is made only when it is written
        check_writable_target(output, overwrite, inputs=(topics,), create=False)
    if tag is not None:
        check_tag(tag)
    if query is not None:
        if not query.strip():
            raise RerankError("empty query", hint="give the query some words")
        queries = [Query("q1", query, code)]
    else:
        queries = read_topics(topics, topics_format, lang, field)
        code = code or (queries[0].lang if queries else "")
    k = k or (100 if (output or topics) else 10)
    settings = SearchSettings(
        first_stage=first_stage,
        depth=depth,
        fusion_k=fusion_k,
        fusion_weights=weights,
        analyzer=analyzer,
        **reranker_fields(locals()),
    )
    pipe = Pipeline(index, settings)
    try:
        if explain:
            for lang_ in dict.fromkeys(q.lang for q in queries):
                out.print(str(pipe.explain(lang_)), markup=False, highlight=False)
            return
        stage = pipe.plan(code or None)
        system = _system_name(stage, pipe)
        if code and code != pipe.doc_lang and stage.kind == "bm25" and not quiet:
            fix = (
                f"; {index} has no dense part: add it with `rerank index --dense-only --out {index}`"
                if not pipe.has_dense
                else ""
            )
            err.print(
                f"note: {code} queries over {pipe.doc_lang} documents: BM25 only matches words the two "
                f"languages share (names, numbers); a dense or hybrid first stage is needed across languages{fix}"
            )
        if pipe.auto_note and not quiet:
            err.print(f"note: {pipe.auto_note}")
        if pipe.reranker_kind != "none" and not quiet:
            _say_modules(pipe, queries)
        final, first = pipe.run(queries, k=k, progress=not quiet and query is None, threads=threads)
        if query is not None and output is None:
            _table(pipe, query, final["q1"], first["q1"], system)
            return
        flat = [sd for q in queries for sd in final[q.query_id]]
        tag = tag or system.replace(" ", "")
        if output is not None:
            n = write_run(flat, output, tag=tag, overwrite=overwrite)
            write_provenance(output, system=system, tag=tag, queries=len(queries), index=str(index))
            empty = sum(1 for q in queries if not final[q.query_id])
            msg = f"wrote {n:,} lines for {len(queries)} queries to {output} ({system})"
            out.print(msg + (f"; {empty} queries found nothing" if empty else ""))
        else:
            sys.stdout.writelines(format_run_lines(flat, tag))
    finally:
        pipe.close()


def _say_modules(pipe, queries) -> None:
    """One line per query language on stderr: which modules the reranker stacks."""
    from rerank.pipeline import display_path

    for lang in dict.fromkeys(q.lang for q in queries):
        plan = pipe.explain(lang)
        if plan.modules:
            names = " + ".join(display_path(m) for m in plan.modules)
            w = plan.first_stage_weight
            fused = f"; fused with the first stage at weight {w:g} (--first-stage-weight)" if w else ""
            err.print(f"modules{f' for {plan.lang} queries' if plan.lang else ''}: {names}{fused}")


def _weights(text: str | None) -> tuple[float, float] | None:
    from rerank.errors import RerankError

    if text is None:
        return None
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 2:
        raise RerankError(f"--fusion-weights {text!r} is not two numbers", hint="give bm25,dense, e.g. 0.25,1")
    return parts  # type: ignore[return-value]


def _system_name(stage, pipe) -> str:
    first = "hybrid" if stage.kind == "hybrid" else stage.kind
    if pipe.reranker_kind == "none":
        return first
    if pipe.reranker_kind == "cross" and pipe.first_stage_weight not in ("auto", None, 0.0):
        return f"{first}+{pipe.reranker.kind}@{pipe.first_stage_weight:g}"
    return f"{first}+{pipe.reranker.kind}"


def _table(pipe, query: str, hits, first, system: str) -> None:
    from rich import box
    from rich.table import Table

    from rerank.collections.trec import strict_order
    from rerank.indexes.tokenize import snippet

    if not hits:
        out.print(f"no document matches {query!r} in {pipe.path}")
        return
    hits = strict_order(hits)
    first_rank = {sd.doc_id: r for r, sd in enumerate(first, start=1)}
    docs = pipe.bm25.docstore.get_many([h.doc_id for h in hits])
    id_width = max(5, max(len(h.doc_id) for h in hits))
    reranked = pipe.reranker_kind != "none"
    room = max(30, out.width - id_width - 4 - 9 - 12 - (7 if reranked else 0))
    table = Table(
        box=box.SIMPLE_HEAD,
        title_justify="left",
        pad_edge=False,
        title=f"{system} · {pipe.path} · {pipe.bm25.meta.documents:,} docs ({pipe.doc_lang})"
        + (f" · reranked top {pipe.depth}" if reranked else ""),
    )
    table.add_column("rank", justify="right", no_wrap=True, min_width=4)
    if reranked:
        table.add_column("first", justify="right", no_wrap=True, min_width=5)
    table.add_column("docid", no_wrap=True, min_width=id_width)
    table.add_column("score", justify="right", no_wrap=True, min_width=7)
    table.add_column("snippet", no_wrap=True, overflow="ellipsis", min_width=20)
    for rank, h in enumerate(hits, start=1):
        d = docs.get(h.doc_id)
        row = [str(rank)] + ([str(first_rank.get(h.doc_id, "–"))] if reranked else [])
        table.add_row(*row, h.doc_id, f"{h.score:.3f}", snippet(d.contents if d else "", query, room))
    out.print(table)
