"""The pipeline on a tiny random backbone: each first stage and reranker, and how they combine."""

import numpy as np
import pytest

from rerank.errors import RerankError
from rerank.types import Query

pytestmark = pytest.mark.java

QUERY = "Everyone has the right to freedom of movement"


@pytest.fixture(scope="module")
def index(tiny_dense_index):
    return tiny_dense_index


def test_first_stages_and_their_fusion(index, tiny_bert):
    from rerank.indexes.fusion import rrf
    from rerank.pipeline import Pipeline

    runs = {}
    for stage in ("bm25", "dense", "hybrid"):
        with Pipeline(index, first_stage=stage, reranker="none", model=tiny_bert, dense_model=tiny_bert) as p:
            runs[stage] = p.search(QUERY, lang="en", k=20)
            assert len(runs[stage]) == 20
    with Pipeline(index, first_stage="bm25", reranker="none") as p:
        assert p.search(QUERY, k=20) == runs["bm25"]
    with Pipeline(
        index, first_stage="hybrid", reranker="none", model=tiny_bert, dense_model=tiny_bert, depth=100
    ) as p:
        first, _ = p.run([Query("q1", QUERY, "en")], k=100)
        full = rrf(
            [p.bm25.search(QUERY, k=100, query_id="q1"), p.dense.search(QUERY, k=100, query_id="q1")], query_id="q1"
        )
    assert [d.doc_id for d in first["q1"]] == [d.doc_id for d in full[:100]]
    assert [d.doc_id for d in runs["hybrid"]] == [d.doc_id for d in full[:20]]


def test_auto_first_stage_follows_the_languages(index, tiny_bert, en_index):
    from rerank.pipeline import Pipeline

    with Pipeline(index, reranker="none", dense_model=tiny_bert) as p:
        # dense wherever there are vectors, within a language too (chosen on the dev sets: modules/README.md)
        assert p.plan("en").kind == "dense" and p.plan("ky").kind == "dense" and p.plan(None).kind == "dense"
    with Pipeline(index, reranker="none", dense_model=tiny_bert, fusion_weights=(0.5, 1)) as p:
        assert p.plan("ky") == p.plan("en") and p.plan("ky").weights == (0.5, 1)
    with Pipeline(en_index, reranker="none") as p:  # no dense part: BM25
        assert p.plan("ky").kind == "bm25"


def test_auto_reranker_skips_the_bi_encoder_after_its_own_embeddings(index, tiny_bert, tiny_cross):
    from rerank.pipeline import Pipeline

    with Pipeline(index, model=tiny_bert) as p:  # hybrid/dense of the same backbone: no re-scoring
        assert p.reranker_kind == "none"
    with Pipeline(index, first_stage="bm25", model=tiny_bert) as p:
        assert p.reranker_kind == "bi"
    with Pipeline(index, model=tiny_cross, dense_model=tiny_bert) as p:
        assert p.reranker_kind == "cross"


def test_bi_reranking_reuses_the_index_vectors_and_matches_encoding(index, tiny_bert):
    from rerank.pipeline import Pipeline
    from rerank.scoring.reranker import Reranker

    with Pipeline(index, first_stage="bm25", reranker="bi", model=tiny_bert, depth=15) as p:
        final, first = p.run([Query("q1", QUERY, "en")], k=20)
        assert p.dense.encoder is p.reranker.scorer.encoder  # one model in memory
        docs = p.bm25.docstore.get_many([d.doc_id for d in first["q1"][:15]])
    direct = Reranker(tiny_bert).rerank("q1", QUERY, first["q1"][:15], {d: x.contents for d, x in docs.items()})
    got = final["q1"]
    assert [d.doc_id for d in got[:15]] == [d.doc_id for d in direct]
    np.testing.assert_allclose([d.score for d in got[:15]], [d.score for d in direct], atol=1e-5)
    # beyond the rerank depth: the first stage's order, below every reranked score
    assert [d.doc_id for d in got[15:]] == [d.doc_id for d in first["q1"][15:20]]
    assert max(d.score for d in got[15:]) < min(d.score for d in got[:15])


def test_cross_reranking(index, tiny_cross, tiny_bert):
    from rerank.pipeline import Pipeline

    with Pipeline(index, first_stage="bm25", reranker="auto", model=tiny_cross, depth=10) as p:
        assert p.reranker.kind == "cross"
        got = p.search(QUERY, lang="en", k=10)
        first = p.bm25.search(QUERY, k=10)
    assert sorted(d.doc_id for d in got) == sorted(d.doc_id for d in first)
    assert [d.score for d in got] == sorted((d.score for d in got), reverse=True)


def test_a_batch_of_queries_is_reranked_as_each_alone(index, tiny_cross, udhr_dir):
    """Pipeline.run scores a module group's pairs in one call (Reranker.rerank_many): each query's order and
    scores are what searching it alone gives."""
    from rerank.collections.topics import read_tsv_topics
    from rerank.pipeline import Pipeline

    queries = read_tsv_topics(udhr_dir / "topics.en.tsv", "en")[:6]
    with Pipeline(index, first_stage="bm25", reranker="cross", model=tiny_cross, depth=10) as p:
        together, _ = p.run(queries, k=10)
        for q in queries:
            alone = p.search(q.text, "en", k=10)
            assert [d.doc_id for d in together[q.query_id]] == [d.doc_id for d in alone]
            assert [d.score for d in together[q.query_id]] == pytest.approx([d.score for d in alone], abs=1e-4)


