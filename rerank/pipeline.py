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

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from functools import cached_property
from pathlib import Path

from rerank.errors import RerankError
from rerank.indexes.fusion import DEFAULT_K
from rerank.indexes.stages import STAGES, IndexParts
from rerank.modules.format import peek_config
from rerank.types import Query, ScoredDoc

FIRST_STAGES = ("auto", *STAGES)
RERANKERS = ("auto", "none", "bi", "cross")
DEFAULT_DEPTH = 100  # the bi-encoder's (cheap: the index holds the documents' vectors)
CROSS_DEPTH = 20  # the cross-encoder's: the quality–latency curve on the dev questions (modules/README.md)


@dataclass(frozen=True)
class FirstStage:
    """What the first stage runs: ``kind`` and, for hybrid, RRF weights (bm25, dense)."""

    kind: str
    weights: tuple[float, float] = (1.0, 1.0)

    def __str__(self) -> str:
        return (
            f"hybrid (RRF, weights bm25 {self.weights[0]:g} : dense {self.weights[1]:g})"
            if self.kind == "hybrid"
            else self.kind
        )


def parse_modules(text: str | None):
    """``--modules`` as the CLI takes it: ``auto``, ``none`` (or nothing), or folders, comma-separated."""
    if text is None or text.strip().lower() == "none":
        return None
    if text.strip().lower() == "auto":
        return "auto"
    return [m for m in text.split(",") if m.strip()] or None


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


@dataclass(frozen=True)
class SearchSettings:
    """Everything that decides what a search does, in one record that ``rerank search``, ``rerank eval grid``
    and the Python API share. ``"auto"`` entries are resolved once, by :class:`Pipeline`, into a plan
    (:meth:`Pipeline.explain`)."""

    first_stage: str = "auto"  # auto | bm25 | dense | hybrid
    reranker: str = "auto"  # auto | none | bi | cross
    model: object = None  # the reranker's model folder (None: the embedded backbone)
    dense_model: object = None  # the dense first stage's query encoder (None: the index's own)
    depth: int | None = None  # documents reranked (None: CROSS_DEPTH for the cross-encoder, else DEFAULT_DEPTH)
    fusion_k: float = DEFAULT_K  # RRF k of the hybrid first stage
    fusion_weights: tuple[float, float] | None = None  # hybrid's (bm25, dense) weights
    device: str | None = None
    max_length: int | None = None  # tokens per (query, document) pair
    analyzer: str | None = None  # refuse an index built with another analyzer
    modules: object = "auto"  # "auto" | paths | {lang: paths} | None
    module_density: float | None = None  # sparse modules' budget at load time
    module_rank: int | None = None  # LoRA modules' budget at load time
    first_stage_weight: float | str | None = "auto"  # RRF weight of the first stage against the cross-encoder
    precision: str = "auto"  # the cross-encoder's arithmetic: auto | fp32 | bf16 (rerank.scoring.precision)

    def __post_init__(self) -> None:
        if self.first_stage not in FIRST_STAGES:
            raise RerankError(
                f"unknown first stage {self.first_stage!r}", hint=f"use one of: {', '.join(FIRST_STAGES)}"
            )
        if self.reranker not in RERANKERS:
            raise RerankError(f"unknown reranker {self.reranker!r}", hint=f"use one of: {', '.join(RERANKERS)}")
        from rerank.scoring.precision import check_precision

        check_precision(self.precision)
        if self.depth is not None and self.depth < 1:
            raise RerankError(
                f"rerank depth must be ≥ 1, not {self.depth}",
                hint="e.g. 20 for a cross-encoder, 100 for the bi-encoder",
            )
        if self.fusion_weights is not None and self.first_stage not in ("hybrid", "auto"):
            raise RerankError("fusion weights apply only to --first-stage hybrid", hint="drop --fusion-weights")
        if self.fusion_weights is not None and len(self.fusion_weights) != 2:
            raise RerankError(
                f"{len(self.fusion_weights)} fusion weights given; hybrid fuses two runs (bm25, dense)",
                hint="e.g. --fusion-weights 0.25,1",
            )
        if self.fusion_weights is not None:
            weights = tuple(float(w) for w in self.fusion_weights)
            if not all(math.isfinite(w) and w >= 0 for w in weights) or not any(weights):
                raise RerankError(
                    f"fusion weights {','.join(f'{w:g}' for w in weights)}: each must be a finite number ≥ 0, "
                    "not both 0",
                    hint="e.g. --fusion-weights 0.25,1",
                )
            object.__setattr__(self, "fusion_weights", weights)
        weight = self.first_stage_weight
        if weight is not None and weight != "auto":
            try:
                weight = float(weight)
            except (TypeError, ValueError):
                weight = -1.0
            if not (weight >= 0 and math.isfinite(weight)):
                raise RerankError(
                    "the first-stage weight is a number ≥ 0 or auto",
                    hint="e.g. --first-stage-weight 0.5 (0: the cross-encoder's order alone)",
                )
            object.__setattr__(self, "first_stage_weight", weight)

    @classmethod
    def from_record(cls, record: Mapping) -> SearchSettings:
        """Settings from a table of plain values (a grid's ``[[systems]]`` entry; unknown keys ignored):
        densities may be written ``"0.5%"``, weights as lists."""
        from rerank.modules.format import parse_density

        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in record.items() if k in known}
        if kw.get("module_density"):
            kw["module_density"] = parse_density(kw["module_density"])
        if kw.get("depth"):
            kw["depth"] = int(kw["depth"])
        if kw.get("fusion_weights"):
            kw["fusion_weights"] = tuple(kw["fusion_weights"])
        if "fusion_k" in kw:
            kw["fusion_k"] = float(kw["fusion_k"])
        kw["modules"] = kw.get("modules") or None
        return cls(**{k: v for k, v in kw.items() if v is not None or k == "modules"})


