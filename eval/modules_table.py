"""The table of modules/README.md: nDCG@10 and MRR per query language from a grid report of eval/grid.toml,
with each system's training time and module size read from the module folders' configs.

    .venv/bin/rerank eval grid eval/grid.toml --out reports/grid
    .venv/bin/python eval/modules_table.py reports/grid [--trained runs/modules] [--shipped modules]
    .venv/bin/python eval/modules_table.py --catalog modules      # one row per module folder: how it was made
    .venv/bin/python eval/modules_table.py reports/grid --lang-effect   # task vs task+lang, per kind and language

Prints Markdown. Times are what each training run recorded (`recipe.seconds`, on the machine it ran on);
sizes are the module folders' bytes on disk (fp32 as trained; the shipped ones 8-bit).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LANGS = ("ky", "ug", "tr", "en")
MEASURES = ("nDCG@10", "RR")


def module_facts(folder: Path) -> tuple[float, int] | None:
    """(training seconds, bytes on disk) of a module folder, or None when it is not there."""
    from rerank.modules.format import module_size

    cfg = folder / "module_config.json"
    if not cfg.is_file():
        return None
    recipe = json.loads(cfg.read_text(encoding="utf-8")).get("recipe") or {}
    return float(recipe.get("seconds") or 0.0), module_size(folder)


def cost(system: str, trained: Path, shipped: Path) -> str:
    """Training time and size of what a system stacks: the task module, plus the four language modules."""
    if system == "shipped":
        kind, where = "shira", shipped
    elif ":" in system:
        kind, where = system.split(":", 1)[1], trained
    else:
        return ""
    task_name = "en-task-shira-list" if kind == "shira-list" else f"en-task-{kind}"
    kind = kind.removesuffix("-list")
    task = module_facts(where / task_name)
    if task is None:
        return ""
    if system.startswith("task:"):
        return f"{task[0] / 60:.0f} min | {task[1] / 1e6:.2f} MB"
    langs = [module_facts(where / f"{lang}-lang-{kind}") for lang in LANGS]
    if any(x is None for x in langs):
        return ""
    mean_t = sum(x[0] for x in langs) / len(langs) / 60  # type: ignore[index]
    mean_b = sum(x[1] for x in langs) / len(langs) / 1e6  # type: ignore[index]
    return f"task {task[0] / 60:.0f} + lang {mean_t:.0f} min each | task {task[1] / 1e6:.2f} + lang {mean_b:.2f} MB"


def catalog_rows(folder: Path) -> None:
    """One Markdown row per module folder under ``folder``: what it is, what it was trained on, how long, how
    well (dev MLM loss before → best, or dev MRR before → after the head probe → best), its size."""
    from rerank.modules.format import module_size

    print("| module | kind | data | steps | time | dev | bits | size |")
    print("|---|---|---|---:|---:|---|---:|---:|")
    for cfg_file in sorted(folder.glob("*/module_config.json")):
        c = json.loads(cfg_file.read_text(encoding="utf-8"))
        r, d = c.get("recipe") or {}, c.get("data") or {}
        if c["role"] == "language":
            files = ", ".join(Path(f["path"]).name for f in d.get("files", []))
            data = f"{files} ({d.get('characters', 0) / 1e6:.2f}M chars, {d.get('train_documents', 0):,} docs)"
            dev = f"MLM loss {r.get('dev_loss_before')} → {r.get('dev_loss_best')}"
        else:
            data = f"{Path(str(d.get('pairs') or d.get('ir_datasets'))).name} ({d.get('train_queries', 0):,} queries)"
            probe = r.get("dev_mrr_after_probe")
            dev = (
                f"MRR {r.get('dev_mrr_before')} → {probe} (probe) → {r.get('dev_mrr_best')}"
                if probe
                else f"MRR {r.get('dev_mrr_before')} → {r.get('dev_mrr_best')}"
            )
            if r.get("fusion"):
                f = r["fusion"]
                w = f["first_stage_weight"]
                dev += f"; bi-encoder {r.get('dev_mrr_teacher')}; fused (weight {w:g}) {f['dev_mrr']}"
        size = module_size(cfg_file.parent) / 1e6
        minutes = r.get("seconds", 0) / 60
        print(
            f"| {cfg_file.parent.name} | {c['kind']} | {data} | {r.get('steps')} | {minutes:.1f} min | {dev} "
            f"| {c.get('bits') or 32} | {size:.2f} MB |"
        )


def lang_effect(report: Path, doc: str = "en", measure: str = "nDCG@10") -> list[dict]:
    """Does the query language's module help? For every kind with both a ``task:K`` and a ``task+lang:K`` row in
    the grid report, per query language: the two means, their difference and the paired two-sided t-test over
    the topics (scipy), Holm–Bonferroni across all the comparisons printed (statsmodels)."""
    import numpy as np
    from statsmodels.stats.multitest import multipletests

    from rerank.eval.report import read_per_query
    from rerank.eval.significance import paired_t_p

    rows: list[dict] = []
    for q in LANGS:
        cell = report / "cells" / f"{q}-{doc}"
        if not (cell / "per-query.csv").is_file():
            continue
        per = read_per_query(cell, measure)
        for system in per:
            kind = system.removeprefix("task:")
            if kind == system or f"task+lang:{kind}" not in per:
                continue
            a, b = per[system], per[f"task+lang:{kind}"]
            qids = sorted(set(a) & set(b))
            x, y = np.array([a[i] for i in qids]), np.array([b[i] for i in qids])
            rows.append(
                {
                    "kind": kind,
                    "lang": q,
                    "task": float(x.mean()),
                    "task+lang": float(y.mean()),
                    "diff": float((y - x).mean()),
                    "p": paired_t_p(y, x),
                    "n": len(qids),
                }
            )
    if rows:
        for r, ph in zip(rows, multipletests([r["p"] for r in rows], method="holm")[1], strict=True):
            r["p_holm"] = float(ph)
    kinds = ("shira", "lora", "adapter", "sft")
    return sorted(
        rows,
        key=lambda r: (
            kinds.index(r["kind"]) if r["kind"] in kinds else len(kinds),
            r["kind"],
            LANGS.index(r["lang"]),
        ),
    )


def print_lang_effect(rows: list[dict], measure: str = "nDCG@10") -> None:
    print(f"| kind | query language | task {measure} | task+lang {measure} | difference | p (t) | p (Holm) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['kind']} | {r['lang']} | {r['task']:.3f} | {r['task+lang']:.3f} | {r['diff']:+.3f} "
            f"| {r['p']:.3f} | {r['p_holm']:.3f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, nargs="?", help="a grid report folder (with grid.csv)")
    ap.add_argument("--catalog", type=Path, help="print one row per module folder in this folder instead")
    ap.add_argument("--trained", type=Path, default=ROOT / "runs" / "modules")
    ap.add_argument("--shipped", type=Path, default=ROOT / "modules")
    ap.add_argument("--doc", default="en", help="document language of the columns")
    ap.add_argument(
        "--lang-effect",
        action="store_true",
        help="print task vs task+lang per kind and query language (paired t-test, Holm) instead",
    )
    a = ap.parse_args()
    if a.catalog:
        catalog_rows(a.catalog)
        return
    if a.report is None:
        ap.error("give a grid report folder, or --catalog FOLDER")
    if a.lang_effect:
        print_lang_effect(lang_effect(a.report, a.doc))
        return
    means: dict[tuple[str, str, str], float] = {}
    order: list[str] = []
    with open(a.report / "grid.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["doc_lang"] != a.doc:
                continue
            m = "RR" if row["measure"].startswith("RR") or row["measure"] == "MRR" else row["measure"]
            means[(row["system"], row["query_lang"], m)] = float(row["mean"])
            if row["system"] not in order:
                order.append(row["system"])
    head = " | ".join(f"{q} nDCG@10 | {q} MRR" for q in LANGS)
    print(f"| system | {head} | mean nDCG@10 | training time | size |")
    print("|---|" + "---:|" * (2 * len(LANGS) + 1) + "---|---|")
    for s in order:
        vals = [means.get((s, q, m)) for q in LANGS for m in MEASURES]
        cells = " | ".join("–" if v is None else f"{v:.3f}" for v in vals)
        nd = [means.get((s, q, "nDCG@10")) for q in LANGS]
        mean = sum(nd) / len(nd) if all(v is not None for v in nd) else float("nan")  # type: ignore[arg-type]
        extra = cost(s, a.trained, a.shipped) or " | "
        print(f"| {s} | {cells} | {mean:.3f} | {extra} |")


if __name__ == "__main__":
    main()
