"""User-supplied evaluation collections (CLEF-2003, HC4) turned into the layout the grid reads.

``prepare`` reads the official files — CLEF: SGML documents (``<DOC><DOCNO>…``), topics with
``<XX-title>/<XX-desc>/<XX-narr>`` tags (any language, Kyrgyz/Uyghur/Turkish translations included),
qrels ``qid 0 docno rel``; HC4: JSONL documents (id/title/text), JSONL topics with per-language
title/description, graded qrels — and writes, under ``out``::

    docs.<doc>.jsonl   topics.<query>.tsv (+ .desc.tsv)   qrels.<doc>.txt   grid.toml   README.md

so that ``rerank index`` and ``rerank eval grid <out>/grid.toml`` run on it. Files are found under
``--root`` by name (documents: ``<root>/<doc lang>/``; topics: files with "top" and the topic
language in their name; qrels: "qrel" and the document language), or given explicitly. Nothing is
downloaded: an ``ir_datasets`` id is read only when that package and its data are already local.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from rerank.errors import RerankError

KINDS = ("clef2003", "hc4")


def _names(lang: str) -> list[str]:
    from rerank import languages

    lg = languages.resolve(lang)
    names = {lg.code.lower(), lg.name.lower(), lg.alpha_3.lower()}
    return sorted(names, key=len, reverse=True)


def _find(root: Path, what: str, must: str, lang: str | None) -> Path:
    names = _names(lang) if lang else []
    hits = []
    for f in sorted(root.rglob("*")):
        if not f.is_file():
            continue
        low = f.name.lower()
        if must in low and (not names or any(re.search(rf"(^|[^a-z]){re.escape(n)}([^a-z]|$)", low) for n in names)):
            hits.append(f)
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise RerankError(
            f"no {what} file under {root} (looked for names with {must!r}"
            + (f" and one of {', '.join(names)})" if names else ")"),
            hint=f"give it with --{what}",
        )
    raise RerankError(
        f"{len(hits)} {what} files under {root} could be it: {', '.join(str(h) for h in hits[:4])}",
        hint=f"choose one with --{what}",
    )


def _lang_folder(root: Path, lang: str) -> Path | None:
    return next((root / n for n in _names(lang) if (root / n).is_dir()), None)


def _doc_files(root: Path, doc_lang: str, docs: list[Path] | None, kind: str) -> list[Path]:
    if docs:
        files = [f for d in docs for f in (sorted(p for p in d.rglob("*") if p.is_file()) if d.is_dir() else [d])]
    else:
        folder = _lang_folder(root, doc_lang)
        if folder is None:
            raise RerankError(
                f"no document folder under {root} for {doc_lang} (looked for {', '.join(_names(doc_lang))}/)",
                hint="give the documents with --docs (files or folders)",
            )
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        if kind == "hc4":  # the language folder also holds qrels: documents are hc4_docs.jsonl
            files = [f for f in files if "doc" in f.name.lower()]
    files = [f for f in files if not f.name.startswith(".") and not f.name.lower().startswith("readme")]
    if not files:
        raise RerankError(f"no document files for {doc_lang}", hint="give the documents with --docs")
    return files


def prepare(
    kind: str,
    out: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    doc_lang: str,
    topic_lang: str,
    docs: list[Path] | None = None,
    topics: Path | None = None,
    qrels: Path | None = None,
    dataset: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Write the grid layout for one document language and one topic language; returns counts."""
    from rerank import languages
    from rerank.collections.docs import read_docs, write_jsonl_docs
    from rerank.collections.topics import read_hc4_topics, read_topics, write_tsv_topics
    from rerank.collections.trec import read_qrels, write_qrels
    from rerank.files import atomic_dir

    if kind not in KINDS:
        raise RerankError(f"unknown collection {kind!r}", hint=f"one of: {', '.join(KINDS)}")
    doc, query = languages.code(doc_lang), languages.code(topic_lang)
    if dataset:
        _refuse_ir_datasets(dataset)
    if root is None and not (docs and topics and qrels):
        raise RerankError("give --root, or --docs, --topics and --qrels", hint="the collection is not bundled")
    base = Path(root) if root is not None else None
    if base is not None and not base.is_dir():
        raise RerankError(f"collection root {base} does not exist", hint="give the folder you unpacked it into")
    doc_files = _doc_files(base, doc, docs, kind) if base is not None or docs else []
    if kind == "hc4":  # one topics file for every language; qrels in the language's folder
        topics = topics or _find(base, "topics", "topic", None)
        folder = _lang_folder(base, doc) if base is not None else None
        qrels = qrels or _find(folder or base, "qrels", "qrel", None if folder else doc)
    else:
        topics = topics or _find(base, "topics", "top", query)
        qrels = qrels or _find(base, "qrels", "qrel", doc)
    if kind == "hc4" and topics.name.lower().endswith((".jsonl", ".json", ".jsonl.gz")):
        queries = read_hc4_topics(topics, lang=query)
    else:
        queries = read_topics(topics, lang=query)
    desc = [q._replace(text=f"{q.text} {q.description}".strip()) for q in queries]
    judged = read_qrels(qrels)
    seen: set[str] = set()
    documents = []
    latin1 = []
    for f in doc_files:
        try:
            file_docs = list(read_docs(f))
        except RerankError as e:
            if kind != "clef2003" or "not valid UTF-8" not in str(e):
                raise
            file_docs = list(read_docs(f, encoding="latin-1"))  # CLEF's collections are ISO-8859-1
            latin1.append(f)
        for d in file_docs:
            if d.doc_id in seen:
                raise RerankError(f"document {d.doc_id} appears twice (again in {f})", hint="check the --docs files")
            seen.add(d.doc_id)
            documents.append(d)
    qids = {q.query_id for q in queries}
    rel_q = {q.query_id for q in judged if q.relevance > 0}
    if not qids & rel_q:
        raise RerankError(
            f"the topics ({len(qids)}) and the qrels ({len(rel_q)} queries with a relevant document) share no "
            "query id",
            hint="are they for the same year and track?",
        )
    unknown_docs = {q.doc_id for q in judged} - seen
    name = f"{kind}-{doc}"
    with atomic_dir(out, overwrite, marker="grid.toml") as tmp:
        write_jsonl_docs(documents, tmp / f"docs.{doc}.jsonl")
        write_tsv_topics(queries, tmp / f"topics.{query}.tsv")
        write_tsv_topics(desc, tmp / f"topics.{query}.desc.tsv")
        write_qrels(judged, tmp / f"qrels.{doc}.txt")
        (tmp / "grid.toml").write_text(_grid(name, Path(out), doc, query), encoding="utf-8")
        (tmp / "README.md").write_text(
            f"# {kind}: {query} topics over {doc} documents\n\nPrepared by `rerank eval collection {kind}` from:\n\n"
            + "".join(f"- {f}\n" for f in [*doc_files, topics, qrels])
            + "\nNot committed: the collection's licence is the user's.\n",
            encoding="utf-8",
        )
    return {
        "documents": len(documents),
        "topics": len(queries),
        "qrels": len(judged),
        "topics_with_relevant": len(qids & rel_q),
        "topics_without_qrels": len(qids - rel_q),
        "judged_documents_not_in_collection": len(unknown_docs),
        "out": str(out),
        "read_as_latin1": len(latin1),
    }


