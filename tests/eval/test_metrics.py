"""Metrics, significance and reports on the bundled qrels, with runs derived from them by seeded noise."""

import csv
import json
import random

import numpy as np
import pytest

from rerank.errors import RerankError
from rerank.types import ScoredDoc


@pytest.fixture(scope="module")
def qrels(udhr_dir):
    from rerank.collections.trec import read_qrels

    return read_qrels(udhr_dir / "qrels.en.txt")


@pytest.fixture(scope="module")
def doc_ids(udhr_dir):
    from rerank.collections.docs import read_docs

    return [d.doc_id for d in read_docs(udhr_dir / "docs.en.jsonl")]


def noisy_run(qrels, doc_ids, noise, seed):
    """Every document for every query, scored relevance + Gaussian noise (seeded): more noise, worse run."""
    rng = random.Random(seed)
    rel = {(q.query_id, q.doc_id): q.relevance for q in qrels}
    run = []
    for qid in sorted({q.query_id for q in qrels}):
        for d in doc_ids:
            run.append(ScoredDoc(qid, d, rel.get((qid, d), 0) + rng.gauss(0, noise)))
    return run


def test_metrics_equal_ir_measures_and_labels_read_as_the_field_writes_them(qrels, doc_ids):
    import ir_measures

    from rerank.eval.metrics import evaluate, parse_metrics

    run = noisy_run(qrels, doc_ids, 1.0, 1)
    measures = parse_metrics("MAP nDCG@10, P@10 R@100 MRR Judged@10")
    ev = evaluate(qrels, {"a": run}, measures)
    assert ev.measures == ["MAP", "nDCG@10", "P@10", "R@100", "MRR", "Judged@10"]
    want = ir_measures.calc_aggregate(measures, qrels, run)
    for m, label in zip(measures, ev.measures, strict=True):
        assert ev.mean("a", label) == pytest.approx(want[m], abs=1e-12)
    assert len(ev.queries) == 31 and ev.queries[:3] == ["a00", "a01", "a02"]


def test_missing_queries_score_zero_and_judged_only_condenses(qrels, doc_ids, capsys):
    from rerank.eval.metrics import evaluate

    run = noisy_run(qrels, doc_ids, 1.0, 1)
    half = [d for d in run if d.query_id < "a15"]
    ev = evaluate(qrels, {"full": run, "half": half}, "nDCG@10")
    assert "run half has no results for 16 of 31 queries; they score 0" in capsys.readouterr().err
    assert ev.missing == {"full": 0, "half": 16}
    idx = ev.queries.index("a20")
    assert ev.values("half", "nDCG@10")[idx] == 0.0 and ev.values("full", "nDCG@10")[idx] > 0
    # unjudged documents in front: judged-only drops them, so the score rises to the perfect ranking's
    rel = {(q.query_id, q.doc_id) for q in qrels}
    unjudged_first = [
        ScoredDoc(d.query_id, d.doc_id, d.score + (100 if (d.query_id, d.doc_id) not in rel else 0))
        for d in noisy_run(qrels, doc_ids, 0.0, 1)
    ]
    low = evaluate(qrels, {"r": unjudged_first}, "nDCG@10").mean("r", "nDCG@10")
    high = evaluate(qrels, {"r": unjudged_first}, "nDCG@10", judged_only=True).mean("r", "nDCG@10")
    assert low < 0.5 and high == pytest.approx(1.0)


def test_bad_input_is_one_clear_line(qrels, doc_ids, capsys):
    from rerank.eval.metrics import evaluate, parse_metrics

    with pytest.raises(RerankError, match=r"unknown metric 'nDGC@10'.*did you mean nDCG@10"):
        parse_metrics("MAP nDGC@10")
    other = [ScoredDoc("C141", "x", 1.0)]
    with pytest.raises(RerankError, match=r"no query in common \(run: 1 queries, e.g. C141; qrels: 31"):
        evaluate(qrels, {"other": other}, "MAP")
    tied = [ScoredDoc(d.query_id, d.doc_id, round(d.score)) for d in noisy_run(qrels, doc_ids, 0.3, 2)]
    evaluate(qrels, {"tied": tied}, "MAP")
    err = capsys.readouterr().err
    assert "run tied has" in err and "documents with tied scores" in err
    ev = evaluate(qrels, {"empty": []}, "MAP")
    assert ev.mean("empty", "MAP") == 0.0


def test_significance_matches_scipy_and_statsmodels(qrels, doc_ids):
    from scipy import stats
    from statsmodels.stats.multitest import multipletests

    from rerank.eval.metrics import evaluate
    from rerank.eval.significance import compare

    runs = {
        "base": noisy_run(qrels, doc_ids, 2.0, 1),
        "good": noisy_run(qrels, doc_ids, 0.3, 2),
        "same": noisy_run(qrels, doc_ids, 2.0, 1),
        "meh": noisy_run(qrels, doc_ids, 1.8, 3),
    }
    ev = evaluate(qrels, runs, "MAP nDCG@10")
    comps = compare(ev, "base")
    c = comps[("good", "MAP")]
    x, b = ev.values("good", "MAP"), ev.values("base", "MAP")
    assert c.p_t == pytest.approx(stats.ttest_rel(x, b).pvalue)
    assert c.effect_size == pytest.approx(np.mean(x - b) / np.std(x - b, ddof=1))
    holm = multipletests([comps[(s, "MAP")].p_t for s in ("good", "same", "meh")], method="holm")[1]
    assert [comps[(s, "MAP")].p_t_holm for s in ("good", "same", "meh")] == pytest.approx(list(holm))
    assert c.significant("t") and c.significant("perm") and c.p_perm < 0.01
    assert comps[("same", "MAP")].p_t == 1.0 and comps[("same", "MAP")].p_perm == 1.0
    assert ("base", "MAP") not in comps


def test_report_files_tables_and_plots(qrels, doc_ids, tmp_path):
    from rerank.eval.metrics import evaluate
    from rerank.eval.report import write_report
    from rerank.eval.significance import compare

    runs = {"base": noisy_run(qrels, doc_ids, 2.0, 1), "good": noisy_run(qrels, doc_ids, 0.3, 2)}
    ev = evaluate(qrels, runs, "MAP nDCG@10")
    out = write_report(ev, compare(ev, "base"), tmp_path / "r", baseline="base", commands={"good": "rerank x"})
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "diff-good.png",
        "index.html",
        "metric-MAP.png",
        "metric-nDCG_10.png",
        "metrics.csv",
        "metrics.json",
        "per-query.csv",
        "table.md",
    ]
    md = (out / "table.md").read_text()
    assert "| good | **" in md and "†" in md.splitlines()[3]
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert {r["system"] for r in rows} == {"base", "good"} and len(rows) == 4
    assert float(next(r for r in rows if r["system"] == "good" and r["measure"] == "MAP")["p_t_holm"]) < 0.05
    per_q = list(csv.DictReader((out / "per-query.csv").open()))
    assert len(per_q) == 62
    data = json.loads((out / "metrics.json").read_text())
    assert data["means"]["good"]["MAP"] == pytest.approx(ev.mean("good", "MAP"))
    page = (out / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "rerank x" in page and "(not recorded)" in page
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    with pytest.raises(RerankError, match="already exists"):
        write_report(ev, {}, out)
