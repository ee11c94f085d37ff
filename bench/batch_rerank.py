"""Scoring several queries' reranking pairs in one call against one call per query.

`Pipeline.run` (and so `rerank search --topics`, the grid and `rerank serve`'s micro-batches) hands the
cross-encoder every pair of a module group at once (`Reranker.rerank_many`), so that its length-sorted
batches span the queries. This measures what that buys with the shipped cross-encoder (the embedded
e5-small + `modules/en-task-shira`) on the pairs search would score: the dense top --depth of
indexes/udhr-en for --queries bundled topic titles (ky, ug, tr and en in turn).

Figures (JSON): seconds for all pairs, one `predict` per query against one `predict` for all (medians of
--repeats alternating runs, min and max beside them), and the ratio.

    .venv/bin/python bench/batch_rerank.py [--queries 16] [--depth 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the package, not bench/rerank.py


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=16)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from rerank.collections.topics import read_tsv_topics
    from rerank.pipeline import Pipeline

    langs = ("ky", "ug", "tr", "en")
    topics = {lang: read_tsv_topics(ROOT / "data" / "udhr" / f"topics.{lang}.tsv", lang) for lang in langs}
    queries = [topics[langs[i % 4]][i // 4 % len(topics[langs[i % 4]])] for i in range(args.queries)]
    with Pipeline(ROOT / "indexes" / "udhr-en") as pipe:
        rr = pipe.reranker
        rr.use_modules(list(pipe.modules_for("en")))
        per_query = []
        for q in queries:
            cands = pipe.dense.batch_search([q], k=args.depth)[q.query_id]
            docs = pipe.bm25.docstore.get_many([c.doc_id for c in cands])
            per_query.append([(q.text, docs[c.doc_id].contents) for c in cands])
        every = [p for pairs in per_query for p in pairs]

        def one_call_per_query():
            for pairs in per_query:
                rr.predict(pairs)

        def one_call():
            rr.predict(every)

        one_call_per_query(), one_call()  # warm
        times: dict[str, list[float]] = {"one_call_per_query": [], "one_call": []}
        for _ in range(args.repeats):
            for name, fn in (("one_call_per_query", one_call_per_query), ("one_call", one_call)):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        json.dumps(
            {
                "queries": args.queries,
                "pairs": len(every),
                "modules": [Path(m).name for m in pipe.modules_for("en")],
                **{
                    f"{k}_s": {"median": round(med[k], 3), "min": round(min(v), 3), "max": round(max(v), 3)}
                    for k, v in times.items()
                },
                "speedup_one_call": round(med["one_call_per_query"] / med["one_call"], 3),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
