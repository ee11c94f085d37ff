"""``rerank train``: language modules by masked-language modelling (task modules and pairs follow)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rerank.cli._common import (
    DynamicDensityOption,
    DynamicRankOption,
    MosaOption,
    ProcessesOption,
    check_split,
    dynamic_budgets,
    out,
    user_errors,
)
from rerank.modules.kinds import names as kind_names

app = typer.Typer(help="Train composable modules.", no_args_is_help=True)
KIND_CHOICES = " | ".join(kind_names())  # the registered module kinds


@app.command("lang")
@user_errors
def lang(
    language: Annotated[str, typer.Option("--lang", help="The language (ISO code or name), e.g. ky.")],
    text: Annotated[
        list[Path],
        typer.Option(
            "--text", help="Plain text: one document a line, or blank-line separated; repeat for more files."
        ),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="The module folder to write.")],
    kind: Annotated[str, typer.Option("--kind", help=f"{KIND_CHOICES} (sft: LT-SFT).")] = "shira",
    density: Annotated[str, typer.Option("--density", help="sft/shira: share of entries trained, e.g. 2%.")] = "2%",
    rank: Annotated[int, typer.Option("--rank", min=1, help="lora: rank.")] = 8,
    reduction: Annotated[int, typer.Option("--reduction", min=1, help="adapter: bottleneck reduction.")] = 16,
    mask: Annotated[str, typer.Option("--mask", help="shira: random | magnitude | gradient.")] = "gradient",
    embeddings: Annotated[
        bool, typer.Option("--embeddings/--no-embeddings", help="sft/shira: also the language's embedding rows.")
    ] = True,
    max_steps: Annotated[int, typer.Option("--max-steps", min=1, help="Optimizer steps.")] = 1000,
    head_steps: Annotated[int | None, typer.Option("--head-steps", min=0, help="MLM head steps first.")] = None,
    time_budget: Annotated[str | None, typer.Option("--time-budget", help="Stop after this long, e.g. 25m.")] = None,
    seq_len: Annotated[int, typer.Option("--seq-len", min=16, max=512, help="Tokens per sequence.")] = 128,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Sequences per step.")] = 16,
    grad_accum: Annotated[int, typer.Option("--grad-accum", min=1, help="Micro-batches per step.")] = 1,
    lr: Annotated[float | None, typer.Option("--lr", min=0.0, help="Learning rate [default: per kind].")] = None,
    l1: Annotated[float, typer.Option("--l1", min=0.0, help="sft: L1 pull of the deltas to the base.")] = 0.0,
    max_vocab: Annotated[int | None, typer.Option("--max-vocab", min=100, help="Output vocabulary cap.")] = None,
    eval_every: Annotated[int, typer.Option("--eval-every", min=1, help="Dev evaluation interval.")] = 100,
    patience: Annotated[int, typer.Option("--patience", min=0, help="Evaluations without gain (0: off).")] = 3,
    seed: Annotated[int, typer.Option("--seed", help="Seed of data order, masks and initialisation.")] = 0,
    model: Annotated[Path | None, typer.Option("--model", help="Backbone [default: embedded e5-small].")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    processes: ProcessesOption = 1,
    dynamic_rank: DynamicRankOption = None,
    dynamic_density: DynamicDensityOption = None,
    mosa: MosaOption = 0,
) -> None:
    """Train a language module by masked-language modelling (resumes from <out>.work/ if interrupted)."""

    from rerank.modules.format import module_size, parse_density
    from rerank.training.lang import LangConfig, train_language_module
    from rerank.training.loop import parse_budget

    if batch_size * seq_len > 64 * 512:
        from rerank.errors import RerankError

        raise RerankError(
            f"--batch-size {batch_size} × --seq-len {seq_len} tokens per step would not fit in memory here",
            hint="use --grad-accum to reach a large batch in smaller steps",
        )
    rank, dens, dyn = dynamic_budgets(kind, rank, parse_density(density), dynamic_rank, dynamic_density, seed, mosa)
    cfg = LangConfig(
        kind=kind,
        density=dens,
        rank=rank,
        dynamic=dyn,
        mosa=mosa,
        reduction=reduction,
        mask=mask,
        embeddings=embeddings,
        max_steps=max_steps,
        head_steps=head_steps,
        seq_len=seq_len,
        batch_size=batch_size,
        grad_accum=grad_accum,
        lr=lr,
        l1=l1,
        max_vocab=max_vocab,
        time_budget=parse_budget(time_budget),
        eval_every=eval_every,
        patience=patience or None,
        seed=seed,
    )
    check_split(batch_size, processes, "--batch-size")
    from rerank.distributed import launch

    kwargs = dict(lang=language, text_files=text, out=out_dir, cfg=cfg, model=model, overwrite=overwrite)
    m = launch(train_language_module, {**kwargs, "progress": not quiet}, processes)
    if m is None:
        from rerank.modules.format import load_module

        m = load_module(out_dir)
    r = m.config.recipe
    out.print(
        f"wrote {out_dir}: {kind} language module for {m.config.language}, {len(m):,} numbers, "
        f"{module_size(out_dir):,} bytes; dev MLM loss {r['dev_loss_before']} → {r['dev_loss_best']} "
        f"in {r['steps']} steps, {r['seconds']} s ({r['stopped']})"
    )


@app.command("pairs")
@user_errors
def pairs(
    out_file: Annotated[Path, typer.Option("--out", help="The training file to write (JSONL).")],
    docs: Annotated[
        Path | None, typer.Option("--docs", help="Synthetic pairs from a document collection (JSONL or SGML).")
    ] = None,
    topics: Annotated[
        Path | None, typer.Option("--topics", help="Real relevance data: training topics (with --qrels, --index).")
    ] = None,
    qrels: Annotated[Path | None, typer.Option("--qrels", help="The topics' TREC qrels.")] = None,
    index: Annotated[
        Path | None,
        typer.Option(
            "--index",
            help="With --topics: the index of the documents, searched for hard negatives; "
            "with --docs: a BM25 index of --docs (else built on the fly).",
        ),
    ] = None,
    first_stage: Annotated[
        str, typer.Option("--first-stage", help="With --topics: bm25 | dense | hybrid | auto, for hard negatives.")
    ] = "dense",
    depth: Annotated[
        int, typer.Option("--depth", min=2, help="With --topics: negatives are drawn from this many top hits.")
    ] = 20,
    answers: Annotated[
        Path | None,
        typer.Option(
            "--answers",
            help="With --topics: answer strings (answers.*.jsonl); hits containing one are "
            "dropped as likely relevant.",
        ),
    ] = None,
    teacher_margin: Annotated[
        float | None,
        typer.Option(
            "--teacher-margin", help="With --topics: also drop hits the bi-encoder scores this far above the positive."
        ),
    ] = None,
    dev_topics: Annotated[
        list[Path],
        typer.Option("--dev-topics", help="Dev topic files that must not share a query with --topics (refused)."),
    ] = [],  # noqa: B006
    language: Annotated[
        str | None,
        typer.Option("--lang", help="The documents' language (--docs; default en) or the topics' (--topics)."),
    ] = None,
    method: Annotated[
        str, typer.Option("--method", help="ict (a sentence → its passage) | title (title → body).")
    ] = "ict",
    negatives: Annotated[int, typer.Option("--negatives", min=1, help="Negatives per query.")] = 7,
    random_negatives: Annotated[
        int, typer.Option("--random-negatives", min=0, help="How many of them are random documents, not BM25's.")
    ] = 0,
    max_queries: Annotated[int | None, typer.Option("--max-queries", min=1, help="Stop after this many.")] = None,
    teacher: Annotated[
        bool,
        typer.Option(
            "--teacher/--no-teacher",
            help="Add the bi-encoder's scores (the residual head and the "
            "distillation losses need them) [default: on with --topics].",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of sentence choice and order.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Training queries: from real relevance data (--topics, --qrels: hard negatives from the first stage over
    --index, likely false negatives dropped), or synthetic ones from a collection (--docs: pseudo-queries,
    positives, BM25 hard negatives)."""
    from rerank.errors import RerankError

    if (docs is None) == (topics is None):
        raise RerankError(
            "give either --docs (synthetic pairs) or --topics with --qrels and --index (real ones)",
            hint="e.g. rerank train pairs --topics T --qrels Q --index I --out pairs.jsonl",
        )
    if topics is not None:
        from rerank.training.pairs import pairs_from_qrels

        if qrels is None or index is None:
            raise RerankError("--topics needs --qrels and --index", hint="the topics' judgements and documents")
        facts = pairs_from_qrels(
            topics,
            qrels,
            index,
            out_file,
            lang=language,
            first_stage=first_stage,
            depth=depth,
            negatives=negatives,
            answers=answers,
            teacher=True if teacher is None else teacher,
            teacher_margin=teacher_margin,
            dev_topics=dev_topics,
            max_queries=max_queries,
            seed=seed,
            overwrite=overwrite,
            progress=not quiet,
        )
        f = facts["filtered"]
        out.print(
            f"wrote {out_file}: {facts['queries']:,} training queries, {negatives} negatives each from the "
            f"{facts['first_stage']} top {depth} (dropped as likely relevant: {f['answer']:,} with the answer, "
            f"{f['duplicate']:,} duplicates, {f['teacher']:,} by the teacher margin); positive first for "
            f"{facts['positive_first']:.1%}, in the top {depth} for "
            f"{facts['positive_in_first_stage_top']['share']:.1%} "
            f"(how: {out_file}.json)"
        )
        return
    from rerank.training.pairs import make_pairs

    facts = make_pairs(
        docs,
        out_file,
        lang=language or "en",
        method=method,
        negatives=negatives,
        random_negatives=random_negatives,
        max_queries=max_queries,
        teacher=bool(teacher),
        seed=seed,
        index=index,
        overwrite=overwrite,
        progress=not quiet,
    )
    out.print(
        f"wrote {out_file}: {facts['queries']:,} training queries ({method}) from {facts['documents']:,} documents, "
        f"{negatives - random_negatives} BM25 + {random_negatives} random negatives each (how: {out_file}.json)"
    )


