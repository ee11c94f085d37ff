import pytest

from rerank.errors import RerankError
from rerank.indexes.fusion import fuse, rrf
from rerank.types import ScoredDoc


def run(qid, *ids):
    return [ScoredDoc(qid, d, 10.0 - i) for i, d in enumerate(ids)]


def test_rrf_sums_reciprocal_ranks():
    fused = rrf([run("q", "a", "b", "c"), run("q", "c", "a")], k=60)
    got = {sd.doc_id: sd.score for sd in fused}
    assert got["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert got["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert got["b"] == pytest.approx(1 / 62)
    assert [sd.doc_id for sd in fused] == ["a", "c", "b"]
    assert all(sd.query_id == "q" for sd in fused)


def test_weights_change_the_order_and_zero_weight_drops_a_run():
    bm25, dense = run("q", "x", "y"), run("q", "y", "z")
    assert [d.doc_id for d in rrf([bm25, dense], [1, 1])][0] == "y"
    only_dense = rrf([bm25, dense], [0, 1])
    assert [d.doc_id for d in only_dense] == ["y", "z"]  # x came from the weight-0 run only
    tilted = rrf([bm25, dense], [0.25, 1])
    assert [d.doc_id for d in tilted] == ["y", "z", "x"]


def test_ties_broken_by_best_rank_then_run_order_then_docid():
    # b and c each appear once at rank 1: same score; b comes from the first run
    fused = rrf([run("q", "b"), run("q", "c")])
    assert [d.doc_id for d in fused] == ["b", "c"]
    assert fused[0].score == fused[1].score
    # same rank, same run impossible; docid decides only when rank and run are equal across lists
    fused = rrf([run("q", "z", "a"), run("q", "a", "z")])
    assert [d.doc_id for d in fused] == ["z", "a"]  # z: best (rank 1, run 0) beats a's (rank 1, run 1)


def test_depth_and_missing_queries():
    runs = [{"q1": run("q1", "a", "b", "c"), "q2": run("q2", "d")}, {"q1": run("q1", "c")}]
    fused = fuse(runs, depth=1)
    assert [d.doc_id for d in fused["q1"]] == ["a", "c"]
    assert [d.doc_id for d in fused["q2"]] == ["d"]


@pytest.mark.parametrize(
    "weights, k, msg",
    [([1], 60, "1 fusion weights for 2 runs"), ([0, 0], 60, "not all 0"), ([-1, 1], 60, "≥ 0"), ([1, 1], -1, "k")],
)
def test_bad_fusion_settings(weights, k, msg):
    with pytest.raises(RerankError, match=msg):
        rrf([run("q", "a"), run("q", "b")], weights, k)
