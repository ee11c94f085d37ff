"""The residual ranking head: a task module that carries it makes the cross-encoder start from the bi-encoder's
order (exactly, before training), move from there with its correction, and go back to inert when reverted."""

import numpy as np
import pytest
import torch

from rerank.errors import RerankError
from tests.modules.test_compose import random_module

DOCS = [
    "Everyone has the right to education.",
    "No one shall be held in slavery or servitude.",
    "Everyone has the right to freedom of movement.",
    "Men and women have the right to marry.",
]
QUERY = "the right to an education"


def _residual_module(cm, seed: int, correction: float):
    m = random_module(cm, seed, role="task", lang="en", density=0.1)
    g = torch.Generator().manual_seed(seed)
    hidden = cm.model.config.hidden_size
    m.extras = {
        "residual_head.proj.weight": torch.randn(1, hidden, generator=g) * correction,
        "residual_head.proj.bias": torch.zeros(1),
        "residual_head.prior_scale": torch.ones(1),
    }
    return m


@pytest.fixture(scope="module")
def modules(tiny_bert, tmp_path_factory):
    from rerank import Reranker
    from rerank.modules.format import save_module

    rr = Reranker(tiny_bert, "cross", head_from_module=True)
    out = tmp_path_factory.mktemp("res")
    return {
        "zero": save_module(_residual_module(rr.composer, 1, 0.0), out / "zero"),
        "moved": save_module(_residual_module(rr.composer, 2, 5.0), out / "moved"),
    }


def test_an_untrained_residual_head_is_the_bi_encoder(tiny_bert, modules):
    from rerank import Reranker
    from rerank.scoring.residual import TEMPERATURE

    bi = Reranker(tiny_bert, "bi")
    cos = bi.predict([(QUERY, d) for d in DOCS])
    rr = Reranker(tiny_bert, "cross", modules=[modules["zero"]])
    assert rr.kind == "cross" and rr.scorer.residual_active()
    got = rr.predict([(QUERY, d) for d in DOCS])  # the prior computed by the reranker itself
    np.testing.assert_allclose(got, cos / TEMPERATURE, rtol=1e-5, atol=1e-3)
    given = rr.predict([(QUERY, d) for d in DOCS], prior=[float(x) for x in cos])
    np.testing.assert_allclose(given, got, rtol=1e-6, atol=1e-4)
    assert [r["corpus_id"] for r in rr.rank(QUERY, DOCS)] == [r["corpus_id"] for r in bi.rank(QUERY, DOCS)]


def test_a_trained_correction_moves_scores_and_reverting_makes_the_head_inert(tiny_bert, modules):
    from rerank import Reranker

    rr = Reranker(tiny_bert, "cross", modules=[modules["moved"]])
    prior = [0.5, 0.5, 0.5, 0.5]
    moved = rr.predict([(QUERY, d) for d in DOCS], prior=prior)
    assert np.ptp(moved) > 1e-3  # equal priors: only the correction separates the documents
    rr.use_modules([modules["zero"]])
    np.testing.assert_allclose(rr.predict([(QUERY, d) for d in DOCS], prior=prior), [50.0] * 4, atol=1e-3)
    rr.use_modules([])
    assert not rr.scorer.residual_active()
    with pytest.raises(RerankError, match="no task module is stacked"):
        rr.predict([(QUERY, DOCS[0])])
    with pytest.raises(RerankError, match="prior scores for"):
        Reranker(tiny_bert, "cross", modules=[modules["zero"]]).predict([(QUERY, DOCS[0])], prior=[0.1, 0.2])


@pytest.mark.java
def test_search_takes_the_prior_from_the_dense_index(tiny_dense_index, tiny_bert, modules):
    """Over an index with the reranker's backbone's vectors the cosines come from the stored vectors; with the
    zero correction the reranked order is the dense first stage's."""
    from rerank.pipeline import Pipeline
    from rerank.types import Query

    q = "Everyone has the right to education"
    with Pipeline(tiny_dense_index, first_stage="dense", reranker="none", dense_model=tiny_bert) as p:
        dense = p.search(q, lang="en", k=20)
    with Pipeline(
        tiny_dense_index,
        first_stage="dense",
        reranker="cross",
        model=tiny_bert,
        dense_model=tiny_bert,
        modules=[modules["zero"]],
        depth=20,
        first_stage_weight=0,
    ) as p:
        p.composer.switch([modules["zero"]])
        prior = p._prior(Query("q1", q, "en"), dense)
        assert prior is not None
        np.testing.assert_allclose(prior, [d.score for d in dense], atol=1e-5)  # the first stage's own cosines
        reranked = p.search(q, lang="en", k=20)
    assert [d.doc_id for d in reranked] == [d.doc_id for d in dense]