def _grid(name: str, out: Path, doc: str, query: str) -> str:
    return f"""# {name}: {query} topics over {doc} documents (written by `rerank eval collection`).
#     rerank index --docs {out}/docs.{doc}.jsonl --lang {doc} --out indexes/{name}
#     rerank eval grid {out}/grid.toml --out reports/{name}
title = "{name}: {query} → {doc}"
metrics = "MAP nDCG@10 nDCG@20 P@10 R@100 MRR"
baseline = "bm25"
k = 1000

[collection]
docs = "{out.resolve()}/docs.{{doc}}.jsonl"
index = "{Path("indexes").resolve()}/{kind_prefix(name)}-{{doc}}"
topics = "{out.resolve()}/topics.{{query}}.tsv"
qrels = "{out.resolve()}/qrels.{{doc}}.txt"
doc_langs = ["{doc}"]
query_langs = ["{query}"]

[[systems]]
name = "bm25"
first_stage = "bm25"
reranker = "none"

[[systems]]
name = "dense"
first_stage = "dense"
reranker = "none"

[[systems]]
name = "hybrid"
first_stage = "hybrid"
reranker = "none"

[[systems]]
name = "hybrid+bi"
first_stage = "hybrid"
reranker = "bi"
"""


def kind_prefix(name: str) -> str:
    return name.rsplit("-", 1)[0]


def _refuse_ir_datasets(dataset: str) -> None:
    try:
        import ir_datasets  # noqa: F401
    except ImportError:
        raise RerankError(
            f"{dataset!r} is an ir_datasets id, and ir_datasets is not installed (nothing is downloaded here)",
            hint="pip install ir_datasets where its data is already downloaded, or give --root with the files",
        ) from None
    raise RerankError(
        f"reading {dataset!r} through ir_datasets is not supported offline: it would try to download what is missing",
        hint="export the documents, topics and qrels to files and give --docs/--topics/--qrels",
    )
