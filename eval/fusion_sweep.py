"""After-the-fact fusion of the reranked run with its first stage, from runs a grid already wrote: is the
default (the cross-encoder's order alone, as the task module's dev split chose) also best on the dev sets?

For each report folder and query language it re-fuses the top ``--depth`` of ``--system`` (the reranked run)
with the top ``--depth`` of ``--first`` two ways and scores nDCG@10 (ir_measures), with the paired t-test
against the first stage (scipy):

* ``rrf w``: reciprocal-rank fusion (k = 60), the first stage at weight w, the cross-encoder's at 1 — what
  ``rerank search --first-stage-weight w`` does;
* ``+b·prior``: the cross-encoder's score plus b × the first stage's logit (cosine / 0.01): more weight on the
  residual head's starting point, the learned correction kept.

Documents below the depth keep the first stage's order, as search does.

    .venv/bin/python eval/fusion_sweep.py reports/dev-qed reports/dev-tatoeba reports/dev-lohelp reports/grid
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RRF = (0.0, 0.25, 0.5, 1.0)
BOOST = (0.5, 1.0, 2.0)


def fused(reranked: list, first: list, depth: int, how: str, w: float) -> list:
    """(docid, score) best first: the top ``depth`` re-fused, the rest in the first stage's order below."""
    from rerank.indexes.fusion import rrf
    from rerank.types import ScoredDoc

    top, cands = reranked[:depth], first[:depth]
    if how == "rrf" and w > 0:
        out = rrf([[ScoredDoc("q", d, s) for d, s in top], [ScoredDoc("q", d, s) for d, s in cands]], [1.0, w], 60)
        head = [(x.doc_id, x.score) for x in out]
    elif how == "boost":
        cos = dict(first)
        head = sorted(((d, s + w * 100 * cos[d]) for d, s in top), key=lambda x: -x[1])
    else:
        head = list(top)
    floor = min((s for _, s in head), default=0.0)
    return head + [(d, floor - 1 - i) for i, (d, _) in enumerate(first[depth:])]


def main(argv=None) -> None:
    import ir_measures
    from ir_measures import nDCG
    from scipy import stats

    from rerank.collections.trec import read_qrels, read_run
    from rerank.eval.grid import load_grid

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="+", type=Path)
    ap.add_argument("--system", default="default")
    ap.add_argument("--first", default="dense")
    ap.add_argument("--depth", type=int, default=20)
    args = ap.parse_args(argv)
    ways = [("rrf", w) for w in RRF] + [("boost", b) for b in BOOST]
    print("| set | queries | " + args.first + " | " + " | ".join(f"{h} {w:g}" for h, w in ways) + " |")
    print("|---|---:|---:|" + "---:|" * len(ways))
    for rep in args.reports:
        grid = load_grid(ROOT / json.loads((rep / "grid.json").read_text())["grid"])
        c = grid.collection
        for doc in c["doc_langs"]:
            for query in c["query_langs"]:
                runs = rep / "runs" / doc
                if not (runs / f"{args.system}.{query}.trec").is_file():
                    continue
                qrels = read_qrels(c["qrels"].format(doc=doc, query=query))
                by = {}
                for name in (args.system, args.first):
                    for sd in read_run(runs / f"{name}.{query}.trec"):
                        by.setdefault(name, {}).setdefault(sd.query_id, []).append((sd.doc_id, sd.score))

                def score(run: dict) -> dict:
                    recs = [ir_measures.ScoredDoc(q, d, s) for q, lst in run.items() for d, s in lst]
                    return {m.query_id: m.value for m in ir_measures.iter_calc([nDCG @ 10], qrels, recs)}

                base = score(by[args.first])
                qs = sorted({q.query_id for q in qrels})
                cells = []
                for how, w in ways:
                    run = {q: fused(lst, by[args.first][q], args.depth, how, w) for q, lst in by[args.system].items()}
                    got = score(run)
                    a, b = [got.get(q, 0.0) for q in qs], [base.get(q, 0.0) for q in qs]
                    p = stats.ttest_rel(a, b).pvalue
                    cells.append(f"{sum(a) / len(a):.3f}" + ("†" if p < 0.05 else ""))
                first = sum(base.get(q, 0.0) for q in qs) / len(qs)
                print(f"| {rep.name} {query}→{doc} | {len(qs)} | {first:.3f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
