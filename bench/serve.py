"""`rerank serve` under load: throughput and latency against the same queries through one in-process
`Pipeline.search` loop, and against the server with batching off (one request per batch).

The server is started by this script on 127.0.0.1 (a free port), once per setting, with the bundled
indexes/udhr-en and the default search (dense first stage, the shipped task module, depth 20), and stopped
at the end. Queries: the bundled topics' titles in ky, ug, tr and en, interleaved (mixed languages, so
module sets change between requests where more than one is stacked). Bounded: --requests per concurrency.

Figures (JSON on stdout): per setting and concurrency (1, 4, 16) requests/s and p50/p95/p99 latency;
the in-process loop's queries/s; ratios: the server at each concurrency over the in-process loop, and
batching on over batching off.

    .venv/bin/python bench/serve.py [--requests 32] [--concurrency 1 4 16]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the package, not bench/rerank.py
INDEX = ROOT / "indexes" / "udhr-en"
LANGS = ("ky", "ug", "tr", "en")


def _queries(n: int) -> list[tuple[str, str]]:
    from rerank.collections.topics import read_tsv_topics

    topics = {lang: read_tsv_topics(ROOT / "data" / "udhr" / f"topics.{lang}.tsv", lang) for lang in LANGS}
    out = []
    for i in range(n):
        lang = LANGS[i % len(LANGS)]
        q = topics[lang][(i // len(LANGS)) % len(topics[lang])]
        out.append((q.text, lang))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(extra: list[str]) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _free_port()
    cmd = [sys.executable, "-m", "rerank.cli.main", "serve", "--index", str(INDEX), "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    while time.perf_counter() - started < 300:
        if proc.poll() is not None:
            raise SystemExit(f"the server did not start: {proc.stderr.read()}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not answer /health within 300 s")


def _load(base: str, queries: list[tuple[str, str]], concurrency: int) -> dict:
    import httpx

    client = httpx.Client(timeout=600)

    def one(q: tuple[str, str]) -> tuple[float, int]:
        t = time.perf_counter()
        r = client.post(f"{base}/search", json={"query": q[0], "lang": q[1], "k": 10})
        return time.perf_counter() - t, r.status_code

    one(queries[0])  # warm
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, queries))
    wall = time.perf_counter() - t0
    client.close()
    lat = sorted(x for x, _ in results)
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return {
        "concurrency": concurrency,
        "requests": len(queries),
        "ok": sum(1 for _, c in results if c == 200),
        "requests_per_s": round(len(queries) / wall, 3),
        "p50_s": round(statistics.median(lat), 3),
        "p95_s": round(q[94], 3),
        "p99_s": round(q[98], 3),
    }


def _in_process(queries: list[tuple[str, str]]) -> dict:
    from rerank.pipeline import Pipeline

    with Pipeline(INDEX) as pipe:
        pipe.search(*queries[0])  # warm
        t0 = time.perf_counter()
        for text, lang in queries:
            pipe.search(text, lang, k=10)
        wall = time.perf_counter() - t0
    return {"requests": len(queries), "queries_per_s": round(len(queries) / wall, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    args = ap.parse_args()
    if not (INDEX / "rerank-index.json").is_file():
        raise SystemExit(f"{INDEX} is missing: run `make indexes` first")
    queries = _queries(args.requests)
    report: dict = {
        "index": str(INDEX.relative_to(ROOT)),
        "query_langs": list(LANGS),
        "in_process": _in_process(queries),
    }
    for name, extra in (("batching", []), ("no_batching", ["--max-batch", "1", "--batch-wait-ms", "0"])):
        proc, base = _start(extra)
        try:
            report[name] = [_load(base, queries, c) for c in args.concurrency]
        finally:
            proc.terminate()
            proc.wait(timeout=120)
    base_qps = report["in_process"]["queries_per_s"]
    report["ratios"] = {
        f"server_c{r['concurrency']}_over_in_process": round(r["requests_per_s"] / base_qps, 3)
        for r in report["batching"]
    } | {
        f"batching_over_none_c{a['concurrency']}": round(a["requests_per_s"] / b["requests_per_s"], 3)
        for a, b in zip(report["batching"], report["no_batching"], strict=True)
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
