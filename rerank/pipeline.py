"""First stage (BM25, dense or both fused) → rerank the top ``depth`` → results.

>>> from rerank import Pipeline
>>> pipe = Pipeline.from_index("indexes/udhr-en")
>>> pipe.search("Ар бир адам эркин жүрүүгө укуктуу", lang="ky", k=10)      # list[ScoredDoc]

``first_stage="auto"`` is dense where the index has a dense part, else BM25 (:func:`choose_first_stage`).
``reranker="auto"`` is the cross-encoder when the model folder has a ranking head or a shipped task
module brings one (``modules="auto"``: the task module stacked with the query language's module — only if
on its own dev split its cross-encoder ranks at least as well as the bi-encoder; ``reranker="cross"``
stacks it regardless, :func:`rerank.modules.catalog.task_verdict`); its order
is fused with the first stage's (RRF, k=60) at the weight the task module's dev split chose
(``first_stage_weight="auto"``; 0: the cross-encoder's order alone). Else the
bi-encoder — except after a dense or hybrid first stage of the same backbone, where re-scoring by the
same embeddings would only undo the fusion (measured: hybrid 0.912 → hybrid+bi 0.889 within a
language), so nothing is reranked then. Results deeper than ``depth`` keep their first-stage order
below the reranked ones.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rerank.errors import RerankError
from rerank.indexes.fusion import DEFAULT_K
from rerank.modules.format import peek_config
from rerank.types import Query, ScoredDoc

FIRST_STAGES = ("auto", "bm25", "dense", "hybrid")
RERANKERS = ("auto", "none", "bi", "cross")
DEFAULT_DEPTH = 100  # the bi-encoder's (cheap: the index holds the documents' vectors)
CROSS_DEPTH = 20  # the cross-encoder's: the quality–latency curve on the dev questions (modules/README.md)


@dataclass(frozen=True)
class FirstStage:
    """What the first stage runs: ``kind`` and, for hybrid, RRF weights (bm25, dense)."""

    kind: str
    weights: tuple[float, float] = (1.0, 1.0)

    def __str__(self) -> str:
        return f"hybrid (RRF, weights bm25 {self.weights[0]:g} : dense {self.weights[1]:g})" \
            if self.kind == "hybrid" else self.kind


def choose_first_stage(query_lang: str | None, doc_lang: str, has_dense: bool) -> FirstStage:
    """The ``auto`` first stage: dense alone whenever the index has a dense part, BM25 otherwise — chosen on the
    dev sets cut from the training sources (modules/README.md, "Which first stage"; nDCG@10, dense against
    equal-weight RRF with BM25 and against BM25 at 0.25 : 1): English questions over Wikipedia (QED) 0.924 vs
    0.884 and 0.913; Turkish, German, Russian help paragraphs over their English originals 0.757 / 0.891 / 0.890
    vs 0.724 / 0.794 / 0.865 (0.25 : 1 within 0.002 for Turkish, below for the others); Uyghur sentences over
    English (Tatoeba) equal, BM25 matching nothing across the scripts. BM25's hits on function words and cognates
    pull the fusion down on questions; the names and numbers it can match are left to the cross-encoder, which
    reads both texts. (The bundled UDHR topics, not used to choose, favour equal-weight fusion within a language
    by 0.007–0.02.) ``query_lang`` and ``doc_lang`` are kept for rules that depend on them."""
    del query_lang, doc_lang
    return FirstStage("dense") if has_dense else FirstStage("bm25")


class Pipeline:
    """A search system over one index folder: first stage, then an optional reranker.

    ``modules``: ``"auto"`` (default) stacks the shipped modules made for the reranker's backbone — the
    query language's module and the task module with its ranking head, which makes the reranker a
    cross-encoder (:mod:`rerank.modules.catalog`); a list (or ``{lang: [...]}``) stacks those; ``None``
    stacks nothing."""

    def __init__(self, index: str | os.PathLike, *, first_stage: str = "auto", reranker: str = "auto",
                 model=None, dense_model=None, depth: int | None = None, fusion_k: float = DEFAULT_K,
                 fusion_weights: Sequence[float] | None = None, device: str | None = None,
                 max_length: int | None = None, analyzer: str | None = None,
                 modules: Sequence | Mapping | str | None = "auto", module_density: float | None = None,
                 module_rank: int | None = None, first_stage_weight: float | str | None = "auto"):
        from rerank.indexes.bm25 import BM25Index
        from rerank.indexes.dense import dense_path

        if first_stage not in FIRST_STAGES:
            raise RerankError(f"unknown first stage {first_stage!r}", hint=f"use one of: {', '.join(FIRST_STAGES)}")
        if reranker not in RERANKERS:
            raise RerankError(f"unknown reranker {reranker!r}", hint=f"use one of: {', '.join(RERANKERS)}")
        if depth is not None and depth < 1:
            raise RerankError(f"rerank depth must be ≥ 1, not {depth}",
                              hint="e.g. 20 for a cross-encoder, 100 for the bi-encoder")
        if fusion_weights is not None and first_stage not in ("hybrid", "auto"):
            raise RerankError("fusion weights apply only to --first-stage hybrid", hint="drop --fusion-weights")
        if fusion_weights is not None and len(fusion_weights) != 2:
            raise RerankError(f"{len(fusion_weights)} fusion weights given; hybrid fuses two runs (bm25, dense)",
                              hint="e.g. --fusion-weights 0.25,1")
        self.path = Path(index)
        self.bm25 = BM25Index(self.path, analyzer=analyzer)
        self.doc_lang = self.bm25.meta.language
        self.has_dense = (dense_path(self.path) / "dense.json").is_file()
        if first_stage in ("dense", "hybrid") and not self.has_dense:
            from rerank.indexes.dense import read_dense_meta

            read_dense_meta(self.path)  # raises the "no dense index" error with the command that adds one
        self.first_stage, self.reranker_kind = first_stage, reranker
        if first_stage_weight is not None and first_stage_weight != "auto":
            try:
                first_stage_weight = float(first_stage_weight)
            except (TypeError, ValueError):
                first_stage_weight = -1.0
            if not first_stage_weight >= 0:
                raise RerankError(
                    "the first-stage weight is a number ≥ 0 or auto",
                    hint="e.g. --first-stage-weight 0.5 (0: the cross-encoder's order alone)",
                )
        self.first_stage_weight = first_stage_weight
        self.fusion_k = fusion_k
        self.fusion_weights = tuple(float(w) for w in fusion_weights) if fusion_weights is not None else None
        self.device, self.max_length = device, max_length
        self._model, self._dense_model = model, dense_model
        self._dense = None
        self._reranker = None
        self._auto_fingerprint = None  # modules="auto": the backbone whose shipped modules are stacked
        self.auto_note: str | None = None  # why modules="auto" stacked nothing although modules are shipped
        if isinstance(modules, str) and modules == "auto":
            modules = None
            if reranker in ("auto", "cross"):
                from rerank.modules.catalog import default_stack, task_verdict
                from rerank.scoring.encoder import resolve

                info = resolve(model)
                stack = () if info.has_head else default_stack(None, info.fingerprint)
                verdict = task_verdict(stack[-1]) if stack and reranker == "auto" else None
                if stack and verdict is None:
                    self._auto_fingerprint = info.fingerprint
                self.auto_note = verdict
        self.modules = _module_map(modules)
        self.module_density = module_density
        self.module_rank = module_rank
        if self.modules and reranker == "none":
            raise RerankError("modules specialise the reranker; with --reranker none they would do nothing",
                              hint="pick a reranker (bi or cross) or drop --modules")
        if reranker != "none":
            self.reranker  # load now: a bad --model is reported before any searching  # noqa: B018
        if reranker == "auto":
            self._settle_auto_reranker()
        for path in dict.fromkeys(p for mods in self.modules.values() for p in mods):
            self.composer.load(path)  # a bad module is reported now, before any searching
        self.depth = depth or (CROSS_DEPTH if self.reranker_kind == "cross" else DEFAULT_DEPTH)

    @classmethod
    def from_index(cls, index: str | os.PathLike, **kwargs) -> Pipeline:
        return cls(index, **kwargs)

    # -- parts, loaded on first use -------------------------------------------------------------
    @property
    def reranker(self):
        if self._reranker is None and self.reranker_kind != "none":
            from rerank.modules.format import has_head
            from rerank.scoring.reranker import Reranker

            heads = self._auto_fingerprint is not None or any(
                has_head(p) for mods in self.modules.values() for p in mods
            )
            self._reranker = Reranker(self._model, self.reranker_kind, device=self.device, max_length=self.max_length,
                                      head_from_module=heads)  # fmt: skip
        return self._reranker

    def _settle_auto_reranker(self) -> None:
        """``auto`` without a ranking head: skip the bi-encoder where the first stage already used the
        same embeddings (dense or hybrid with the reranker's backbone)."""
        from rerank.indexes.dense import read_dense_meta

        rr = self.reranker
        self.reranker_kind = rr.kind
        if rr.kind == "bi" and self.has_dense and self.first_stage != "bm25" and not self.modules \
                and self._dense_model is None and read_dense_meta(self.path).fingerprint == rr.info.fingerprint:
            self.reranker_kind = "none"

    @property
    def dense(self):
        if self._dense is None:
            from rerank.indexes.dense import DenseIndex, read_dense_meta

            enc = None
            rr = self._reranker
            if rr is not None and rr.kind == "bi" and self._dense_model is None and not self.modules \
                    and rr.info.fingerprint == read_dense_meta(self.path).fingerprint:
                enc = rr.scorer.encoder  # one backbone in memory when the bi-encoder is the dense model
            self._dense = DenseIndex(self.path, enc, model=self._dense_model)
        return self._dense

    def plan(self, query_lang: str | None) -> FirstStage:
        """The first stage that runs for queries in ``query_lang``."""
        if self.first_stage == "auto" and self.fusion_weights is not None:
            stage = FirstStage("hybrid")  # weights given: the user asks for fusion
        elif self.first_stage == "auto":
            stage = choose_first_stage(query_lang, self.doc_lang, self.has_dense)
        elif self.first_stage == "hybrid":
            stage = FirstStage("hybrid")
        else:
            stage = FirstStage(self.first_stage)
        if stage.kind == "hybrid" and self.fusion_weights is not None:
            stage = FirstStage("hybrid", self.fusion_weights)  # type: ignore[arg-type]
        return stage

    # -- searching ------------------------------------------------------------------------------
    def search(self, query: str, lang: str | None = None, k: int = 10) -> list[ScoredDoc]:
        """The top ``k`` documents for one query."""
        if not isinstance(query, str) or not query.strip():
            raise RerankError("empty query", hint="give the query some words")
        return self.batch_search([Query("q1", query, lang or "")], k=k)["q1"]

    def batch_search(self, queries: Sequence[Query], k: int = 100, *, progress: bool = False,
                     threads: int = 2) -> dict[str, list[ScoredDoc]]:
        return self.run(queries, k, progress=progress, threads=threads)[0]

    def first_stage_run(self, queries: Sequence[Query], k: int, *, progress: bool = False,
                        threads: int = 2) -> dict[str, list[ScoredDoc]]:
        from rerank import languages
        from rerank.indexes.fusion import rrf

        by_plan: dict[FirstStage, list[Query]] = {}
        for q in queries:
            by_plan.setdefault(self.plan(languages.code(q.lang) if q.lang else None), []).append(q)
        out: dict[str, list[ScoredDoc]] = {}
        for stage, qs in by_plan.items():
            bm = self.bm25.batch_search(qs, k=k, threads=threads, progress=progress) if stage.kind != "dense" else {}
            de = self.dense.batch_search(qs, k=k) if stage.kind != "bm25" else {}
            for q in qs:
                if stage.kind == "hybrid":
                    out[q.query_id] = rrf([bm.get(q.query_id, []), de.get(q.query_id, [])], stage.weights,
                                          self.fusion_k, query_id=q.query_id)[:k]
                else:
                    out[q.query_id] = (bm if stage.kind == "bm25" else de).get(q.query_id, [])
        return {q.query_id: out[q.query_id] for q in queries}

    def run(self, queries: Sequence[Query], k: int = 100, *, progress: bool = False,
            threads: int = 2) -> tuple[dict[str, list[ScoredDoc]], dict[str, list[ScoredDoc]]]:
        """(final results, first-stage results) per query id."""
        from tqdm.auto import tqdm

        for q in queries:
            if not q.text.strip():
                raise RerankError(f"query {q.query_id} is empty", hint="give every query some words")
        # Fusion and reranking both look at the top `depth` of the first stage, so a smaller k only
        # cuts the final list: search(k=10) is the top 10 of search(k=100).
        first = self.first_stage_run(queries, max(k, self.depth), progress=progress, threads=threads)
        if self.reranker_kind == "none":
            return {q: r[:k] for q, r in first.items()}, first
        final: dict[str, list[ScoredDoc]] = {}
        # queries grouped by the module set their language asks for: one switch per group
        groups: dict[tuple, list[Query]] = {}
        for q in queries:
            groups.setdefault(self.modules_for(q.lang), []).append(q)
        with tqdm(total=len(queries), desc=f"reranking ({self.reranker.kind})", unit="query",
                  disable=not progress, leave=False) as bar:
            for mods, qs in groups.items():
                if self.modules:
                    self.composer.switch(list(mods), self.module_density, self.module_rank)
                weight = self.fusion_weight(mods)
                for q in qs:
                    cands = first[q.query_id][: self.depth]
                    final[q.query_id] = self._rerank(q, cands, first[q.query_id][self.depth :], weight)[:k]
                    bar.update(1)
        return {q.query_id: final[q.query_id] for q in queries}, first

    def modules_for(self, lang: str | None) -> tuple:
        """The module folders stacked for queries in ``lang`` (``"*"`` entries serve every language; with
        ``modules="auto"``, the shipped modules :func:`rerank.modules.catalog.default_stack` picks)."""
        from rerank import languages

        code = languages.code(lang) if lang else ""
        if self._auto_fingerprint is not None and code not in self.modules:
            from rerank.modules.catalog import default_stack

            self.modules[code] = tuple(str(p) for p in default_stack(code, self._auto_fingerprint))
        return tuple(self.modules.get(code, self.modules.get("*", ())))

    @property
    def composer(self):
        """The reranker's weights under module composition (built on first use)."""
        return self.reranker.composer

    def fusion_weight(self, mods: Sequence[str]) -> float:
        """The first stage's weight when its ranking is fused (RRF, k=60) with the cross-encoder's: the
        number given, or with ``auto`` the one the stacked task module's dev split chose (its recipe's
        ``fusion``; 0 — the cross-encoder's order alone — when it records none)."""
        if self.reranker_kind != "cross":
            return 0.0
        if self.first_stage_weight != "auto":
            return float(self.first_stage_weight or 0.0)
        for path in mods:
            cfg = peek_config(path)
            if cfg is not None and cfg.role == "task" and cfg.recipe.get("fusion"):
                return cfg.fusion.first_stage_weight
        return 0.0

    def _rerank(self, q: Query, cands: list[ScoredDoc], tail: list[ScoredDoc], weight: float = 0.0,
                ) -> list[ScoredDoc]:
        if not cands:
            return []
        rr = self.reranker
        if rr.kind == "bi" and self.has_dense and self.dense.encoder is rr.scorer.encoder:
            ranked = self._bi_from_index(q, cands)  # same backbone: the stored vectors are the embeddings
        else:
            docs = self.bm25.docstore.get_many([c.doc_id for c in cands])
            ranked = rr.rerank(q.query_id, q.text, cands, {d: doc.contents for d, doc in docs.items()},
                               prior=self._prior(q, cands))  # fmt: skip
        if weight > 0:
            from rerank.indexes.fusion import rrf

            ranked = rrf([ranked, cands], [1.0, weight], DEFAULT_K, query_id=q.query_id)
        floor = min((s.score for s in ranked if s.score > float("-inf")), default=0.0)
        return ranked + [ScoredDoc(q.query_id, t.doc_id, floor - 1.0 - i) for i, t in enumerate(tail)]

    def _prior(self, q: Query, cands: list[ScoredDoc]) -> list[float] | None:
        """The bi-encoder's cosines of the candidates from the dense index's stored vectors, when the stacked
        task module's residual head starts from them and the index holds the reranker's backbone's vectors
        (else None: the reranker computes them)."""
        rr = self.reranker
        if rr.kind != "cross" or not rr.scorer.residual_active() or not self.has_dense:
            return None
        from rerank.indexes.dense import read_dense_meta

        if read_dense_meta(self.path).fingerprint != rr.info.fingerprint:
            return None
        qv = self.dense.encoder.encode([q.text], "query")[0]
        return [float(x) for x in self.dense.vectors([c.doc_id for c in cands]) @ qv]

    def _bi_from_index(self, q: Query, cands: list[ScoredDoc]) -> list[ScoredDoc]:
        enc = self.dense.encoder
        qv = enc.encode([q.text], "query")[0]
        dv = self.dense.vectors([c.doc_id for c in cands])
        scores = dv @ qv
        order = sorted(range(len(cands)), key=lambda i: (-scores[i], i))
        return [ScoredDoc(q.query_id, cands[i].doc_id, float(scores[i])) for i in order]

    def close(self) -> None:
        if self.modules and self._reranker is not None:
            self._reranker.use_modules([])
        self.bm25.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _module_map(modules) -> dict[str, tuple]:
    """``[paths]`` or ``{lang: [paths]}`` (``"*"``: the rest) → {lang code: paths}.

    A plain list is stacked for every query — unless it holds language modules of two or more
    languages: then each language module serves the queries of its own language (as its config says),
    the other modules serve every query, and a query in a language no module names gets only those."""
    from rerank import languages

    if not modules:
        return {}
    if isinstance(modules, Mapping):
        return {("*" if k == "*" else languages.code(k)): tuple(str(p) for p in v) for k, v in modules.items()}
    if isinstance(modules, str | os.PathLike):
        modules = [modules]
    paths = [str(p) for p in modules]
    by_lang: dict[str, list[str]] = {}
    common = []
    for p in paths:
        cfg = peek_config(p)
        if cfg is not None and cfg.role == "language" and cfg.language:
            by_lang.setdefault(languages.code(cfg.language), []).append(p)
        else:
            common.append(p)
    if len(by_lang) < 2:
        return {"*": tuple(paths)}
    return {"*": tuple(common), **{lang: tuple(ps + common) for lang, ps in by_lang.items()}}