@dataclass(frozen=True)
class SearchPlan:
    """What a search does for queries in one language, every ``auto`` resolved."""

    lang: str
    first_stage: FirstStage
    reranker: str  # none | bi | cross
    depth: int
    modules: tuple[str, ...] = ()
    first_stage_weight: float = 0.0

    def __str__(self) -> str:
        who = f"{self.lang} queries" if self.lang else "queries"
        if self.reranker == "none":
            return f"{who}: {self.first_stage}, not reranked"
        name = {"cross": "the cross-encoder", "bi": "the bi-encoder"}[self.reranker]
        line = f"{who}: {self.first_stage}, top {self.depth} reranked by {name}"
        if self.modules:
            line += " with " + " + ".join(display_path(m) for m in self.modules)
        if self.first_stage_weight:
            line += f", fused with the first stage at weight {self.first_stage_weight:g}"
        return line


def display_path(path: str) -> str:
    """A path as a user reads it: relative to the working folder where it is below it."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)


class Pipeline:
    """A search system over one index folder: first stage, then an optional reranker.

    ``modules``: ``"auto"`` (default) stacks the shipped modules made for the reranker's backbone — the
    query language's module and the task module with its ranking head, which makes the reranker a
    cross-encoder (:mod:`rerank.modules.catalog`); a list (or ``{lang: [...]}``) stacks those; ``None``
    stacks nothing.

    ``share``: another pipeline whose loaded models this one uses where they are the same — its reranker (same
    model, kind, device, length, precision and module heads) and its dense query encoder (same backbone) — so
    that several indexes in one process (``rerank serve --index A --index B``) hold one copy of each."""

    def __init__(
        self,
        index: str | os.PathLike,
        settings: SearchSettings | None = None,
        *,
        share: Pipeline | None = None,
        **kwargs,
    ):
        """``settings``, or the same fields as keywords (they override ``settings``'s)."""
        from rerank.indexes.bm25 import BM25Index
        from rerank.indexes.dense import dense_path

        settings = replace(settings, **kwargs) if settings is not None else SearchSettings(**kwargs)
        self.settings = settings
        self.path = Path(index)
        self.bm25 = BM25Index(self.path, analyzer=settings.analyzer)
        self.doc_lang = self.bm25.meta.language
        self.has_dense = (dense_path(self.path) / "dense.json").is_file()
        if self.bm25.meta.dense and not self.has_dense:
            raise RerankError(
                f"{self.path} is incomplete: it was built with a dense part and dense/ is missing",
                hint=f"add it again with `rerank index --dense-only --out {self.path}`",
            )
        if settings.first_stage != "auto" and STAGES[settings.first_stage].needs_dense and not self.has_dense:
            from rerank.indexes.dense import read_dense_meta

            read_dense_meta(self.path)  # raises the "no dense index" error with the command that adds one
        self.first_stage, self.reranker_kind = settings.first_stage, settings.reranker
        self.first_stage_weight = settings.first_stage_weight
        self.fusion_k, self.fusion_weights = settings.fusion_k, settings.fusion_weights
        self.device, self.max_length = settings.device, settings.max_length
        self._model, self._dense_model = settings.model, settings.dense_model
        self._dense = None
        self._reranker = None
        self._share = share
        self._heads_from_modules = False
        self.auto_note: str | None = None  # why modules="auto" stacked nothing although modules are shipped
        self.modules = self._resolve_modules(settings.modules, settings.reranker)
        self.module_density = settings.module_density
        self.module_rank = settings.module_rank
        if self.modules and settings.reranker == "none":
            raise RerankError(
                "modules specialise the reranker; with --reranker none they would do nothing",
                hint="pick a reranker (bi or cross) or drop --modules",
            )
        if settings.reranker != "none":
            self.reranker  # load now: a bad --model is reported before any searching  # noqa: B018
        if settings.reranker == "auto":
            self._settle_auto_reranker()
        every = list(dict.fromkeys(p for mods in self.modules.values() for p in mods))
        if every:
            self.reranker.prepare_for(every)
        for path in every:
            self.composer.load(path)  # a bad module is reported now, before any searching
        self.depth = settings.depth or (CROSS_DEPTH if self.reranker_kind == "cross" else DEFAULT_DEPTH)
        self._weights = {mods: self._fusion_weight(mods) for mods in set(self.modules.values())}

    def _resolve_modules(self, modules, reranker: str) -> dict[str, tuple]:
        """{language code: module paths}, ``"*"`` for every other language. ``"auto"``: the shipped modules for
        the reranker's backbone, for every language the catalogue has a module for and for the rest — resolved
        here once, so a search reads this map and changes nothing."""
        if not (isinstance(modules, str) and modules == "auto"):
            from rerank.modules.format import check_module_files

            mapped = _module_map(modules)
            for path in dict.fromkeys(p for mods in mapped.values() for p in mods):
                check_module_files(path)  # a damaged module is named now, not mistaken for one without a head
            self._heads_from_modules = any(_has_head(p) for mods in mapped.values() for p in mods)
            return mapped
        if reranker not in ("auto", "cross"):
            return {}
        from rerank.modules.catalog import catalog, default_stack, task_verdict
        from rerank.scoring.encoder import resolve

        info = resolve(self._model)
        entries = catalog()  # read once: every language's stack is picked from it
        stack = () if info.has_head else default_stack(None, info.fingerprint, entries=entries)
        verdict = task_verdict(stack[-1]) if stack and reranker == "auto" else None
        self.auto_note = verdict
        if not stack or verdict is not None:
            return {}
        self._heads_from_modules = True
        codes = {e.language for e in entries if e.role == "language" and e.fingerprint == info.fingerprint}
        out = {"*": tuple(str(p) for p in stack)}
        for code in sorted(c for c in codes if c):
            out[code] = tuple(str(p) for p in default_stack(code, info.fingerprint, entries=entries))
        return out

    @classmethod
    def from_index(cls, index: str | os.PathLike, **kwargs) -> Pipeline:
        return cls(index, **kwargs)

    # -- parts, loaded on first use -------------------------------------------------------------
    @property
    def reranker(self):
        if self._reranker is None and self.reranker_kind != "none":
            from rerank.scoring.reranker import Reranker

            other = self._share
            if other is not None and other._reranker is not None and other._reranker_key() == self._reranker_key():
                self._reranker = other._reranker
                return self._reranker
            self._reranker = Reranker(
                self._model,
                self.reranker_kind,
                device=self.device,
                max_length=self.max_length,
                head_from_module=self._heads_from_modules,
                precision=self.settings.precision,
            )
        return self._reranker

    def _reranker_key(self) -> tuple:
        """What decides the reranker this pipeline loads (two pipelines with one key can share it)."""
        s = self.settings
        return (str(self._model), s.reranker, str(self.device), self.max_length, s.precision, self._heads_from_modules)

    def _settle_auto_reranker(self) -> None:
        """``auto`` without a ranking head: skip the bi-encoder where the first stage already used the
        same embeddings (dense or hybrid with the reranker's backbone)."""
        from rerank.indexes.dense import read_dense_meta

        rr = self.reranker
        self.reranker_kind = rr.kind
        if (
            rr.kind == "bi"
            and self.has_dense
            and self.first_stage != "bm25"
            and not self.modules
            and self._dense_model is None
            and read_dense_meta(self.path).fingerprint == rr.info.fingerprint
        ):
            self.reranker_kind = "none"

    @property
    def dense(self):
        if self._dense is None:
            from rerank.indexes.dense import DenseIndex, read_dense_meta

            enc = None
            rr = self._reranker
            if (
                rr is not None
                and rr.kind == "bi"
                and self._dense_model is None
                and not self.modules
                and rr.info.fingerprint == read_dense_meta(self.path).fingerprint
            ):
                enc = rr.scorer.encoder  # one backbone in memory when the bi-encoder is the dense model
            other = self._share
            if (
                enc is None
                and other is not None
                and other.has_dense
                and other._dense_model == self._dense_model
                and other.dense.encoder.fingerprint == read_dense_meta(self.path).fingerprint
            ):
                enc = other.dense.encoder  # the other index's query encoder: the same backbone
            self._dense = DenseIndex(self.path, enc, model=self._dense_model)
        return self._dense

    def plan(self, query_lang: str | None) -> FirstStage:
        """The first stage that runs for queries in ``query_lang``."""
        from rerank import languages

        return self._plan_code(languages.code(query_lang) if query_lang else None)

    def _plan_code(self, code: str | None) -> FirstStage:
        if self.first_stage == "auto" and self.fusion_weights is not None:
            stage = FirstStage("hybrid")  # weights given: the user asks for fusion
        elif self.first_stage == "auto":
            stage = choose_first_stage(code or None, self.doc_lang, self.has_dense)
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

    def batch_search(
        self, queries: Sequence[Query], k: int = 100, *, progress: bool = False, threads: int = 2
    ) -> dict[str, list[ScoredDoc]]:
        return self.run(queries, k, progress=progress, threads=threads)[0]

    def first_stage_run(
        self, queries: Sequence[Query], k: int, *, progress: bool = False, threads: int = 2
    ) -> dict[str, list[ScoredDoc]]:
        """The first stage's top ``k`` per query id (queries grouped by the stage their language plans)."""
        return self._first_stage(_canonical(queries), k, progress=progress, threads=threads)

    def _first_stage(self, queries: list[Query], k: int, *, progress: bool, threads: int) -> dict:
        by_plan: dict[FirstStage, list[Query]] = {}
        for q in queries:
            by_plan.setdefault(self._plan_code(q.lang), []).append(q)
        parts = IndexParts(self.bm25, lambda: self.dense, self.fusion_k)
        out: dict[str, list[ScoredDoc]] = {}
        for desc, qs in by_plan.items():
            stage = STAGES[desc.kind].build(parts, desc.weights)
            out |= stage.batch_search(qs, k, progress=progress, threads=threads)
        return {q.query_id: out.get(q.query_id, []) for q in queries}

    def run(
        self, queries: Sequence[Query], k: int = 100, *, progress: bool = False, threads: int = 2
    ) -> tuple[dict[str, list[ScoredDoc]], dict[str, list[ScoredDoc]]]:
        """(final results, first-stage results) per query id."""
        for q in queries:
            if not q.text.strip():
                raise RerankError(f"query {q.query_id} is empty", hint="give every query some words")
        queries = _canonical(queries)  # each query's language is canonicalised here, once
        # Fusion and reranking both look at the top `depth` of the first stage, so a smaller k only
        # cuts the final list: search(k=10) is the top 10 of search(k=100).
        first = self._first_stage(queries, max(k, self.depth), progress=progress, threads=threads)
        if self.reranker_kind == "none":
            return {q: r[:k] for q, r in first.items()}, first
        return self._rerank_canonical(queries, first, k, progress=progress), first

    def rerank_candidates(
        self,
        queries: Sequence[Query],
        candidates: Mapping[str, list[ScoredDoc]],
        *,
        texts: Mapping[str, str] | None = None,
        progress: bool = False,
    ) -> dict[str, list[ScoredDoc]]:
        """Rerank given candidate lists (another system's run, in its order) as :meth:`run` reranks its first
        stage's: each query's top ``depth`` by the reranker (fused at the first-stage weight), the rest below in
        the given order. Every candidate must be in the index (its text is read from the index's store), or in
        ``texts`` (document id → text) when given."""
        if self.reranker_kind == "none":
            raise RerankError("there is no reranker to rerank with", hint="pick --reranker cross or bi")
        queries = _canonical(queries)
        first = {q.query_id: list(candidates[q.query_id]) for q in queries}
        return self._rerank_canonical(queries, first, None, progress=progress, texts=texts)

    def _rerank_canonical(
        self,
        queries: list[Query],
        first: dict[str, list[ScoredDoc]],
        k: int | None,
        *,
        progress: bool,
        texts: Mapping[str, str] | None = None,
    ) -> dict[str, list[ScoredDoc]]:
        from tqdm.auto import tqdm

        final: dict[str, list[ScoredDoc]] = {}
        # queries grouped by the module set their language asks for: one switch per group
        groups: dict[tuple, list[Query]] = {}
        for q in queries:
            groups.setdefault(self._modules_code(q.lang), []).append(q)
        with tqdm(
            total=len(queries),
            desc=f"reranking ({self.reranker.kind})",
            unit="query",
            disable=not progress,
            leave=False,
        ) as bar:
            for mods, qs in groups.items():
                if self.modules:
                    self.reranker.use_modules(list(mods), self.module_density, self.module_rank)
                weight = self.fusion_weight(mods)
                ranked = self._rerank_group(qs, first, texts)
                for q in qs:
                    cands, tail = first[q.query_id][: self.depth], first[q.query_id][self.depth :]
                    final[q.query_id] = self._finish(q, ranked[q.query_id], cands, tail, weight)[:k]
                    bar.update(1)
        return {q.query_id: final[q.query_id] for q in queries}

    def modules_for(self, lang: str | None) -> tuple:
        """The module folders stacked for queries in ``lang`` (``"*"`` entries serve every language; with
        ``modules="auto"``, the shipped modules :func:`rerank.modules.catalog.default_stack` picks)."""
        from rerank import languages

        return self._modules_code(languages.code(lang) if lang else "")

    def _modules_code(self, code: str) -> tuple:
        return tuple(self.modules.get(code, self.modules.get("*", ())))

    def explain(self, lang: str | None) -> SearchPlan:
        """What a search does for queries in ``lang``, every ``auto`` resolved (``rerank search --explain``)."""
        from rerank import languages

        code = languages.code(lang) if lang else ""
        mods = self._modules_code(code) if self.reranker_kind != "none" else ()
        return SearchPlan(
            code, self._plan_code(code or None), self.reranker_kind, self.depth, mods, self.fusion_weight(mods)
        )

    @property
    def composer(self):
        """The reranker's weights under module composition (built on first use)."""
        return self.reranker.composer

    def fusion_weight(self, mods: Sequence[str]) -> float:
        """The first stage's weight when its ranking is fused (RRF, k=60) with the cross-encoder's: the
        number given, or with ``auto`` the one the stacked task module's dev split chose (its recipe's
        ``fusion``; 0 — the cross-encoder's order alone — when it records none)."""
        mods = tuple(mods)
        if mods in self._weights:
            return self._weights[mods]
        return self._fusion_weight(mods)

    def _fusion_weight(self, mods: tuple) -> float:
        if self.reranker_kind != "cross":
            return 0.0
        if self.first_stage_weight != "auto":
            return float(self.first_stage_weight or 0.0)
        for path in mods:
            cfg = peek_config(path)
            if cfg is not None and cfg.role == "task" and cfg.recipe.get("fusion"):
                return cfg.fusion.first_stage_weight
        return 0.0

    def _rerank_group(
        self, qs: Sequence[Query], first: dict[str, list[ScoredDoc]], texts: Mapping[str, str] | None = None
    ) -> dict[str, list[ScoredDoc]]:
        """The reranker's order of each query's top ``depth``, for queries that share a module set: the
        cross-encoder scores all their pairs in one call (:meth:`Reranker.rerank_many`)."""
        rr = self.reranker
        cands = {q.query_id: first[q.query_id][: self.depth] for q in qs}
        if rr.kind == "bi" and self.has_dense and self.dense.encoder is rr.scorer.encoder:
            # same backbone: the stored vectors are the embeddings
            return {q.query_id: self._bi_from_index(q, cands[q.query_id]) if cands[q.query_id] else [] for q in qs}
        if texts is None:
            docs = self.bm25.docstore.get_many(list(dict.fromkeys(c.doc_id for cs in cands.values() for c in cs)))
            texts = {d: doc.contents for d, doc in docs.items()}
        items = [(q.query_id, q.text, cands[q.query_id], texts, self._prior(q, cands[q.query_id])) for q in qs]
        return rr.rerank_many([it for it in items if it[2]]) | {q.query_id: [] for q in qs if not cands[q.query_id]}

    def _finish(
        self, q: Query, ranked: list[ScoredDoc], cands: list[ScoredDoc], tail: list[ScoredDoc], weight: float
    ) -> list[ScoredDoc]:
        """The reranked top fused with the first stage at ``weight`` (RRF), then the first stage's tail below."""
        if not cands:
            return []
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
        if self._dense_fingerprint != rr.info.fingerprint:
            return None
        qv = self.dense.encoder.encode([q.text], "query")[0]
        return [float(x) for x in self.dense.vectors([c.doc_id for c in cands]) @ qv]

    @cached_property
    def _dense_fingerprint(self) -> str:
        """The backbone the dense part was built with (read once, not once per reranked query)."""
        from rerank.indexes.dense import read_dense_meta

        return read_dense_meta(self.path).fingerprint

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


def _canonical(queries: Sequence[Query]) -> list[Query]:
    """The queries with their languages as ISO codes (an unknown language is one clear error)."""
    from rerank import languages

    return [q._replace(lang=languages.code(q.lang)) if q.lang else q for q in queries]


def _has_head(path) -> bool:
    from rerank.modules.format import has_head

    return has_head(path)


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
