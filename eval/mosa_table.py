"""The MoSA table of modules/README.md: the plain adapter against the same adapter trained as sub-adapters, from the
module folders `make mosa-evidence` writes (runs/mosa/): parameters, the dev figure each training kept (a language
module's dev MLM loss, lower is better; a task module's dev MRR on its own dev groups, higher is better) and time.

    make mosa-evidence                   # trains what is missing, runs the dev grids, then this and eval/dev_table.py
    .venv/bin/python eval/mosa_table.py runs/mosa

nDCG@10 through the pipeline comes from the grids (eval/mosa-qed.toml, eval/mosa-tatoeba.toml) by eval/dev_table.py.
Prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PAIRS = (  # (what, plain folder, MoSA folder, the recipe's dev figure before, after, better)
    ("ky language module", "ky-lang-adapter", "ky-lang-adapter-mosa4", "dev_loss_before", "dev_loss_best", "lower"),
    ("en task module (QED + Tatoeba pairs)", "en-task-adapter", "en-task-adapter-mosa4", "dev_mrr_before",
     "dev_mrr_best", "higher"),
)  # fmt: skip


def facts(folder: Path) -> dict | None:
    cfg = folder / "module_config.json"
    if not cfg.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(folder / "module.safetensors"), framework="pt") as f:
        numbers = sum(_prod(f.get_slice(k).get_shape()) for k in f.keys() if k.startswith("adapter."))
    return json.loads(cfg.read_text(encoding="utf-8")).get("recipe", {}) | {"numbers": numbers}


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="the folder of the runs (runs/mosa)")
    args = ap.parse_args(argv)
    if not args.root.is_dir():
        print(f"{args.root}: no such folder (make mosa-evidence writes it)", file=sys.stderr)
        return 2
    print("| module | training | adapter numbers | dev before | dev kept | Δ vs plain | steps | time |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for what, plain, mosa, before, after, better in PAIRS:
        p = facts(args.root / plain)
        for label, folder in (("plain adapter", plain), ("MoSA, 4 sub-adapters", mosa)):
            r = facts(args.root / folder)
            if r is None:
                print(f"| {what} | {label} | — | — | — | — | — | — |")
                continue
            delta = f"{r[after] - p[after]:+.4f}" if p is not None and folder != plain else ""
            print(f"| {what} ({better} is better) | {label} | {r['numbers']:,} | {r[before]:.4f} | {r[after]:.4f} | "
                  f"{delta} | {r['steps']} | {float(r['seconds']) / 60:.1f} min |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
