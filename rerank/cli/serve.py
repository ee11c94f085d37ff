"""``rerank serve``: the search service (rerank/serve.py) on uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rerank.cli._common import PrecisionOption, err, user_errors


@user_errors
def serve(
    index: Annotated[
        list[str], typer.Option("--index", help="An index folder to serve, as DIR or NAME=DIR; repeat for more.")
    ],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8080,
    first_stage: Annotated[str, typer.Option("--first-stage", help="auto, bm25, dense or hybrid.")] = "auto",
    reranker: Annotated[str, typer.Option("--reranker", help="none, bi, cross or auto.")] = "auto",
    model: Annotated[
        Path | None, typer.Option("--model", help="Reranker folder [default: embedded e5-small].")
    ] = None,
    modules: Annotated[
        str, typer.Option("--modules", help="auto (the shipped modules), none, or module folders, comma-separated.")
    ] = "auto",
    depth: Annotated[int | None, typer.Option("--depth", min=1, help="First-stage results reranked.")] = None,
    precision: PrecisionOption = "auto",
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Requests the worker takes at once.")] = 16,
    batch_wait_ms: Annotated[
        float, typer.Option("--batch-wait-ms", min=0.0, help="How long the worker waits for a batch to fill.")
    ] = 5.0,
    queue_size: Annotated[
        int, typer.Option("--queue-size", min=1, help="Requests waiting before the service answers 429.")
    ] = 64,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds before a request gets 504.")] = 60.0,
    max_documents: Annotated[int, typer.Option("--max-documents", min=1, help="Documents per /rerank.")] = 1000,
    max_body_bytes: Annotated[int, typer.Option("--max-body-bytes", min=1, help="Largest request body.")] = 1_000_000,
) -> None:
    """Serve search and reranking over HTTP (POST /search, POST /rerank, GET /health, GET /metrics; OpenAPI at
    /docs). Indexes, backbone and modules are loaded once, before the first request."""
    from rerank.errors import RerankError
    from rerank.pipeline import SearchSettings, parse_modules
    from rerank.serve import ServeLimits, create_app

    named: dict[str, Path] = {}
    for spec in index:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        name = name or Path(path).name
        if name in named:
            raise RerankError(f"two indexes are named {name!r}", hint="name them: --index NAME=DIR")
        named[name] = Path(path)
    settings = SearchSettings(
        first_stage=first_stage,
        reranker=reranker,
        model=model,
        modules=parse_modules(modules),
        depth=depth,
        precision=precision,
    )
    limits = ServeLimits(
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        queue_size=queue_size,
        timeout_s=timeout,
        max_documents=max_documents,
        max_body_bytes=max_body_bytes,
    )
    app = create_app(named, settings, limits)
    import uvicorn

    err.print(f"serving {', '.join(named)} on http://{host}:{port} (OpenAPI at /docs; Ctrl-C or SIGTERM stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=int(timeout) + 5)
