"""Effectiveness of the first stages and of bi-encoder reranking on the bundled collection, per
query language × document language: nDCG@10 (ir_measures) of

  bm25                BM25 alone (Lucene analyzer of the document language, or pre-tokenized)
  dense               the backbone's embeddings (multilingual-e5-small by default), faiss flat
  hybrid w:1          reciprocal-rank fusion (k=60) of bm25 and dense with BM25 weight w (dense 1),
                      for each w in --weights
  hybrid+bi           hybrid 1:1, then the top 100 reranked by the bi-encoder (cosine, same backbone)
  auto                the first stage `--first-stage auto` picks for the pair (see rerank.pipeline)

This is how the default first stage and its fusion weights were chosen (rerank/pipeline.py); the
bundled topics are the only relevance judgements here, so the choice is a coarse rule (dense alone for
every cross-language pair, equal weights within a language), not a per-pair tuning.

    .venv/bin/python bench/first_stage.py [--indexes indexes] [--topics ky,ug,tr,en] [--docs en,de,ru,ky]

Needs the bundled indexes with their dense parts (`make indexes`). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "udhr")
    ap.add_argument("--indexes", type=Path, default=ROOT / "indexes")
    ap.add_argument("--topics", default="ky,ug,tr,en")
    ap.add_argument("--docs", default="en,de,ru,ky")
    ap.add_argument("--weights", default="0,0.1,0.25,0.5,1")
    ap.add_argument("--measure", default="nDCG@10")
    args = ap.parse_args()

    import ir_measures

    from rerank.collections.topics import read_topics
    from rerank.collections.trec import read_qrels, strict_order
    from rerank.indexes.fusion import rrf
    from rerank.pipeline import Pipeline, choose_first_stage

    measure = ir_measures.parse_measure(args.measure)
    weights = [float(w) for w in args.weights.split(",")]
    table: dict[str, dict[str, float]] = {}
    for doc_lang in args.docs.split(","):
        qrels = read_qrels(args.data / f"qrels.{doc_lang}.txt")
        pipe = Pipeline(args.indexes / f"udhr-{doc_lang}", first_stage="hybrid", reranker="bi")
        for q_lang in args.topics.split(","):
            queries = read_topics(args.data / f"topics.{q_lang}.tsv", "tsv", q_lang, "title")
            bm = pipe.bm25.batch_search(queries, k=100, threads=2)
            de = pipe.dense.batch_search(queries, k=100)

            def score(run: dict) -> float:
                # strictly ordered as written runs are: fused scores tie often, and ir_measures' back-end
                # would otherwise break the ties by docid instead of by our order
                flat = [sd for docs in run.values() for sd in strict_order(docs)]
                return round(ir_measures.calc_aggregate([measure], qrels, flat)[measure], 4)

            row = {"bm25": score(bm), "dense": score(de)}
            for w in weights:
                fused = {
                    q.query_id: rrf([bm[q.query_id], de[q.query_id]], [w, 1.0], query_id=q.query_id)[:100]
                    for q in queries
                }
                row[f"hybrid {w:g}:1"] = score(fused)
            reranked, _ = pipe.run(queries, k=100)  # hybrid 1:1, top 100 by the bi-encoder's stored vectors
            row["hybrid+bi"] = score(reranked)
            stage = choose_first_stage(q_lang, doc_lang, has_dense=True)
            row["auto is"] = str(stage)
            row["auto"] = row["dense"] if stage.kind == "dense" else row[f"hybrid {stage.weights[0]:g}:1"]
            table[f"{q_lang}->{doc_lang}"] = row
            print(f"{q_lang}->{doc_lang}: {row}", file=sys.stderr)
        pipe.close()
    systems = [k for k in next(iter(table.values())) if k != "auto is"]
    cross = [p for p in table if p.split("->")[0] != p.split("->")[1]]
    same = [p for p in table if p.split("->")[0] == p.split("->")[1]]
    means = {
        name: {s: round(sum(table[p][s] for p in pairs) / len(pairs), 4) for s in systems}
        for name, pairs in (("cross-language pairs", cross), ("same-language pairs", same))
        if pairs
    }
    print(
        json.dumps(
            {"measure": args.measure, "backbone": pipe.reranker.info.name, "pairs": table, "means": means},
            indent=1,
            ensure_ascii=False,
        )
    )


if __name__ == "__main__":
    main()
