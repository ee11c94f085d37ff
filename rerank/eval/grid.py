"""The experiment grid: systems × query languages (× document languages), one command, one report.

A grid is a TOML file::

    title = "…"
    metrics = "MAP nDCG@10 MRR"
    baseline = "bm25"            # the system others are tested against, in each column
    k = 100                      # run length

    [collection]
    docs = "data/udhr/docs.{doc}.jsonl"      # {doc}: document language, {query}: query language
    index = "indexes/udhr-{doc}"             # built (BM25 + dense) when missing
    topics = "data/udhr/topics.{query}.tsv"
    qrels = "data/udhr/qrels.{doc}.txt"
    doc_langs = ["en"]
    query_langs = ["ky", "ug", "tr", "en"]

    [[systems]]
    name = "hybrid+bi"
    first_stage = "hybrid"                   # bm25 | dense | hybrid | auto
    reranker = "bi"                          # none | bi | cross | auto
    # model = "path", modules = ["modules/ky-lang", …] or "auto" (the shipped ones, as `rerank search` stacks
    # them), module_density = "2%", module_rank = 8,
    # depth = 20 (default: the pipeline's: 20 by a cross-encoder, 100 by the bi-encoder),
    # fusion_weights = [1.0, 1.0], requires = ["modules/en-task"],
    # first_stage_weight = 0 (cross-encoder's order alone; default "auto": the task module's dev choice),
    # precision = "fp32" (the cross-encoder's arithmetic; default "auto": bf16 where the processor has it)

Runs are cached under ``<out>/runs/`` with a key over the system's settings, the topic file, the index
files and the fingerprints of the backbone and modules: a grid run again reuses every run whose key
still matches (and so resumes where an interrupted one stopped). A system whose ``requires`` paths do
not exist yet (a module not trained yet) is skipped, and the report says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from rerank.errors import RerankError

TOP_KEYS = {"title", "metrics", "baseline", "k", "test", "alpha", "collection", "systems"}
COLLECTION_KEYS = {"docs", "index", "topics", "qrels", "doc_langs", "query_langs"}
SYSTEM_KEYS = {
    "name",
    "first_stage",
    "reranker",
    "model",
    "dense_model",
    "modules",
    "module_density",
    "module_rank",
    "depth",
    "fusion_weights",
    "fusion_k",
    "max_length",
    "requires",
    "first_stage_weight",
    "precision",
}


@dataclass
class Grid:
    path: Path
    title: str
    metrics: str
    baseline: str
    k: int
    test: str
    alpha: float
    collection: dict
    systems: list[dict]
    skipped: dict[str, str] = field(default_factory=dict)  # system -> why


def _line_of(text: str, key: str) -> int:
    for i, line in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*{re.escape(key)}\s*=", line):
            return i
    return 0


def load_grid(path: str | os.PathLike) -> Grid:
    """Read and check a grid file: unknown or missing keys are reported with their line."""
    import tomllib

    p = Path(path)
    if not p.is_file():
        raise RerankError(f"grid file {p} does not exist", hint="e.g. eval/grid.toml")
    text = p.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RerankError(f"{p}: not valid TOML ({e})", hint="fix the file") from None

    def unknown(keys, allowed, where):
        for key in keys:
            if key not in allowed:
                line = _line_of(text, key)
                raise RerankError(
                    f"{p}:{line}: unknown key {key!r} in {where}", hint=f"known keys: {', '.join(sorted(allowed))}"
                )

    unknown(raw, TOP_KEYS, "the grid")
    coll = raw.get("collection")
    if not isinstance(coll, dict):
        raise RerankError(f"{p}: no [collection] table", hint="see eval/grid.toml for the layout")
    unknown(coll, COLLECTION_KEYS, "[collection]")
    missing = sorted(COLLECTION_KEYS - set(coll))
    if missing:
        raise RerankError(f"{p}: [collection] lacks {', '.join(missing)}", hint="see eval/grid.toml for the layout")
    systems = raw.get("systems")
    if not isinstance(systems, list) or not systems:
        raise RerankError(f"{p}: no [[systems]]", hint="add at least one [[systems]] table")
    names = []
    for s in systems:
        unknown(s, SYSTEM_KEYS, f"[[systems]] {s.get('name', '?')}")
        if "name" not in s:
            raise RerankError(f"{p}: a [[systems]] table has no name", hint='add name = "…"')
        names.append(s["name"])
    if len(set(names)) != len(names):
        raise RerankError(f"{p}: two systems have one name", hint="name each system once")
    baseline = raw.get("baseline", names[0])
    if baseline not in names:
        raise RerankError(f"{p}:{_line_of(text, 'baseline')}: baseline {baseline!r} is not a system", hint=str(names))
    from rerank.eval.metrics import DEFAULT_METRICS, parse_metrics

    metrics = raw.get("metrics", DEFAULT_METRICS)
    parse_metrics(metrics)
    base = p.parent.parent if p.parent.name == "eval" else p.parent  # paths are relative to the project
    for key in ("docs", "index", "topics", "qrels"):
        coll[key] = str(base / coll[key]) if not Path(coll[key]).is_absolute() else coll[key]
    for s in systems:
        for key in ("model", "dense_model"):
            if s.get(key):
                s[key] = str(base / s[key])
        if s.get("modules") != "auto":  # "auto": the shipped modules, as `rerank search` stacks them
            s["modules"] = [str(base / m) for m in s.get("modules", [])]
        s["requires"] = [str(base / m) for m in s.get("requires", [])]
    return Grid(
        p,
        raw.get("title", p.stem),
        metrics,
        baseline,
        int(raw.get("k", 100)),
        raw.get("test", "t"),
        float(raw.get("alpha", 0.05)),
        coll,
        systems,
    )


def _file_key(path: Path) -> list:
    """What identifies a file or folder's content cheaply: names, sizes, modification times."""
    if path.is_file():
        st = path.stat()
        return [path.name, st.st_size, st.st_mtime_ns]
    return [_file_key(f) for f in sorted(path.rglob("*")) if f.is_file()]


