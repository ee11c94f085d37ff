"""Question–passage relevance data: Natural Questions-shaped JSON lines (QED's ``question_text`` /
``paragraph_text``), SQuAD-shaped JSON (``data[].paragraphs[].qas[]``), or plain JSON lines with
``question`` and ``passage`` (or ``context``).

Readers are strict: a record without a question or a passage is reported with its file and line (or,
for SQuAD's single JSON document, its path inside the document), never skipped in silence.

:func:`build_qa_collection` turns the records into a relevance collection with a train/dev split cut by
hash before anything is trained (:mod:`rerank.collections.splits`): the passages are the documents, each
question a topic, its passage the one relevant document, and its answer strings kept beside it (a
passage of another question that contains the answer is likely relevant too: the pairs builder drops such
negatives).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rerank.errors import RerankError, at_line
from rerank.files import json_lines

_EXPECTED = (
    'a JSON object with "question_text" and "paragraph_text" (Natural Questions / QED), or "question" and '
    '"passage" (or "context")'
)
_SUFFIXES = (".jsonl", ".jsonlines", ".json", ".jsonl.gz", ".jsonlines.gz", ".json.gz")


@dataclass(frozen=True)
class QARecord:
    """One question with the passage that answers it."""

    qid: str
    question: str
    passage: str
    title: str = ""
    answers: tuple[str, ...] = ()


def qa_files(path: str | os.PathLike) -> list[Path]:
    """``path`` itself, or the JSON(L) files directly inside a folder (sorted by name)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.name.endswith(_SUFFIXES))
        if not files:
            raise RerankError(f"{p} holds no .jsonl/.jsonlines/.json files", hint="give the QED or SQuAD files")
        return files
    if not p.exists():
        raise RerankError(f"question–passage file not found: {p}", hint="check the path")
    return [p]


def read_qa(path: str | os.PathLike) -> Iterator[QARecord]:
    """Every record of a file or of the files in a folder; ids must be unique across them."""
    seen: set[str] = set()
    for f in qa_files(path):
        records = _read_squad(f) if _is_squad(f) else _read_jsonl(f)
        for where, rec in records:
            if rec.qid in seen:
                raise RerankError(f"{where}: question id {rec.qid} appears twice", hint="each question id once")
            seen.add(rec.qid)
            yield rec


def _is_squad(path: Path) -> bool:
    """A ``.json`` file that parses as one JSON object with ``data`` is SQuAD-shaped; anything else is read as
    JSON lines (whose errors then name their line)."""
    if not path.name.endswith((".json", ".json.gz")):
        return False
    from rerank.files import open_text

    try:
        with open_text(path, "question–passage file") as f:
            doc = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(doc, dict) and "data" in doc


def _text(obj: dict, *keys: str) -> str | None:
    for k in keys:
        v = obj.get(k)
        if isinstance(v, str) and v.strip():
            return " ".join(v.split())
    return None


def _answers(value) -> tuple[str, ...]:
    """Answer strings from a string, a list of strings, or SQuAD's ``[{"text": …}]``."""
    if isinstance(value, str):
        value = [value]
    out = []
    for a in value if isinstance(value, list) else []:
        t = a.get("text") if isinstance(a, dict) else a
        if isinstance(t, str) and t.strip():
            out.append(" ".join(t.split()))
    return tuple(dict.fromkeys(out))


def _read_jsonl(path: Path) -> Iterator[tuple[str, QARecord]]:
    n = 0
    for lineno, obj in json_lines(path, "question–passage file", _EXPECTED):
        if not isinstance(obj, dict):
            raise at_line(path, lineno, f"a JSON {type(obj).__name__}, not an object", _EXPECTED)
        question = _text(obj, "question_text", "question", "query")
        passage = _text(obj, "paragraph_text", "passage", "context", "positive")
        if question is None or passage is None:
            missing = "question" if question is None else "passage"
            raise at_line(path, lineno, f"no {missing} text", _EXPECTED)
        qid = obj.get("example_id", obj.get("id", obj.get("qid")))
        if qid is None or not str(qid).strip() or any(c.isspace() for c in str(qid)):
            raise at_line(path, lineno, f"bad or missing question id {qid!r}", '"example_id" or "id" without spaces')
        answers = _answers(obj.get("answer_text", obj.get("answers", obj.get("answer", []))))
        title = _text(obj, "title_text", "title") or ""
        n += 1
        yield f"{path}:{lineno}", QARecord(str(qid), question, passage, title, answers)
    if not n:
        raise RerankError(f"{path} holds no records", hint=f"expected lines of {_EXPECTED}")


