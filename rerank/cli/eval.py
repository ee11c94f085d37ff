"""``rerank eval``: score runs against qrels, test significance, write reports; run experiment grids."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rerank.cli._common import invocation, out, user_errors

app = typer.Typer(help="Evaluate runs (ir_measures), test significance, write reports.", no_args_is_help=True)


def _run_name(spec: str) -> tuple[str, Path]:
    """``name=path`` or ``path`` (named by the file name without .trec/.txt/.run)."""
    if "=" in spec and not Path(spec).exists():
        name, path = spec.split("=", 1)
        return name.strip(), Path(path)
    p = Path(spec)
    name = p.name
    for ext in (".trec", ".txt", ".run", ".gz"):
        name = name.removesuffix(ext)
    return name, p


def load_runs(specs: list[str]) -> tuple[dict, dict[str, str]]:
    """Runs by name, and the command that made each (from ``<run>.json``, written by ``rerank search -o``)."""
    import json

    from rerank.collections.trec import read_run
    from rerank.errors import RerankError

    runs, commands = {}, {}
    for spec in specs:
        name, path = _run_name(spec)
        if name in runs:
            raise RerankError(f"two runs are named {name!r}", hint="name them: --run NAME=PATH")
        runs[name] = read_run(path)
        side = Path(f"{path}.json")
        if side.is_file():
            try:
                commands[name] = str(json.loads(side.read_text(encoding="utf-8")).get("command", ""))
            except (ValueError, AttributeError, OSError):
                pass
    return runs, commands


def print_table(ev, comparisons, baseline: str | None, test: str, alpha: float) -> None:
    from rich.table import Table

    from rerank.eval.report import legend_text, table_rows

    rows = table_rows(ev, comparisons, test=test, alpha=alpha)
    t = Table(show_edge=False, pad_edge=False)
    for i, h in enumerate(rows[0]):
        t.add_column(h, justify="left" if i == 0 else "right")
    best = {m: max(ev.mean(s, m) for s in ev.systems) for m in ev.measures}
    for s, row in zip(ev.systems, rows[1:], strict=True):
        t.add_row(row[0], *(f"[bold]{c}[/]" if ev.mean(s, m) == best[m] else c for m, c in zip(ev.measures, row[1:])))
    out.print(t)
    if baseline:
        out.print(legend_text(baseline, test, alpha, len(ev.queries)))


@app.command("run")
@user_errors
def run(
    qrels: Annotated[Path, typer.Option("--qrels", help="TREC qrels (qid iter docid rel).")],
    runs: Annotated[list[str], typer.Option("--run", help="A TREC run, as PATH or NAME=PATH; repeat for more.")],
    metrics: Annotated[
        str, typer.Option("--metrics", help="ir_measures names, space- or comma-separated.")
    ] = "MAP nDCG@10 nDCG@20 P@10 R@100 MRR Judged@10",
    baseline: Annotated[str | None, typer.Option("--baseline", help="The run others are tested against.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Write a report folder here.")] = None,
    judged_only: Annotated[
        bool, typer.Option("--judged-only", help="Drop unjudged documents first (default: they are non-relevant).")
    ] = False,
    test: Annotated[
        str, typer.Option("--test", help="t (paired t-test) or perm (randomisation) for the marks.")
    ] = "t",
    alpha: Annotated[float, typer.Option("--alpha", min=0.0, max=1.0, help="Significance level.")] = 0.05,
    title: Annotated[str | None, typer.Option("--title", help="Report title.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
) -> None:
    """Score runs, mark significant differences from --baseline, and write a report."""
    from rerank.collections.trec import read_qrels
    from rerank.errors import RerankError
    from rerank.eval.metrics import evaluate, parse_metrics
    from rerank.eval.report import write_report
    from rerank.eval.significance import TESTS, compare
    from rerank.files import refuse_existing

    if test not in TESTS:
        raise RerankError(f"--test {test!r} is not a test", hint="t (paired t-test) or perm (randomisation)")
    measures = parse_metrics(metrics)
    if out_dir is not None:
        refuse_existing(out_dir, overwrite, marker="metrics.json", inputs=[qrels, *(_run_name(r)[1] for r in runs)])
    q = read_qrels(qrels)
    loaded, commands = load_runs(runs)
    if baseline is not None and baseline not in loaded:
        raise RerankError(f"--baseline {baseline!r} is not one of the runs", hint=f"one of: {', '.join(loaded)}")
    ev = evaluate(q, loaded, measures, judged_only=judged_only)
    comparisons = compare(ev, baseline) if baseline else {}
    print_table(ev, comparisons, baseline, test, alpha)
    if out_dir is not None:
        notes = [f"qrels: {qrels}", "unjudged documents removed first" if judged_only else "unjudged = non-relevant"]
        write_report(
            ev,
            comparisons,
            out_dir,
            baseline=baseline,
            commands=commands,
            title=title or f"Evaluation: {qrels}",
            test=test,
            alpha=alpha,
            notes=notes,
            overwrite=overwrite,
        )
        out.print(f"wrote {out_dir}/index.html (+ metrics.csv, per-query.csv, metrics.json, table.md, PNG plots)")


@app.command("grid")
@user_errors
def grid(
    path: Annotated[Path, typer.Argument(help="A grid file (TOML), e.g. eval/grid.toml.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Report folder (runs are cached in its runs/).")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run every system for every query language (reusing cached runs), evaluate, write one report."""
    from rerank.eval.grid import evaluate_grid, load_grid, run_grid, write_grid_report

    g = load_grid(path)
    runs = run_grid(g, out_dir, progress=not quiet, command=invocation())
    cells = evaluate_grid(g, runs)
    write_grid_report(g, cells, out_dir, command=invocation())
    out.print((out_dir / "grid.md").read_text(encoding="utf-8"))
    out.print(f"wrote {out_dir}/index.html (+ grid.csv, grid.json, grid.md, cells/, runs/)")


