"""Relevance collections made from training sources, with a train/dev split cut by hash *before* anything is
trained, and the check that keeps a dev set out of training.

A collection folder::

    docs.<lang>.jsonl            the documents the dev topics are searched over (index it with rerank index)
    docs.train.<lang>.jsonl      only when training searches another pool (e.g. other pages of a manual)
    topics.<split>.<lang>.tsv    qid<TAB>text, split = train | dev, per query language
    qrels.<split>.<lang>.txt     TREC qrels
    answers.<split>.<lang>.jsonl {"qid", "answers"} (question data: answer strings, to drop false negatives)
    collection.json              what it was made from, the split rule, counts

The split is a function of a *group key* (e.g. a question's passage, a translation's English sentence, a
manual's page): ``sha1(salt:key)`` below ``dev_fraction`` goes to dev, so topics that share a positive never
straddle the split, and the same source always splits the same way. A training topic whose text (case- and
space-folded) is also a dev topic's is dropped from training, and counted.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from rerank.errors import RerankError

SPLITS = ("train", "dev")
SALT = "rerank-split-v1"
DEV_FRACTION = 0.05  # the share of groups every builder sends to dev unless told otherwise


@dataclass(frozen=True)
class Split:
    dev_fraction: float = 0.05
    key: str = ""  # what the group key is, in words (recorded)
    salt: str = SALT


def is_dev(group: str, dev_fraction: float, salt: str = SALT) -> bool:
    h = int(hashlib.sha1(f"{salt}:{group}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return h < dev_fraction


def norm_query(text: str) -> str:
    """The form in which two queries count as the same: case-folded, spaces collapsed."""
    return " ".join(text.casefold().split())


def write_collection(
    out: str | os.PathLike,
    *,
    docs: Sequence,
    doc_lang: str,
    topics: Iterable[tuple[str, str, str, str]],
    qrels: Iterable[tuple[str, str]],
    split: Split,
    group_of: Callable | None = None,
    train_docs: Sequence | None = None,
    answers: dict | None = None,
    facts: dict | None = None,
    overwrite: bool = False,
) -> dict:
    """Write a collection folder atomically. ``topics``: (qid, text, lang, group key); ``qrels``: (qid, doc id),
    relevance 1. Returns the facts written to ``collection.json``."""
    from rerank.collections.docs import write_jsonl_docs
    from rerank.collections.topics import write_tsv_topics
    from rerank.collections.trec import write_qrels
    from rerank.files import atomic_dir
    from rerank.types import Qrel, Query

    if not 0 < split.dev_fraction < 1:
        raise RerankError(f"dev fraction {split.dev_fraction} is not between 0 and 1", hint="e.g. 0.05")
    topics = list(topics)
    group_of = group_of or (lambda t: t[3])
    rel: dict[str, list[str]] = {}
    for qid, doc_id in qrels:
        rel.setdefault(qid, []).append(doc_id)
    parts: dict[tuple[str, str], list] = {}
    for t in topics:
        parts.setdefault(
            ("dev" if is_dev(str(group_of(t)), split.dev_fraction, split.salt) else "train", t[2]), []
        ).append(t)
    dev_texts = {norm_query(t[1]) for (s, _), ts in parts.items() if s == "dev" for t in ts}
    dropped = 0
    for (s, lang), ts in list(parts.items()):
        if s == "train":
            kept = [t for t in ts if norm_query(t[1]) not in dev_texts]
            dropped += len(ts) - len(kept)
            parts[(s, lang)] = kept
    counts: dict[str, dict[str, int]] = {}
    with atomic_dir(out, overwrite, marker="collection.json") as tmp:
        write_jsonl_docs(docs, tmp / f"docs.{doc_lang}.jsonl")
        if train_docs is not None:
            write_jsonl_docs(train_docs, tmp / f"docs.train.{doc_lang}.jsonl")
        for (s, lang), ts in sorted(parts.items()):
            if not ts:
                continue
            write_tsv_topics([Query(q, text, lang) for q, text, _, _ in ts], tmp / f"topics.{s}.{lang}.tsv")
            write_qrels([Qrel(q, d, 1) for q, *_ in ts for d in rel.get(q, [])], tmp / f"qrels.{s}.{lang}.txt")
            if answers:
                with open(tmp / f"answers.{s}.{lang}.jsonl", "w", encoding="utf-8") as f:
                    for q, *_ in ts:
                        if q in answers:
                            f.write(json.dumps({"qid": q, "answers": answers[q]}, ensure_ascii=False) + "\n")
            counts.setdefault(s, {})[lang] = len(ts)
        info = {
            **(facts or {}),
            "documents": len(docs),
            "train_documents": None if train_docs is None else len(train_docs),
            "doc_lang": doc_lang,
            "topics": counts,
            "split": asdict(split),
            "train_topics_dropped_as_dev_duplicates": dropped,
        }
        (tmp / "collection.json").write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return info


def check_disjoint(train: Iterable[str], dev_files: Sequence[str | os.PathLike], what: str = "training") -> int:
    """Refuse when a dev topic file shares a query with the ``train`` query texts (case- and space-folded):
    a dev set must never be trained on. Returns how many dev queries were checked."""
    from rerank.collections.topics import read_topics

    seen = {norm_query(t) for t in train}
    n = 0
    for f in dev_files:
        for q in read_topics(f):
            n += 1
            if norm_query(q.text) in seen:
                raise RerankError(
                    f"{f}: dev query {q.query_id} ({q.text[:60]!r}) is also a {what} query",
                    hint="a dev set must not share queries with the training data: cut the split before training "
                    "(rerank collections build-qa / build-parallel do) or drop that query",
                )
    return n


def read_answers(path: str | os.PathLike) -> dict[str, list[str]]:
    """``answers.*.jsonl``: qid → answer strings (strict, file:line)."""
    from rerank.files import json_lines

    out = {}
    expected = '{"qid": "...", "answers": ["...", ...]}'
    for lineno, obj in json_lines(path, "answers file", expected):
        ok = isinstance(obj, dict) and isinstance(obj.get("qid"), str) and isinstance(obj.get("answers"), list)
        if not ok or not all(isinstance(a, str) for a in obj["answers"]):
            raise RerankError(f"{path}:{lineno}: not a question's answers", hint=f"expected {expected}")
        out[obj["qid"]] = obj["answers"]
    return out


def collection_file(folder: str | os.PathLike) -> Path:
    return Path(folder) / "collection.json"
