"""``rerank index`` killed (SIGKILL) at points seen on disk, and two builds racing for one ``--out``: every
output is either complete and searchable or absent, the next run succeeds, and a killed ``--overwrite``
rebuild leaves the old index whole (issue 22, defects 2 and 3). Real processes, bounded by timeouts."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.java, pytest.mark.slow]


@pytest.fixture(scope="module")
def many_docs(udhr_dir, tmp_path_factory) -> Path:
    """The bundled UDHR articles in its four document languages, each ten times under new ids (2,370 documents):
    enough that BM25 and the dense part each take a moment a poll can catch."""
    out = tmp_path_factory.mktemp("docs") / "docs.jsonl"
    with out.open("w", encoding="utf-8") as f:
        for copy in range(10):
            for lang in ("en", "de", "ru", "ky"):
                for line in (udhr_dir / f"docs.{lang}.jsonl").read_text(encoding="utf-8").splitlines():
                    d = json.loads(line)
                    d["id"] = f"{lang}-{copy}-{d['id']}"
                    f.write(json.dumps(d, ensure_ascii=False) + "\n")
    return out


def _index_cmd(docs: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rerank.cli.main",
        "index",
        "--docs",
        str(docs),
        "--lang",
        "en",
        "--out",
        str(out),
        "--model",
        str(model),
        "-q",
        *extra,
    ]


def _temporaries(out: Path) -> list[Path]:
    return [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp-")]


def _seen(out: Path, point: str) -> bool:
    tmps = _temporaries(out)
    if point == "started":
        return bool(tmps)
    if point == "bm25 done":
        return any((t / "rerank-index.json").is_file() for t in tmps)
    if point == "dense running":
        return any(any(q.name.startswith(".dense.tmp-") for q in t.iterdir()) for t in tmps if t.is_dir())
    raise ValueError(point)


def _kill_at(cmd: list[str], out: Path, point: str, timeout: float = 240, when=None) -> bool:
    """Start ``cmd``, SIGKILL it when ``point`` is seen under ``out``'s folder (or when ``when()`` holds);
    False if it ended first."""
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while p.poll() is None and time.monotonic() < deadline:
            try:
                hit = when() if when is not None else _seen(out, point)
            except OSError:  # a folder renamed away while it was listed
                hit = False
            if hit:
                p.send_signal(signal.SIGKILL)
                p.wait(timeout=30)
                return True
            time.sleep(0.005)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)
    assert p.returncode == 0, p.stderr.read().decode() if p.stderr else ""
    return False


def _searchable(out: Path, model: Path) -> list[str]:
    from rerank.pipeline import Pipeline

    pipe = Pipeline(out, first_stage="dense", reranker="none", modules=None, dense_model=model)
    try:
        return [d.doc_id for d in pipe.search("right to education", "en", k=5)]
    finally:
        pipe.close()


def test_a_killed_build_leaves_nothing_that_looks_like_an_index(many_docs, tmp_path, tiny_bert):
    out = tmp_path / "idx"
    killed = []
    for point in ("started", "bm25 done", "dense running"):
        if _kill_at(_index_cmd(many_docs, out, tiny_bert), out, point):
            killed.append(point)
            assert not out.exists(), f"killed at {point}: {sorted(p.name for p in out.iterdir())}"
        else:  # it finished before the point was seen: a complete index, removed for the next kill
            import shutil

            shutil.rmtree(out)
    assert {"started", "bm25 done"} <= set(killed), killed  # the dense phase may be too short to catch
    assert _temporaries(out)  # the dead builds' leftovers …
    r = subprocess.run(_index_cmd(many_docs, out, tiny_bert), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert not _temporaries(out)  # … are removed by the next build, which succeeds without --overwrite
    assert json.loads((out / "rerank-index.json").read_text())["dense"] is True
    assert len(_searchable(out, tiny_bert)) == 5


def test_a_killed_overwrite_keeps_the_old_index_whole(many_docs, tmp_path, tiny_bert):
    out = tmp_path / "idx"
    r = subprocess.run(_index_cmd(many_docs, out, tiny_bert), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    hits = _searchable(out, tiny_bert)
    for point in ("bm25 done", "dense running"):
        _kill_at(_index_cmd(many_docs, out, tiny_bert, "--overwrite"), out, point)
        after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
        assert after == before, f"killed at {point}: the old index changed"
    assert _searchable(out, tiny_bert) == hits


def test_two_builds_to_one_out_exactly_one_wins(many_docs, tmp_path, tiny_bert):
    out = tmp_path / "idx"
    procs = [
        subprocess.Popen(
            _index_cmd(many_docs, out, tiny_bert, "--no-dense"),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    assert codes == [0, 2], results
    loser = next(e for c, e in results if c == 2)
    lines = [line for line in loser.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rerank: error: ") and "idx" in lines[0], loser
    assert "another run" in lines[0] or "already exists" in lines[0], lines[0]
    assert json.loads((out / "rerank-index.json").read_text())["documents"] == 2370
    assert not _temporaries(out)
