"""BM25 over a Lucene index, built and searched with Pyserini/Anserini — the only module that imports
pyserini or touches Java. Nothing Java leaves this file: callers get Python strings and records.

An index folder (what ``rerank index`` writes) holds::

    rerank-index.json   the recipe: language, analyzer, BM25 parameters, document count, source
    lucene/             a plain Lucene index (Pyserini's ``LuceneSearcher`` opens it as it is)
    docs.sqlite         the documents' original title and text (snippets, reranking)

The analyzer is chosen by the documents' language: Lucene's own for the languages Anserini has one
for; for every other language (Kyrgyz, Uyghur, …) documents are pre-tokenized by
:mod:`rerank.indexes.tokenize` and indexed with Lucene's whitespace analyzer — never English's
stemmer, which Anserini would otherwise use silently. Search reads the recipe and analyses queries
the same way.
"""

from __future__ import annotations

import datetime as _dt
import gc
import hashlib
import json
import os
import queue
import shutil
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from annotated_types import Ge, Le

from rerank import __version__, languages
from rerank.errors import RerankError
from rerank.files import atomic_dir, check_readable, read_record, refuse_existing
from rerank.indexes import jvm
from rerank.indexes.analyzers import analyzer_for, has_lucene
from rerank.indexes.docstore import DocStore, write_docstore
from rerank.indexes.tokenize import TOKENIZER_NAME, pretokenize
from rerank.types import Document, Query, ScoredDoc

META_FILE = "rerank-index.json"
FORMAT = "rerank-bm25/1"
DEFAULT_K1, DEFAULT_B = 0.9, 0.4  # Anserini's defaults
_new = tuple.__new__  # builds a ScoredDoc without the NamedTuple constructor's Python-level call


@dataclass(frozen=True)
class IndexMeta:
    """What ``rerank-index.json`` records; search follows it exactly (validated on load: strict types, no
    unknown fields, and a language and analyzer that agree — never silently English)."""

    __pydantic_config__ = {"strict": True, "allow_inf_nan": False, "extra": "forbid"}

    language: str
    analyzer: str  # "lucene-XX" or the pre-tokenizer's name
    documents: Annotated[int, Ge(1)]
    k1: Annotated[float, Ge(0)] = DEFAULT_K1
    b: Annotated[float, Ge(0), Le(1)] = DEFAULT_B
    source: dict | None = None
    created_by: str = ""
    created: str = ""
    format: str = FORMAT
    anserini: str = ""
    dense: bool = False  # built with its dense part (dense/): search refuses the folder if that part is gone

    @property
    def pretokenized(self) -> bool:
        return not self.analyzer.startswith("lucene-")


def _anserini_version() -> str:
    return jvm.anserini_jar().name.removeprefix("anserini-").removesuffix("-fatjar.jar")


def read_meta(path: str | os.PathLike) -> IndexMeta:
    """Validate that ``path`` is an index folder of ours and return its recipe."""
    p = Path(path)
    if not p.exists():
        raise RerankError(f"index not found: {p}", hint="build it with `rerank index --docs FILE --lang XX --out DIR`")
    if not p.is_dir():
        raise RerankError(f"index path is a file, not a folder: {p}", hint="pass the folder `rerank index` wrote")
    meta_path = p / META_FILE
    if not meta_path.is_file():
        raise RerankError(
            f"{p} is not a rerank index (no {META_FILE})",
            hint="pass a folder written by `rerank index`, or rebuild it (interrupted builds leave no index)",
        )
    rebuild = "rebuild the index with `rerank index --overwrite`"
    meta = read_record(meta_path, IndexMeta, rebuild)
    try:
        code = languages.resolve(meta.language).code
    except RerankError:
        raise RerankError(f"{meta_path}: language {meta.language[:40]!r} is not a language", hint=rebuild) from None
    expected = analyzer_for(code)
    if meta.analyzer != expected and not (meta.pretokenized and expected == TOKENIZER_NAME):
        raise RerankError(
            f"{meta_path}: analyzer {meta.analyzer[:40]!r} is not the one for its language {code!r} ({expected})",
            hint=rebuild,
        )
    if meta.format != FORMAT:
        raise RerankError(f"{p} has index format {meta.format!r}; this version reads {FORMAT!r}", hint="rebuild it")
    if meta.pretokenized and meta.analyzer != TOKENIZER_NAME:
        raise RerankError(
            f"{p} was pre-tokenized with {meta.analyzer!r}, this version tokenizes with {TOKENIZER_NAME!r}",
            hint="rebuild the index with `rerank index --overwrite` so that queries and documents match",
        )
    if not (p / "lucene").is_dir() or not (p / "docs.sqlite").is_file():
        raise RerankError(f"{p} is incomplete (lucene/ or docs.sqlite missing)", hint="rebuild it with --overwrite")
    return meta


