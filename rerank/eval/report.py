"""Reports a person reads and a machine parses, from an :class:`~rerank.eval.metrics.Evaluation`.

A report folder holds:

* ``index.html`` — one self-contained page: the system × measure table (best per column in bold,
  † where a system differs from the baseline after Holm correction, the p-values on hover), the
  plots embedded, and the command that produced each run where it was recorded;
* ``metric-<measure>.png`` — a bar per system with its 95% confidence interval;
* ``diff-<system>.png`` — per-query difference from the baseline on the first measure, sorted;
* ``metrics.csv`` / ``per-query.csv`` / ``metrics.json`` — for machines; ``table.md`` — for pasting.

Everything is written to a temporary folder and renamed into place when complete.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from rerank.eval.significance import Comparison, confidence_interval

MARK = "†"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def table_rows(ev, comparisons: Mapping, *, test: str = "t", alpha: float = 0.05, digits: int = 4) -> list[list[str]]:
    """Rows (header first) of the system × measure table as text, with significance marks."""
    rows = [["system", *ev.measures]]
    for s in ev.systems:
        row = [s]
        for m in ev.measures:
            cell = f"{ev.mean(s, m):.{digits}f}"
            c = comparisons.get((s, m))
            if c is not None and c.significant(test, alpha):
                cell += MARK
            row.append(cell)
        rows.append(row)
    return rows


def markdown_table(ev, comparisons: Mapping, baseline: str | None, *, test: str = "t", alpha: float = 0.05) -> str:
    rows = table_rows(ev, comparisons, test=test, alpha=alpha)
    best = {m: max(ev.mean(s, m) for s in ev.systems) for m in ev.measures}
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    for s, row in zip(ev.systems, rows[1:], strict=True):
        cells = [row[0]] + [
            f"**{c}**" if ev.mean(s, m) == best[m] else c for m, c in zip(ev.measures, row[1:], strict=True)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if baseline:
        lines.append("")
        lines.append(legend_text(baseline, test, alpha, len(ev.queries)))
    return "\n".join(lines) + "\n"


def legend_text(baseline: str, test: str, alpha: float, n: int) -> str:
    name = "paired two-sided t-test" if test == "t" else "paired randomisation test"
    return (
        f"{MARK}: different from {baseline} ({name}, Holm–Bonferroni across systems, p < {alpha}); "
        f"{n} queries; bold: best in the column."
    )


def _plot_means(ev, measure: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = [ev.mean(s, measure) for s in ev.systems]
    cis = [confidence_interval(ev.values(s, measure)) for s in ev.systems]
    err = [
        [m - lo for m, (lo, _) in zip(means, cis, strict=True)],
        [hi - m for m, (_, hi) in zip(means, cis, strict=True)],
    ]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(ev.systems) + 2), 3.6), dpi=110)
    colors = plt.cm.tab10.colors
    ax.bar(range(len(means)), means, yerr=err, capsize=4, color=[colors[i % 10] for i in range(len(means))])
    ax.set_xticks(range(len(means)), ev.systems, rotation=20, ha="right")
    ax.set_ylabel(measure)
    ax.set_title(f"{measure}: mean over {len(ev.queries)} queries, 95% CI")
    ax.set_ylim(0, max(1.0, max(hi for _, hi in cis) * 1.05))
    for i, m in enumerate(means):
        if m > 0.08:  # inside the bar, where there is room
            ax.text(i, m / 2, f"{m:.3f}", ha="center", va="center", fontsize=8, color="white")
        else:
            ax.text(i, m + 0.02, f"{m:.3f}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_diff(ev, system: str, baseline: str, measure: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    d = ev.values(system, measure) - ev.values(baseline, measure)
    order = np.argsort(-d, kind="stable")
    fig, ax = plt.subplots(figsize=(max(4.0, 0.12 * len(d) + 2), 3.4), dpi=110)
    ax.bar(range(len(d)), d[order], color=["#2a7" if v > 0 else "#c44" if v < 0 else "#888" for v in d[order]])
    ax.axhline(0, color="black", linewidth=0.8)
    if len(d) <= 40:
        ax.set_xticks(range(len(d)), [ev.queries[i] for i in order], rotation=90, fontsize=6)
    else:
        ax.set_xticks([])
        ax.set_xlabel("queries, sorted by difference")
    ax.set_ylabel(f"Δ {measure}")
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    ax.set_title(f"{system} − {baseline}: {wins} better, {losses} worse, {len(d) - wins - losses} equal")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def write_report(
    ev,
    comparisons: Mapping[tuple[str, str], Comparison],
    out: str | os.PathLike,
    *,
    baseline: str | None = None,
    commands: Mapping[str, str] | None = None,
    title: str = "Evaluation",
    test: str = "t",
    alpha: float = 0.05,
    notes: Sequence[str] = (),
    overwrite: bool = False,
) -> Path:
    """Write the report folder ``out`` (see the module docstring); returns its path."""
    from rerank.files import atomic_dir

    commands = commands or {}
    with atomic_dir(out, overwrite, marker="metrics.json") as tmp:
        plots: list[tuple[str, str]] = []
        for m in ev.measures:
            p = tmp / f"metric-{_slug(m)}.png"
            _plot_means(ev, m, p)
            plots.append((f"{m} per system", p.name))
        if baseline:
            for s in ev.systems:
                if s != baseline:
                    p = tmp / f"diff-{_slug(s)}.png"
                    _plot_diff(ev, s, baseline, ev.measures[0], p)
                    plots.append((f"per query: {s} vs {baseline} ({ev.measures[0]})", p.name))
        _write_csvs(ev, comparisons, tmp)
        md = markdown_table(ev, comparisons, baseline, test=test, alpha=alpha)
        (tmp / "table.md").write_text(md, encoding="utf-8")
        data = {
            "title": title,
            "queries": ev.queries,
            "measures": ev.measures,
            "systems": ev.systems,
            "baseline": baseline,
            "test": test,
            "alpha": alpha,
            "means": {s: {m: ev.mean(s, m) for m in ev.measures} for s in ev.systems},
            "ci95": {s: {m: confidence_interval(ev.values(s, m)) for m in ev.measures} for s in ev.systems},
            "missing_queries": ev.missing,
            "comparisons": [vars(c) for c in comparisons.values()],
            "commands": dict(commands),
            "notes": list(notes),
        }
        (tmp / "metrics.json").write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        page = _html(ev, comparisons, baseline, commands, title, test, alpha, notes, [(c, tmp / f) for c, f in plots])
        (tmp / "index.html").write_text(page, encoding="utf-8")
    return Path(out)


def _write_csvs(ev, comparisons: Mapping, folder: Path) -> None:
    with (folder / "metrics.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(list(METRIC_COLUMNS))
        for s in ev.systems:
            for m in ev.measures:
                lo, hi = confidence_interval(ev.values(s, m))
                c = comparisons.get((s, m))
                extra = [c.diff, c.p_t, c.p_t_holm, c.p_perm, c.p_perm_holm, c.effect_size] if c else [""] * 6
                w.writerow([s, m, ev.mean(s, m), lo, hi, len(ev.queries), *extra])
    with (folder / "per-query.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["system", "query_id", *ev.measures])
        for s in ev.systems:
            for i, q in enumerate(ev.queries):
                w.writerow([s, q, *(float(ev.values(s, m)[i]) for m in ev.measures)])


def read_per_query(folder: str | os.PathLike, measure: str) -> dict[str, dict[str, float]]:
    """A report's ``per-query.csv`` read back: system → query id → the value of ``measure``."""
    per: dict[str, dict[str, float]] = {}
    with open(Path(folder) / "per-query.csv", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            per.setdefault(r["system"], {})[r["query_id"]] = float(r[measure])
    return per


#: The columns of a report's metrics.csv (the grid's grid.csv puts the document and query languages first).
METRIC_COLUMNS = (
    "system",
    "measure",
    "mean",
    "ci95_low",
    "ci95_high",
    "queries",
    "diff_vs_baseline",
    "p_t",
    "p_t_holm",
    "p_perm",
    "p_perm_holm",
    "effect_size_dz",
)

REPORT_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}thead th{background:#f0f0f0}td.best{font-weight:bold}
td.sig{background:#eef7ee}td.sigdown{background:#fbeeee}.legend{color:#555;font-size:90%}
figure{display:inline-block;margin:1em 1em 0 0;vertical-align:top}figcaption{font-size:90%;color:#555}
code{background:#f6f6f6;padding:1px 4px}pre{background:#f6f6f6;padding:8px;white-space:pre-wrap}
"""


def _html(ev, comparisons, baseline, commands, title, test, alpha, notes, plots) -> str:
    e = html.escape
    best = {m: max(ev.mean(s, m) for s in ev.systems) for m in ev.measures}
    head = "".join(f"<th>{e(m)}</th>" for m in ev.measures)
    body = []
    for s in ev.systems:
        cells = [f"<td>{e(s)}{' (baseline)' if s == baseline else ''}</td>"]
        for m in ev.measures:
            v = ev.mean(s, m)
            lo, hi = confidence_interval(ev.values(s, m))
            cls, tip, mark = [], f"95% CI {lo:.4f}–{hi:.4f}", ""
            if v == best[m]:
                cls.append("best")
            c = comparisons.get((s, m))
            if c is not None:
                tip += (
                    f"; vs {baseline}: Δ {c.diff:+.4f}, t-test p={c.p_t:.4f} (Holm {c.p_t_holm:.4f}), "
                    f"randomisation p={c.p_perm:.4f} (Holm {c.p_perm_holm:.4f}), d_z={c.effect_size:.2f}"
                )
                if c.significant(test, alpha):
                    mark = MARK
                    cls.append("sig" if c.diff > 0 else "sigdown")
            cells.append(f'<td class="{" ".join(cls)}" title="{e(tip)}">{v:.4f}{mark}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    legend = legend_text(baseline, test, alpha, len(ev.queries)) if baseline else f"{len(ev.queries)} queries."
    figs = "".join(
        f'<figure><img alt="{e(cap)}" src="{png_data_uri(p)}"><figcaption>{e(cap)}</figcaption></figure>'
        for cap, p in plots
    )
    cmds = "".join(
        f"<li><b>{e(s)}</b>: <code>{e(commands[s])}</code></li>"
        if commands.get(s)
        else f"<li><b>{e(s)}</b>: (not recorded)</li>"
        for s in ev.systems
    )
    missing = [f"{s}: no results for {n} queries (scored 0)" for s, n in ev.missing.items() if n]
    extra = "".join(f"<li>{e(n)}</li>" for n in [*notes, *missing])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title><style>{REPORT_CSS}</style></head>
<body>
<h1>{e(title)}</h1>
<table id="results"><thead><tr><th>system</th>{head}</tr></thead><tbody>
{"".join(body)}
</tbody></table>
<p class="legend">{e(legend)} Green: significantly better, red: significantly worse. Hover a cell for the
confidence interval, p-values and effect size.</p>
{f"<ul>{extra}</ul>" if extra else ""}
<h2>Plots</h2>
{figs}
<h2>How each run was made</h2>
<ul>{cmds}</ul>
<p class="legend">Files beside this page: metrics.csv, per-query.csv, metrics.json, table.md.</p>
</body></html>
"""
