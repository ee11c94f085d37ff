"""`rerank serve` (rerank/serve.py) through FastAPI's test client, on the bundled English index with the tiny
random cross-encoder: the same ranking as a Pipeline, CrossEncoder.rank's shape, metrics, every bad request
a 4xx with a one-line JSON error after which the service still answers, 429 on a full queue, 504 on a
timeout (issue 20, parts 1–3)."""

from __future__ import annotations

import threading

import pytest

pytestmark = pytest.mark.java


@pytest.fixture(scope="module")
def settings(tiny_cross, tiny_bert):
    from rerank.pipeline import SearchSettings

    return SearchSettings(reranker="cross", model=tiny_cross, dense_model=tiny_bert, modules=None, depth=10)


@pytest.fixture(scope="module")
def served(tiny_dense_index, settings):
    from fastapi.testclient import TestClient

    from rerank.serve import ServeLimits, create_app

    app = create_app({"udhr-en": tiny_dense_index}, settings, ServeLimits(max_documents=50, max_body_bytes=20_000))
    with TestClient(app) as client:
        yield client, app


def test_search_gives_the_pipelines_ranking(served, tiny_dense_index, settings):
    from rerank.pipeline import Pipeline

    client, _ = served
    r = client.post("/search", json={"query": "right to education", "lang": "en", "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    with Pipeline(tiny_dense_index, settings) as pipe:
        want = pipe.search("right to education", "en", k=5)
    assert [h["docid"] for h in body["results"]] == [sd.doc_id for sd in want]
    assert [h["score"] for h in body["results"]] == pytest.approx([sd.score for sd in want], rel=1e-5)
    assert body["index"] == "udhr-en" and body["system"] == "dense+cross"
    assert all(h["first_stage_rank"] >= 1 and h["snippet"] for h in body["results"])


def test_rerank_has_the_shape_of_cross_encoder_rank(served):
    client, app = served
    docs = [
        "Everyone has the right to education.",
        "Everyone has the right to life.",
        "No one shall be held in slavery.",
    ]
    r = client.post("/rerank", json={"query": "education", "lang": "en", "documents": docs, "top_k": 2})
    assert r.status_code == 200, r.text
    got = r.json()
    want = app.state.pipelines["udhr-en"].reranker.rank("education", docs, top_k=2)
    assert [g["corpus_id"] for g in got] == [w["corpus_id"] for w in want] and len(got) == 2
    assert got[0]["text"] == docs[got[0]["corpus_id"]]
    assert [g["score"] for g in got] == pytest.approx([w["score"] for w in want], rel=1e-5)
    r = client.post("/rerank", json={"query": "education", "lang": "en", "documents": docs, "return_documents": False})
    assert r.status_code == 200 and all("text" not in g for g in r.json()) and len(r.json()) == 3


def test_health_and_metrics(served):
    client, _ = served
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["indexes"]["udhr-en"]["documents"] == 60
    client.post("/search", json={"query": "education", "lang": "en"})
    text = client.get("/metrics").text
    assert 'rerank_requests_total{endpoint="/search",status="200"}' in text
    assert "rerank_request_seconds_bucket" in text and "rerank_batch_size_count" in text
    assert "rerank_queue_depth" in text and "rerank_module_switches_total" in text


@pytest.mark.parametrize(
    "path, body, status, needle",
    [
        ("/search", {"query": "education", "lang": "kyrgyzz"}, 400, "did you mean"),
        ("/search", {"query": "   ", "lang": "en"}, 400, "empty query"),
        ("/search", {"query": "education", "lang": "en", "k": 0}, 422, "k:"),
        ("/search", {"query": "education", "lang": "en", "k": 10**6}, 422, "k:"),
        ("/search", {"query": "education", "lang": "en", "index": "nope"}, 404, "unknown index 'nope'"),
        ("/search", {"lang": "en"}, 422, "query:"),
        ("/rerank", {"query": "education", "lang": "en", "documents": ["d"] * 51}, 422, "documents:"),
        ("/rerank", {"query": "education", "lang": "en", "documents": []}, 422, "documents:"),
        ("/rerank", {"query": "education", "lang": "en", "documents": [1, 2]}, 422, "documents."),
        ("/rerank", {"query": "x" * 30_000, "lang": "en", "documents": ["d"]}, 413, "over 20,000 bytes"),
        ("/search", {"query": "права " * 170_000, "lang": "ru"}, 413, "over 20,000 bytes"),  # a 1 MB query
        ("/rerank", {"query": "education", "lang": "en", "documents": ["d"] * 10_000}, 413, "over 20,000 bytes"),
    ],
)
def test_bad_requests_are_one_line_and_cost_nothing(served, path, body, status, needle):
    client, _ = served
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    msg = r.json()["error"]
    assert needle in msg and "\n" not in msg and "Traceback" not in msg, msg
    ok = client.post("/search", json={"query": "education", "lang": "en", "k": 3})
    assert ok.status_code == 200 and len(ok.json()["results"]) == 3


def test_malformed_json_is_400(served):
    client, _ = served
    r = client.post(
        "/search", content=b'{"query": "education", "lang": ', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["error"] == "the body is not valid JSON"


def _blocked_service(tiny_dense_index, settings, **limits):
    """An app whose worker is held inside its first job until the returned event is set."""
    from fastapi.testclient import TestClient

    from rerank.serve import ServeLimits, _Job, create_app

    app = create_app({"udhr-en": tiny_dense_index}, settings, ServeLimits(**limits))
    worker = app.state.worker
    release, inside = threading.Event(), threading.Event()
    real = worker._search

    def slow(index, group):
        inside.set()
        release.wait(30)
        return real(index, group)

    worker._search = slow
    first = worker.submit(_Job("search", "udhr-en", "education", "en", 3))
    assert inside.wait(30)
    return TestClient(app), app, release, first


def test_a_full_queue_answers_429_and_recovers(tiny_dense_index, settings):
    from rerank.serve import _Job

    client, app, release, first = _blocked_service(tiny_dense_index, settings, queue_size=1, batch_wait_ms=0)
    with client:
        waiting = app.state.worker.submit(_Job("search", "udhr-en", "life", "en", 3))  # fills the queue
        r = client.post("/search", json={"query": "education", "lang": "en"})
        assert r.status_code == 429 and r.headers["retry-after"] == "1", r.text
        release.set()
        assert len(first.result(60)["results"]) == 3 and len(waiting.result(60)["results"]) == 3
        assert client.post("/search", json={"query": "education", "lang": "en"}).status_code == 200
        assert 'status="429"' in client.get("/metrics").text


def test_a_slow_answer_is_504(tiny_dense_index, settings):
    client, _, release, first = _blocked_service(tiny_dense_index, settings, timeout_s=0.3)
    with client:
        r = client.post("/search", json={"query": "education", "lang": "en"})
        assert r.status_code == 504 and "0.3 s" in r.json()["error"], r.text
        release.set()
        first.result(60)
        assert client.post("/search", json={"query": "education", "lang": "en"}).status_code == 200


def test_a_client_that_leaves_has_its_queued_job_dropped(tiny_dense_index, settings):
    """Through a real uvicorn server (a disconnect needs a socket): a client that closes its connection while
    its job waits is counted, its job is never run, and the next request is answered."""
    import json
    import socket

    import httpx
    import uvicorn

    _, app, release, first = _blocked_service(tiny_dense_index, settings, batch_wait_ms=0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if server.started:
                break
            threading.Event().wait(0.1)
        runs = []
        real = app.state.worker._search
        app.state.worker._search = lambda index, group: runs.append([j.query for j in group]) or real(index, group)
        body = json.dumps({"query": "leisure", "lang": "en"}).encode()
        head = f"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(head.encode() + b"\r\n\r\n" + body)
            threading.Event().wait(0.5)  # queued behind the held job
        metric = "rerank_client_disconnects_total 1.0"
        for _ in range(100):
            if metric in httpx.get(f"{base}/metrics").text:
                break
            threading.Event().wait(0.1)
        else:
            pytest.fail("the disconnect was not noticed")
        release.set()
        assert len(first.result(60)["results"]) == 3
        r = httpx.post(f"{base}/search", json={"query": "education", "lang": "en", "k": 2}, timeout=60)
        assert r.status_code == 200 and len(r.json()["results"]) == 2
        assert runs == [["education"]]  # the departed client's "leisure" was never searched
        text = httpx.get(f"{base}/metrics").text
        assert "rerank_jobs_dropped_total 1.0" in text and 'status="499"' in text
    finally:
        release.set()
        server.should_exit = True
        thread.join(60)


def test_two_indexes_need_a_name(tiny_dense_index, settings, tmp_path):
    from fastapi.testclient import TestClient

    from rerank.serve import create_app

    app = create_app({"a": tiny_dense_index, "b": tiny_dense_index}, settings)
    a_, b_ = app.state.pipelines["a"], app.state.pipelines["b"]
    assert a_.reranker is b_.reranker  # one copy of the model for both indexes
    with TestClient(app) as client:
        r = client.post("/search", json={"query": "education", "lang": "en"})
        assert r.status_code == 400 and "name one: a, b" in r.json()["error"]
        assert client.post("/search", json={"query": "education", "lang": "en", "index": "b"}).status_code == 200


def _serve_process(en_index, tiny_cross):
    """A real `rerank serve` process on a free port, answering /health: (process, base URL)."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    from tests.conftest import ROOT

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "rerank.cli.main", "serve", "--index", str(en_index), "--port", str(port)]
    cmd += ["--first-stage", "bm25", "--reranker", "cross", "--model", str(tiny_cross), "--modules", "none"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    pytest.fail(f"the server did not start: {proc.communicate()[1]}")


@pytest.mark.slow
def test_sigterm_lets_in_flight_requests_finish(en_index, tiny_cross):
    """A real `rerank serve` process: requests sent just before SIGTERM are answered in full, then it exits."""
    import signal
    import time
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    proc, base = _serve_process(en_index, tiny_cross)
    try:
        docs = [f"Article {i}: everyone has the right to rest and leisure, number {i}." for i in range(200)]

        def ask(_):
            body = {"query": "rest and leisure", "lang": "en", "documents": docs, "top_k": 3}
            try:
                return httpx.post(f"{base}/rerank", json=body, timeout=60).status_code
            except httpx.TransportError:
                return None  # not yet accepted when the server stopped listening

        with ThreadPoolExecutor(6) as pool:
            pending = [pool.submit(ask, i) for i in range(6)]
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            codes = [f.result() for f in pending]
        # uvicorn shuts down gracefully, then re-raises the signal it caught, so the exit status is SIGTERM's
        assert proc.wait(timeout=90) in (0, -signal.SIGTERM)
        err = proc.stderr.read()
        assert "Traceback" not in err, err
        answered = [c for c in codes if c is not None]
        assert answered and all(c == 200 for c in answered), codes
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_kill_9_and_a_restart_serve_again(en_index, tiny_cross):
    """kill -9 leaves nothing that stops a new server on the same indexes from starting and answering."""
    import httpx

    body = {"query": "everyone has the right to education", "lang": "en", "k": 5}
    proc, base = _serve_process(en_index, tiny_cross)
    before = httpx.post(f"{base}/search", json=body, timeout=60).json()["results"]
    proc.kill()
    assert proc.wait(timeout=60) == -9
    proc, base = _serve_process(en_index, tiny_cross)
    try:
        r = httpx.post(f"{base}/search", json=body, timeout=60)
        assert r.status_code == 200 and len(before) == 5
        assert [h["docid"] for h in r.json()["results"]] == [h["docid"] for h in before]
    finally:
        proc.kill()
        proc.wait()
