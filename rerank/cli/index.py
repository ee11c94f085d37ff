"""``rerank index``: build a BM25 index folder from a document collection."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from rerank.cli._common import err, out, user_errors


@user_errors
def index(
    docs: Annotated[
        Path, typer.Option("--docs", help="Documents: JSONL (id+contents or id+title+text) or TREC/CLEF SGML; .gz ok.")
    ],
    lang: Annotated[
        str, typer.Option("--lang", help="Language of the documents (ISO 639-1, e.g. en, de, ru, tr, ky, ug).")
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Index folder to create.")],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing index (only once the new one is complete).")
    ] = False,
    threads: Annotated[int, typer.Option("--threads", min=1, help="Indexing threads.")] = 2,
    k1: Annotated[float, typer.Option("--k1", min=0.0, help="BM25 k1 recorded for search.")] = 0.9,
    b: Annotated[float, typer.Option("--b", min=0.0, max=1.0, help="BM25 b recorded for search.")] = 0.4,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Build a BM25 index (Lucene via Pyserini) with the documents' language's analyzer.

    Languages Lucene has no analyzer for (Kyrgyz, Uyghur, …) are pre-tokenized with a declared Unicode
    word tokenizer instead of silently falling back to English.
    """
    from rerank import languages
    from rerank.indexes.bm25 import index_file

    language = languages.resolve(lang)
    started = time.perf_counter()
    meta = index_file(
        docs, out_dir, language.code, overwrite=overwrite, threads=threads, k1=k1, b=b, progress=not quiet
    )
    took = time.perf_counter() - started
    out.print(
        f"indexed {meta.documents:,} documents ({language.name}, analyzer {meta.analyzer}) "
        f"into {out_dir} in {took:.1f} s"
    )
    if not language.lucene:
        err.print(f"note: Lucene has no {language.name} analyzer; documents were pre-tokenized ({meta.analyzer})")
