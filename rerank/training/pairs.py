"""Relevance training data: read from files, or made from a document collection (no human judgements
are available offline here).

``make_pairs`` builds pseudo-queries from the documents themselves:

* ``title``: the document's title is the query, its body the positive (titled collections);
* ``ict`` (inverse cloze task, Lee et al. 2019): one sentence of a passage is the query, the passage
  without that sentence the positive (with it, 10% of the time, as in the paper) (any collection);

and takes hard negatives from BM25 over the same collection (the top hits that are not the positive or
from its page, nor documents containing the query verbatim) — and, with ``random_negatives``, that many
random documents instead (a model that starts from no notion of relevance first needs the easy
contrasts: hard negatives alone teach distinctions it cannot make yet). Positives and negatives are both body text
without titles, and a negative longer than its positive is cut to its first whole sentences, about the
positive's length (BM25's top hits run long: on LibreOffice's help, median 137 tokens against the
positives' 45), so that neither form nor length, only relevance, tells them apart. With ``teacher``,
the bi-encoder scores every (query, document) so a task module can be trained by distillation
(margin-MSE).

The JSONL written (one training query a line)::

    {"qid": "...", "query": "...", "lang": "en", "positive": {"id": "...", "text": "..."},
     "negatives": [{"id": "...", "text": "...", "bm25": 12.3}, ...], "teacher": [pos, neg1, ...]}

is also what :func:`read_pairs` reads, besides TSV triples (``query<TAB>positive<TAB>negative``).
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

from rerank.errors import RerankError

METHODS = ("ict", "title")
ICT_KEEP = 0.1
_SENTENCE_END = re.compile(r"(?<=[.!?;։。؟؛])\s+")


def _pseudo_query(doc, method: str, rng: random.Random) -> tuple[str, str] | None:
    if method == "title":
        if not doc.title or not doc.text.strip():
            return None
        return doc.title, doc.text
    sentences = _SENTENCE_END.split(doc.text)
    usable = [j for j, s in enumerate(sentences) if len(s.split()) >= 4]  # a query needs some words
    if len(usable) < 2:
        return None
    i = usable[rng.randrange(len(usable))]
    keep = rng.random() < ICT_KEEP  # as Lee et al. do: sometimes the sentence stays, so word overlap still counts
    # the rest keeps every other sentence, short ones too: the positive reads like the negatives
    rest = " ".join(s for j, s in enumerate(sentences) if j != i or keep)
    return sentences[i], rest


def crop(text: str, target: int) -> str:
    """The beginning of ``text``, in whole sentences, about ``target`` characters long (the text itself when it
    is not much longer): sentences up to 80% of ``target`` at least. Text without sentence breaks is cut at a
    word boundary. Negatives start where their sections start, as positives do: cut from a random sentence,
    they taught a first task module that "starts like a section" means relevant (the scores on UDHR varied
    28 times more with the document than with the query-document pair)."""
    if len(text) <= target * 1.25:
        return text
    ends = [m.start() for m in _SENTENCE_END.finditer(text)] + [len(text)]
    j = 0
    while j + 1 < len(ends) and ends[j] < target * 0.8:
        j += 1
    window = text[: ends[j]]
    if len(window) > target * 1.5:  # one very long sentence: cut it at a word
        cut = window.rfind(" ", 0, int(target * 1.25))
        window = window[: cut if cut > 0 else int(target * 1.25)]
    return window


def make_pairs(
    docs_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    lang: str,
    method: str = "ict",
    negatives: int = 7,
    random_negatives: int = 0,
    max_queries: int | None = None,
    teacher: bool = False,
    seed: int = 0,
    index: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write synthetic training queries for ``docs_path`` to ``out`` (JSONL) and ``out``.json (how)."""
    import tempfile

    from tqdm import tqdm

    from rerank import languages
    from rerank.collections.docs import read_docs
    from rerank.files import atomic_write, refuse_existing
    from rerank.indexes.bm25 import BM25Index, index_file
    from rerank.types import ScoredDoc

    if method not in METHODS:
        raise RerankError(f"unknown --method {method!r}", hint=f"one of: {', '.join(METHODS)}")
    if not 0 <= random_negatives <= negatives:
        raise RerankError(
            f"--random-negatives {random_negatives} is not between 0 and --negatives {negatives}",
            hint="e.g. --negatives 7 --random-negatives 3",
        )
    code = languages.code(lang)
    refuse_existing(out, overwrite)
    docs = list(read_docs(docs_path))
    by_id = {d.doc_id: d for d in docs}
    rng = random.Random(seed)
    order = list(range(len(docs)))
    rng.shuffle(order)
    with tempfile.TemporaryDirectory() as tmp:
        idx_dir = Path(index) if index else Path(tmp) / "bm25"
        if not index:
            index_file(docs_path, idx_dir, code, progress=False)
        bm25 = BM25Index(idx_dir)
        rows, skipped = [], 0
        for i in tqdm(order, desc="pseudo-queries", disable=not progress):
            d = docs[i]
            made = _pseudo_query(d, method, rng)
            if made is None:
                skipped += 1
                continue
            query, positive = made
            hits = bm25.search(query, k=negatives * 3 + 1)
            page = d.doc_id.split("#", 1)[0]  # sections of one page (id "page#k") are not negatives of each other
            negs = [h for h in hits if h.doc_id.split("#", 1)[0] != page and query not in by_id[h.doc_id].contents]
            negs = negs[: negatives - random_negatives]
            # the rest (and what BM25 could not fill) are random documents of other pages (bm25 score 0)
            taken = {n.doc_id for n in negs}
            for _ in range(50 * negatives):
                if len(negs) >= negatives:
                    break
                x = docs[rng.randrange(len(docs))]
                if x.doc_id.split("#", 1)[0] != page and x.doc_id not in taken and query not in x.contents:
                    taken.add(x.doc_id)
                    negs.append(ScoredDoc("", x.doc_id, 0.0))
            rows.append(
                {
                    "qid": f"{method}-{d.doc_id}",
                    "query": query,
                    "lang": code,
                    "positive": {"id": d.doc_id, "text": positive},
                    # negatives are formatted like the positive (body text, no title): a title holding the query
                    # would teach "the query's words mean not relevant"
                    "negatives": [
                        {"id": n.doc_id, "text": crop(by_id[n.doc_id].text, len(positive)), "bm25": round(n.score, 4)}
                        for n in negs
                    ],
                }
            )
            if max_queries and len(rows) >= max_queries:
                break
        bm25.close()
    if not rows:
        raise RerankError(
            f"no pseudo-query could be made from {docs_path} with --method {method}",
            hint="ict needs passages of 2+ sentences; title needs titled documents",
        )
    if teacher:
        _teacher_scores(rows, progress)
    with atomic_write(out, overwrite) as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    facts = {
        "source": str(Path(docs_path).resolve()),
        "method": method,
        "lang": code,
        "queries": len(rows),
        "negatives_per_query": negatives,
        "random_negatives": random_negatives,
        "negatives_from": "BM25 top hits over the same collection; the random ones: any document of another page",
        "negatives_cut": "to their first sentences, about the positive's length, when longer",
        "documents": len(docs),
        "skipped_documents": skipped,
        "teacher": "bi-encoder (e5-small)" if teacher else None,
        "seed": seed,
    }
    with atomic_write(f"{out}.json", overwrite=True) as f:
        f.write(json.dumps(facts, indent=1) + "\n")
    return facts