def test_pipelines_share_loaded_models_where_they_are_the_same(index, tiny_cross, tiny_bert, tmp_path):
    """share=: a second index in the process uses the first's reranker and dense query encoder, and searches as it
    would alone; a different precision gets a reranker of its own."""
    import shutil

    from rerank.pipeline import Pipeline

    other = shutil.copytree(index, tmp_path / "copy")
    kw = dict(reranker="cross", model=tiny_cross, dense_model=tiny_bert, modules=None, depth=10, precision="fp32")
    with Pipeline(index, **kw) as a, Pipeline(other, share=a, **kw) as b, Pipeline(other, **kw) as alone:
        assert b.reranker is a.reranker and b.dense.encoder is a.dense.encoder
        got, want = b.search(QUERY, "en", k=10), alone.search(QUERY, "en", k=10)
        assert [d.doc_id for d in got] == [d.doc_id for d in want]
        assert [d.score for d in got] == pytest.approx([d.score for d in want], abs=1e-5)
        with Pipeline(other, share=a, **(kw | {"precision": "bf16"})) as c:
            assert c.reranker is not a.reranker


def test_bad_pipeline_settings(index, en_index, tiny_bert):
    from rerank.pipeline import Pipeline

    with pytest.raises(RerankError, match="unknown first stage 'sparse'"):
        Pipeline(index, first_stage="sparse")
    with pytest.raises(RerankError, match="unknown reranker 'colbert'"):
        Pipeline(index, reranker="colbert")
    with pytest.raises(RerankError, match="has no dense index"):
        Pipeline(en_index, first_stage="hybrid", reranker="none")
    with pytest.raises(RerankError, match="fusion weights apply only"):
        Pipeline(index, first_stage="bm25", fusion_weights=(1, 1), reranker="none")
    with Pipeline(index, reranker="none", dense_model=tiny_bert) as p, pytest.raises(RerankError, match="empty"):
        p.search("  ")


def test_a_hybrid_first_stage_composes_any_two_stages(index, tiny_bert):
    """The first stages share one protocol: Hybrid fuses whatever two stages it is given (here BM25 with itself
    at unequal weights keeps BM25's order; BM25 with dense is the pipeline's hybrid)."""
    from rerank.indexes.stages import STAGES, BM25Stage, DenseStage, Hybrid
    from rerank.pipeline import Pipeline

    q = Query("q1", QUERY, "en")
    with Pipeline(index, first_stage="hybrid", reranker="none", model=tiny_bert, dense_model=tiny_bert) as p:
        bm25, dense = BM25Stage(p.bm25), DenseStage(p.dense)
        twice = Hybrid(bm25, bm25, (2.0, 1.0)).search(q, 20)
        assert [d.doc_id for d in twice] == [d.doc_id for d in bm25.search(q, 20)]
        assert Hybrid(bm25, dense).search(q, 20) == p.first_stage_run([q], 20)["q1"]
    assert set(STAGES) == {"bm25", "dense", "hybrid"} and STAGES["dense"].needs_dense


def test_settings_are_one_record_and_auto_is_resolved_once_into_a_plan(index, tiny_bert, capsys):
    """The CLI, the grid and the API build the same SearchSettings; the pipeline resolves every auto into a
    printable plan (rerank search --explain prints it and searches nothing)."""
    from rerank.cli.main import main
    from rerank.pipeline import Pipeline, SearchSettings

    s = SearchSettings.from_record(
        {
            "name": "x",
            "first_stage": "hybrid",
            "fusion_weights": [0.25, 1],
            "module_density": "0.5%",
            "depth": "15",
            "reranker": "bi",
        }
    )
    assert (s.fusion_weights, s.module_density, s.depth, s.modules) == ((0.25, 1.0), 0.005, 15, None)
    with pytest.raises(RerankError, match="fusion weights apply only"):
        SearchSettings(first_stage="bm25", fusion_weights=(1, 1))
    with Pipeline(index, s, model=tiny_bert, dense_model=tiny_bert) as p:
        plan = p.explain("kir")  # canonicalised once: ky
        assert (plan.lang, plan.first_stage.kind, plan.reranker, plan.depth) == ("ky", "hybrid", "bi", 15)
        assert str(plan) == "ky queries: hybrid (RRF, weights bm25 0.25 : dense 1), top 15 reranked by the bi-encoder"
    with pytest.raises(SystemExit) as e:
        main(["search", "--index", str(index), "--lang", "ky", "--reranker", "none", "--explain", "a query"])
    cap = capsys.readouterr()
    assert e.value.code == 0 and cap.out.strip() == "ky queries: dense, not reranked" and "docid" not in cap.out
