"""The experiment grid on the bundled collection (BM25 index, tiny random bi-encoder), its cache, its
report, and the report rendered in headless Chromium; `rerank eval run` from the command line."""

import json

import pytest

from rerank.errors import RerankError
from tests.eval.test_metrics import noisy_run

pytestmark = pytest.mark.java


@pytest.fixture()
def grid_file(tmp_path, udhr_dir, en_index, tiny_bert):
    text = f"""
title = "test grid"
metrics = "MAP nDCG@10 MRR"
baseline = "bm25"
k = 50

[collection]
docs = "{udhr_dir}/docs.{{doc}}.jsonl"
index = "{en_index.parent}/udhr-{{doc}}"
topics = "{udhr_dir}/topics.{{query}}.tsv"
qrels = "{udhr_dir}/qrels.{{doc}}.txt"
doc_langs = ["en"]
query_langs = ["en", "tr"]

[[systems]]
name = "bm25"
first_stage = "bm25"
reranker = "none"

[[systems]]
name = "bm25+bi"
first_stage = "bm25"
reranker = "bi"
model = "{tiny_bert}"

[[systems]]
name = "later"
first_stage = "bm25"
reranker = "cross"
requires = ["{tmp_path}/modules/en-task"]
"""
    p = tmp_path / "grid.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_grid_runs_caches_and_reports(grid_file, tmp_path):
    from rerank.eval.grid import evaluate_grid, load_grid, run_grid, write_grid_report

    g = load_grid(grid_file)
    out = tmp_path / "report"
    runs = run_grid(g, out, progress=False)
    assert set(runs) == {("en", "en"), ("en", "tr")} and set(runs[("en", "en")]) == {"bm25", "bm25+bi"}
    assert g.skipped == {"later": f"needs {tmp_path}/modules/en-task (not there yet)"}
    stamp = runs[("en", "tr")]["bm25+bi"].stat().st_mtime_ns
    side = json.loads((runs[("en", "tr")]["bm25+bi"].parent / "bm25+bi.tr.trec.json").read_text())
    assert side["system"]["model"] and len(side["key"]) == 64
    cells = evaluate_grid(g, runs)
    ev, comps = cells[("en", "en")]
    assert ev.systems == ["bm25", "bm25+bi"] and ev.mean("bm25", "nDCG@10") > 0.8  # English over English
    write_grid_report(g, cells, out)
    md = (out / "grid.md").read_text()
    assert "| system | en→en | tr→en | mean |" in md and "Not run: later" in md and md.count("| bm25+bi |") == 3
    assert (out / "cells" / "tr-en" / "index.html").is_file() and (out / "grid-nDCG_10.png").stat().st_size > 5000
    # a second run reuses every run (same key), so nothing is rewritten
    g2 = load_grid(grid_file)
    run_grid(g2, out, progress=False)
    assert runs[("en", "tr")]["bm25+bi"].stat().st_mtime_ns == stamp


def test_grid_file_errors_name_the_line(tmp_path, grid_file):
    from rerank.eval.grid import load_grid

    text = grid_file.read_text().replace("k = 50", 'k = 50\nmetric = "MAP"')
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(RerankError, match=r"bad.toml:6: unknown key 'metric' in the grid"):
        load_grid(bad)
    bad.write_text(grid_file.read_text().replace('reranker = "none"', 'reranker = "none"\nrerank = "bi"'))
    with pytest.raises(RerankError, match=r":\d+: unknown key 'rerank' in \[\[systems\]\] bm25"):
        load_grid(bad)
    bad.write_text(grid_file.read_text().replace('baseline = "bm25"', 'baseline = "bm26"'))
    with pytest.raises(RerankError, match="baseline 'bm26' is not a system"):
        load_grid(bad)
    with pytest.raises(RerankError, match="does not exist"):
        load_grid(tmp_path / "nope.toml")


@pytest.mark.browser
def test_the_report_renders_in_chromium(grid_file, tmp_path):
    from rerank.eval.browser import check_page, find_chromium
    from rerank.eval.grid import evaluate_grid, load_grid, run_grid, write_grid_report

    if find_chromium() is None:
        pytest.skip("Debian's chromium is not installed (make test installs it when run as root)")
    g = load_grid(grid_file)
    out = tmp_path / "report"
    write_grid_report(g, evaluate_grid(g, run_grid(g, out, progress=False)), out)
    facts = check_page(out / "index.html", tmp_path / "shot.png")
    assert facts["tables"] == 3 and facts["body_rows"] == 6 and facts["images"] == 3
    assert facts["inked_pixels"] > 0.02 and facts["coloured_pixels"] > 0.005
    cell = check_page(out / "cells" / "en-en" / "index.html")
    assert cell["tables"] == 1 and cell["images"] == 4
    empty = tmp_path / "empty.html"
    empty.write_text("<html><body><p>nothing</p></body></html>")
    with pytest.raises(RerankError, match="renders with no tables, no body rows, no images"):
        check_page(empty)


def test_cli_eval_run(udhr_dir, tmp_path, capsys):
    from rerank.cli.main import main
    from rerank.collections.docs import read_docs
    from rerank.collections.trec import read_qrels, write_run

    qrels = read_qrels(udhr_dir / "qrels.en.txt")
    ids = [d.doc_id for d in read_docs(udhr_dir / "docs.en.jsonl")]
    write_run(noisy_run(qrels, ids, 2.0, 1), tmp_path / "base.trec", tag="base")
    write_run(noisy_run(qrels, ids, 0.3, 2), tmp_path / "good.trec", tag="good")

    def run(*args):
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in args])
        cap = capsys.readouterr()
        return e.value.code, cap.out, cap.err

    common = ["eval", "run", "--qrels", udhr_dir / "qrels.en.txt", "--run", tmp_path / "base.trec"]
    code, out, err = run(
        *common,
        "--run",
        f"better={tmp_path / 'good.trec'}",
        "--baseline",
        "base",
        "--out",
        tmp_path / "rep",
        "--metrics",
        "MAP nDCG@10",
    )
    assert code == 0, err
    assert "better" in out and "†" in out and "wrote" in out and (tmp_path / "rep" / "index.html").is_file()
    code, _, err = run(*common, "--baseline", "nope")
    assert code == 2 and "--baseline 'nope' is not one of the runs" in err
    dup = tmp_path / "dup.trec"
    dup.write_text((tmp_path / "base.trec").read_text().splitlines()[0] + "\n" + (tmp_path / "base.trec").read_text())
    code, _, err = run("eval", "run", "--qrels", udhr_dir / "qrels.en.txt", "--run", dup)
    assert code == 2 and "dup.trec:2: document" in err and "appears twice" in err
    code, _, err = run(*common, "--metrics", "MAP nDGC@10")
    assert code == 2 and "did you mean nDCG@10" in err and "Traceback" not in err
