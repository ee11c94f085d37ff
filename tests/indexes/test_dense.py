"""The dense index on a tiny random backbone (the real backbone is exercised in the slow tests)."""

import shutil

import numpy as np
import pytest

from rerank.errors import RerankError
from rerank.types import Query

pytestmark = pytest.mark.java  # the dense index lives in a BM25 index folder


def test_build_and_search(tiny_dense_index, tiny_bert):
    from rerank.indexes.dense import DenseIndex, read_dense_meta
    from rerank.indexes.docstore import DocStore
    from rerank.scoring.encoder import Encoder

    meta = read_dense_meta(tiny_dense_index)
    store = DocStore(tiny_dense_index / "docs.sqlite")
    assert meta.documents == len(store) and meta.dim == 32 and meta.kind == "flat"
    enc = Encoder(tiny_bert)
    dense = DenseIndex(tiny_dense_index, enc)
    assert meta.fingerprint == enc.fingerprint
    hits = dense.search("Everyone has the right to education.", k=5, query_id="q")
    assert len(hits) == 5 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # flat = exact: the scores are the cosines of the encoder's own vectors
    docs = store.get_many([h.doc_id for h in hits])
    dv = enc.encode([docs[h.doc_id].contents for h in hits], "passage")
    qv = enc.encode(["Everyone has the right to education."], "query")[0]
    np.testing.assert_allclose([h.score for h in hits], dv @ qv, atol=1e-5)
    np.testing.assert_allclose(dense.vectors([h.doc_id for h in hits]), dv, atol=1e-5)
    with pytest.raises(RerankError, match="not in the dense index"):
        dense.vectors(["nope"])


def test_batch_search_keeps_query_ids(tiny_dense_index, tiny_bert):
    from rerank.indexes.dense import DenseIndex

    dense = DenseIndex(tiny_dense_index, model=tiny_bert)
    run = dense.batch_search([Query("a", "freedom of movement"), Query("b", "marriage")], k=3)
    assert list(run) == ["a", "b"] and all(sd.query_id == "b" for sd in run["b"])


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_kinds_find_the_exact_top_hit(tiny_dense_index, tiny_bert, tmp_path, kind):
    from rerank.indexes.dense import DenseIndex, build_dense
    from rerank.scoring.encoder import Encoder

    folder = tmp_path / "idx"
    shutil.copytree(tiny_dense_index, folder)
    enc = Encoder(tiny_bert)
    exact = DenseIndex(folder, enc).search("torture", k=1)
    meta = build_dense(folder, enc, kind=kind, progress=False, overwrite=True)
    assert meta.kind == kind and meta.params
    approx = DenseIndex(folder, enc).search("torture", k=1)
    assert approx[0].doc_id == exact[0].doc_id  # 60 documents: the approximate search is exhaustive here


def test_refuses_another_backbone(tiny_dense_index, e5_dir, tmp_path):
    from rerank.indexes.dense import DenseIndex
    from tests.conftest import make_tiny_bert

    other = make_tiny_bert(tmp_path / "other", e5_dir, seed=1)
    with pytest.raises(RerankError, match="was built with backbone .* not with"):
        DenseIndex(tiny_dense_index, model=other)


def test_missing_dense_index_and_existing_one(en_index, tiny_dense_index, tiny_bert):
    from rerank.indexes.dense import DenseIndex, build_dense

    with pytest.raises(RerankError, match="has no dense index"):
        DenseIndex(en_index, model=tiny_bert)
    with pytest.raises(RerankError, match="exists"):
        build_dense(tiny_dense_index, model=tiny_bert, overwrite=False, progress=False)
    with pytest.raises(RerankError, match="unknown dense index kind"):
        build_dense(tiny_dense_index, model=tiny_bert, kind="lsh", progress=False)