def cache_key(system: dict, doc: str, query: str, topics: Path, index: Path, k: int) -> str:
    from rerank.backbone import fingerprint, resolve_model

    facts = {
        "system": {key: system[key] for key in sorted(system) if key != "requires"},
        "doc": doc,
        "query": query,
        "k": k,
        "topics": hashlib.sha256(topics.read_bytes()).hexdigest(),
        "index": _file_key(index),
        "model": fingerprint(resolve_model(system.get("model")).path),
        "modules": [_file_key(Path(m)) for m in _module_paths(system)],
    }
    if system.get("reranker", "auto") != "none":  # what "auto" precision became on this machine decides the scores
        from rerank.backbone.runtime import pick_device
        from rerank.scoring.precision import resolve_precision

        facts["precision"] = resolve_precision(system.get("precision", "auto"), pick_device(None))
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()


def _module_paths(system: dict) -> list[Path]:
    """The module folders a system stacks (for ``"auto"``: every shipped module)."""
    if system.get("modules") == "auto":
        from rerank.modules.catalog import catalog

        return [e.path for e in catalog()]
    return [Path(m) for m in system.get("modules", [])]


def _ensure_index(index: Path, docs: Path, lang: str, progress: bool) -> None:
    if (index / "rerank-index.json").exists():
        return
    from rerank.indexes.bm25 import index_file
    from rerank.indexes.dense import build_dense

    index_file(docs, index, lang, progress=progress)
    build_dense(index, progress=progress, overwrite=True)


def check_grid_folder(out: Path) -> None:
    """A grid writes into its folder as it goes (the run cache): refuse a file, or a folder holding
    anything but an earlier grid's report, rather than mix the two."""
    if not os.path.lexists(out):
        return
    if not out.is_dir():
        raise RerankError(f"the grid's --out is a file: {out}", hint="give a folder (new, or an earlier grid's)")
    if any(out.iterdir()) and not ((out / "grid.json").is_file() or (out / "runs").is_dir()):
        raise RerankError(
            f"{out} holds something other than a grid's report (no grid.json or runs/)",
            hint="give a new folder, or an earlier grid's --out",
        )


