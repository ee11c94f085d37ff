"""``rerank rerank-run``: rerank a TREC run (ours or any other system's) in this process or on a Ray cluster."""

from __future__ import annotations

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

ENGINES = ("local", "ray")


@user_errors
def rerank_run(
    run: Annotated[
        Path, typer.Option("--run", help="The TREC run to rerank (grouped by query, as TREC tools write).")
    ],
    topics: Annotated[
        Path, typer.Option("--topics", help="The run's topics: TSV (qid, text[, language]), TREC, CLEF or HC4.")
    ],
    index: Annotated[Path, typer.Option("--index", help="Index folder holding the run's documents.")],
    out_path: Annotated[Path, typer.Option("--out", help="Where the reranked TREC run goes (and its .json record).")],
    lang: Annotated[
        str | None, typer.Option("--lang", help="Query language where the topics give none (ky, ug, tr, …).")
    ] = None,
    topics_format: Annotated[str, typer.Option("--topics-format", help="auto, tsv, trec, clef or hc4.")] = "auto",
    field: Annotated[str, typer.Option("--field", help="Topic field: title, desc or title+desc.")] = "title",
    depth: Annotated[
        int | None,
        typer.Option("--depth", min=1, help="Documents reranked per query [default: 20 cross-encoder, 100 bi]."),
    ] = None,
    reranker: RerankerOption = "auto",
    model: ModelOption = None,
    dense_model: DenseModelOption = None,
    modules: ModulesOption = "auto",
    module_density: ModuleDensityOption = None,
    module_rank: ModuleRankOption = None,
    first_stage_weight: FirstStageWeightOption = "auto",
    max_length: MaxLengthOption = None,
    device: DeviceOption = None,
    precision: PrecisionOption = "auto",
    missing: Annotated[
        str,
        typer.Option(
            "--missing",
            help="Lines naming documents the index lacks (always counted): keep them below the reranked ones, "
            "drop them, or error.",
        ),
    ] = "keep",
    engine: Annotated[str, typer.Option("--engine", help="local (this process) or ray (a Ray cluster).")] = "local",
    address: Annotated[
        str | None,
        typer.Option(
            "--address", help="Ray cluster: auto, HOST:PORT or ray://HOST:PORT [default: start a local one]."
        ),
    ] = None,
    num_workers: Annotated[int, typer.Option("--num-workers", min=1, help="Ray actors, each holding a model.")] = 2,
    cpus_per_worker: Annotated[float, typer.Option("--cpus-per-worker", min=0.1, help="CPUs each actor asks.")] = 1.0,
    gpus_per_worker: Annotated[float, typer.Option("--gpus-per-worker", min=0.0, help="GPUs each actor asks.")] = 0.0,
    batch_pairs: Annotated[
        int, typer.Option("--batch-pairs", min=1, help="Pairs per unit of work (a chunk of consecutive queries).")
    ] = 512,
    tag: Annotated[str, typer.Option("--tag", help="Run tag of the written run.")] = "rerank",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Rerank a TREC run's top --depth per query with the cross-encoder and its modules (per query language).

    Every line of the run is kept: the reranked top first, then the rest in the run's order. Writes a strictly
    ordered TREC run to --out (atomically) and a record of what was done to --out.json.
    """
    from rerank.batch.engine import ChunkScorer, check_out, rerank_run_local, topics_map
    from rerank.cli._common import write_provenance
    from rerank.collections.topics import read_topics
    from rerank.collections.trec import check_tag
    from rerank.errors import RerankError
    from rerank.pipeline import SearchSettings

    if engine not in ENGINES:
        raise RerankError(f"unknown --engine {engine!r}", hint=f"use one of: {', '.join(ENGINES)}")
    if address is not None and engine != "ray":
        raise RerankError("--address names a Ray cluster", hint="add --engine ray, or drop --address")
    check_tag(tag)
    if not run.is_file():
        raise RerankError(f"run file not found: {run}", hint="give the TREC run to rerank")
    check_out(out_path, run, overwrite)
    queries = topics_map(read_topics(topics, topics_format, lang, field), lang)
    settings = SearchSettings(
        depth=depth,
        **reranker_fields(locals()),
    )
    if engine == "local":
        scorer = ChunkScorer(index, settings, missing=missing, tag=tag)
        try:
            report = rerank_run_local(
                run, queries, out_path, scorer, batch_pairs=batch_pairs, overwrite=overwrite, progress=not quiet
            )
        finally:
            scorer.close()
    else:
        from rerank.batch.rayengine import RayOptions, rerank_run_ray

        opts = RayOptions(address, num_workers, cpus_per_worker, gpus_per_worker)
        report = rerank_run_ray(
            run,
            queries,
            out_path,
            index,
            settings,
            opts,
            missing=missing,
            tag=tag,
            batch_pairs=batch_pairs,
            overwrite=overwrite,
            progress=not quiet,
        )
    facts = report.facts()
    write_provenance(out_path, run=str(run), topics=str(topics), index=str(index), tag=tag, **facts)
    t = report.tally
    out.print(
        f"wrote {t.lines_out:,} lines for {t.queries:,} queries to {out_path} ({report.system}, top {report.depth} "
        f"reranked, {report.engine} engine, {report.workers} worker{'s' if report.workers != 1 else ''}, "
        f"{report.pairs_per_s:.1f} pairs/s)"
    )
    if t.missing_lines:
        did = {"keep": "kept below the reranked ones", "drop": "left out"}[missing]
        err.print(
            f"note: {t.missing_lines:,} lines of {t.missing_queries:,} queries name documents {index} does not have "
            f"({t.missing_in_depth:,} within the depth, so not reranked; e.g. {', '.join(t.missing_examples)}): "
            f"{did} (--missing)"
        )
    if report.topics_without_lines:
        err.print(f"note: {report.topics_without_lines:,} topics have no lines in the run")