@app.command("task")
@user_errors
def task(
    pairs_file: Annotated[
        list[Path],
        typer.Option(
            "--pairs",
            help="Training queries: rerank train pairs' JSONL, TSV triples, or a downloaded ir_datasets id "
            "with document pairs (e.g. msmarco-passage/train/triples-small); repeat to train on several.",
        ),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="The module folder to write.")],
    source_lang: Annotated[str, typer.Option("--source-lang", help="The training data's language.")] = "en",
    lang_module: Annotated[
        Path | None, typer.Option("--lang-module", help="The source language's module, applied and frozen.")
    ] = None,
    kind: Annotated[str, typer.Option("--kind", help=f"{KIND_CHOICES}.")] = "shira",
    loss: Annotated[
        str, typer.Option("--loss", help="pointwise | pairwise | listwise | margin-mse | listwise-kd (teacher).")
    ] = "listwise",
    density: Annotated[str, typer.Option("--density", help="sft/shira: share of entries trained.")] = "2%",
    rank: Annotated[int, typer.Option("--rank", min=1, help="lora: rank.")] = 8,
    reduction: Annotated[int, typer.Option("--reduction", min=1, help="adapter: bottleneck reduction.")] = 16,
    mask: Annotated[str, typer.Option("--mask", help="shira: random | magnitude | gradient.")] = "gradient",
    list_head: Annotated[
        bool, typer.Option("--list-head", help="Add the list-aware head: attention over the candidate list.")
    ] = False,
    head: Annotated[
        str,
        typer.Option(
            "--head",
            help="plain (first-token pooler + classifier) | residual (the bi-encoder's score + a "
            "correction from the mean-pooled states, starting at zero).",
        ),
    ] = "plain",
    layers: Annotated[
        int | None, typer.Option("--layers", min=1, help="Train only the top this many encoder layers [default: all].")
    ] = None,
    dev_topics: Annotated[
        list[Path],
        typer.Option("--dev-topics", help="Topic files of dev sets: refused if they share a query with the pairs."),
    ] = [],  # noqa: B006
    hard_fraction: Annotated[
        float,
        typer.Option(
            "--hard-fraction",
            min=0.0,
            max=1.0,
            help="Share of each step's queries drawn by the first stage's own loss on them (needs teacher).",
        ),
    ] = 0.0,
    select: Annotated[
        str, typer.Option("--select", help="The dev figure that picks the kept state: mrr | loss (listwise).")
    ] = "mrr",
    max_steps: Annotated[int, typer.Option("--max-steps", min=1, help="Optimizer steps.")] = 500,
    max_queries: Annotated[
        int | None, typer.Option("--max-queries", min=1, help="Read at most this many training queries.")
    ] = None,
    batch_queries: Annotated[int, typer.Option("--batch-queries", min=1, help="Queries per step.")] = 4,
    negatives: Annotated[int, typer.Option("--negatives", min=1, help="Negatives per query.")] = 7,
    grad_accum: Annotated[int, typer.Option("--grad-accum", min=1, help="Micro-batches per step.")] = 1,
    patience: Annotated[int, typer.Option("--patience", min=0, help="Evaluations without gain (0: off).")] = 3,
    probe_queries: Annotated[
        int, typer.Option("--probe-queries", min=0, help="Phase 0: the head alone on this many queries (0: off).")
    ] = 512,
    max_length: Annotated[int, typer.Option("--max-length", min=16, max=512, help="Tokens per pair.")] = 256,
    lr: Annotated[float | None, typer.Option("--lr", min=0.0, help="Learning rate [default: per kind].")] = None,
    time_budget: Annotated[str | None, typer.Option("--time-budget", help="Stop after this long, e.g. 25m.")] = None,
    eval_every: Annotated[int, typer.Option("--eval-every", min=1, help="Dev evaluation interval.")] = 50,
    seed: Annotated[int, typer.Option("--seed", help="Seed.")] = 0,
    model: Annotated[Path | None, typer.Option("--model", help="Backbone [default: embedded e5-small].")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    processes: ProcessesOption = 1,
    dynamic_rank: DynamicRankOption = None,
    dynamic_density: DynamicDensityOption = None,
    mosa: MosaOption = 0,
) -> None:
    """Train a ranking task module (with its cross-encoder head) on top of a frozen language module."""
    from rerank.modules.format import module_size, parse_density
    from rerank.training.loop import parse_budget
    from rerank.training.task import TaskConfig, train_task_module

    if batch_queries * (1 + negatives) * max_length > 64 * 512:
        from rerank.errors import RerankError

        raise RerankError(
            f"{batch_queries} queries × {1 + negatives} documents × {max_length} tokens per step would not fit here",
            hint="fewer --batch-queries or --negatives, or a shorter --max-length",
        )
    check_split(batch_queries, processes, "--batch-queries")
    if lang_module is None and head == "plain":  # the residual recipe trains on the bare backbone by design
        from rerank.errors import warn

        warn("no --lang-module: the task module learns on the bare backbone (the paper stacks it on one)")
    rank, dens, dyn = dynamic_budgets(kind, rank, parse_density(density), dynamic_rank, dynamic_density, seed, mosa)
    cfg = TaskConfig(
        kind=kind,
        loss=loss,
        density=dens,
        rank=rank,
        dynamic=dyn,
        mosa=mosa,
        reduction=reduction,
        mask=mask,
        max_steps=max_steps,
        batch_queries=batch_queries,
        negatives=negatives,
        max_length=max_length,
        lr=lr,
        time_budget=parse_budget(time_budget),
        eval_every=eval_every,
        seed=seed,
        list_head=list_head,
        max_queries=max_queries,
        grad_accum=grad_accum,
        patience=patience or None,
        probe_queries=probe_queries,
        head=head,
        layers=layers,
        hard_fraction=hard_fraction,
        select=select,
    )
    from rerank.distributed import launch

    kwargs = dict(
        pairs_path=pairs_file,
        out=out_dir,
        cfg=cfg,
        source_lang=source_lang,
        lang_module=lang_module,
        model=model,
        overwrite=overwrite,
        progress=not quiet,
        dev_topics=dev_topics,
    )
    m = launch(train_task_module, kwargs, processes)
    if m is None:
        from rerank.modules.format import load_module

        m = load_module(out_dir)
    r = m.config.recipe
    out.print(
        f"wrote {out_dir}: {kind} task module ({loss}), {len(m):,} numbers + head, {module_size(out_dir):,} bytes; "
        f"dev MRR {r['dev_mrr_before']} → {r['dev_mrr_best']} in {r['steps']} steps, {r['seconds']} s; composed "
        f"{r['dev_mrr_composed']}, with other queries' documents {r['dev_mrr_shuffled_queries']} (random "
        f"{r['dev_mrr_random']}: higher means it ranks by how documents look)" + _fusion_line(r)
    )


def _fusion_line(r: dict) -> str:
    f = r.get("fusion")
    if not f:
        return ""
    return (
        f"; bi-encoder {r['dev_mrr_teacher']}, fused with it at first-stage weight {f['first_stage_weight']} "
        f"{f['dev_mrr']} (what search does by default)"
    )


@app.command("check")
@user_errors
def check(
    module_dir: Annotated[Path, typer.Argument(help="A task module written by rerank train task.")],
    pairs_file: Annotated[Path, typer.Option("--pairs", help="The pairs file it was trained on (hash checked).")],
    model: Annotated[Path | None, typer.Option("--model", help="Backbone [default: embedded e5-small].")] = None,
) -> None:
    """Run the dev checks of a trained task module again (composed MRR, shuffled queries, bi-encoder, the
    first-stage fusion weight) on its own dev split and record them in its config."""
    from rerank.training.task import recheck_task_module

    r = recheck_task_module(module_dir, pairs_file, model=model)
    out.print(
        f"{module_dir}: dev MRR composed {r['dev_mrr_composed']}, with other queries' documents "
        f"{r['dev_mrr_shuffled_queries']} (random {r['dev_mrr_random']})" + _fusion_line(r)
    )