def run_grid(grid: Grid, out: str | os.PathLike, *, progress: bool = True, command: str | None = None) -> dict:
    """Run (or reuse) every system × document language × query language; returns
    {(doc, query): {system: run path}}. ``command``: how the grid was invoked, recorded beside each run."""
    from tqdm import tqdm

    from rerank.collections.topics import read_topics
    from rerank.collections.trec import write_run
    from rerank.pipeline import Pipeline, SearchSettings

    out = Path(out)
    check_grid_folder(out)
    c = grid.collection
    active = []
    for s in grid.systems:
        missing = [r for r in s["requires"] + [str(m) for m in _module_paths(s)] if not Path(r).exists()]
        if missing:
            grid.skipped[s["name"]] = f"needs {missing[0]} (not there yet)"
        else:
            active.append(s)
    if grid.baseline not in {s["name"] for s in active}:
        raise RerankError(f"the baseline {grid.baseline} cannot run: {grid.skipped.get(grid.baseline)}", hint="")
    cells = [(d, q, s) for d in c["doc_langs"] for s in active for q in c["query_langs"]]
    runs: dict = {}
    with tqdm(total=len(cells), desc="grid", unit="run", disable=not progress) as bar:
        for doc in c["doc_langs"]:
            index = Path(c["index"].format(doc=doc))
            _ensure_index(index, Path(c["docs"].format(doc=doc)), doc, progress)
            for s in active:
                pipe = None
                try:
                    for query in c["query_langs"]:
                        topics = Path(c["topics"].format(query=query, doc=doc))
                        key = cache_key(s, doc, query, topics, index, grid.k)
                        path = out / "runs" / doc / f"{s['name']}.{query}.trec"
                        side = Path(f"{path}.json")
                        runs.setdefault((doc, query), {})[s["name"]] = path
                        if path.is_file() and side.is_file() and json.loads(side.read_text()).get("key") == key:
                            bar.update(1)
                            continue  # reused
                        bar.set_postfix_str(f"{s['name']} {query}→{doc}")
                        if pipe is None:
                            pipe = Pipeline(index, SearchSettings.from_record(s))
                        queries = read_topics(topics, lang=query)
                        final, _ = pipe.run(queries, k=grid.k)
                        flat = [sd for q in queries for sd in final[q.query_id]]
                        path.parent.mkdir(parents=True, exist_ok=True)
                        write_run(flat, path, tag=s["name"], overwrite=True)
                        record = {
                            "key": key,
                            "command": command or _command(grid),
                            "system": s,
                            "doc": doc,
                            "query": query,
                        }
                        side.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
                        bar.update(1)
                finally:
                    if pipe is not None:
                        pipe.close()
    return runs


def _command(grid: Grid) -> str:
    return f"rerank eval grid {grid.path}"


def evaluate_grid(grid: Grid, runs: dict) -> dict:
    """{(doc, query): (Evaluation, comparisons)} over the systems that ran, in the grid's order."""
    from rerank.collections.trec import read_qrels, read_run
    from rerank.eval.metrics import evaluate, parse_metrics
    from rerank.eval.significance import compare

    measures = parse_metrics(grid.metrics)
    cells = {}
    for (doc, query), by_system in runs.items():
        qrels = read_qrels(grid.collection["qrels"].format(doc=doc, query=query))
        loaded = {name: read_run(path) if path.stat().st_size else [] for name, path in by_system.items()}
        ev = evaluate(qrels, loaded, measures)
        cells[(doc, query)] = (ev, compare(ev, grid.baseline))
    return cells