def _read_squad(path: Path) -> Iterator[tuple[str, QARecord]]:
    from rerank.files import open_text

    try:
        with open_text(path, "question–passage file") as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise RerankError(f"{path}:{e.lineno}: not valid JSON ({e.msg})", hint="a SQuAD-shaped JSON file") from None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise RerankError(f'{path}: no top-level "data" list', hint='SQuAD\'s {"data": [{"paragraphs": …}]}')
    n = 0
    for i, article in enumerate(data):
        title = _text(article, "title") or "" if isinstance(article, dict) else ""
        paras = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paras, list):
            raise RerankError(f'{path}: data[{i}] has no "paragraphs" list', hint="SQuAD's layout")
        for j, para in enumerate(paras):
            where = f"{path}: data[{i}].paragraphs[{j}]"
            context = _text(para, "context") if isinstance(para, dict) else None
            qas = para.get("qas") if isinstance(para, dict) else None
            if context is None or not isinstance(qas, list):
                raise RerankError(f'{where}: no "context" or no "qas" list', hint="SQuAD's layout")
            for k, qa in enumerate(qas):
                w = f"{where}.qas[{k}]"
                if not isinstance(qa, dict) or _text(qa, "question") is None or qa.get("id") is None:
                    raise RerankError(f'{w}: a question needs "id" and "question"', hint="SQuAD's layout")
                if qa.get("is_impossible"):
                    continue  # SQuAD 2.0: the paragraph does not answer it
                n += 1
                yield w, QARecord(str(qa["id"]), _text(qa, "question"), context, title, _answers(qa.get("answers")))
    if not n:
        raise RerankError(f"{path} holds no answerable questions", hint="SQuAD-shaped data with qas")


def build_qa_collection(
    records: Iterable[QARecord],
    out: str | os.PathLike,
    *,
    lang: str = "en",
    dev_fraction: float = 0.05,
    name: str = "qa",
    source: str = "",
    overwrite: bool = False,
) -> dict:
    """Write a relevance collection from question–passage records (see :mod:`rerank.collections.splits`).

    The documents are the distinct passages (title + text); questions are split into train and dev by a
    hash of their passage, so the questions of one passage never straddle the split. Returns the facts
    written to ``collection.json``."""
    import hashlib

    from rerank import languages
    from rerank.collections.splits import Split, write_collection
    from rerank.types import Document

    code = languages.code(lang)
    docs: dict[str, Document] = {}
    by_text: dict[str, str] = {}
    topics, qrels, answers = [], [], {}
    for r in records:
        key = r.passage
        doc_id = by_text.get(key)
        if doc_id is None:
            doc_id = f"{name}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"
            by_text[key] = doc_id
            docs[doc_id] = Document(doc_id, r.passage, r.title)
        topics.append((f"{name}-q{r.qid}", r.question, code, doc_id))
        qrels.append((f"{name}-q{r.qid}", doc_id))
        if r.answers:
            answers[f"{name}-q{r.qid}"] = list(r.answers)
    if not topics:
        raise RerankError("no question–passage records were read", hint="give QED, NQ or SQuAD-shaped data")
    split = Split(dev_fraction=dev_fraction, key="the passage's id (questions of one passage stay together)")
    return write_collection(
        out,
        docs=list(docs.values()),
        doc_lang=code,
        topics=topics,
        qrels=qrels,
        group_of=lambda t: t[3],
        split=split,
        answers=answers,
        overwrite=overwrite,
        facts={"kind": "questions over passages", "source": source, "name": name},
    )
