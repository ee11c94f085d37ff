"""Beyond one process: `rerank rerank-run` in-process against the Ray engine with 1 and 2 workers.

Input: the dense first stage's run of the first --queries QED dev questions over indexes/qed-en
(`make dev-grid` writes reports/dev-qed/runs/en/dense.en.trec; the run is cut to those queries), reranked to
--depth by the default cross-encoder (the embedded e5-small + modules/en-task-shira, precision auto) — the same
pairs on every side. Each side runs `rerank rerank-run` as a user does, in its own process, the order rotating
per round:

  local        --engine local (one process, torch's threads over every core)
  ray-1        --engine ray --num-workers 1 --cpus-per-worker <all cores>   (one actor)
  ray-2        --engine ray --num-workers 2 --cpus-per-worker <cores / 2>   (two actors)

Figures (JSON, medians of --repeats rounds, min and max beside them): pairs/s while scoring (`scoring_seconds`
in the run's .json record: the local engine's time in its scorer; for Ray, from the first chunk an actor started
to the last it finished, wall clock — so with the actors' start-up and model loads left out), pairs/s end to end
(the whole command's wall seconds), the overhead (wall − scoring: start-up, reading the run, the model loads, for
Ray the cluster, the plan task and its actors), each side's pairs/s as a ratio to the local engine's, and whether
every side wrote the same run as the local engine (byte for byte).

Training (`--only train`): `rerank train task` on the embedded e5-small with the shipped recipe's head, layers,
loss and batch (4 queries × 8 documents, 256 tokens, SHiRA over the top 4 layers) on the first --train-queries
queries of runs/train/pairs.qed.jsonl (`make train-pairs`), --train-steps steps, no head probe, with
--processes 1 (torch's threads over every core) and --processes 2 (one thread each): tokens/s of the training
loop (the recipe's `tokens` over its `loop_seconds`, which hold one dev evaluation at the end, on the 5% dev
split), the whole command's wall seconds, the ratio, and whether the two wrote the same training curve.

    .venv/bin/python bench/scale.py [--queries 100] [--depth 20] [--repeats 3] [--only rerank train]
        [--train-queries 400] [--train-steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RERANK = ROOT / ".venv" / "bin" / "rerank"
QED_RUN = ROOT / "reports" / "dev-qed" / "runs" / "en" / "dense.en.trec"
QED_TOPICS = ROOT / "data" / "qed" / "topics.dev.en.tsv"
QED_INDEX = ROOT / "indexes" / "qed-en"


def spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def cut_run(queries: int, out: Path) -> int:
    """The first ``queries`` queries of the dense run (the run is grouped by query)."""
    kept, lines = [], 0
    with open(QED_RUN, encoding="utf-8") as f, open(out, "w", encoding="utf-8") as w:
        for line in f:
            qid = line.split(maxsplit=1)[0]
            if qid not in kept:
                if len(kept) == queries:
                    break
                kept.append(qid)
            w.write(line)
            lines += 1
    return lines


def rerank_part(args) -> dict:
    cores = os.cpu_count() or 1
    sides = {
        "local": ["--engine", "local"],
        "ray-1": ["--engine", "ray", "--num-workers", "1", "--cpus-per-worker", str(cores)],
        "ray-2": ["--engine", "ray", "--num-workers", "2", "--cpus-per-worker", str(max(1, cores // 2))],
    }
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    run = tmp / "dense.trec"
    lines = cut_run(args.queries, run)
    seconds: dict[str, list[float]] = {s: [] for s in sides}
    walls: dict[str, list[float]] = {s: [] for s in sides}
    pairs = {}
    same = {s: True for s in sides}
    names = list(sides)
    for r in range(args.repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for side in order:
            out = tmp / f"{side}.{r}.trec"
            cmd = [str(RERANK), "rerank-run", "--run", str(run), "--topics", str(QED_TOPICS), "--lang", "en"]
            cmd += ["--index", str(QED_INDEX), "--out", str(out), "--depth", str(args.depth), "-q", *sides[side]]
            t0 = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if done.returncode != 0:
                sys.exit(f"bench/scale.py: {side} failed: {done.stderr.strip()[-500:]}")
            record = json.loads(Path(f"{out}.json").read_text())
            seconds[side].append(record["scoring_seconds"])
            walls[side].append(wall)
            pairs[side] = record["pairs_reranked"]
            if side != "local":
                ref = tmp / f"local.{r}.trec"
                if ref.exists():
                    same[side] &= out.read_bytes() == ref.read_bytes()
    local_rate = pairs["local"] / statistics.median(seconds["local"])
    result = {
        "queries": args.queries,
        "run_lines": lines,
        "depth": args.depth,
        "pairs": pairs["local"],
        "repeats": args.repeats,
        "cores": cores,
    }
    for side in sides:
        rates = [pairs[side] / s for s in seconds[side]]
        result[side] = {
            "pairs_per_s": spread(rates),
            "end_to_end_pairs_per_s": spread([pairs[side] / w for w in walls[side]]),
            "scoring_seconds": spread(seconds[side]),
            "wall_seconds": spread(walls[side]),
            "overhead_seconds": spread([w - s for w, s in zip(walls[side], seconds[side], strict=True)]),
            "ratio_to_local": round(statistics.median(rates) / local_rate, 3),
            "same_run_as_local": same[side],
        }
    return result


QED_PAIRS = ROOT / "runs" / "train" / "pairs.qed.jsonl"


def train_part(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-train-"))
    pairs = tmp / "pairs.jsonl"
    with open(QED_PAIRS, encoding="utf-8") as f, open(pairs, "w", encoding="utf-8") as w:
        for i, line in enumerate(f):
            if i == args.train_queries:
                break
            w.write(line)
    sides = {"processes-1": 1, "processes-2": 2}
    rates: dict[str, list[float]] = {s: [] for s in sides}
    walls: dict[str, list[float]] = {s: [] for s in sides}
    curves: dict[str, list] = {}
    names = list(sides)
    for r in range(args.repeats):
        for side in names[r % 2 :] + names[: r % 2]:
            out = tmp / f"{side}.{r}"
            cmd = [str(RERANK), "train", "task", "--pairs", str(pairs), "--out", str(out), "--kind", "shira"]
            cmd += ["--head", "residual", "--layers", "4", "--loss", "listwise-kd", "--lr", "1e-3", "--batch-queries"]
            cmd += ["4", "--negatives", "7", "--max-length", "256", "--max-steps", str(args.train_steps)]
            cmd += ["--eval-every", str(args.train_steps), "--probe-queries", "0", "--patience", "0", "-q"]
            cmd += ["--processes", str(sides[side])]
            t0 = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True)
            walls[side].append(time.perf_counter() - t0)
            if done.returncode != 0:
                sys.exit(f"bench/scale.py: {side} failed: {done.stderr.strip()[-500:]}")
            recipe = json.loads((out / "module_config.json").read_text())["recipe"]
            rates[side].append(recipe["tokens"] / recipe["loop_seconds"])
            curves[side] = recipe["train_loss"]
    one = statistics.median(rates["processes-1"])
    result = {"train_queries": args.train_queries, "steps": args.train_steps, "repeats": args.repeats}
    for side in sides:
        result[side] = {
            "tokens_per_s": spread(rates[side]),
            "wall_seconds": spread(walls[side]),
            "ratio_to_one_process": round(statistics.median(rates[side]) / one, 3),
        }
    a, b = curves["processes-1"], curves["processes-2"]
    result["same_curve"] = [s for s, _ in a] == [s for s, _ in b] and all(
        abs(x - y) <= 1e-3 for (_, x), (_, y) in zip(a, b, strict=True)
    )
    result["train_loss"] = {side: curves[side] for side in sides}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=["rerank", "train"], choices=["rerank", "train"])
    ap.add_argument("--train-queries", type=int, default=400)
    ap.add_argument("--train-steps", type=int, default=20)
    args = ap.parse_args()
    needs = {"rerank": (QED_RUN, QED_TOPICS, QED_INDEX), "train": (QED_PAIRS,)}
    for part in args.only:
        for need in needs[part]:
            if not need.exists():
                sys.exit(f"bench/scale.py: {need} is missing — run `make dev-grid train-pairs`")
    out = {}
    if "rerank" in args.only:
        out["rerank_run"] = rerank_part(args)
    if "train" in args.only:
        out["train_task"] = train_part(args)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
