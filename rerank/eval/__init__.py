"""Evaluation the way the field does it: ir_measures metrics per query and mean, paired significance
tests against a baseline with Holm–Bonferroni correction, and reports (HTML, PNG, CSV, JSON, Markdown)."""

from __future__ import annotations

__all__ = ["Evaluation", "compare", "evaluate", "parse_metrics", "write_report"]


def __getattr__(name: str):
    if name in ("Evaluation", "evaluate", "parse_metrics"):
        from rerank.eval import metrics

        return getattr(metrics, name)
    if name == "compare":
        from rerank.eval.significance import compare

        return compare
    if name == "write_report":
        from rerank.eval.report import write_report

        return write_report
    raise AttributeError(f"module 'rerank.eval' has no attribute {name!r}")
