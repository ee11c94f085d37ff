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
        Path | None,
        typer.Option("--docs", help="Documents: JSONL (id+contents or id+title+text) or TREC/CLEF SGML; .gz ok."),
    ] = None,
    lang: Annotated[
        str | None, typer.Option("--lang", help="Language of the documents (ISO 639-1, e.g. en, de, ru, tr, ky, ug).")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Index folder to create.")] = ...,  # type: ignore[assignment]
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing index (only once the new one is complete).")
    ] = False,
    dense: Annotated[
        bool, typer.Option("--dense/--no-dense", help="Also build the dense (faiss) index for hybrid search.")
    ] = True,
    dense_only: Annotated[
        bool, typer.Option("--dense-only", help="Only (re)build the dense part of an existing index folder.")
    ] = False,
    model: Annotated[
        Path | None, typer.Option("--model", help="Backbone folder for the dense index [default: embedded e5-small].")
    ] = None,
    dense_kind: Annotated[
        str, typer.Option("--dense-kind", help="faiss index: flat (exact), hnsw or ivf (approximate).")
    ] = "flat",
    threads: Annotated[int, typer.Option("--threads", min=1, help="Indexing threads.")] = 2,
    k1: Annotated[float, typer.Option("--k1", min=0.0, help="BM25 k1 recorded for search.")] = 0.9,
    b: Annotated[float, typer.Option("--b", min=0.0, max=1.0, help="BM25 b recorded for search.")] = 0.4,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Build a BM25 index (Lucene via Pyserini) with the documents' language's analyzer, and a dense index.

    Languages Lucene has no analyzer for (Kyrgyz, Uyghur, …) are pre-tokenized with a declared Unicode
    word tokenizer instead of silently falling back to English. The dense index (document embeddings
    from the backbone, in faiss) lives in the same folder, under dense/.
    """
    from rerank import languages
    from rerank.errors import RerankError
    from rerank.indexes import dense as dense_mod
    from rerank.indexes.bm25 import index_file

    if dense_kind not in dense_mod.KINDS:
        raise RerankError(f"unknown --dense-kind {dense_kind!r}", hint=f"use one of: {', '.join(dense_mod.KINDS)}")
    if dense_only:
        if docs is not None:
            raise RerankError(
                "--dense-only reads the documents of an existing index; drop --docs",
                hint=f"rerank index --dense-only --out {out_dir}",
            )
        out.print(_dense(out_dir, model, dense_kind, overwrite, quiet))
        return
    if docs is None or lang is None:
        raise RerankError(
            "--docs and --lang are needed to build an index",
            hint="e.g. rerank index --docs docs.jsonl --lang en --out indexes/x",
        )
    language = languages.resolve(lang)
    if dense and model is not None:
        from rerank.backbone import resolve_model

        resolve_model(model)  # a bad --model is reported before the BM25 part is built
    started = time.perf_counter()
    done: dict[str, object] = {}

    def finish(folder: Path) -> None:  # the dense part, built inside the index before it is renamed into place
        done["bm25 seconds"] = time.perf_counter() - started
        done["dense line"] = _dense(folder, model, dense_kind, True, quiet, shown=out_dir)

    meta = index_file(
        docs,
        out_dir,
        language.code,
        overwrite=overwrite,
        threads=threads,
        k1=k1,
        b=b,
        progress=not quiet,
        finish=finish if dense else None,
    )
    took = done.get("bm25 seconds", time.perf_counter() - started)
    out.print(
        f"indexed {meta.documents:,} documents ({language.name}, analyzer {meta.analyzer}) "
        f"into {out_dir} in {took:.1f} s"
    )
    from rerank.indexes.analyzers import has_lucene

    if not has_lucene(language.code):
        err.print(f"note: Lucene has no {language.name} analyzer; documents were pre-tokenized ({meta.analyzer})")
    if "dense line" in done:
        out.print(done["dense line"])


def _dense(
    folder: Path, model: Path | None, kind: str, overwrite: bool, quiet: bool, shown: Path | None = None
) -> str:
    """Build ``folder``'s dense part; the line that says so (``shown``: the path to name in it)."""
    from rerank.indexes.dense import build_dense

    started = time.perf_counter()
    meta = build_dense(folder, model=model, kind=kind, progress=not quiet, overwrite=overwrite)
    took = time.perf_counter() - started
    return (
        f"encoded {meta.documents:,} documents with {meta.backbone} ({meta.dim} dims, faiss {meta.kind}) "
        f"into {shown or folder}/dense in {took:.1f} s"
    )
