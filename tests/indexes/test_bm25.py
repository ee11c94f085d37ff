import json
import shutil

import pytest

from rerank.collections.docs import read_docs
from rerank.collections.topics import read_topics
from rerank.errors import RerankError
from rerank.indexes.bm25 import META_FILE, BM25Index, build_index, read_meta
from rerank.indexes.tokenize import TOKENIZER_NAME
from rerank.types import Document, Query

pytestmark = pytest.mark.java


def test_index_records_its_recipe(en_index, ky_index, udhr_dir):
    meta = read_meta(en_index)
    assert (meta.language, meta.analyzer, meta.documents, meta.k1, meta.b) == ("en", "lucene-en", 60, 0.9, 0.4)
    assert meta.source["path"].endswith("docs.en.jsonl") and len(meta.source["sha256"]) == 64
    assert meta.anserini == "1.7.1" and meta.created_by.startswith("rerank ")
    ky = read_meta(ky_index)
    assert (ky.language, ky.analyzer, ky.pretokenized) == ("ky", TOKENIZER_NAME, True)


def test_english_search_finds_the_article(en_index):
    idx = BM25Index(en_index)
    hits = idx.search("freedom of thought, conscience and religion", k=5)
    assert hits[0].doc_id == "udhr-a18-p1"
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))
    assert idx.doc("udhr-a18-p1").title == "Article 18"
    assert len(idx) == 60


def test_kyrgyz_is_pretokenized_not_stemmed_as_english(ky_index, udhr_dir):
    idx = BM25Index(ky_index)
    topics = read_topics(udhr_dir / "topics.ky.tsv", lang="ky")
    run = idx.batch_search(topics, k=10, progress=False)
    top1 = sum(run[q.query_id][0].doc_id == f"udhr-{q.query_id}-p1" for q in topics)
    assert top1 >= 29  # monolingual: the topic sentence is the opening of its own document
    # case and punctuation are normalised the same way on both sides
    assert idx.search("АР БИР АДАМ ЖАШООГО!!!", k=1)[0].doc_id == "udhr-a03-p1"
    # batch and single search agree
    q = topics[5]
    assert run[q.query_id] == idx.search(q.text, k=10, query_id=q.query_id)


def test_cross_lingual_bm25_finds_little(en_index, udhr_dir):
    """Kyrgyz queries share no words with English documents: the first stage that needs a reranker."""
    idx = BM25Index(en_index)
    run = idx.batch_search(read_topics(udhr_dir / "topics.ky.tsv", lang="ky"), k=100, progress=False)
    assert sum(len(v) for v in run.values()) <= 31


@pytest.mark.slow
def test_same_scores_as_pyserini_lucene_searcher(en_index, udhr_dir):
    from pyserini.search.lucene import LuceneSearcher  # noqa: I001  (after our JVM start)

    ref = LuceneSearcher(str(en_index / "lucene"))
    ref.set_language("en")
    ours = BM25Index(en_index)
    for q in read_topics(udhr_dir / "topics.en.tsv", lang="en")[:10]:
        theirs = [(h.docid, round(h.score, 4)) for h in ref.search(q.text, k=20)]
        assert [(h.doc_id, round(h.score, 4)) for h in ours.search(q.text, k=20)] == theirs


def test_interrupted_build_leaves_nothing(tmp_path):
    def docs():
        yield Document("a", "one document")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        build_index(docs(), tmp_path / "idx", "en", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_existing_index_is_kept_unless_overwrite(tmp_path, udhr_dir):
    out = tmp_path / "idx"
    build_index([Document("a", "alpha beta")], out, "en", progress=False)
    with pytest.raises(RerankError, match="already exists"):
        build_index([Document("b", "gamma")], out, "en", progress=False)
    build_index(read_docs(udhr_dir / "docs.de.jsonl"), out, "de", overwrite=True, progress=False)
    assert read_meta(out).documents == 59 and sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_bad_indexes_and_queries(en_index, tmp_path):
    with pytest.raises(RerankError, match="index not found"):
        BM25Index(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(RerankError, match="is not a rerank index"):
        BM25Index(tmp_path / "plain")
    with pytest.raises(RerankError, match="built with analyzer 'lucene-en', not 'lucene-de'"):
        BM25Index(en_index, analyzer="lucene-de")
    idx = BM25Index(en_index)
    with pytest.raises(RerankError, match="empty query"):
        idx.search("   ")
    with pytest.raises(RerankError, match="empty query"):
        idx.batch_search([Query("1", "")], progress=False)
    with pytest.raises(RerankError, match="k must be at least 1"):
        idx.search("rights", k=0)


def test_index_from_another_tokenizer_version_is_refused(ky_index, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(ky_index, copy)
    meta = json.loads((copy / META_FILE).read_text())
    meta["analyzer"] = "unicode-words-v0"
    (copy / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(RerankError, match="rebuild the index"):
        BM25Index(copy)


def _pyserini_jsonl(path, docs):
    path.write_text("".join(json.dumps({"id": d.doc_id, "contents": d.contents}) + "\n" for d in docs))
    return path


def test_lucene_reading_the_file_gives_the_same_index(tmp_path, udhr_dir):
    """index_file lets Lucene read a Pyserini-shaped file itself; the result equals feeding it from Python."""
    from rerank.indexes.bm25 import index_file

    docs = list(read_docs(udhr_dir / "docs.en.jsonl"))
    src = _pyserini_jsonl(tmp_path / "docs.jsonl", docs)
    index_file(src, tmp_path / "java", "en", progress=False)
    build_index(read_docs(src), tmp_path / "python", "en", progress=False)
    assert sorted(p.name for p in (tmp_path / "java").iterdir()) == ["docs.sqlite", "lucene", META_FILE]
    a, b = BM25Index(tmp_path / "java"), BM25Index(tmp_path / "python")
    assert read_meta(tmp_path / "java").documents == read_meta(tmp_path / "python").documents == 60
    for q in read_topics(udhr_dir / "topics.en.tsv", lang="en"):
        assert a.search(q.text, k=20) == b.search(q.text, k=20)
    assert a.doc("udhr-a18-p1") == b.doc("udhr-a18-p1")


def test_lucene_disagreeing_falls_back_to_python(tmp_path):
    from rerank.indexes.bm25 import index_file

    src = tmp_path / "docs.jsonl"
    src.write_text('{"id": "a", "contents": "alpha"}\n{"doc_id": "b", "contents": "beta"}\n')  # we accept doc_id
    meta = index_file(src, tmp_path / "idx", "en", progress=False)
    assert meta.documents == 2 and BM25Index(tmp_path / "idx").search("beta")[0].doc_id == "b"


def test_malformed_line_while_lucene_reads_leaves_nothing(tmp_path):
    from rerank.indexes.bm25 import index_file

    src = tmp_path / "docs.jsonl"
    src.write_text('{"id": "a", "contents": "alpha"}\n{"id": "b", "contents": "beta"\n')
    with pytest.raises(RerankError, match=r"docs.jsonl:2: not valid JSON"):
        index_file(src, tmp_path / "idx", "en", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl"]


def test_damaged_lucene_folder_is_one_error(en_index, tmp_path):
    copy = tmp_path / "damaged"
    shutil.copytree(en_index, copy)
    for f in (copy / "lucene").iterdir():
        f.unlink()
    with pytest.raises(RerankError, match="cannot open the Lucene index"):
        BM25Index(copy)
