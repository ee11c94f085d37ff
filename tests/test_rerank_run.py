"""``rerank rerank-run``: a TREC run reranked in-process and on a local Ray cluster (tiny random cross-encoder
over the bundled UDHR index)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rerank.collections.topics import read_topics
from rerank.collections.trec import count_ties, group_by_query, read_run, write_run
from rerank.errors import RerankError
from rerank.types import Query
from tests.conftest import raises_at, write

pytestmark = pytest.mark.java

DEPTH = 10


@pytest.fixture(scope="module")
def topics(udhr_dir):
    return read_topics(udhr_dir / "topics.en.tsv", lang="en")


@pytest.fixture(scope="module")
def bm25_run(en_index, topics, tmp_path_factory) -> Path:
    """Another system's run: BM25's top 30 for every English topic."""
    from rerank.pipeline import Pipeline

    with Pipeline(en_index, first_stage="bm25", reranker="none") as p:
        first = p.batch_search(topics, k=30)
    out = tmp_path_factory.mktemp("runs") / "bm25.en.trec"
    write_run([sd for q in topics for sd in first[q.query_id]], out, tag="bm25")
    return out


def settings(tiny_cross, **kw):
    from rerank.pipeline import SearchSettings

    return SearchSettings(reranker="cross", model=tiny_cross, modules=None, depth=DEPTH, precision="fp32", **kw)


def local(en_index, tiny_cross, run, topics, out, *, missing="keep", batch_pairs=64, **kw):
    from rerank.batch.engine import ChunkScorer, rerank_run_local, topics_map

    scorer = ChunkScorer(en_index, settings(tiny_cross, **kw), missing=missing)
    try:
        return rerank_run_local(run, topics_map(topics, None), out, scorer, batch_pairs=batch_pairs, overwrite=True)
    finally:
        scorer.close()


def test_a_reranked_run_is_what_search_reranks_from_the_same_first_stage(
    en_index, tiny_cross, topics, bm25_run, tmp_path
):
    from rerank.pipeline import Pipeline

    with Pipeline(en_index, settings(tiny_cross, first_stage="bm25")) as p:
        searched, _ = p.run(topics, k=30)
    report = local(en_index, tiny_cross, bm25_run, topics, tmp_path / "rr.trec", batch_pairs=25)
    got = group_by_query(read_run(tmp_path / "rr.trec"))
    assert list(got) == [q.query_id for q in topics]  # the run's query order
    for q in topics:
        want = searched[q.query_id]
        assert [d.doc_id for d in got[q.query_id]] == [d.doc_id for d in want]  # top 10 reranked, 20 below
        np.testing.assert_allclose(
            [d.score for d in got[q.query_id][:DEPTH]], [d.score for d in want[:DEPTH]], atol=1e-4
        )
    assert count_ties(read_run(tmp_path / "rr.trec")) == 0
    t = report.tally
    n = len(bm25_run.read_text().splitlines())
    assert (t.queries, t.lines_in, t.lines_out, t.pairs) == (len(topics), n, n, DEPTH * len(topics))
    assert report.depth == DEPTH and t.missing_lines == 0


def test_the_chunking_does_not_change_the_ranking(en_index, tiny_cross, topics, bm25_run, tmp_path):
    a = local(en_index, tiny_cross, bm25_run, topics, tmp_path / "a.trec", batch_pairs=1)  # one query a chunk
    b = local(en_index, tiny_cross, bm25_run, topics, tmp_path / "b.trec", batch_pairs=10_000)  # one chunk
    ra, rb = group_by_query(read_run(tmp_path / "a.trec")), group_by_query(read_run(tmp_path / "b.trec"))
    assert {q: [d.doc_id for d in v] for q, v in ra.items()} == {q: [d.doc_id for d in v] for q, v in rb.items()}
    assert a.tally == b.tally


def test_chunks_hold_one_language_and_about_batch_pairs(tmp_path):
    from rerank.batch.engine import chunks, topics_map

    run = write(tmp_path / "r.trec", "".join(f"q{i} Q0 d{j} {j} {10 - j} x\n" for i in range(6) for j in range(1, 5)))
    qs = [Query(f"q{i}", f"text {i}", "ky" if i in (2, 3) else "en") for i in range(6)]
    got = list(chunks(run, topics_map(qs, None), depth=3, batch_pairs=6))
    assert [(c.index, c.lang, [q[0] for q in c.queries]) for c in got] == [
        (0, "en", ["q0", "q1"]),
        (1, "ky", ["q2", "q3"]),
        (2, "en", ["q4", "q5"]),
    ]
    assert got[0].queries[0][3][0] == ("d1", 9.0)
    assert type(got[1]).from_json(got[1].to_json()) == got[1]


def test_documents_the_index_lacks_are_counted_and_kept_or_dropped(en_index, tiny_cross, topics, bm25_run, tmp_path):
    lines = bm25_run.read_text().splitlines(keepends=True)
    q0 = lines[0].split()[0]
    bad = [f"{q0} Q0 not-in-index-1 1 999 x\n", f"{q0} Q0 not-in-index-2 2 -999 x\n"]
    n0 = sum(1 for line in lines if line.split()[0] == q0)
    run = write(tmp_path / "bad.trec", "".join(bad[:1] + lines[:n0] + bad[1:] + lines[n0:]))  # at q0's top, bottom
    kept = local(en_index, tiny_cross, run, topics, tmp_path / "keep.trec")
    assert (kept.tally.missing_lines, kept.tally.missing_in_depth, kept.tally.missing_queries) == (2, 1, 1)
    assert kept.tally.missing_examples == ["not-in-index-1", "not-in-index-2"]
    got = group_by_query(read_run(tmp_path / "keep.trec"))[q0]
    assert len(got) == n0 + 2 and [d.doc_id for d in got].index("not-in-index-1") == DEPTH - 1  # below the 9 reranked
    assert got[-1].doc_id == "not-in-index-2"
    dropped = local(en_index, tiny_cross, run, topics, tmp_path / "drop.trec", missing="drop")
    got = group_by_query(read_run(tmp_path / "drop.trec"))[q0]
    assert len(got) == n0 and not any(d.doc_id.startswith("not-in-index") for d in got)
    assert dropped.tally.missing_lines == 2 and dropped.tally.lines_out == kept.tally.lines_out - 2
    with pytest.raises(RerankError, match="2 lines of the run name documents the index does not have"):
        local(en_index, tiny_cross, run, topics, tmp_path / "error.trec", missing="error")
    assert not (tmp_path / "error.trec").exists()


def test_a_run_must_be_grouped_by_query_and_name_known_queries(en_index, tiny_cross, topics, tmp_path):
    from rerank.collections.trec import iter_run_groups

    run = write(tmp_path / "r.trec", "a Q0 d1 1 3 x\nb Q0 d1 1 3 x\na Q0 d2 2 2 x\n")
    raises_at(run, 3, "query a appears again after other queries", iter_run_groups, run)
    run = write(tmp_path / "r2.trec", "a Q0 d1 1 3 x\na Q0 d1 2 2 x\n")
    raises_at(run, 2, "document d1 appears twice for query a", iter_run_groups, run)
    with pytest.raises(RerankError, match="query zz of .* is not in the topics"):
        local(en_index, tiny_cross, write(tmp_path / "r3.trec", "zz Q0 d1 1 3 x\n"), topics, tmp_path / "o.trec")


def test_the_cli_writes_the_run_and_its_record(cli, en_index, tiny_cross, udhr_dir, bm25_run, tmp_path):
    out = tmp_path / "out.trec"
    args = ["rerank-run", "--run", bm25_run, "--topics", udhr_dir / "topics.en.tsv", "--index", en_index]
    args += ["--lang", "en", "--out", out, "--model", tiny_cross, "--modules", "none", "--reranker", "cross"]
    code, stdout, stderr = cli(*args, "--depth", 5, "--precision", "fp32", "-q")
    assert code == 0, stderr
    n = len(bm25_run.read_text().splitlines())
    flat = " ".join(stdout.split())  # the console wraps at 120 columns where the temporary path makes the line long
    assert f"wrote {n:,} lines for 31 queries" in flat and "top 5 reranked, local engine" in flat
    record = json.loads(Path(f"{out}.json").read_text())
    assert record["pairs_reranked"] == 155 and record["lines_out"] == n and record["missing"]["lines"] == 0
    assert record["command"].startswith("rerank rerank-run --run")
    code, _, stderr = cli(*args, "-q")
    assert code == 2 and "exists" in stderr and stderr.count("\n") == 1
    code, _, stderr = cli(*args, "--overwrite", "--engine", "spark", "-q")
    assert code == 2 and "unknown --engine 'spark'" in stderr
    code, _, stderr = cli(*args[:-8], "--out", bm25_run, "--overwrite", "--model", tiny_cross, "-q")
    assert code == 2 and "is the run being reranked" in stderr


# ------------------------------------------------------------------------------------------------ Ray


def many_topics(topics, n: int) -> list[Query]:
    """``n`` queries cycling through the real topics under new ids (enough work to kill an actor during)."""
    return [Query(f"{topics[i % len(topics)].query_id}-{i}", topics[i % len(topics)].text, "en") for i in range(n)]


def many_run(bm25_run, queries, tmp_path) -> Path:
    by = group_by_query(read_run(bm25_run))
    lines = [
        f"{q.query_id} Q0 {d.doc_id} {r} {d.score} x\n"
        for q in queries
        for r, d in enumerate(by[q.query_id.split("-")[0]], 1)
    ]
    return write(tmp_path / "many.trec", "".join(lines))


@pytest.mark.ray
@pytest.mark.slow
def test_the_ray_engine_writes_the_local_engines_run_even_when_an_actor_is_killed(
    en_index, tiny_cross, topics, bm25_run, tmp_path
):
    import os
    import signal

    import psutil
    import ray.data  # noqa: F401 - imported here, not by two threads at once

    from rerank.batch.engine import topics_map
    from rerank.batch.rayengine import RayOptions, rerank_run_ray

    queries = many_topics(topics, 240)
    run = many_run(bm25_run, queries, tmp_path)
    tmap = topics_map(queries, None)
    s = settings(tiny_cross, max_length=512)
    want = local(en_index, tiny_cross, run, queries, tmp_path / "local.trec", batch_pairs=20, max_length=512)

    killed: list[int] = []
    result: dict = {}

    def job():
        try:
            result["report"] = rerank_run_ray(
                run, tmap, tmp_path / "ray.trec", en_index, s, RayOptions(None, 2), batch_pairs=20
            )
        except BaseException as e:  # noqa: BLE001 - reported below
            result["error"] = e

    thread = threading.Thread(target=job)
    thread.start()

    deadline = time.monotonic() + 300
    while not killed and thread.is_alive() and time.monotonic() < deadline:
        alive = [p for p in psutil.process_iter(["cmdline"]) if "_Rerank" in " ".join(p.info["cmdline"] or [])]
        if len(alive) == 2:
            time.sleep(1.0)  # both actors are working through their parts
            if thread.is_alive():
                os.kill(alive[0].pid, signal.SIGKILL)
                killed.append(alive[0].pid)
        time.sleep(0.2)
    thread.join(timeout=600)
    assert "error" not in result, result.get("error")
    assert killed, "the job ended before an actor could be killed: give it more work"
    assert (tmp_path / "ray.trec").read_bytes() == (tmp_path / "local.trec").read_bytes()
    r = result["report"]
    assert (r.engine, r.workers, r.tally) == ("ray", 2, want.tally)


@pytest.mark.ray
def test_the_ray_engine_says_in_one_line_what_is_wrong_with_the_cluster(
    en_index, tiny_cross, topics, bm25_run, tmp_path
):
    from rerank.batch.engine import topics_map
    from rerank.batch.rayengine import RayOptions, rerank_run_ray

    tmap = topics_map(topics, None)
    with pytest.raises(RerankError, match="no Ray cluster answers at 127.0.0.1:9"):
        rerank_run_ray(bm25_run, tmap, tmp_path / "o.trec", en_index, settings(tiny_cross), RayOptions("127.0.0.1:9"))
    with pytest.raises(RerankError, match=r"CPUs and 0 GPUs; 64 workers × 1 CPUs, 0 GPUs need 64 and 0"):
        rerank_run_ray(bm25_run, tmap, tmp_path / "o.trec", en_index, settings(tiny_cross), RayOptions(None, 64))
    assert not (tmp_path / "o.trec").exists()
