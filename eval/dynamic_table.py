"""The DyLoRA table of modules/README.md: one dynamic run against one run per budget, from the module folders
`make dynamic-evidence` writes (runs/dynamic/: lora-dynamic, lora-r1..r8, shira-dynamic, shira-d0.25..d2).

    make dynamic-evidence                 # trains what is missing, then runs this
    .venv/bin/python eval/dynamic_table.py runs/dynamic

For each budget: the dev MLM loss of the separate run at that budget (its kept state), the dynamic run's at the
same budget (the state it kept, selected by the mean over its budgets), and their difference (lower is better);
then the training time of the separate runs together against the dynamic run's. Prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

LONG = "-400"  # the dynamic run again with the separate runs' steps together (its folder: the dynamic one's + LONG)
FAMILIES = (  # (kind, dynamic folder, {budget label: separate run's folder})
    ("lora", "lora-dynamic", {"1": "lora-r1", "2": "lora-r2", "4": "lora-r4", "8": "lora-r8"}),
    ("shira", "shira-dynamic", {"0.25%": "shira-d0.25", "0.5%": "shira-d0.5", "1%": "shira-d1", "2%": "shira-d2"}),
)


def recipe(folder: Path) -> dict | None:
    cfg = folder / "module_config.json"
    return json.loads(cfg.read_text(encoding="utf-8")).get("recipe") if cfg.is_file() else None


def scored(root: Path, name: str) -> dict:
    """The dev MLM losses `rerank eval mlm` scored for a run at each budget (<name>.mlm.json), or {}."""
    path = root / f"{name}.mlm.json"
    return json.loads(path.read_text(encoding="utf-8"))["dev_mlm_loss"] if path.is_file() else {}


def table(root: Path, kind: str, dynamic: str, separate: dict[str, str]) -> list[str]:
    dyn = recipe(root / dynamic)
    what = "rank" if kind == "lora" else "density"
    top_label, top = list(separate.items())[-1]
    lines = [
        f"| {kind} {what} | separate run at this {what} | the {what} {top_label} run truncated to it | dynamic run "
        f"({' to '.join([next(iter(separate)), top_label])}, one run) | dynamic − separate | dynamic − truncated | "
        "dynamic, the separate runs' steps together |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    at = ((dyn or {}).get("dynamic") or {}).get("dev_at_best") or {}
    long = recipe(root / f"{dynamic}{LONG}")
    at_long = ((long or {}).get("dynamic") or {}).get("dev_at_best") or {}
    cut = scored(root, top)
    seconds = []
    for label, name in separate.items():
        r = recipe(root / name)
        own = None if r is None else r.get("dev_loss_best")
        if r is not None:
            seconds.append(float(r["seconds"]))
        mine, trunc = at.get(label), cut.get(label)
        lines.append(
            f"| {label} | {_f(own)} | {_f(trunc)} | {_f(mine)} | {_d(mine, own)} | {_d(mine, trunc)} | "
            f"{_f(at_long.get(label))} |"
        )
    base = (dyn or recipe(root / next(iter(separate.values()))) or {}).get("dev_loss_before")
    lines.append(f"| (base + MLM head, before training) | {_f(base)} | {_f(base)} | {_f(base)} | | | {_f(base)} |")
    total = f"{sum(seconds) / 60:.1f} min ({len(seconds)} runs)" if seconds else "—"
    mine = f"{float(dyn['seconds']) / 60:.1f} min" if dyn else "—"
    ratio = f"{sum(seconds) / float(dyn['seconds']):.2f}× less" if dyn and len(seconds) == len(separate) else ""
    steps = ", ".join(str((recipe(root / n) or {}).get("steps", "—")) for n in separate.values())
    lines.append(
        f"| steps | {steps} | (one run) | {(dyn or {}).get('steps', '—')} | | | {(long or {}).get('steps', '—')} |"
    )  # noqa: E501
    lines.append(f"| training time, the whole range | {total} | (one run) | {mine} | {ratio} | | {_minutes(long)} |")
    again = scored(root, dynamic)
    if again and at:  # the dynamic run's figures as rerank eval mlm scores its stored module: the same numbers
        worst = max(abs(again[k] - at[k]) for k in at if k in again)
        lines.append(f"\n(`rerank eval mlm` on the stored dynamic module: its training's figures within {worst:.4f}.)")
    return lines


def _minutes(r: dict | None) -> str:
    return f"{float(r['seconds']) / 60:.1f} min" if r else "—"


def _d(a, b) -> str:
    return f"{a - b:+.4f}" if a is not None and b is not None else "—"


def _f(x) -> str:
    return "—" if x is None else f"{float(x):.4f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="the folder of the runs (runs/dynamic)")
    args = ap.parse_args(argv)
    if not args.root.is_dir():
        print(f"{args.root}: no such folder (make dynamic-evidence writes it)", file=sys.stderr)
        return 2
    for kind, dynamic, separate in FAMILIES:
        print("\n".join(table(args.root, kind, dynamic, separate)))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