@app.command("mlm")
@user_errors
def mlm(
    module: Annotated[Path, typer.Argument(help="A language module folder (rerank train lang).")],
    text: Annotated[
        list[Path],
        typer.Option("--text", help="Its text, split as training splits it: the dev loss is on the held-out part."),
    ],
    budgets: Annotated[
        str | None,
        typer.Option(
            "--budgets", help="Ranks (LoRA) or densities (sparse), comma-separated, e.g. 1,2,4,8 or 0.5%,2%."
        ),
    ] = None,
    model: Annotated[Path | None, typer.Option("--model", help="Backbone [default: embedded e5-small].")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """A language module's dev masked-LM loss at each budget (a dynamic module's trained ones, a fixed module's
    truncations), with the MLM head fitted as its training fitted it; prints JSON."""
    import json

    from rerank.training.lang import module_dev_losses

    values = [b.strip() for b in budgets.split(",") if b.strip()] if budgets else None
    losses = module_dev_losses(module, text, values, model=model, progress=not quiet)
    out.print(json.dumps({"module": str(module), "dev_mlm_loss": {k: round(v, 4) for k, v in losses.items()}}))


@app.command("check")
@user_errors
def check(
    page: Annotated[Path, typer.Argument(help="A report's index.html.")],
    screenshot: Annotated[Path | None, typer.Option("--screenshot", help="Save the rendered page as PNG.")] = None,
) -> None:
    """Render a report in headless Chromium and check it shows tables and plots."""
    import json

    from rerank.eval.browser import check_page

    out.print(json.dumps(check_page(page, screenshot), indent=1))


@app.command("collection")
@user_errors
def collection(
    kind: Annotated[str, typer.Argument(help="clef2003 or hc4.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for docs/topics/qrels/grid.toml.")],
    root: Annotated[Path | None, typer.Option("--root", help="Where the collection was unpacked.")] = None,
    doc_lang: Annotated[str | None, typer.Option("--doc-lang", help="Document language.")] = None,
    topic_lang: Annotated[str | None, typer.Option("--topic-lang", help="Topic language.")] = None,
    lang: Annotated[
        str | None, typer.Option("--lang", help="HC4: the document language (topics: --topic-lang, default en).")
    ] = None,
    docs: Annotated[list[Path] | None, typer.Option("--docs", help="Document files or folders.")] = None,
    topics: Annotated[Path | None, typer.Option("--topics", help="The topics file.")] = None,
    qrels: Annotated[Path | None, typer.Option("--qrels", help="The qrels file.")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="An ir_datasets id (needs its data local).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
) -> None:
    """Turn a user-supplied CLEF-2003 or HC4 collection into files the grid runs on (nothing is downloaded)."""
    from rerank.errors import RerankError
    from rerank.eval.collections import prepare

    doc = doc_lang or lang
    if doc is None:
        raise RerankError("which document language?", hint="--doc-lang de (CLEF) or --lang fa (HC4)")
    query = topic_lang or ("en" if kind == "hc4" else None)
    if query is None:
        raise RerankError("which topic language?", hint="--topic-lang ky")
    facts = prepare(
        kind,
        out_dir,
        root=root,
        doc_lang=doc,
        topic_lang=query,
        docs=docs,
        topics=topics,
        qrels=qrels,
        dataset=dataset,
        overwrite=overwrite,
    )
    out.print(
        f"wrote {out_dir}: {facts['documents']:,} documents, {facts['topics']} topics "
        f"({facts['topics_with_relevant']} with a relevant document), {facts['qrels']:,} judgements"
    )
    if facts["read_as_latin1"]:
        out.print(f"note: {facts['read_as_latin1']} document files are not UTF-8 and were read as ISO-8859-1 (CLEF's)")
    if facts["judged_documents_not_in_collection"]:
        out.print(f"note: {facts['judged_documents_not_in_collection']:,} judged documents are not in --docs")
    out.print(f"next: rerank eval grid {out_dir}/grid.toml --out reports/{kind}")