def write_grid_report(grid: Grid, cells: dict, out: str | os.PathLike, command: str | None = None) -> Path:
    """``<out>/index.html`` (one table per measure: rows = systems, columns = query→document languages,
    † vs the baseline), grouped bar charts, ``grid.csv``/``grid.json``/``grid.md``, and a full report
    per column under ``<out>/cells/``."""
    import csv
    import html

    from rerank.eval.report import MARK, METRIC_COLUMNS, legend_text, png_data_uri, write_report
    from rerank.eval.significance import confidence_interval
    from rerank.files import atomic_write

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    keys = list(cells)
    columns = [f"{q}→{d}" for d, q in keys]
    first_ev = next(iter(cells.values()))[0]
    measures, systems = first_ev.measures, first_ev.systems
    for (doc, query), (ev, comps) in cells.items():
        title = f"{grid.title}: {query} queries → {doc} documents"
        write_report(
            ev,
            comps,
            out / "cells" / f"{query}-{doc}",
            baseline=grid.baseline,
            title=title,
            test=grid.test,
            alpha=grid.alpha,
            overwrite=True,
        )
    rows, md, charts = [], [], []
    for m in measures:
        table = {}
        for s in systems:
            vals = []
            for doc, query in keys:
                ev, comps = cells[(doc, query)]
                c = comps.get((s, m))
                vals.append((ev.mean(s, m), c is not None and c.significant(grid.test, grid.alpha), c))
                lo, hi = confidence_interval(ev.values(s, m))
                rows.append(
                    [
                        doc,
                        query,
                        s,
                        m,
                        ev.mean(s, m),
                        lo,
                        hi,
                        len(ev.queries),
                        *([c.diff, c.p_t, c.p_t_holm, c.p_perm, c.p_perm_holm, c.effect_size] if c else [""] * 6),
                    ]
                )
            table[s] = vals
        best = [max(table[s][i][0] for s in systems) for i in range(len(keys))]
        avg = {s: sum(v for v, _, _ in table[s]) / len(keys) for s in systems}
        md.append(f"**{m}**\n")
        md.append("| system | " + " | ".join(columns) + " | mean |")
        md.append("|---|" + "---|" * (len(columns) + 1))
        for s in systems:
            cells_md = [
                (f"**{v:.4f}{MARK if sig else ''}**" if v == best[i] else f"{v:.4f}{MARK if sig else ''}")
                for i, (v, sig, _) in enumerate(table[s])
            ]
            md.append(f"| {s} | " + " | ".join(cells_md) + f" | {avg[s]:.4f} |")
        md.append("")
        charts.append((m, table))
    n_q = sorted({len(ev.queries) for ev, _ in cells.values()})
    legend = legend_text(grid.baseline, grid.test, grid.alpha, n_q[0] if len(n_q) == 1 else 0)
    md.append(legend)
    if grid.skipped:
        md.append("")
        md.extend(f"Not run: {s} — {why}." for s, why in grid.skipped.items())
    with atomic_write(out / "grid.md", overwrite=True) as f:
        f.write("\n".join(md) + "\n")
    with atomic_write(out / "grid.csv", overwrite=True) as f:
        w = csv.writer(f)
        w.writerow(["doc_lang", "query_lang", *METRIC_COLUMNS])
        w.writerows(rows)
    pngs = []
    for m, table in charts:
        p = out / f"grid-{re.sub(r'[^A-Za-z0-9._-]+', '_', m)}.png"
        _grouped_bars(m, table, columns, systems, cells, keys, p)
        pngs.append((m, p))
    data = {
        "title": grid.title,
        "grid": str(grid.path),
        "baseline": grid.baseline,
        "test": grid.test,
        "alpha": grid.alpha,
        "columns": columns,
        "systems": systems,
        "measures": measures,
        "means": {
            m: {s: dict(zip(columns, [v for v, _, _ in t[s]], strict=True)) for s in systems} for m, t in charts
        },
        "skipped": grid.skipped,
        "systems_config": grid.systems,
    }
    with atomic_write(out / "grid.json", overwrite=True) as f:
        f.write(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    e = html.escape
    parts = []
    for m, table in charts:
        best = [max(table[s][i][0] for s in systems) for i in range(len(keys))]
        head = "".join(f"<th>{e(col)}</th>" for col in columns) + "<th>mean</th>"
        body = []
        for s in systems:
            tds = []
            for i, (v, sig, c) in enumerate(table[s]):
                cls = ["best"] if v == best[i] else []
                tip = ""
                if c is not None:
                    tip = (
                        f"Δ {c.diff:+.4f} vs {grid.baseline}; t-test Holm p={c.p_t_holm:.4f}; "
                        f"randomisation Holm p={c.p_perm_holm:.4f}"
                    )
                    if sig:
                        cls.append("sig" if c.diff > 0 else "sigdown")
                tds.append(f'<td class="{" ".join(cls)}" title="{e(tip)}">{v:.4f}{MARK if sig else ""}</td>')
            mean = sum(v for v, _, _ in table[s]) / len(keys)
            body.append(f"<tr><td>{e(s)}</td>{''.join(tds)}<td>{mean:.4f}</td></tr>")
        parts.append(
            f'<h2>{e(m)}</h2><table class="grid"><thead><tr><th>system</th>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>"
        )
    figs = "".join(
        f'<figure><img alt="{e(m)}" src="{png_data_uri(p)}"><figcaption>{e(m)} per column, 95% CI'
        "</figcaption></figure>"
        for m, p in pngs
    )
    links = "".join(
        f'<li><a href="cells/{q}-{d}/index.html">{e(q)} queries → {e(d)} documents</a></li>' for d, q in keys
    )
    sysrows = "".join(
        f"<li><b>{e(s['name'])}</b>: <code>{e(json.dumps({k: v for k, v in s.items() if v}, ensure_ascii=False))}"
        "</code></li>"
        for s in grid.systems
    )
    skipped = "".join(f"<li>{e(s)}: {e(why)}</li>" for s, why in grid.skipped.items())
    from rerank.eval.report import REPORT_CSS

    how = command or _command(grid)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(grid.title)}</title><style>{REPORT_CSS}</style></head><body>
