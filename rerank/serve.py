"""``rerank serve``: a search service that keeps the indexes, the backbone and every module loaded.

FastAPI (the ecosystem's default for a typed JSON API, with OpenAPI at ``/docs``) on uvicorn. The event
loop never runs model work: requests become jobs in a bounded queue that **one worker thread** owns (the
models are not thread-safe, and one thread at a time is what two cores can use anyway). The worker takes
the jobs that arrived within ``batch_wait_ms`` of the first (up to ``max_batch``), groups them by index and
module set so that each group costs at most one module switch, runs each group, and answers every job in
its own order. A full queue answers 429 with ``Retry-After``; a job not answered within ``timeout_s``
answers 504 (and is dropped if it has not started); SIGTERM lets uvicorn finish what is in flight, then the
worker stops.

Endpoints: ``POST /search`` (what ``rerank search`` prints, as JSON, the same ranking), ``POST /rerank``
(the shape of sentence-transformers' ``CrossEncoder.rank``), ``GET /health``, ``GET /metrics`` (Prometheus
text). Every bad request is a 4xx with ``{"error": "one line"}``.
"""

# no `from __future__ import annotations`: FastAPI reads the request models from the endpoints' annotations
import asyncio
import contextlib
import json
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from rerank.errors import RerankError


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask and how the worker batches (``rerank serve --help`` has each)."""

    max_batch: int = 16  # jobs the worker takes at once
    batch_wait_ms: float = 5.0  # how long it waits after the first for others to arrive
    queue_size: int = 64  # jobs waiting; a request past it gets 429
    timeout_s: float = 60.0  # a request not answered by then gets 504
    max_k: int = 1000
    max_documents: int = 1000  # per /rerank request
    max_body_bytes: int = 1_000_000
    max_query_chars: int = 10_000


@dataclass
class _Job:
    kind: str  # "search" | "rerank"
    index: str
    query: str
    lang: str
    k: int
    documents: list[str] = field(default_factory=list)
    return_documents: bool = True
    future: Future = field(default_factory=Future)


class Metrics:
    """The service's Prometheus metrics, in a registry of its own (prometheus_client)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rerank_requests", "Requests by endpoint and status", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "rerank_request_seconds",
            "Request latency by endpoint",
            ["endpoint"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.switches = Counter("rerank_module_switches", "Module stack changes", registry=self.registry)
        self.batch = Histogram(
            "rerank_batch_size", "Jobs per worker batch", buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry
        )
        self.queue = Gauge("rerank_queue_depth", "Jobs waiting for the worker", registry=self.registry)
        self.disconnects = Counter(
            "rerank_client_disconnects", "Requests whose client left before the answer", registry=self.registry
        )
        self.dropped = Counter(
            "rerank_jobs_dropped", "Queued jobs dropped unrun (client gone or timed out)", registry=self.registry
        )

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class QueueFull(Exception):
    pass


class Worker:
    """The one thread that runs model work, in micro-batches (see the module docstring)."""

    def __init__(self, pipelines: dict, limits: ServeLimits, metrics: Metrics):
        self.pipelines, self.limits, self.metrics = pipelines, limits, metrics
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=limits.queue_size)
        self._stacks: dict[int, tuple] = {}  # the module stack each reranker holds now
        self._thread = threading.Thread(target=self._run, name="rerank-worker", daemon=True)
        self._thread.start()

    def submit(self, job: _Job) -> Future:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull from None
        self.metrics.queue.set(self._queue.qsize())
        return job.future

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the jobs already queued, then end the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _take(self) -> list[_Job] | None:
        first = self._queue.get()
        if first is None:
            return None
        jobs = [first]
        deadline = time.monotonic() + self.limits.batch_wait_ms / 1000
        while len(jobs) < self.limits.max_batch:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)  # stop after this batch
                break
            jobs.append(job)
        self.metrics.queue.set(self._queue.qsize())
        return jobs

    def _run(self) -> None:
        while (jobs := self._take()) is not None:
            taken = len(jobs)
            jobs = [j for j in jobs if not j.future.cancelled() and j.future.set_running_or_notify_cancel()]
            if taken > len(jobs):
                self.metrics.dropped.inc(taken - len(jobs))
            if not jobs:
                continue
            self.metrics.batch.observe(len(jobs))
            groups: dict[tuple, list[_Job]] = {}
            for j in jobs:
                pipe = self.pipelines[j.index]
                groups.setdefault((j.kind, j.index, pipe.modules_for(j.lang) if pipe.modules else ()), []).append(j)
            for (kind, index, mods), group in groups.items():
                try:
                    self._note_switch(self.pipelines[index], mods)
                    results = self._search(index, group) if kind == "search" else self._rerank(index, mods, group)
                    for j, r in zip(group, results, strict=True):
                        j.future.set_result(r)
                except BaseException as e:  # noqa: BLE001 - every job gets an answer, the thread lives on
                    for j in group:
                        if not j.future.done():
                            j.future.set_exception(e)

    def _note_switch(self, pipe, mods: tuple) -> None:
        if pipe.reranker_kind == "none":
            return
        key = id(pipe.reranker)
        if self._stacks.get(key) != mods:
            self._stacks[key] = mods
            self.metrics.switches.inc()

    def _search(self, index: str, group: list[_Job]) -> list[dict]:
        from rerank.collections.trec import strict_order
        from rerank.indexes.tokenize import snippet
        from rerank.types import Query

        pipe = self.pipelines[index]
        queries = [Query(f"r{i}", j.query, j.lang) for i, j in enumerate(group)]
        final, first = pipe.run(queries, k=max(j.k for j in group))
        out = []
        for q, j in zip(queries, group, strict=True):
            hits = strict_order(final[q.query_id])[: j.k]
            first_rank = {sd.doc_id: r for r, sd in enumerate(first[q.query_id], start=1)}
            docs = pipe.bm25.docstore.get_many([h.doc_id for h in hits])
            plan = pipe.explain(j.lang)
            out.append(
                {
                    "index": index,
                    "system": _system(plan, pipe),
                    "modules": [Path(m).name for m in plan.modules],
                    "results": [
                        {
                            "rank": r,
                            "docid": h.doc_id,
                            "score": h.score,
                            "first_stage_rank": first_rank.get(h.doc_id),
                            "snippet": snippet(docs[h.doc_id].contents, j.query) if h.doc_id in docs else "",
                        }
                        for r, h in enumerate(hits, start=1)
                    ],
                }
            )
        return out

    def _rerank(self, index: str, mods: tuple, group: list[_Job]) -> list[list[dict]]:
        pipe = self.pipelines[index]
        rr = pipe.reranker
        if pipe.modules:
            rr.use_modules(list(mods), pipe.module_density, pipe.module_rank)
        return [rr.rank(j.query, j.documents, top_k=j.k, return_documents=j.return_documents) for j in group]


