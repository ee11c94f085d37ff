"""``rerank rerank-run --engine ray``: the same chunks as the local engine, reranked by a Ray Data pipeline.

    read the chunks (JSON lines the driver wrote while reading the run)
      → join each chunk's documents from the index's store          (map_batches, stateless tasks)
      → rerank                                                       (map_batches, a pool of actors, each
                                                                      holding the model and its modules)
      → write, in the run's order                                    (the driver, from the ordered output)

Chunks hold consecutive queries of one language, so each carries one module set; they reach the actors in
order of language, so that an actor switches modules rarely. An actor that dies is restarted by Ray and its
chunk is retried (``max_restarts`` / ``max_task_retries``), so the output is complete; each chunk is scored by
the same code as in the local engine (:class:`rerank.batch.engine.ChunkScorer`), so the written run ranks as
the local one does. With no ``address`` a local cluster is started for the job and stopped after it.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from rerank.batch.engine import Chunk, ChunkScorer, Report, Tally, chunks, scan
from rerank.errors import RerankError

PART_CHUNKS = 16  # chunks a Ray task takes at most


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: start a local cluster; "auto": the running one; HOST:PORT; ray://HOST:PORT
    num_workers: int = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0


def _reachable(address: str) -> None:
    """A HOST:PORT (or ray://HOST:PORT) that answers nothing is said in one line, not after Ray's retries."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise RerankError(
            f"--address {address!r} is not auto, HOST:PORT or ray://HOST:PORT", hint="e.g. 10.0.0.5:6379"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise RerankError(
            f"no Ray cluster answers at {address} ({e.strerror or e})",
            hint="start one with `ray start --head`, or drop --address to start a local one",
        ) from None


def connect(opts: RayOptions, *, quiet: bool = True) -> bool:
    """Join (or start) the cluster and check it can hold the actors; True when this call started it."""
    import logging

    import ray

    started = False
    if not ray.is_initialized():
        kwargs = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=not quiet)
        if opts.address is None:
            ray.init(num_cpus=os.cpu_count(), **kwargs)
            started = True
        else:
            _reachable(opts.address)
            try:
                ray.init(address=opts.address, **kwargs)
            except (ConnectionError, RuntimeError, TimeoutError) as e:
                raise RerankError(
                    f"cannot join the Ray cluster at {opts.address}: {' '.join(str(e).split())[:200]}",
                    hint="check the address (`ray status` on the head node), or drop --address",
                ) from None
    have = ray.cluster_resources()
    need_cpu = opts.num_workers * opts.cpus_per_worker
    need_gpu = opts.num_workers * opts.gpus_per_worker
    if have.get("CPU", 0) < need_cpu or have.get("GPU", 0) < need_gpu:
        if started:
            ray.shutdown()
        raise RerankError(
            f"the Ray cluster has {have.get('CPU', 0):g} CPUs and {have.get('GPU', 0):g} GPUs; {opts.num_workers} "
            f"workers × {opts.cpus_per_worker:g} CPUs, {opts.gpus_per_worker:g} GPUs need {need_cpu:g} and "
            f"{need_gpu:g}",
            hint="lower --num-workers, --cpus-per-worker or --gpus-per-worker, or add nodes",
        )
    return started


def _join(batch: dict, index: str, depth: int) -> dict:
    """The join stage: each chunk's document texts (within the reranked depth) and which of its documents the
    index has, read from the index's store. A light task (it asks no CPU of its own, so that it never waits
    behind the actors holding every CPU)."""
    from rerank.batch.engine import join_chunk
    from rerank.indexes.docstore import DocStore

    store = DocStore(Path(index) / "docs.sqlite")
    try:
        texts_col, present_col = [], []
        for payload in batch["payload"]:
            texts, have = join_chunk(store, Chunk.from_json(payload), depth)
            texts_col.append(json.dumps(texts))
            present_col.append(json.dumps(sorted(have)))
    finally:
        store.close()
    return {"order": batch["order"], "payload": batch["payload"], "texts": texts_col, "present": present_col}