<h1>{e(grid.title)}</h1>
<p>Rows: systems; columns: query language → document language. {e(legend)} Green: significantly better,
red: significantly worse; hover a cell for the test results.</p>
{"".join(parts)}
{f"<h2>Not run</h2><ul>{skipped}</ul>" if skipped else ""}
<h2>Plots</h2>{figs}
<h2>Per column</h2><ul>{links}</ul>
<h2>How it was made</h2><p><code>{e(how)}</code> with <code>{e(str(grid.path))}</code>:</p><ul>{sysrows}</ul>
<p class="legend">Files beside this page: grid.csv, grid.json, grid.md, runs/ (TREC runs, each with a .json
saying how it was made), cells/ (a full report per column).</p>
</body></html>
"""
    with atomic_write(out / "index.html", overwrite=True) as f:
        f.write(page)
    return out


def _grouped_bars(measure, table, columns, systems, cells, keys, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from rerank.eval.significance import confidence_interval

    width = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(columns) + 2), 3.8), dpi=110)
    x = np.arange(len(columns))
    for j, s in enumerate(systems):
        means = [table[s][i][0] for i in range(len(keys))]
        cis = [confidence_interval(cells[k][0].values(s, measure)) for k in keys]
        err = [
            [m - lo for m, (lo, _) in zip(means, cis, strict=True)],
            [hi - m for m, (_, hi) in zip(means, cis, strict=True)],
        ]
        ax.bar(x + (j - (len(systems) - 1) / 2) * width, means, width, yerr=err, capsize=2, label=s)
    ax.set_xticks(x, columns)
    ax.set_ylabel(measure)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{measure}: systems per query→document language (95% CI)")
    ax.legend(fontsize=7, ncols=min(4, len(systems)), loc="upper center", bbox_to_anchor=(0.5, -0.12))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