def _file_digest(path: Path) -> dict:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"path": str(path), "sha256": h.hexdigest(), "bytes": path.stat().st_size}


def build_index(
    docs: Iterable[Document],
    out: str | os.PathLike,
    lang: str,
    *,
    overwrite: bool = False,
    threads: int | None = None,
    k1: float = DEFAULT_K1,
    b: float = DEFAULT_B,
    source: str | os.PathLike | None = None,
    progress: bool = True,
    total: int | None = None,
    java_reads: Path | None = None,
    finish: Callable[[Path], object] | None = None,
) -> IndexMeta:
    """Index ``docs`` for BM25 into the folder ``out`` (built under a temporary name, then renamed).

    ``java_reads``: a Pyserini-shaped JSONL file holding exactly ``docs``, which Lucene then reads
    itself while Python checks and stores the same documents (see :func:`index_file`). ``finish``: called
    with the finished folder before it is renamed into place (the dense part is built there, so that an
    index appears complete or not at all)."""
    language = languages.resolve(lang)
    analyzer = analyzer_for(language.code)
    threads = threads or min(4, os.cpu_count() or 1)
    jvm.start()
    from tqdm import tqdm

    with atomic_dir(out, overwrite, marker=META_FILE, inputs=(source,)) as tmp:
        docs = write_docstore(tmp / "docs.sqlite", docs)
        docs = tqdm(docs, total=total, unit=" docs", desc=f"indexing ({analyzer})", disable=not progress)
        if java_reads is not None:
            n = _index_in_java(docs, java_reads, tmp, language.code, threads)
        else:
            n = _index_from_python(docs, tmp, language.code, analyzer, threads)
        if n == 0:
            raise RerankError("no documents to index", hint="check the documents file")
        meta = IndexMeta(
            language=language.code,
            analyzer=analyzer,
            documents=n,
            k1=k1,
            b=b,
            source=_file_digest(Path(source)) if source else None,
            created_by=f"rerank {__version__}",
            created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            anserini=_anserini_version(),
            dense=finish is not None,
        )
        (tmp / META_FILE).write_text(json.dumps(meta.__dict__, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if finish is not None:
            finish(tmp)
    return meta


class _JavaDisagrees(Exception):
    """Lucene's own reading of a file found other documents than ours: take the general path."""


def _lucene_args(tmp: Path, lang: str, threads: int) -> list[str]:
    args = ["-index", str(tmp / "lucene"), "-storePositions", "-storeDocvectors", "-threads", str(threads)]
    return args + (["-language", lang] if has_lucene(lang) else ["-pretokenized"])


def _index_from_python(docs: Iterable[Document], tmp: Path, lang: str, analyzer: str, threads: int) -> int:
    """Documents go to Anserini's SimpleIndexer (what pyserini.index.lucene.LuceneIndexer wraps, used
    through Pyserini's Java bridge without that module's ~1 s of imports) in batches of JSON lines."""
    from pyserini.pyclass import autoclass

    args = _lucene_args(tmp, lang, threads) + ["-input", "", "-collection", "JsonCollection"]
    indexer = autoclass("io.anserini.index.SimpleIndexer")(args)
    feeder = _Feeder(indexer)
    n = 0
    batch: list[str] = []
    try:
        for d in docs:
            text = pretokenize(d.contents) if analyzer == TOKENIZER_NAME else d.contents
            batch.append(json.dumps({"id": d.doc_id, "contents": text}, ensure_ascii=False))
            n += 1
            if len(batch) >= 2000:
                feeder.put(batch)
                batch = []
        if batch:
            feeder.put(batch)
    finally:
        feeder.finish()
        indexer.close()
    return n


def _index_in_java(docs: Iterable[Document], source: Path, tmp: Path, lang: str, threads: int) -> int:
    """Anserini's IndexCollection (what `python -m pyserini.index.lucene` runs) reads ``source`` in a
    Java thread while this thread reads, checks and stores the same file; the two must agree on the
    number of documents."""
    from pyserini.pyclass import autoclass

    folder = tmp / "input"
    folder.mkdir()
    (folder / source.name).symlink_to(source.resolve())
    args = ["-collection", "JsonCollection", "-input", str(folder), "-quiet", *_lucene_args(tmp, lang, threads)]
    error: list[BaseException] = []

    def run() -> None:
        import jnius

        try:
            autoclass("io.anserini.index.IndexCollection").main(args)
        except BaseException as e:
            error.append(e)
        finally:
            jnius.detach()

    java = threading.Thread(target=run, name="lucene-index-collection", daemon=True)
    java.start()
    n = 0
    try:
        for _ in docs:
            n += 1
    finally:
        java.join()
        shutil.rmtree(folder, ignore_errors=True)
    if error:
        raise RerankError(f"Lucene could not index {source} ({error[0]})", hint="check the documents") from None
    searcher = autoclass("io.anserini.search.SimpleSearcher")(str(tmp / "lucene"))
    indexed = int(searcher.get_total_num_docs())
    searcher.close()
    if indexed != n:
        raise _JavaDisagrees(f"Lucene read {indexed} documents, rerank {n}")
    return n


def _pyserini_shaped(path: Path) -> bool:
    """True when Lucene's JsonCollection reads ``path`` as we do: JSON lines with "id" and "contents"."""
    if not path.name.endswith((".jsonl", ".jsonl.gz")):
        return False
    from rerank.files import numbered_lines

    for _, line in numbered_lines(path, "documents file"):
        if line.strip():
            try:
                first = json.loads(line)
            except json.JSONDecodeError:
                return False
            return isinstance(first, dict) and {"id", "contents"} <= first.keys() and "title" not in first
    return False


def index_file(
    path: str | os.PathLike,
    out: str | os.PathLike,
    lang: str,
    *,
    overwrite: bool = False,
    threads: int | None = None,
    k1: float = DEFAULT_K1,
    b: float = DEFAULT_B,
    progress: bool = True,
    finish: Callable[[Path], object] | None = None,
) -> IndexMeta:
    """Index a documents file (any format :func:`~rerank.collections.docs.read_docs` reads).

    A Pyserini-shaped JSONL file in a language Lucene analyses is read by Lucene itself (as Pyserini's
    CLI does) while Python checks every line and stores the texts; anything else — titles, SGML,
    pre-tokenized languages — is fed from Python. Both give the same index."""
    from rerank.collections.docs import read_docs

    p = check_readable(path, "documents file")
    language = languages.resolve(lang)
    refuse_existing(Path(out), overwrite, marker=META_FILE, inputs=(p,))  # before any pass over the file
    kw = dict(overwrite=overwrite, threads=threads, k1=k1, b=b, source=p, progress=progress, finish=finish)
    total = _count_lines(p) if progress and p.name.endswith((".jsonl", ".jsonl.gz")) else None
    if has_lucene(language.code) and _pyserini_shaped(p):
        try:
            return build_index(read_docs(p), out, language.code, total=total, java_reads=p, **kw)
        except _JavaDisagrees:
            pass  # e.g. a line with "doc_id" instead of "id": Lucene skipped it, we did not
    return build_index(read_docs(p), out, language.code, total=total, **kw)


def _count_lines(path: Path) -> int | None:
    from rerank.files import open_text

    try:
        with open_text(path) as f:
            return sum(1 for line in f if line.strip())
    except (UnicodeDecodeError, OSError, EOFError):
        return None  # the reader itself reports the problem, with its line


class _Feeder:
    """Hands batches to Lucene from a second thread, so that reading, checking and storing documents in
    Python overlaps with Java's analysis and indexing (pyjnius releases the GIL during the Java call).
    Measured on 123k documents: about 30% less wall time than alternating the two."""

    def __init__(self, indexer):
        self._indexer = indexer
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="lucene-feeder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import jnius

        try:
            while (batch := self._queue.get()) is not None:
                if self._error is None:
                    try:
                        self._indexer.addRawDocuments(batch)
                    except BaseException as e:  # reported by put()/finish() in the caller's thread
                        self._error = e
        finally:
            jnius.detach()

    def _raise(self) -> None:
        if self._error is not None:
            raise RerankError(f"Lucene could not index a batch ({self._error})", hint="check the documents") from None

    def put(self, batch: list[str]) -> None:
        self._raise()
        self._queue.put(batch)

    def finish(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._raise()


class BM25Index:
    """An index folder opened for search. Queries are analysed with the recipe the index records."""

    def __init__(self, path: str | os.PathLike, analyzer: str | None = None):
        self.path = Path(path)
        self.meta = read_meta(self.path)
        if analyzer and analyzer != self.meta.analyzer:
            raise RerankError(
                f"{self.path} was built with analyzer {self.meta.analyzer!r}, not {analyzer!r}",
                hint=f"build an index with {analyzer!r}, or drop --analyzer to use the index's own",
            )
        jvm.start()
        from pyserini.pyclass import autoclass  # the Java bridge only: LuceneSearcher's import costs ~10 s

        try:
            self._searcher = autoclass("io.anserini.search.SimpleSearcher")(str(self.path / "lucene"))
        except Exception as e:  # jnius.JavaException: a damaged or foreign Lucene folder
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise RerankError(
                f"cannot open the Lucene index in {self.path} ({reason})", hint="rebuild it with --overwrite"
            ) from None
        if self.meta.pretokenized:
            self._searcher.set_analyzer(autoclass("org.apache.lucene.analysis.core.WhitespaceAnalyzer")())
        else:
            self._searcher.set_language(self.meta.language)
        self._searcher.set_bm25(float(self.meta.k1), float(self.meta.b))
        self._autoclass = autoclass
        self.docstore = DocStore(self.path / "docs.sqlite")

    def __len__(self) -> int:
        return int(self._searcher.get_total_num_docs())

    def analyze_query(self, text: str) -> str:
        """The query string handed to Lucene (pre-tokenized for pre-tokenized indexes)."""
        if not text or not text.strip():
            raise RerankError("empty query", hint="give the query some words")
        out = pretokenize(text) if self.meta.pretokenized else " ".join(text.split())
        if not out:
            raise RerankError(f"query {text!r} has no searchable words", hint="use letters or digits")
        return out

    def search(self, query: str, k: int = 10, query_id: str = "") -> list[ScoredDoc]:
        """Top ``k`` documents for one query string, best first."""
        if k < 1:
            raise RerankError(f"k must be at least 1, not {k}", hint="pass -k 10 or more")
        q = self.analyze_query(query)
        try:
            hits = self._searcher.search(q, int(k))
        except Exception as e:  # jnius.JavaException: keep Java out of the caller's sight
            raise self._query_error(e, "the query") from None
        return [ScoredDoc(query_id, str(h.docid), float(h.score)) for h in hits]

    def _culprit(self, queries: Sequence[Query], texts: Sequence[str], batch_error: Exception) -> RerankError:
        """… so the queries of a failed batch are run one by one to find the one that fails, and why."""
        for q, t in zip(queries, texts, strict=True):
            try:
                self._searcher.search(t, 1)
            except Exception as e:  # noqa: BLE001 - jnius.JavaException
                return self._query_error(e, f"query {q.query_id}" if q.query_id else "the query")
        return self._query_error(batch_error, "the queries")

    def _query_error(self, e: Exception, what: str) -> RerankError:
        """Lucene's failure as one line; its clause limit (a query of thousands of distinct words) by name."""
        if "TooManyClauses" in str(e) or "maxClauseCount" in str(e):
            limit = self._autoclass("org.apache.lucene.search.IndexSearcher").getMaxClauseCount()
            return RerankError(
                f"{what} has more distinct words than BM25 can search: Lucene's limit is {limit:,} clauses "
                "(maxClauseCount)",
                hint="shorten the query, or search it with --first-stage dense",
            )
        return RerankError(f"Lucene could not run {what} ({' '.join(str(e).split())[:200]})", hint="shorten it")

    def batch_search(
        self, queries: Sequence[Query], k: int = 100, threads: int | None = None, progress: bool = True
    ) -> dict[str, list[ScoredDoc]]:
        """Search many queries, in Java threads; returns ``{query_id: ranking}`` in input order."""
        from tqdm import tqdm

        if k < 1:
            raise RerankError(f"k must be at least 1, not {k}", hint="pass -k 10 or more")
        threads = threads or min(4, os.cpu_count() or 1)
        texts = [self.analyze_query(q.text) for q in queries]
        JArrayList = self._autoclass("java.util.ArrayList")
        out: dict[str, list[ScoredDoc]] = {}
        chunk = 2048  # queries per Java call: large enough that the thread pool's start-up is amortised
        with tqdm(total=len(queries), unit=" queries", desc="BM25", disable=not progress) as bar:
            for start in range(0, len(queries), chunk):
                jq, jid = JArrayList(), JArrayList()
                for q, t in zip(queries[start : start + chunk], texts[start : start + chunk], strict=True):
                    jq.add(t)
                    jid.add(q.query_id)
                try:
                    res = self._searcher.batch_search(jq, jid, int(k), int(threads))
                except Exception as e:  # jnius.JavaException: Anserini's thread pool hides the cause,
                    raise self._culprit(queries[start : start + chunk], texts[start : start + chunk], e) from None
                # Hundreds of thousands of short-lived proxies and records: the cyclic GC would walk them
                # all repeatedly for nothing (none of them forms a cycle), so it is paused here.
                gc_was_on = gc.isenabled()
                gc.disable()
                try:
                    found = {e.getKey(): e.getValue() for e in res.entrySet().toArray()}
                    for q in queries[start : start + chunk]:
                        qid = q.query_id
                        out[qid] = [_new(ScoredDoc, (qid, h.docid, h.score)) for h in found.get(qid) or ()]
                    del found, res
                finally:
                    if gc_was_on:
                        gc.enable()
                bar.update(len(queries[start : start + chunk]))
        return out

    def doc(self, doc_id: str) -> Document | None:
        return self.docstore.get(doc_id)

    def close(self) -> None:
        self._searcher.close()
        self.docstore.close()
