"""SIGKILL of the other long writers — `rerank modules quantize`, `rerank train lang` between its checkpoints,
`rerank eval grid` between its runs — and parallel searches on one index: each output is complete or absent,
the next run succeeds (training and the grid resume), parallel runs agree (issue 22, the kill and
concurrency parts of the suite). Real processes, bounded by timeouts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.reliability.test_kill import _kill_at
from tests.training.test_lang import KY

pytestmark = [pytest.mark.java, pytest.mark.slow]

RERANK = [sys.executable, "-m", "rerank.cli.main"]


def _run(args: list, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*RERANK, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_a_killed_quantize_leaves_no_module(tmp_path):
    """The write is short, so the kill is tried up to five times (a run that finished first must be whole)."""
    import shutil

    src, out = ROOT / "modules" / "en-lang-shira", tmp_path / "q4"
    cmd = [*RERANK, "modules", "quantize", str(src), "--bits", "4", "--out", str(out)]
    hits = 0
    for _ in range(5):
        if _kill_at(cmd, out, "started"):
            hits += 1
            assert not out.exists()
            break
        assert json.loads((out / "module_config.json").read_text())["bits"] == 4  # finished first: whole
        shutil.rmtree(out)
    assert hits, "the quantize run finished before its temporary folder was seen, five times"
    r = _run(["modules", "quantize", src, "--bits", "4", "--out", out])
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "module_config.json").read_text())["bits"] == 4


def test_a_killed_training_resumes_from_its_checkpoint(tmp_path, tiny_bert):
    out = tmp_path / "ky-lang"
    cmd = [
        "train",
        "lang",
        "--lang",
        "ky",
        "--text",
        KY,
        "--kind",
        "shira",
        "--model",
        tiny_bert,
        "--max-steps",
        "120",
        "--eval-every",
        "50",
        "--seq-len",
        "32",
        "--batch-size",
        "4",
        "--out",
        out,
        "-q",
    ]

    def checkpointed() -> bool:
        work = Path(f"{out}.work")
        return work.is_dir() and any("head" not in p.parts for p in work.rglob("checkpoint/state.json"))

    hit = _kill_at([*RERANK, *map(str, cmd)], out, "a checkpoint", when=checkpointed)
    assert hit, "the run ended before its first checkpoint was seen"
    assert not out.exists()
    r = _run(cmd)
    assert r.returncode == 0, r.stderr
    recipe = json.loads((out / "module_config.json").read_text())["recipe"]
    assert recipe["resumed_from"] >= 50 and recipe["steps"] == 120, recipe
    assert not Path(f"{out}.work").exists()  # finished: its checkpoints are removed


def test_a_killed_grid_resumes_from_its_cached_runs(tmp_path, udhr_dir):
    grid = tmp_path / "grid.toml"
    grid.write_text(
        f"""title = "kill test"
metrics = "nDCG@10"
baseline = "bm25"
[collection]
docs = "{udhr_dir}/docs.{{doc}}.jsonl"
index = "{tmp_path}/idx-{{doc}}"
topics = "{udhr_dir}/topics.{{query}}.tsv"
qrels = "{udhr_dir}/qrels.{{doc}}.txt"
doc_langs = ["en"]
query_langs = ["en", "tr"]
[[systems]]
name = "bm25"
first_stage = "bm25"
reranker = "none"
[[systems]]
name = "bm25-b"
first_stage = "bm25"
reranker = "none"
fusion_k = 10
""",
        encoding="utf-8",
    )
    out = tmp_path / "report"

    def a_run_cached() -> bool:
        return (out / "runs").is_dir() and any(p.suffix == ".trec" for p in (out / "runs").rglob("*"))

    _kill_at([*RERANK, "eval", "grid", str(grid), "--out", str(out), "-q"], out, "a run cached", when=a_run_cached)
    assert not (out / "index.html").exists() or (out / "grid.json").is_file()
    cached = sorted(p.name for p in (out / "runs").rglob("*.trec"))
    assert cached, "nothing was cached before the kill"
    r = _run(["eval", "grid", grid, "--out", out, "-q"])
    assert r.returncode == 0, r.stderr
    assert (out / "grid.json").is_file() and (out / "index.html").is_file()
    assert len(list((out / "runs").rglob("*.trec"))) == 4


def test_parallel_searches_on_one_index_write_identical_runs(tmp_path, en_index, udhr_dir):
    procs = [
        subprocess.Popen(
            [
                *RERANK,
                "search",
                "--index",
                str(en_index),
                "--topics",
                str(udhr_dir / "topics.en.tsv"),
                "--lang",
                "en",
                "--first-stage",
                "bm25",
                "--reranker",
                "none",
                "-o",
                str(tmp_path / f"run{i}.trec"),
                "-q",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    runs = [(tmp_path / f"run{i}.trec").read_text() for i in range(3)]
    assert runs[0] and runs[0] == runs[1] == runs[2]
