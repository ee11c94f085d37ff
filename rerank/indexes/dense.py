"""A dense first stage: document embeddings from a backbone in a faiss index, stored beside the BM25
index of the same folder (it reads its documents from that folder's ``docs.sqlite``)::

    <index>/dense/
        dense.json       backbone name + fingerprint, faiss kind and parameters, counts, created-by
        vectors.faiss    the faiss index (inner product over unit vectors = cosine)
        docids.txt       faiss row i → document id, one per line

kinds: ``flat`` (exact; the default), ``hnsw`` (graph, approximate, for large collections) and ``ivf``
(inverted lists over k-means cells, approximate; ``nprobe`` cells are searched). An index is bound to
its backbone: searching it with another one (different fingerprint) is refused.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
from annotated_types import Ge

from rerank import __version__
from rerank.errors import RerankError
from rerank.files import atomic_dir, read_record
from rerank.types import Query, ScoredDoc

DENSE_DIR = "dense"
META_FILE = "dense.json"
FORMAT = "rerank-dense/1"
KINDS = ("flat", "hnsw", "ivf")
_CHUNK = 8192  # documents encoded and added per step (bounded memory for large collections)


@dataclass(frozen=True)
class DenseMeta:
    """What ``dense/dense.json`` records (validated on load: strict types, no unknown fields)."""

    __pydantic_config__ = {"strict": True, "allow_inf_nan": False, "extra": "forbid"}

    backbone: str
    fingerprint: str
    dim: Annotated[int, Ge(1)]
    documents: Annotated[int, Ge(1)]
    kind: str = "flat"
    params: dict = field(default_factory=dict)  # hnsw: m, ef_search; ivf: nlist, nprobe
    max_length: Annotated[int, Ge(1)] = 512
    prefix: str = ""
    created_by: str = ""
    created: str = ""
    format: str = FORMAT


def dense_path(index_dir: str | os.PathLike) -> Path:
    return Path(index_dir) / DENSE_DIR


def read_dense_meta(index_dir: str | os.PathLike) -> DenseMeta:
    p = dense_path(index_dir) / META_FILE
    if not p.is_file():
        raise RerankError(
            f"{index_dir} has no dense index",
            hint=f"add one with: rerank index --dense-only --out {index_dir}  (or use --first-stage bm25)",
        )
    rebuild = f"rebuild it: rerank index --dense-only --overwrite --out {index_dir}"
    meta = read_record(p, DenseMeta, rebuild)
    if meta.format != FORMAT:
        raise RerankError(f"{p}: dense index format {meta.format[:40]!r}; this version reads {FORMAT!r}", hint=rebuild)
    if meta.kind not in KINDS:
        raise RerankError(f"{p}: unknown dense index kind {meta.kind[:40]!r}", hint=rebuild)
    return meta


def _faiss(threads: int | None = None):
    import faiss

    from rerank.backbone.runtime import cpu_threads

    faiss.omp_set_num_threads(threads or cpu_threads())
    return faiss


def _new_index(faiss, kind: str, dim: int, n: int, params: dict):
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params.setdefault("m", 32), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.setdefault("ef_construction", 80)
        params.setdefault("ef_search", 128)
        return index
    # ivf: about 4·sqrt(n) cells (faiss' guidance), each needing ~39 training points
    nlist = params.setdefault("nlist", max(1, min(int(4 * math.sqrt(n)), n // 39 or 1)))
    params.setdefault("nprobe", max(1, min(nlist, 16)))
    return faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)


def build_dense(
    index_dir: str | os.PathLike,
    encoder=None,
    *,
    model=None,
    kind: str = "flat",
    params: dict | None = None,
    progress: bool = True,
    overwrite: bool = True,
) -> DenseMeta:
    """Encode every document of the index folder (``"passage: "``-prefixed for e5) into ``<index>/dense``.
    ``encoder`` (a :class:`rerank.scoring.Encoder`) or ``model`` (a backbone path; ``None`` = default)."""
    from tqdm.auto import tqdm

    from rerank.indexes.bm25 import read_meta
    from rerank.indexes.docstore import DocStore

    if kind not in KINDS:
        raise RerankError(f"unknown dense index kind {kind!r}", hint=f"use one of: {', '.join(KINDS)}")
    read_meta(index_dir)  # the folder must be an index (documents + recipe) first
    if encoder is None:
        from rerank.scoring.encoder import Encoder

        encoder = Encoder(model)
    faiss = _faiss()
    store = DocStore(Path(index_dir) / "docs.sqlite")
    params = dict(params or {})
    try:
        n = len(store)
        if n == 0:
            raise RerankError(f"{index_dir} has no documents to encode", hint="index some documents first")
        index = _new_index(faiss, kind, encoder.dim, n, params)
        with (
            atomic_dir(dense_path(index_dir), overwrite, marker=META_FILE) as tmp,
            open(tmp / "docids.txt", "w", encoding="utf-8") as ids_file,
            tqdm(total=n, desc="dense encoding", unit="doc", disable=not progress, file=None) as bar,
        ):
            pending = []  # ivf trains on all vectors before adding any
            for chunk in _chunks(store):
                vecs = encoder.encode([d.contents for d in chunk], "passage")
                ids_file.writelines(d.doc_id + "\n" for d in chunk)
                if kind == "ivf":
                    pending.append(vecs)
                else:
                    index.add(vecs)
                bar.update(len(chunk))
            if kind == "ivf":
                allv = np.concatenate(pending)
                index.train(allv)
                index.add(allv)
            ids_file.flush()
            faiss.write_index(index, str(tmp / "vectors.faiss"))
            meta = DenseMeta(
                backbone=encoder.info.name,
                fingerprint=encoder.fingerprint,
                dim=encoder.dim,
                documents=n,
                kind=kind,
                params=params,
                max_length=encoder.max_length,
                prefix=encoder.prefix("passage"),
                created_by=f"rerank {__version__}",
                created=_dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
            )
            (tmp / META_FILE).write_text(
                json.dumps(asdict(meta), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
    finally:
        store.close()
    return meta


def _chunks(store) -> Iterator[list]:
    chunk = []
    for d in store:
        chunk.append(d)
        if len(chunk) == _CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class DenseIndex:
    """Search ``<index>/dense`` with query embeddings from the same backbone.

    >>> dense = DenseIndex("indexes/udhr-en")          # loads the default backbone, checks the fingerprint
    >>> dense.search("кыргыз тилинде", k=10)
    """

    def __init__(self, index_dir: str | os.PathLike, encoder=None, *, model=None):
        self.path = Path(index_dir)
        self.meta = read_dense_meta(index_dir)
        if encoder is None:
            from rerank.scoring.encoder import Encoder

            encoder = Encoder(model)
        if encoder.fingerprint != self.meta.fingerprint:
            raise RerankError(
                f"the dense index in {index_dir} was built with backbone {self.meta.backbone} "
                f"({self.meta.fingerprint[:19]}), not with {encoder.info.name} ({encoder.fingerprint[:19]})",
                hint="search with the backbone it was built with (--model), or rebuild it: "
                f"rerank index --dense-only --overwrite --out {index_dir} --model …",
            )
        self.encoder = encoder
        faiss = _faiss()
        d = dense_path(index_dir)
        try:
            self.index = faiss.read_index(str(d / "vectors.faiss"))
        except RuntimeError as e:
            raise RerankError(
                f"{d / 'vectors.faiss'} cannot be read by faiss",
                hint=f"rebuild it: rerank index --dense-only --overwrite --out {index_dir}",
            ) from e
        try:
            self.doc_ids = (d / "docids.txt").read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise RerankError(
                f"{d / 'docids.txt'} cannot be read ({e})",
                hint=f"rebuild it: rerank index --dense-only --overwrite --out {index_dir}",
            ) from None
        if len(self.doc_ids) != self.index.ntotal or self.index.ntotal != self.meta.documents:
            raise RerankError(
                f"{d} is inconsistent ({len(self.doc_ids)} ids, {self.index.ntotal} vectors)",
                hint=f"rebuild it: rerank index --dense-only --overwrite --out {index_dir}",
            )
        if self.meta.kind == "hnsw":
            self.index.hnsw.efSearch = int(self.meta.params.get("ef_search", 128))
        elif self.meta.kind == "ivf":
            self.index.nprobe = int(self.meta.params.get("nprobe", 16))
        self._row = None

    def __len__(self) -> int:
        return self.index.ntotal

    def search(self, query: str, k: int = 10, query_id: str = "") -> list[ScoredDoc]:
        return self.batch_search([Query(query_id, query)], k=k)[query_id]

    def search_vectors(self, vecs: np.ndarray, query_ids: Sequence[str], k: int) -> dict[str, list[ScoredDoc]]:
        k = min(k, self.index.ntotal)
        scores, rows = self.index.search(np.ascontiguousarray(vecs, dtype=np.float32), k)
        out: dict[str, list[ScoredDoc]] = {}
        for qid, srow, rrow in zip(query_ids, scores, rows, strict=True):
            out[qid] = [ScoredDoc(qid, self.doc_ids[r], float(s)) for s, r in zip(srow, rrow, strict=True) if r >= 0]
        return out

    def batch_search(self, queries: Sequence[Query], k: int = 100) -> dict[str, list[ScoredDoc]]:
        vecs = self.encoder.encode([q.text for q in queries], "query")
        return self.search_vectors(vecs, [q.query_id for q in queries], k)

    def vectors(self, doc_ids: Sequence[str]) -> np.ndarray:
        """The stored embeddings of these documents (for scoring candidates without re-encoding)."""
        if self._row is None:
            self._row = {d: i for i, d in enumerate(self.doc_ids)}
            if self.meta.kind == "ivf":
                self.index.make_direct_map()
        missing = [d for d in doc_ids if d not in self._row]
        if missing:
            raise RerankError(
                f"document {missing[0]} is not in the dense index {self.path}",
                hint="rebuild the dense index after changing the documents",
            )
        return (
            np.stack([self.index.reconstruct(self._row[d]) for d in doc_ids])
            if doc_ids
            else np.zeros((0, self.meta.dim), dtype=np.float32)
        )
