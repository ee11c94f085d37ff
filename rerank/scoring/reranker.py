"""``Reranker``: one front for the bi-encoder and the cross-encoder, shaped like sentence-transformers'
``CrossEncoder.predict`` / ``.rank``.

>>> from rerank import Reranker
>>> Reranker().rank("query", ["doc a", "doc b"], top_k=10)
[{'corpus_id': 1, 'score': 0.83, 'text': 'doc b'}, {'corpus_id': 0, 'score': 0.79, 'text': 'doc a'}]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from rerank.errors import RerankError, warn
from rerank.scoring.encoder import resolve
from rerank.types import ScoredDoc

KINDS = ("auto", "bi", "cross")


class Reranker:
    """Scores query–document pairs with a cross-encoder (a backbone folder with a ranking head) or,
    for a plain backbone, with the bi-encoder (cosine of embeddings). ``kind="auto"`` picks the
    cross-encoder when the folder has a head — or when a task module brings one (``modules``, or
    ``head_from_module=True`` when modules are stacked later). ``model=None`` is the embedded
    multilingual-e5-small. ``precision`` (cross-encoder only): ``auto``, ``fp32`` or ``bf16``
    (:mod:`rerank.scoring.precision`)."""

    def __init__(
        self,
        model=None,
        kind: str = "auto",
        *,
        device: str | None = None,
        max_length: int | None = None,
        modules: Sequence | None = None,
        module_density: float | None = None,
        module_rank: int | None = None,
        head_from_module: bool | None = None,
        precision: str = "auto",
    ):
        from rerank.modules.format import has_head

        if kind not in KINDS:
            raise RerankError(f"unknown reranker {kind!r}", hint="use bi, cross or auto")
        from rerank.scoring.precision import check_precision

        check_precision(precision)
        info = resolve(model)
        if head_from_module is None:
            head_from_module = any(has_head(m) for m in modules or ())
        if kind == "auto":
            kind = "cross" if info.has_head or head_from_module else "bi"
        if kind == "cross":
            from rerank.scoring.cross import DEFAULT_MAX_LENGTH, CrossEncoder

            self.scorer = CrossEncoder(
                info,
                device=device,
                max_length=max_length or DEFAULT_MAX_LENGTH,
                head_from_module=head_from_module,
                precision=precision,
            )
            if self.scorer.head_from_module:
                self.scorer.head_ready = lambda: (
                    self._composer is not None and any(has_head(m) for m in self._composer.active)
                )
            from rerank.scoring import residual

            self.scorer.residual_active = lambda: (
                self._composer is not None and any(residual.carries(m) for m in self._composer.active)
            )
            self.scorer.prior_for = self._prior
        else:
            from rerank.scoring.encoder import BiEncoder

            self.scorer = BiEncoder(info, device=device, max_length=max_length)
        self.kind = kind
        self.info = info
        self._composer = None
        self._prior_encoder = None
        self._examined: set[str] = set()  # module folders whose extras prepare_for has looked at
        if modules:
            self.use_modules(modules, density=module_density, rank=module_rank)

    @property
    def composer(self):
        """The scorer's weights under module composition (:class:`rerank.modules.ComposedModel`)."""
        if self._composer is None:
            from rerank.modules.compose import ComposedModel

            model = self.scorer.model if self.kind == "cross" else self.scorer.encoder.model
            self._composer = ComposedModel(model, fingerprint=self.info.fingerprint)
        return self._composer

    def use_modules(self, modules: Sequence, density: float | None = None, rank: int | None = None) -> Reranker:
        """Stack ``modules`` (folders or Modules: language + task) into the scorer, replacing what was
        stacked; ``[]`` goes back to the base weights."""
        if modules:
            self.prepare_for(modules)
            self.composer.switch(list(modules), density, rank)
        elif self._composer is not None:
            self._composer.revert()
        return self

    def prepare_for(self, modules: Sequence) -> None:
        """Give the scorer what ``modules`` need before they are stacked: the list-aware head, when one of them
        brings it (no other model carries it)."""
        if self.kind != "cross" or self.scorer.list_head is not None:
            return
        from rerank.modules.format import extra_names

        fresh = [m for m in modules if not isinstance(m, str | os.PathLike) or str(m) not in self._examined]
        self._examined |= {str(m) for m in fresh if isinstance(m, str | os.PathLike)}  # a switch reads no header twice
        if any(n.startswith("list_head.") for m in fresh for n in extra_names(m)) and self.scorer.attach_list_head():
            if self._composer is not None:
                self._composer.adopt_heads()

    def __repr__(self) -> str:
        return f"Reranker(kind={self.kind!r}, model={str(self.info.path)!r})"

    def predict(
        self, pairs: Sequence[tuple[str, str]], *, progress: bool = False, prior: Sequence[float] | None = None
    ) -> np.ndarray:
        """A score per (query, document) pair, in input order; higher is more relevant. ``prior``: the
        bi-encoder's cosine of each pair when the caller has it (the dense index's vectors), for a task module
        with the residual head; computed here otherwise."""
        if self.kind == "cross":
            return self.scorer.predict(pairs, progress=progress, prior=prior)
        return self.scorer.predict(pairs, progress=progress)

    def _prior(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """The base bi-encoder's cosine of each pair (the residual head's starting point), on a second copy of
        the base weights, loaded on first use (the scorer's own weights carry the modules)."""
        import numpy as np

        if self._prior_encoder is None:
            from rerank.scoring.encoder import Encoder

            self._prior_encoder = Encoder(self.info, device=str(self.scorer.device))
        enc = self._prior_encoder
        queries = list(dict.fromkeys(q for q, _ in pairs))
        docs = list(dict.fromkeys(d for _, d in pairs))
        qv = dict(zip(queries, enc.encode(queries, "query"), strict=True))
        dv = dict(zip(docs, enc.encode(docs, "passage"), strict=True))
        return [float(np.dot(qv[q], dv[d])) for q, d in pairs]

    def rank(
        self, query: str, documents: Sequence[str], top_k: int | None = None, return_documents: bool = True
    ) -> list[dict]:
        """Documents sorted by score: ``[{"corpus_id": i, "score": s, "text": doc}, …]`` (the shape of
        sentence-transformers' ``CrossEncoder.rank``). Empty documents are ranked last, with a warning."""
        if not isinstance(query, str) or not query.strip():
            raise RerankError("empty query", hint="give the query some words")
        documents = list(documents)
        if any(not isinstance(d, str) for d in documents):
            raise RerankError("documents must be strings", hint="pass a list of document texts")
        ids = [str(i) for i in range(len(documents))]  # the positions, as ids: ties keep the input order
        scored = self.rerank_many(
            [("q", query, [ScoredDoc("q", i, 0.0) for i in ids], dict(zip(ids, documents)), None)]
        )
        ranked = [
            {"corpus_id": int(sd.doc_id), "score": sd.score}
            | ({"text": documents[int(sd.doc_id)]} if return_documents else {})
            for sd in scored["q"]
        ]
        return ranked[:top_k] if top_k is not None else ranked

    def rerank(
        self,
        query_id: str,
        query: str,
        candidates: Sequence[ScoredDoc],
        text: Callable[[str], str] | Mapping,
        top_k: int | None = None,
        prior: Sequence[float] | None = None,
    ) -> list[ScoredDoc]:
        """Rescore a first-stage list; ``text`` gives a document's text by id. Ties keep first-stage order.
        ``prior``: the bi-encoder's cosine of each candidate (see :meth:`predict`)."""
        out = self.rerank_many([(query_id, query, candidates, text, prior)])[query_id]
        return out[:top_k] if top_k is not None else out

    def rerank_many(
        self, items: Sequence[tuple[str, str, Sequence[ScoredDoc], Callable[[str], str] | Mapping, Sequence | None]]
    ) -> dict[str, list[ScoredDoc]]:
        """:meth:`rerank` for several queries at once — ``(query_id, query, candidates, text, prior)`` each —
        with all their pairs scored in one call, so that the length-sorted batches span the queries
        (16 queries × 20 UDHR pairs with the shipped cross-encoder: 8.8 s instead of 15.7 s one query at a
        time). Each query's order is the one :meth:`rerank` gives it alone."""
        texts_of, pairs, priors, where = [], [], [], []
        for n, (_, query, candidates, text, prior) in enumerate(items):
            get = text.get if isinstance(text, Mapping) else text
            texts = [get(c.doc_id) or "" for c in candidates]
            texts_of.append(texts)
            for i, t in enumerate(texts):
                if t.strip():  # empty texts are not scored: they go last with score -inf
                    pairs.append((query, t))
                    where.append((n, i))
                    priors.append(None if prior is None else prior[i])
        total = sum(len(t) for t in texts_of)
        if total > len(pairs):
            warn(f"{total - len(pairs)} of {total} documents have no text; they are ranked last")
        scores_of = [np.full(len(t), -np.inf, dtype=np.float32) for t in texts_of]
        if pairs:
            known = all(p is not None for p in priors)
            for (n, i), s in zip(where, self.predict(pairs, prior=priors if known else None), strict=True):
                scores_of[n][i] = s
        out: dict[str, list[ScoredDoc]] = {}
        for (query_id, _, candidates, _, _), scores in zip(items, scores_of, strict=True):
            order = sorted(range(len(candidates)), key=lambda i: (-scores[i], i))
            out[query_id] = [ScoredDoc(query_id, candidates[i].doc_id, float(scores[i])) for i in order]
        return out