class _Rerank:
    """The actor: one :class:`ChunkScorer` (model, modules, index); one chunk in, its TREC lines out."""

    def __init__(self, index: str, settings, missing: str, tag: str, threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        self.scorer = ChunkScorer(index, settings, missing=missing, tag=tag)

    def __call__(self, batch: dict) -> dict:
        lines_col, tally_col, t0_col, t1_col = [], [], [], []
        for payload, texts, present in zip(batch["payload"], batch["texts"], batch["present"], strict=True):
            t0_col.append(time.time())
            lines, tally = self.scorer.score(Chunk.from_json(payload), json.loads(texts), set(json.loads(present)))
            t1_col.append(time.time())
            lines_col.append("".join(lines))
            tally_col.append(json.dumps(asdict(tally)))
        return {"order": batch["order"], "lines": lines_col, "tally": tally_col, "t0": t0_col, "t1": t1_col}


def _stage(run, topics, depth: int, batch_pairs: int, tmp: Path, workers: int) -> tuple[list[Path], list[str]]:
    """The run's chunks as JSON-lines files in the order the actors take them: each language's chunks
    together (one file a language while reading), cut into parts of at most :data:`PART_CHUNKS` chunks and at
    least ``4 × workers`` parts — a part is one Ray task, so parts spread the work over the actors and bound
    what a retry after a lost actor redoes."""
    files: dict[str, object] = {}
    n = 0
    try:
        for chunk in chunks(run, topics, depth, batch_pairs):
            if chunk.lang not in files:
                files[chunk.lang] = open(tmp / f"lang.{len(files)}.jsonl", "w", encoding="utf-8")
            row = {"order": chunk.index, "payload": chunk.to_json()}
            files[chunk.lang].write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    finally:
        for f in files.values():
            f.close()
    per_part = max(1, min(PART_CHUNKS, math.ceil(n / (4 * workers))))
    parts: list[Path] = []
    out = None
    for k in range(len(files)):
        lang_file = tmp / f"lang.{k}.jsonl"
        with open(lang_file, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i % per_part == 0:
                    if out is not None:
                        out.close()
                    parts.append(tmp / f"part.{len(parts):06d}.jsonl")
                    out = open(parts[-1], "w", encoding="utf-8")
                out.write(line)
        if out is not None:
            out.close()
            out = None
        lang_file.unlink()
    return parts, list(files)


def _in_run_order(rows, tmp: Path, n_langs: int, span: list[float]):
    """The actors' output arrives language by language, each in run order; the run's order is their merge by
    chunk number, made from one spill file a language (bounded memory). ``span`` becomes [first start, last end]
    of the actors' scoring (wall clock)."""
    spills = [open(tmp / f"out.{n}.jsonl", "w+", encoding="utf-8") for n in range(n_langs)]
    try:
        current, last = 0, -1
        for row in rows:
            order = int(row["order"])
            if order < last:
                current += 1  # the next language's chunks begin
            last = order
            spills[current].write(json.dumps([order, row["lines"], row["tally"]], ensure_ascii=False) + "\n")
            span[0], span[1] = min(span[0], float(row["t0"])), max(span[1], float(row["t1"]))
        for f in spills:
            f.seek(0)
        streams = [(json.loads(line) for line in f) for f in spills]
        for _, lines, tally in heapq.merge(*streams, key=lambda r: r[0]):
            yield lines, Tally(**json.loads(tally))
    finally:
        for f in spills:
            f.close()


def _plan(index: str, settings, missing: str, tag: str, langs: list[str]) -> dict:
    """What the actors will do (the reranker ``auto`` resolves to, its depth, the module sets), from one
    scorer built on a worker: the driver loads no model."""
    from rerank.batch.engine import module_plan, system_name

    scorer = ChunkScorer(index, settings, missing=missing, tag=tag)
    try:
        return {
            "depth": scorer.depth,
            "system": system_name(scorer.pipe),
            "modules": module_plan(scorer.pipe, langs),
        }
    finally:
        scorer.close()


def rerank_run_ray(
    run,
    topics,
    out,
    index,
    settings,
    opts: RayOptions,
    *,
    missing: str = "keep",
    tag: str = "rerank",
    batch_pairs: int = 512,
    overwrite: bool = False,
    progress: bool = False,
) -> Report:
    """Rerank ``run`` on a Ray cluster into ``out`` (written whole or not at all)."""
    import ray

    from rerank.files import atomic_write

    n_queries, _ = scan(run, topics)
    started = connect(opts, quiet=not progress)
    try:
        langs_of_topics = sorted({q.lang for q in topics.values()})
        task = ray.remote(num_cpus=opts.cpus_per_worker, num_gpus=opts.gpus_per_worker or None)(_plan)
        plan = ray.get(task.remote(str(index), settings, missing, tag, langs_of_topics))
        depth = plan["depth"]
        settings = replace(settings, depth=depth)  # the actors rerank exactly the depth the join stage read
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="rerank-run-") as tmp:
            parts, langs = _stage(run, topics, depth, batch_pairs, Path(tmp), opts.num_workers)
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = progress
            ctx.execution_options.preserve_order = True
            # Reading and joining ask no CPU of their own: the actors hold every CPU they asked for, and a
            # stage that waited for one behind them would never run.
            ds = ray.data.read_json([str(p) for p in parts], lines=True, num_cpus=0, override_num_blocks=len(parts))
            ds = ds.map_batches(_join, fn_kwargs={"index": str(index), "depth": depth}, batch_size=4, num_cpus=0)
            ds = ds.map_batches(
                _Rerank,
                fn_constructor_kwargs={
                    "index": str(index),
                    "settings": settings,
                    "missing": missing,
                    "tag": tag,
                    "threads": int(opts.cpus_per_worker) or 1,
                },
                batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=opts.num_workers),  # Ray restarts a dead actor, retries
                num_cpus=opts.cpus_per_worker,
                num_gpus=opts.gpus_per_worker or None,
            )
            tally = Tally()
            span = [math.inf, -math.inf]
            with atomic_write(out, overwrite) as f:
                for lines, t in _in_run_order(ds.iter_rows(), Path(tmp), len(langs), span):
                    f.write(lines)
                    tally.add(t)
        seconds = time.perf_counter() - start
    finally:
        if started:
            ray.shutdown()
    used = {lang: plan["modules"].get(lang, []) for lang in langs}
    return Report(
        "ray",
        opts.num_workers,
        plan["system"],
        depth,
        batch_pairs,
        missing,
        seconds,
        tally,
        used,
        topics_without_lines=len(topics) - n_queries,
        extra={
            "address": opts.address or "local",
            "cpus_per_worker": opts.cpus_per_worker,
            "scoring_seconds": round(max(0.0, span[1] - span[0]), 3),
        },
    )
