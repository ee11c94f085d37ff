import numpy as np
import pytest

from rerank.collections.trec import count_ties, read_qrels, read_run, strict_order, write_qrels, write_run
from rerank.errors import RerankError
from rerank.types import Qrel, ScoredDoc
from tests.conftest import raises_at, write


def test_qrels_graded_roundtrip(tmp_path):
    p = write(tmp_path / "q.txt", "C041 0 LA010194-0001 2\nC041 0 LA010194-0002 0\nC042 Q0 GH950101-000001 -1\n")
    qrels = read_qrels(p)
    assert qrels == [
        Qrel("C041", "LA010194-0001", 2, "0"),
        Qrel("C041", "LA010194-0002", 0, "0"),
        Qrel("C042", "GH950101-000001", -1, "Q0"),
    ]
    out = tmp_path / "o.txt"
    write_qrels(qrels, out)
    assert read_qrels(out) == qrels


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("q 0 d 1\nq 0 d2\n", 2, "3 columns"),
        ("q 0 d 1\nq 0 d2 high\n", 2, "relevance 'high' is not an integer"),
        ("q 0 d 1\nq 0 d 2\n", 2, "judged twice"),
    ],
)
def test_qrels_errors(tmp_path, text, line, problem):
    p = write(tmp_path / "q.txt", text)
    raises_at(p, line, problem, read_qrels, p)


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("q Q0 d 1 2.0\n", 1, "5 columns"),
        ("q Q0 d one 2.0 t\n", 1, "rank 'one' is not an integer"),
        ("q Q0 d 1 x t\n", 1, "score 'x' is not a number"),
        ("q Q0 d 1 nan t\n", 1, "not finite"),
        ("q Q0 d 1 2 t\nq Q0 d 2 1 t\n", 2, "appears twice"),
    ],
)
def test_run_errors(tmp_path, text, line, problem):
    p = write(tmp_path / "r.trec", text)
    raises_at(p, line, problem, read_run, p)


def test_strict_order_breaks_ties_deterministically():
    docs = [ScoredDoc("q", "d3", 1.0), ScoredDoc("q", "d1", 2.0), ScoredDoc("q", "d2", 1.0), ScoredDoc("q", "d0", 1.0)]
    out = strict_order(docs)
    assert [d.doc_id for d in out] == ["d1", "d3", "d2", "d0"]  # ties keep the caller's order
    scores = np.asarray([d.score for d in out], dtype=np.float32)
    assert np.all(np.diff(scores) < 0)  # strictly decreasing even at float32 precision
    assert out[1].score == 1.0 and out[2].score < 1.0 and out[2].score > 0.9999
    # scores that differ only beyond float32 precision are ties for trec_eval: they are separated too
    close = strict_order([ScoredDoc("q", "a", 1.0), ScoredDoc("q", "b", 1.0 + 1e-12)])
    assert count_ties(close) == 0 and count_ties([ScoredDoc("q", "a", 1.0), ScoredDoc("q", "b", 1.0 + 1e-12)]) == 2
    with pytest.raises(RerankError, match="ranked twice"):
        strict_order([ScoredDoc("q", "a", 1.0), ScoredDoc("q", "a", 0.5)])


def test_written_run_is_valid_for_every_evaluator(tmp_path):
    run = [ScoredDoc("q2", f"d{i}", float(i % 3)) for i in range(10)] + [ScoredDoc("q1", "x", 5.0)]
    p = tmp_path / "r.trec"
    assert write_run(run, p, tag="t") == 11
    lines = [line.split() for line in p.read_text().splitlines()]
    assert all(len(cols) == 6 and cols[1] == "Q0" and cols[5] == "t" for cols in lines)
    q2 = [cols for cols in lines if cols[0] == "q2"]
    assert [int(c[3]) for c in q2] == list(range(1, 11))
    assert len({c[2] for c in q2}) == 10
    scores = np.asarray([float(c[4]) for c in q2], dtype=np.float32)
    assert np.all(np.diff(scores) < 0)
    back = read_run(p)
    assert count_ties(back) == 0 and len(back) == 11
    with pytest.raises(RerankError, match="already exists"):
        write_run(run, p)
    with pytest.raises(RerankError, match="must be one word"):
        write_run(run, tmp_path / "r2.trec", tag="two words")
    assert not (tmp_path / "r2.trec").exists()
