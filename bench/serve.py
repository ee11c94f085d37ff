"""`rerank serve` under load: throughput and latency against the same queries through one in-process
`Pipeline.search` loop, and against the server with batching off (one request per batch).

The server is started by this script on 127.0.0.1 (a free port), once per setting, with the bundled
indexes/udhr-en and the default search (dense first stage, the shipped task module, depth 20), and stopped
at the end. Queries: the bundled topics' titles in ky, ug, tr and en, interleaved (mixed languages, so
module sets change between requests where more than one is stacked). Bounded: --requests per concurrency.

Figures (JSON on stdout): per setting and concurrency (1, 4, 16) requests/s and p50/p95/p99 latency;
the in-process loop's queries/s; ratios: the server at each concurrency over the in-process loop, and
batching on over batching off.

Faults (``faults``; a server of their own with --queue-size 16), each bounded, each followed by a normal search
that must be answered: --disconnects clients that send a search and close the connection 0.2 s later, while 8
other searches keep the worker busy (so their jobs are still queued: they should be dropped unrun); a flood
of --flood requests at once (statuses counted: 429s, no crash); a 1 MB query; 10,000 documents to /rerank;
kill -9 of the server and a restart (seconds until /health answers, and until a search does).

    .venv/bin/python bench/serve.py [--requests 32] [--concurrency 1 4 16] [--only load faults]
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


def _after(base: str) -> dict:
    """The normal search that must follow each fault: its status and seconds."""
    import httpx

    t = time.perf_counter()
    r = httpx.post(f"{base}/search", json={"query": "Everyone has the right to education.", "lang": "en"}, timeout=600)
    return {"status": r.status_code, "s": round(time.perf_counter() - t, 3)}


def _metric(base: str, name: str) -> float:
    import httpx

    for line in httpx.get(f"{base}/metrics", timeout=60).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def _faults(queries: list[tuple[str, str]], disconnects: int, flood: int) -> dict:
    import httpx

    extra = ["--queue-size", "16"]
    proc, base = _start(extra)
    out: dict = {"queue_size": 16}
    try:
        _after(base)  # warm
        port = int(base.rsplit(":", 1)[1])
        busy = ThreadPoolExecutor(8)  # keeps the worker busy, so that the leaving clients' jobs are still queued
        held = [busy.submit(_after, base) for _ in range(8)]
        time.sleep(0.3)
        socks = []
        for text, lang in queries[:disconnects]:
            body = json.dumps({"query": text, "lang": lang}).encode()
            head = f"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
            c = socket.create_connection(("127.0.0.1", port))
            c.sendall(head.encode() + b"\r\n\r\n" + body)
            socks.append(c)
        time.sleep(0.2)
        for c in socks:
            c.close()
        busy_codes = [f.result()["status"] for f in held]
        busy.shutdown()
        time.sleep(1.0)  # let the server notice
        out["disconnects"] = {
            "clients": disconnects,
            "busy_requests_beside": {str(c): busy_codes.count(c) for c in sorted(set(busy_codes))},
            "counted": _metric(base, "rerank_client_disconnects_total"),
            "jobs_dropped_unrun": _metric(base, "rerank_jobs_dropped_total"),
            "after": _after(base),
        }

        def one(i: int) -> int:
            text, lang = queries[i % len(queries)]
            try:
                return httpx.post(f"{base}/search", json={"query": text, "lang": lang}, timeout=600).status_code
            except httpx.TransportError:
                return -1

        t = time.perf_counter()
        with ThreadPoolExecutor(flood) as pool:
            codes = list(pool.map(one, range(flood)))
        out["flood"] = {
            "requests": flood,
            "statuses": {str(c): codes.count(c) for c in sorted(set(codes))},
            "s": round(time.perf_counter() - t, 3),
            "after": _after(base),
        }
        big = ("права " * 166_667)[:1_000_000]  # a query of 1,000,000 characters
        for name, path, body in (
            ("query_1mb", "/search", {"query": big, "lang": "ru"}),
            (
                "rerank_10000_documents",
                "/rerank",
                {"query": "education", "lang": "en", "documents": ["a b c"] * 10_000},
            ),
        ):
            t = time.perf_counter()
            r = httpx.post(f"{base}{path}", json=body, timeout=600)
            out[name] = {
                "status": r.status_code,
                "error": r.json().get("error")
                if r.headers.get("content-type", "").startswith("application/json")
                else None,
                "s": round(time.perf_counter() - t, 3),
                "after": _after(base),
            }
        proc.kill()
        proc.wait(timeout=60)
        t = time.perf_counter()
        proc, base = _start(extra)
        health = time.perf_counter() - t
        first = _after(base)
        out["kill_9_restart"] = {
            "s_until_health": round(health, 2),
            "s_until_first_search": round(time.perf_counter() - t, 2),
            "first_search": first,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--only", nargs="*", choices=["load", "faults"])
    ap.add_argument("--disconnects", type=int, default=8)
    ap.add_argument("--flood", type=int, default=64)
    args = ap.parse_args()
    parts = args.only or ["load", "faults"]
    if not (INDEX / "rerank-index.json").is_file():
        raise SystemExit(f"{INDEX} is missing: run `make indexes` first")
    queries = _queries(args.requests)
    report: dict = {"index": str(INDEX.relative_to(ROOT)), "query_langs": list(LANGS)}
    if "faults" in parts:
        report["faults"] = _faults(queries, args.disconnects, args.flood)
    if "load" not in parts:
        print(json.dumps(report, indent=1))
        return
    report["in_process"] = _in_process(queries)
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
