"""The dev-set table of modules/README.md: per dev set and query language, the best first stage (the best of the
grid's systems that rerank nothing) against each reranking system, with the paired two-sided t-test over the
queries (scipy) and the goal of the ranking module: the best first stage + 0.02 nDCG@10, or + half the
distance to 1.0 where that is less.

    .venv/bin/rerank eval grid eval/dev-qed.toml --out reports/dev-qed        # and dev-tatoeba, dev-lohelp, grid
    .venv/bin/python eval/dev_table.py reports/dev-qed reports/dev-tatoeba reports/dev-lohelp reports/grid
    .venv/bin/python eval/dev_table.py reports/dev-* --systems default,residual --measure nDCG@10
    .venv/bin/python eval/dev_table.py reports/dev-tatoeba reports/grid --against default --systems task+lang

Prints Markdown: one row per (report, query → document language, reranking system). ``--against S`` tests each
system against S instead of the best first stage (the language-module ablation: task+lang against the task module).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def goal(best: float, gain: float = 0.02) -> float:
    """What a reranker must reach: ``gain`` above the best first stage, or half the distance to 1 near the ceiling."""
    return best + min(gain, (1.0 - best) / 2)


def rows_of(report: Path, measure: str, systems: list[str] | None, against: str | None = None) -> list[dict]:
    import numpy as np

    from rerank.eval.report import read_per_query
    from rerank.eval.significance import paired_t_p

    info = json.loads((report / "grid.json").read_text(encoding="utf-8"))
    config = {s["name"]: s for s in info["systems_config"]}
    first = [s for s in info["systems"] if config.get(s, {}).get("reranker", "auto") == "none"]
    others = [s for s in info["systems"] if s != against and (s in systems if systems else s not in first)]
    out = []
    for column in info["columns"]:
        query, doc = column.split("→")
        per = read_per_query(report / "cells" / f"{query}-{doc}", measure)
        means = {s: float(np.mean(list(per[s].values()))) for s in first if s in per}
        best = max(means, key=lambda s: (means[s], -first.index(s))) if against is None else against
        if best not in per:
            continue
        for s in others:
            if s not in per:
                continue
            qids = sorted(set(per[s]) & set(per[best]))
            x, b = np.array([per[s][q] for q in qids]), np.array([per[best][q] for q in qids])
            out.append(
                {
                    "report": report.name,
                    "column": column,
                    "n": len(qids),
                    "first_stage": best,
                    "first": float(b.mean()),
                    "system": s,
                    "value": float(x.mean()),
                    "diff": float((x - b).mean()),
                    "p": paired_t_p(x, b),
                    "goal": goal(float(b.mean())),
                }
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", type=Path, nargs="+", help="grid report folders (rerank eval grid --out)")
    ap.add_argument("--measure", default="nDCG@10")
    ap.add_argument("--systems", default=None, help="comma-separated reranking systems (default: all)")
    ap.add_argument("--against", default=None, help="test against this system instead of the best first stage")
    args = ap.parse_args()
    systems = args.systems.split(",") if args.systems else None
    m = args.measure
    base = args.against or "best first stage"
    print(f"| dev set | queries | n | {base} | {m} | system | {m} | Δ | p (t) | goal | met |")
    print("|---|---|---:|---|---:|---|---:|---:|---:|---:|---|")
    for report in args.reports:
        for r in rows_of(report, m, systems, args.against):
            # the goal: reached, and significant where the set has 100 queries or more
            met = "yes" if r["value"] >= r["goal"] and (r["n"] < 100 or r["p"] < 0.05) else "no"
            print(
                f"| {r['report']} | {r['column']} | {r['n']} | {r['first_stage']} | {r['first']:.3f} "
                f"| {r['system']} | {r['value']:.3f} | {r['diff']:+.3f} | {r['p']:.3g} | {r['goal']:.3f} | {met} |"
            )


if __name__ == "__main__":
    main()