def _system(plan, pipe) -> str:
    first = plan.first_stage.kind
    return first if plan.reranker == "none" else f"{first}+{pipe.reranker.kind}"


def create_app(indexes: dict[str, str | Path], settings=None, limits: ServeLimits | None = None):
    """The FastAPI app serving ``indexes`` ({name: folder}); every pipeline is built (models, modules, the
    JVM) before the app is returned, so the first request pays nothing."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from pydantic import BaseModel, Field

    from rerank import languages
    from rerank.pipeline import Pipeline, SearchSettings

    limits = limits or ServeLimits()
    if not indexes:
        raise RerankError("no index to serve", hint="pass --index DIR (repeat for more)")
    pipelines: dict = {}
    for name, path in indexes.items():  # one copy of each model for all the indexes (Pipeline's share=)
        first = next(iter(pipelines.values()), None)
        pipelines[name] = Pipeline(path, settings or SearchSettings(), share=first)
    metrics = Metrics()
    worker = Worker(pipelines, limits, metrics)

    class SearchRequest(BaseModel):
        query: str = Field(max_length=limits.max_query_chars)
        lang: str
        index: str | None = None
        k: int = Field(10, ge=1, le=limits.max_k)

    class RerankRequest(BaseModel):
        query: str = Field(max_length=limits.max_query_chars)
        lang: str
        documents: list[str] = Field(min_length=1, max_length=limits.max_documents)
        top_k: int | None = Field(None, ge=1)
        return_documents: bool = True
        index: str | None = None

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        await asyncio.get_running_loop().run_in_executor(None, worker.stop)
        for p in pipelines.values():
            p.close()

    app = FastAPI(title="rerank", version=_version(), lifespan=lifespan)
    app.state.worker, app.state.pipelines, app.state.metrics = worker, pipelines, metrics

    def error(status: int, message: str, **headers) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers or None)

    @app.exception_handler(RerankError)
    async def _user_error(_request: Request, exc: RerankError):
        return error(400, str(exc))

    @app.middleware("http")
    async def _count(request: Request, call_next):
        started = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limits.max_body_bytes):
            response = error(413, f"the body is over {limits.max_body_bytes:,} bytes")
        else:
            response = await call_next(request)
        endpoint = request.url.path if request.url.path in _ENDPOINTS else "other"
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
        return response

    def pick_index(name: str | None) -> str:
        if name is None:
            if len(pipelines) == 1:
                return next(iter(pipelines))
            raise _HTTPError(400, f"several indexes are served; name one: {', '.join(pipelines)}")
        if name not in pipelines:
            raise _HTTPError(404, f"unknown index {name!r}; served: {', '.join(pipelines)}")
        return name

    async def answer(job: _Job, request: Request):
        """The job's result; 429 when the queue is full; 504 past the timeout. A client that leaves first has its
        job dropped if the worker has not started it (and its answer, if it has)."""
        try:
            fut = worker.submit(job)
        except QueueFull:
            return error(429, "the service is busy; retry shortly", **{"Retry-After": "1"})
        result = asyncio.ensure_future(asyncio.wrap_future(fut))
        gone = asyncio.ensure_future(_client_gone(request))
        try:
            done, _ = await asyncio.wait({result, gone}, timeout=limits.timeout_s, return_when="FIRST_COMPLETED")
        finally:
            gone.cancel()
        if result in done:
            return result.result()
        fut.cancel()  # dropped unrun when still queued
        if gone in done:
            metrics.disconnects.inc()
            return Response(status_code=499)  # nginx's "client closed request": no one reads it, the metrics do
        return error(504, f"no answer within {limits.timeout_s:g} s")

    @app.exception_handler(_HTTPError)
    async def _http_error(_request: Request, exc: _HTTPError):
        return error(exc.status, exc.message)

    async def parse(request: Request, model):
        """The body as ``model``: JSON whatever the content type says (``curl -d`` sends a form type), checked
        here rather than by FastAPI so that every fault is one line."""
        from pydantic import ValidationError

        body = await request.body()
        if len(body) > limits.max_body_bytes:
            raise _HTTPError(413, f"the body is over {limits.max_body_bytes:,} bytes")
        try:
            raw = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise _HTTPError(400, "the body is not valid JSON") from None
        try:
            return model.model_validate(raw)
        except ValidationError as e:
            first = e.errors(include_url=False)[0]
            where = ".".join(str(x) for x in first["loc"]) or "the body"
            raise _HTTPError(422, f"{where}: {first['msg']}") from None

    def schema(model) -> dict:
        return {
            "requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}
        }

    async def parse_query(request: Request, model):
        """The body as ``model`` (:func:`parse`), its query not empty, and the query's language as a code."""
        req = await parse(request, model)
        if not req.query.strip():
            raise _HTTPError(400, "empty query; give it some words")
        return req, languages.code(req.lang)

    @app.post("/search", openapi_extra=schema(SearchRequest))
    async def search(request: Request):
        """The top ``k`` documents of an index for a query: what ``rerank search`` prints, as JSON."""
        req, lang = await parse_query(request, SearchRequest)
        return await answer(_Job("search", pick_index(req.index), req.query, lang, req.k), request)

    @app.post("/rerank", openapi_extra=schema(RerankRequest))
    async def rerank(request: Request):
        """``documents`` ordered for ``query``: ``[{"corpus_id", "score", "text"}]`` as ``CrossEncoder.rank``."""
        req, lang = await parse_query(request, RerankRequest)
        index = pick_index(req.index) if req.index is not None or len(pipelines) == 1 else next(iter(pipelines))
        if pipelines[index].reranker_kind == "none":
            raise _HTTPError(400, "this service runs with --reranker none: there is no reranker to score with")
        k = req.top_k or len(req.documents)
        job = _Job("rerank", index, req.query, lang, k, list(req.documents), req.return_documents)
        return await answer(job, request)

    @app.get("/health")
    async def health():
        return {
            "status": "ok",
            "indexes": {n: {"documents": p.bm25.meta.documents, "language": p.doc_lang} for n, p in pipelines.items()},
            "queue": worker._queue.qsize(),
        }

    @app.get("/metrics")
    async def metrics_():
        return Response(metrics.text(), media_type="text/plain; version=0.0.4")

    return app


_ENDPOINTS = {"/search", "/rerank", "/health", "/metrics"}


async def _client_gone(request) -> None:
    """Returns when the client closes the connection (the body has been read: the next ASGI message is the
    disconnect, which the server sends only when the client leaves or the response is complete)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
        await asyncio.sleep(0.05)  # a server that sends more (empty) body messages is not polled in a tight loop


class _HTTPError(Exception):
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message


def _version() -> str:
    from rerank import __version__

    return __version__