FILTERS = ("answer", "duplicate", "teacher")


def pairs_from_qrels(
    topics: str | os.PathLike,
    qrels: str | os.PathLike,
    index: str | os.PathLike,
    out: str | os.PathLike,
    *,
    lang: str | None = None,
    first_stage: str = "dense",
    depth: int = 20,
    negatives: int = 7,
    answers: str | os.PathLike | None = None,
    teacher: bool = True,
    teacher_margin: float | None = None,
    dev_topics: list | tuple = (),
    max_queries: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    model=None,
) -> dict:
    """Training queries from real relevance data: each topic, its first relevant document as the positive, and
    ``negatives`` hard negatives drawn (at random, kept in rank order) from the top ``depth`` of the first stage
    the reranker will sit on (``first_stage``: bm25 | dense | hybrid | auto, over ``index``), with likely false
    negatives dropped:

    * ``answer``: a document that contains one of the question's answer strings (``answers``: the collection's
      ``answers.*.jsonl``) — it very likely answers the question too;
    * ``duplicate``: a document whose text is a relevant document's;
    * ``teacher`` (with ``teacher_margin``): a document the bi-encoder scores above the positive by more than
      the margin.

    With ``teacher`` (default), the bi-encoder's cosine of every (query, document) — the dense first stage's
    own score, read from the index's stored vectors — is stored as ``teacher``: the residual ranking head
    starts from it and the distillation losses learn from it. ``dev_topics``: dev topic files this data must
    not share a query with (refused if it does). ``model``: the backbone of the index's dense part (default:
    the embedded one). Writes ``out`` (JSONL) and ``out``.json (how)."""
    import numpy as np
    from tqdm import tqdm

    from rerank.collections.splits import check_disjoint, read_answers
    from rerank.collections.topics import read_topics
    from rerank.collections.trec import read_qrels
    from rerank.files import atomic_write, refuse_existing
    from rerank.pipeline import FIRST_STAGES, Pipeline

    if first_stage not in FIRST_STAGES:
        raise RerankError(f"unknown --first-stage {first_stage!r}", hint=f"one of: {', '.join(FIRST_STAGES)}")
    if depth <= negatives:
        raise RerankError(
            f"--depth {depth} leaves no choice of {negatives} negatives",
            hint="about three times the negatives, e.g. --depth 20 --negatives 7",
        )
    refuse_existing(out, overwrite)
    queries = read_topics(topics, lang=lang)
    if max_queries:
        queries = queries[:max_queries]
    checked = check_disjoint([q.text for q in queries], list(dev_topics))
    rel: dict[str, list[str]] = {}
    for r in read_qrels(qrels):
        if r.relevance > 0:
            rel.setdefault(r.query_id, []).append(r.doc_id)
    queries = [q for q in queries if q.query_id in rel]
    if not queries:
        raise RerankError(
            f"no topic of {topics} has a relevant document in {qrels}", hint="are they one collection's?"
        )
    ans = read_answers(answers) if answers else {}
    rng = random.Random(seed)
    counts = dict.fromkeys(FILTERS, 0)
    positive_ranks = []
    rows = []
    with Pipeline(index, first_stage=first_stage, reranker="none", modules=None, dense_model=model) as pipe:
        run = pipe.first_stage_run(queries, depth + len(max(rel.values(), key=len)), progress=progress)
        store = pipe.bm25.docstore
        ids = sorted({d for q in queries for d in [*rel[q.query_id], *(h.doc_id for h in run[q.query_id])]})
        texts = {d: doc.contents for d, doc in store.get_many(ids).items()}
        qv = pipe.dense.encoder.encode([q.text for q in queries], "query", progress=progress) if teacher else None
        vec: dict[str, np.ndarray] = {}

        def cos(qi: int, docs: list[str]) -> list[float]:
            need = [d for d in dict.fromkeys(docs) if d not in vec]
            if need:
                vec.update(zip(need, pipe.dense.vectors(need), strict=True))
            return [float(np.dot(qv[qi], vec[d])) for d in docs]

        pool = store.ids()
        for qi, q in enumerate(tqdm(queries, desc="hard negatives", disable=not progress)):
            pos = [d for d in rel[q.query_id] if d in texts]
            if not pos:
                continue
            hits = [h.doc_id for h in run[q.query_id]]
            positive_ranks.append(hits.index(pos[0]) + 1 if pos[0] in hits else None)
            pos_texts = {" ".join(texts[d].split()).casefold() for d in pos}
            strings = [" ".join(a.split()).casefold() for a in ans.get(q.query_id, []) if len(a.strip()) >= 2]
            keep = []
            for d in [d for d in hits if d not in pos][:depth]:
                t = " ".join(texts[d].split()).casefold()
                if t in pos_texts:
                    counts["duplicate"] += 1
                elif any(a in t for a in strings):
                    counts["answer"] += 1
                else:
                    keep.append(d)
            if teacher and teacher_margin is not None and keep:
                top = cos(qi, [pos[0]])[0]
                kept = [d for d, x in zip(keep, cos(qi, keep), strict=True) if x <= top + teacher_margin]
                counts["teacher"] += len(keep) - len(kept)
                keep = kept
            negs = [keep[i] for i in sorted(rng.sample(range(len(keep)), min(negatives, len(keep))))]
            for _ in range(50 * negatives):  # too few left: random documents of the pool fill the group
                if len(negs) >= negatives:
                    break
                d = pool[rng.randrange(len(pool))]
                if d not in negs and d not in pos:
                    doc = texts.get(d) or store.get(d).contents
                    t = " ".join(doc.split()).casefold()
                    if t not in pos_texts and not any(a in t for a in strings):
                        texts[d] = doc
                        negs.append(d)
            rank = {d: i + 1 for i, d in enumerate(hits)}
            row = {
                "qid": q.query_id,
                "query": q.text,
                "lang": q.lang,
                "positive": {"id": pos[0], "text": texts[pos[0]]},
                "negatives": [{"id": d, "text": texts[d], "rank": rank.get(d)} for d in negs],
                "positive_rank": positive_ranks[-1],
            }
            if teacher:
                row["teacher"] = [round(x, 5) for x in cos(qi, [pos[0], *negs])]
            rows.append(row)
        stage = str(pipe.plan(queries[0].lang or None)) if first_stage == "auto" else first_stage
    if not rows:
        raise RerankError("no training query could be made", hint="do the qrels' documents exist in the index?")
    found = [r for r in positive_ranks if r is not None]
    with atomic_write(out, overwrite) as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    facts = {
        "method": "qrels",
        "topics": _file_fact(topics),
        "qrels": _file_fact(qrels),
        "index": str(Path(index).resolve()),
        "answers": _file_fact(answers) if answers else None,
        "lang": queries[0].lang,
        "queries": len(rows),
        "first_stage": stage,
        "depth": depth,
        "negatives_per_query": negatives,
        "negatives_from": f"{negatives} drawn at random from the {stage} first stage's top {depth} (rank order kept)",
        "filtered": counts,
        "teacher_margin": teacher_margin,
        "positive_in_first_stage_top": {
            "depth": depth,
            "share": round(sum(1 for r in found if r <= depth) / max(1, len(positive_ranks)), 4),
        },
        "positive_first": round(sum(1 for r in found if r == 1) / max(1, len(positive_ranks)), 4),
        "teacher": "bi-encoder cosine from the index's vectors" if teacher else None,
        "dev_topics_checked": {"files": [str(f) for f in dev_topics], "queries": checked},
        "seed": seed,
    }
    with atomic_write(f"{out}.json", overwrite=True) as f:
        f.write(json.dumps(facts, indent=1, ensure_ascii=False) + "\n")
    return facts


