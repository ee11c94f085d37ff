"""Metrics through ir_measures, per query and mean, over a fixed query set.

The evaluated queries are those of the qrels with at least one relevant judgement; a run with no result
for one of them scores 0 on it (as ``trec_eval -c`` does), so every system is averaged over the same
queries and paired tests compare like with like. Unjudged documents count as non-relevant unless
``judged_only`` (then unjudged documents are removed from the runs first: condensed lists).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rerank.errors import RerankError, warn
from rerank.types import Qrel, ScoredDoc

DEFAULT_METRICS = "MAP nDCG@10 nDCG@20 P@10 R@100 MRR Judged@10"
_MEAN_NAMES = {"AP": "MAP", "RR": "MRR"}  # ir_measures names the per-query measure; tables show the mean


def label(measure) -> str:
    """How a measure is shown: ir_measures' name, with AP and RR as the means they are (MAP, MRR)."""
    name = str(measure)
    m = re.match(r"(AP|RR)(?=$|[@(])", name)
    return _MEAN_NAMES[m.group(1)] + name[m.end() :] if m else name


def parse_metrics(text: str | Sequence[str]) -> list:
    """``"MAP nDCG@10 RR"`` (spaces or commas) → ir_measures measures; an unknown name is refused with
    the nearest known ones."""
    import ir_measures

    names = re.split(r"[\s,]+", text.strip()) if isinstance(text, str) else list(text)
    names = [n for n in names if n]
    if not names:
        raise RerankError("no metrics given", hint=f"e.g. --metrics {DEFAULT_METRICS!r}")
    out = []
    for name in names:
        try:
            out.append(ir_measures.parse_measure(name))
        except (NameError, ValueError, TypeError, SyntaxError) as e:
            base = re.split(r"[@(]", name, maxsplit=1)[0]
            known = sorted(ir_measures.measures.registry)
            near = difflib.get_close_matches(base, known, n=3, cutoff=0.5)
            rest = name[len(base) :]
            hint = f"did you mean {', '.join(n + rest for n in near)}?" if near else "e.g. MAP nDCG@10 P@10 R@100 RR"
            raise RerankError(f"unknown metric {name!r} ({' '.join(str(e).split())})", hint=hint) from None
    if len({label(m) for m in out}) != len(out):
        raise RerankError("a metric is named twice", hint="name each metric once")
    return out


@dataclass
class Evaluation:
    """Per-query values of every measure for every system, over one query set (aligned arrays)."""

    measures: list[str]
    systems: list[str]
    queries: list[str]
    per_query: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # system -> measure -> values
    missing: dict[str, int] = field(default_factory=dict)  # system -> queries it has no result for

    def mean(self, system: str, measure: str) -> float:
        return float(self.per_query[system][measure].mean())

    def values(self, system: str, measure: str) -> np.ndarray:
        return self.per_query[system][measure]


def evaluate(
    qrels: Sequence[Qrel],
    runs: Mapping[str, Sequence[ScoredDoc]],
    measures: Sequence | str,
    *,
    judged_only: bool = False,
) -> Evaluation:
    """Score every run in ``runs`` (name → run) with ``measures`` on the queries of ``qrels`` that have a
    relevant document. Refuses a run with no query in common with the qrels."""
    import ir_measures

    from rerank.collections.trec import count_ties

    if isinstance(measures, str):
        measures = parse_metrics(measures)
    if not runs:
        raise RerankError("no run to evaluate", hint="give at least one --run")
    queries = sorted({q.query_id for q in qrels if q.relevance > 0}, key=_natural)
    if not queries:
        raise RerankError("the qrels have no relevant judgement", hint="check the qrels file")
    qset = set(queries)
    judged = {(q.query_id, q.doc_id) for q in qrels}
    names = [label(m) for m in measures]
    ev = Evaluation(names, list(runs), queries)
    for system, run in runs.items():
        run_q = {d.query_id for d in run}
        common = run_q & qset
        if run and not common:
            raise RerankError(
                f"run {system} and the qrels have no query in common (run: {len(run_q)} queries, e.g. "
                f"{_example(run_q)}; qrels: {len(qset)} with a relevant document, e.g. {_example(qset)})",
                hint="are they for the same topics? (query ids must match exactly)",
            )
        ties = count_ties(run)
        if ties:
            warn(
                f"run {system} has {ties} documents with tied scores; evaluators break ties differently "
                "(write runs with rerank, or break ties by rank before evaluating)"
            )
        if judged_only:
            run = [d for d in run if (d.query_id, d.doc_id) in judged]
        missing = len(qset - run_q)
        ev.missing[system] = missing
        if not run:
            warn(f"run {system} is empty: every query scores 0")
        elif missing:
            warn(f"run {system} has no results for {missing} of {len(qset)} queries; they score 0")
        table = {n: {} for n in names}
        for m in ir_measures.iter_calc(list(measures), list(qrels), [d for d in run if d.query_id in qset]):
            table[label(m.measure)][m.query_id] = float(m.value)
        ev.per_query[system] = {n: np.array([table[n].get(q, 0.0) for q in queries]) for n in names}
    return ev


def _natural(qid: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", qid)]


def _example(ids: set[str]) -> str:
    return ", ".join(sorted(ids, key=_natural)[:3]) or "none"
