"""Scorers on a tiny random BERT with the real tokenizer: order, batching invariance, truncation."""

import json

import numpy as np
import pytest
import torch

from rerank.errors import RerankError

QUERIES = ["адам укуктары", "right to education", "Bildung"]


@pytest.fixture(scope="module")
def docs(udhr_dir):
    rows = [
        json.loads(line)
        for name in ("docs.en.jsonl", "docs.ky.jsonl")
        for line in (udhr_dir / name).read_text(encoding="utf-8").splitlines()[:12]
    ]
    return [r.get("contents") or r["text"] for r in rows]


def test_encoder_is_order_and_batch_invariant(tiny_bert, docs):
    from rerank.scoring.encoder import Encoder

    enc = Encoder(tiny_bert, max_tokens=64)  # tiny budget: many batches of different widths
    together = enc.encode(docs, "passage")
    assert together.shape == (len(docs), 32) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    alone = np.concatenate([enc.encode([d], "passage") for d in docs])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert enc.prefix("passage") == "" and enc.prefix("query") == ""  # not an e5 folder: no prefixes


def test_encoder_mean_pooling_matches_a_plain_forward(tiny_bert, docs):
    from transformers import AutoModel, AutoTokenizer

    from rerank.scoring.encoder import Encoder

    enc = Encoder(tiny_bert)
    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    model = AutoModel.from_pretrained(str(tiny_bert), add_pooling_layer=False).eval()
    with torch.no_grad():
        b = tok(docs[0], return_tensors="pt", truncation=True, max_length=512)
        want = torch.nn.functional.normalize(model(**b).last_hidden_state.mean(1), dim=-1)[0].numpy()
    np.testing.assert_allclose(enc.encode([docs[0]])[0], want, atol=1e-5)


def test_bi_encoder_scores_are_cosines_in_input_order(tiny_bert, docs):
    from rerank.scoring.encoder import BiEncoder

    bi = BiEncoder(tiny_bert)
    pairs = [(q, d) for q in QUERIES for d in docs[:5]]
    scores = bi.predict(pairs)
    qv = bi.encoder.encode(QUERIES, "query")
    dv = bi.encoder.encode(docs[:5], "passage")
    np.testing.assert_allclose(scores, (qv @ dv.T).ravel(), atol=1e-5)


def test_cross_encoder_batches_give_the_scores_of_single_pairs(tiny_cross, docs):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rerank.scoring.cross import CrossEncoder

    ce = CrossEncoder(tiny_cross, max_tokens=128, precision="fp32")  # compared with transformers' fp32 forward
    pairs = [(q, d) for q in QUERIES for d in docs[:6]]
    scores = ce.predict(pairs)
    tok = AutoTokenizer.from_pretrained(str(tiny_cross))
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_cross)).eval()
    with torch.no_grad():
        want = [
            model(**tok(q, d, return_tensors="pt", truncation="only_second", max_length=256)).logits[0, 0].item()
            for q, d in pairs
        ]
    np.testing.assert_allclose(scores, want, atol=1e-5)


def test_cross_encoder_keeps_the_query_whole_and_cuts_the_document(tiny_cross, docs):
    from rerank.scoring.cross import CrossEncoder

    ce = CrossEncoder(tiny_cross, max_length=64)
    long_doc = " ".join(docs)
    ids, _, cut = ce.encode_pairs([("право на образование", long_doc)])
    assert cut == 0 and len(ids[0]) == 64
    q_ids = ce.tokenizer("право на образование", add_special_tokens=False)["input_ids"]
    assert ids[0][1 : 1 + len(q_ids)] == q_ids


def test_a_query_longer_than_the_limit_is_cut_with_a_warning(tiny_cross, docs, capsys):
    from rerank.scoring.cross import CrossEncoder

    ce = CrossEncoder(tiny_cross, max_length=64)
    scores = ce.predict([(" ".join(docs[:3]), docs[4])])
    assert np.isfinite(scores).all()
    assert "1 queries are longer than the cross-encoder's 64 tokens" in capsys.readouterr().err


def test_reranker_rank_shape_order_and_top_k(tiny_cross, docs):
    from rerank.scoring.reranker import Reranker

    rr = Reranker(tiny_cross)
    assert rr.kind == "cross"  # auto: the folder has a ranking head
    ranked = rr.rank(QUERIES[0], docs[:6], top_k=4)
    assert len(ranked) == 4 and set(ranked[0]) == {"corpus_id", "score", "text"}
    scores = rr.predict([(QUERIES[0], d) for d in docs[:6]])
    assert [r["corpus_id"] for r in ranked] == list(np.argsort(-scores, kind="stable")[:4])
    assert all(r["text"] == docs[r["corpus_id"]] for r in ranked)
    assert "text" not in rr.rank(QUERIES[0], docs[:2], return_documents=False)[0]


def test_reranker_puts_empty_documents_last_with_a_warning(tiny_bert, docs, capsys):
    from rerank.scoring.reranker import Reranker

    rr = Reranker(tiny_bert)
    assert rr.kind == "bi"  # no head: the bi-encoder
    ranked = rr.rank(QUERIES[1], [docs[0], "   ", docs[1]])
    assert ranked[-1]["corpus_id"] == 1 and ranked[-1]["score"] == float("-inf")
    assert "1 of 3 documents have no text" in capsys.readouterr().err


def test_reranker_bad_input(tiny_bert):
    from rerank.scoring.reranker import Reranker

    with pytest.raises(RerankError, match="unknown reranker 'crosss'"):
        Reranker(tiny_bert, "crosss")
    with pytest.raises(RerankError, match="no ranking head"):
        Reranker(tiny_bert, "cross")
    rr = Reranker(tiny_bert)
    with pytest.raises(RerankError, match="empty query"):
        rr.rank("  ", ["a"])
    with pytest.raises(RerankError, match="must be strings"):
        rr.rank("q", ["a", None])


def test_cross_encoder_folder_has_its_backbones_fingerprint(tiny_bert, tiny_cross):
    from rerank.backbone import fingerprint

    assert fingerprint(tiny_cross) == fingerprint(tiny_bert)