def _file_fact(path) -> dict:
    from rerank.training.fit import sha256_file

    p = Path(path)
    return {"path": str(p.resolve()), "sha256": sha256_file(p)}


def _teacher_scores(rows: list[dict], progress: bool) -> None:
    from rerank.scoring.encoder import BiEncoder

    bi = BiEncoder(None)
    pairs = [(r["query"], t) for r in rows for t in [r["positive"]["text"], *(n["text"] for n in r["negatives"])]]
    scores = bi.predict(pairs, progress=progress)
    i = 0
    for r in rows:
        n = 1 + len(r["negatives"])
        r["teacher"] = [round(float(s), 5) for s in scores[i : i + n]]
        i += n


def read_pairs(path: str | os.PathLike, max_queries: int | None = None) -> list[dict]:
    """Training queries from our JSONL, TSV triples (query, positive, negative; grouped by query), or an
    ``ir_datasets`` id with document pairs (e.g. ``msmarco-passage/train/triples-small``) that is already
    downloaded. ``max_queries``: read no more (an ir_datasets triples file can hold 40M pairs)."""
    from rerank.files import json_lines, numbered_lines

    p = Path(path)
    rows: list[dict] = []
    if not p.exists() and (_irds_knows(str(path)) or _looks_like_irds_id(str(path))):
        return _irds_pairs(str(path), max_queries)
    if p.name.endswith((".tsv", ".tsv.gz")):
        by_q: dict[str, dict] = {}
        for lineno, line in numbered_lines(p, "pairs file"):
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) != 3:
                raise RerankError(f"{p}:{lineno}: {len(cols)} columns", hint="query<TAB>positive<TAB>negative")
            q, pos, neg = cols
            new = {
                "qid": f"q{len(by_q)}",
                "query": q,
                "lang": "",
                "positive": {"id": "", "text": pos},
                "negatives": [],
            }
            r = by_q.setdefault(q, new)
            r["negatives"].append({"id": "", "text": neg})
        rows = list(by_q.values())
    else:
        expected = '{"query", "positive": {"text"}, "negatives": [{"text"}, ...]}'
        for lineno, obj in json_lines(p, "pairs file", expected):
            ok = isinstance(obj, dict) and isinstance(obj.get("query"), str) and isinstance(obj.get("positive"), dict)
            if not ok or not isinstance(obj.get("negatives"), list) or not obj["negatives"]:
                raise RerankError(f"{p}:{lineno}: not a training query with negatives", hint=expected)
            rows.append(obj)
    if not rows:
        raise RerankError(f"{p} has no training queries", hint="make some with `rerank train pairs`")
    return rows[:max_queries] if max_queries else rows


def _looks_like_irds_id(text: str) -> bool:
    return bool(re.fullmatch(r"[a-z0-9][\w.-]*(/[\w.-]+)+", text)) and not text.endswith((".jsonl", ".tsv", ".gz"))


def _irds_knows(text: str) -> bool:
    try:
        import ir_datasets
    except ImportError:
        return False
    return text in ir_datasets.registry


def _irds_pairs(dataset_id: str, max_queries: int | None) -> list[dict]:
    """Training queries from an ir_datasets dataset's document pairs (query, relevant doc, other doc),
    grouped by query in file order, texts from its queries and docs store. Nothing is downloaded: a
    dataset not on this machine is one clear error."""
    try:
        import ir_datasets
    except ImportError:
        raise RerankError(
            f"{dataset_id} is not a file; read as an ir_datasets id it needs the ir_datasets package",
            hint="pip install 'rerank[irds]' (or ir_datasets), with the dataset downloaded",
        ) from None
    try:
        ds = ir_datasets.load(dataset_id)
    except KeyError:
        raise RerankError(
            f"{dataset_id}: no such file, nor an ir_datasets id", hint="give a pairs file or a known ir_datasets id"
        ) from None
    if not (ds.has_docpairs() and ds.has_queries() and ds.has_docs()):
        raise RerankError(
            f"{dataset_id} has no document pairs (query, positive, negative)",
            hint="use a training-triples id such as msmarco-passage/train/triples-small",
        )

    def text(record) -> str:
        return record.default_text() if hasattr(record, "default_text") else record.text

    try:
        groups: dict[str, list[tuple[str, str]]] = {}
        for pair in ds.docpairs_iter():
            if pair.query_id not in groups and max_queries and len(groups) >= max_queries:
                break
            groups.setdefault(pair.query_id, []).append((pair.doc_id_a, pair.doc_id_b))
        wanted = set(groups)
        queries = {q.query_id: text(q) for q in ds.queries_iter() if q.query_id in wanted}
        ids = {d for pairs in groups.values() for pair in pairs for d in pair}
        docs = {i: text(d) for i, d in ds.docs_store().get_many(ids).items()}
    except (OSError, ConnectionError, RuntimeError) as e:  # requests' errors are OSErrors
        raise RerankError(
            f"ir_datasets could not read {dataset_id} here: {' '.join(str(e).split())[:160]}",
            hint="download it on a machine with internet (ir_datasets fetches on first use), then copy "
            "~/.ir_datasets (or $IR_DATASETS_HOME) here; nothing is downloaded at training time",
        ) from e
    rows = []
    for qid, pairs in groups.items():
        positive = pairs[0][0]
        negatives = list(dict.fromkeys(b for a, b in pairs if a == positive and b in docs))
        if qid in queries and positive in docs and negatives:
            rows.append(
                {
                    "qid": qid,
                    "query": queries[qid],
                    "lang": "",
                    "positive": {"id": positive, "text": docs[positive]},
                    "negatives": [{"id": n, "text": docs[n]} for n in negatives],
                }
            )
    if not rows:
        raise RerankError(f"{dataset_id} gave no training queries", hint="is it a triples dataset?")
    return rows
