"""Topics: TSV (``qid<TAB>text``, optionally ``<TAB>language``), TREC ``<top>`` (title/desc/narr), CLEF SGML
(``<EN-title>``, any language tag) and HC4 JSONL (``topic_id`` + per-language ``topics`` list).

Every reader returns :class:`~rerank.types.Query` records whose ``text`` is the field asked for
(``title`` by default; ``desc``, ``title+desc``) and keeps the other fields beside it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from rerank import languages
from rerank.errors import RerankError, at_line
from rerank.files import atomic_write, json_lines, numbered_lines
from rerank.types import Query

FIELDS = ("title", "desc", "title+desc")


def _check_field(field: str) -> str:
    if field not in FIELDS:
        raise RerankError(f"unknown topic field {field!r}", hint=f"use one of: {', '.join(FIELDS)}")
    return field


def _text_of(title: str, desc: str, field: str) -> str:
    if field == "title":
        return title
    if field == "desc":
        return desc
    return f"{title} {desc}".strip()


def _lang(lang: str | None) -> str:
    return languages.code(lang) if lang else ""


def _finish(queries: list[Query], path: Path, field: str) -> list[Query]:
    if not queries:
        raise RerankError(f"no topics found in {path}", hint="check the file's format (tsv, trec, clef or hc4)")
    for q in queries:
        if not q.text.strip():
            raise RerankError(
                f"{path}: topic {q.query_id} has an empty {field}", hint="fill it or pick another --field"
            )
    return queries


# ----------------------------------------------------------------------------------------------- TSV


def read_tsv_topics(path: str | os.PathLike, lang: str | None = None) -> list[Query]:
    """``qid<TAB>text`` a line, or ``qid<TAB>text<TAB>language`` (ISO 639 code or name) when queries come in
    several languages — the column wins over ``lang``, which serves lines without one; blank lines ignored;
    ids must be unique."""
    p = Path(path)
    out: list[Query] = []
    seen: set[str] = set()
    default = _lang(lang)
    for lineno, line in numbered_lines(p, "topics file"):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) not in (2, 3):
            raise at_line(p, lineno, f"{len(parts)} tab-separated fields", "qid<TAB>query text[<TAB>language]")
        code = default
        if len(parts) == 3:
            try:
                code = languages.code(parts[2].strip())
            except RerankError as e:
                raise at_line(p, lineno, str(e), "a language code in the third column, e.g. ky") from None
        qid, text = parts[0].strip(), parts[1].strip()
        if not qid or any(c.isspace() for c in qid):
            raise at_line(p, lineno, f"bad query id {qid!r}", "a non-empty id without spaces")
        if not text:
            raise at_line(p, lineno, f"query {qid} has no text", "qid<TAB>query text")
        if qid in seen:
            raise at_line(p, lineno, f"duplicate query id {qid!r}", "each id once")
        seen.add(qid)
        out.append(Query(qid, text, code))
    return _finish(out, p, "title")


def write_tsv_topics(queries: Iterable[Query], path: str | os.PathLike, overwrite: bool = False) -> int:
    n = 0
    with atomic_write(path, overwrite) as f:
        for q in queries:
            text = " ".join(q.text.split())
            if not text:
                raise RerankError(f"query {q.query_id} has no text", hint="drop it or give it text")
            f.write(f"{q.query_id}\t{text}\n")
            n += 1
    return n


# ---------------------------------------------------------------------------------- TREC and CLEF SGML

_TOPIC_TAG = re.compile(r"<\s*(/?)\s*(?:([A-Za-z]{2,3})-)?(num|title|desc|narr)\s*>", re.I)
_PREFIXES = {
    "num": re.compile(r"^(number|topic)\s*:\s*", re.I),
    "title": re.compile(r"^(title|topic)\s*:\s*", re.I),
    "desc": re.compile(r"^description\s*:\s*", re.I),
    "narr": re.compile(r"^narrative\s*:\s*", re.I),
}
_SGML_EXPECTED = "<top> <num>…</num> <title>…</title> (or <XX-title>) … </top>"


def _parse_top(block: list[tuple[int, str]], path: Path, field: str, lang: str | None) -> Query:
    start = block[0][0]
    text = "\n".join(line for _, line in block)
    parts: dict[str, str] = {}
    tag_langs: set[str] = set()
    matches = list(_TOPIC_TAG.finditer(text))
    for i, m in enumerate(matches):
        if m.group(1):  # closing tag
            continue
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        value = re.sub(r"</?top>", " ", text[m.end() : end], flags=re.I)
        name = m.group(3).lower()
        value = _PREFIXES[name].sub("", " ".join(value.split()))
        if m.group(2):
            tag_langs.add(m.group(2))
        if name in parts and parts[name]:
            continue  # first occurrence wins (e.g. a CLEF file carrying two languages)
        parts[name] = value
    if not parts.get("num"):
        raise at_line(path, start, "topic without a <num>", _SGML_EXPECTED)
    qid = parts["num"].split()[0]
    if "title" not in parts:
        raise at_line(path, start, f"topic {qid} has no <title>", _SGML_EXPECTED)
    if lang:
        code = languages.code(lang)
    elif len(tag_langs) == 1:
        code = languages.code(tag_langs.pop())
    else:
        code = ""
    title, desc = parts.get("title", ""), parts.get("desc", "")
    return Query(qid, _text_of(title, desc, field), code, desc, parts.get("narr", ""))


def read_sgml_topics(path: str | os.PathLike, field: str = "title", lang: str | None = None) -> list[Query]:
    """TREC ``<top>`` topics and CLEF topics (``<EN-title>``, ``<DE-desc>``…); the language of a CLEF
    file is read from its tags unless ``lang`` is given."""
    _check_field(field)
    p = Path(path)
    out: list[Query] = []
    seen: set[str] = set()
    block: list[tuple[int, str]] | None = None
    for lineno, line in numbered_lines(p, "topics file"):
        low = line.strip().lower()
        if block is None:
            if not low:
                continue
            if low.startswith("<top>"):
                block = [(lineno, line)]
                if "</top>" not in low:
                    continue
            else:
                raise at_line(p, lineno, f"text outside a topic: {line.strip()[:40]!r}", "<top> to open a topic")
        else:
            if low.startswith("<top>"):
                raise at_line(p, lineno, f"<top> opened while the topic from line {block[0][0]} is open", "</top>")
            block.append((lineno, line))
        if "</top>" in low:
            q = _parse_top(block, p, field, lang)
            if q.query_id in seen:
                raise at_line(p, block[0][0], f"duplicate topic number {q.query_id!r}", "each number once")
            seen.add(q.query_id)
            out.append(q)
            block = None
    if block is not None:
        raise at_line(p, block[0][0], "<top> never closed before the end of the file", "</top>")
    return _finish(out, p, field)


# ------------------------------------------------------------------------------------------- HC4 JSONL

_HC4_EXPECTED = 'a JSON object with "topic_id" and "topics": [{"lang", "source", "topic_title", "topic_description"}]'


def read_hc4_topics(
    path: str | os.PathLike, lang: str = "en", field: str = "title", source: str = "human translation"
) -> list[Query]:
    """HC4 topics: one JSON object a line. ``lang`` picks the translation (English is the ``original``);
    ``source`` prefers human or machine translations for other languages."""
    _check_field(field)
    p = Path(path)
    code = languages.resolve(lang)
    out: list[Query] = []
    seen: set[str] = set()
    missing: list[str] = []
    for lineno, obj in json_lines(p, "topics file", _HC4_EXPECTED):
        if not isinstance(obj, dict) or "topic_id" not in obj or not isinstance(obj.get("topics"), list):
            raise at_line(p, lineno, "not an HC4 topic record", _HC4_EXPECTED)
        qid = str(obj["topic_id"])
        candidates = []
        for t in obj["topics"]:
            if not isinstance(t, dict) or "lang" not in t:
                raise at_line(p, lineno, f"topic {qid}: a translation without a lang", _HC4_EXPECTED)
            try:
                tcode = languages.code(str(t["lang"]))
            except RerankError:
                continue
            if tcode == code.code:
                rank = 0 if t.get("source", "original") in ("original", source) else 1
                candidates.append((rank, t))
        if not candidates:
            missing.append(qid)
            continue
        t = min(candidates, key=lambda c: c[0])[1]
        title, desc = str(t.get("topic_title", "")).strip(), str(t.get("topic_description", "")).strip()
        narr = obj.get("narratives", {})
        narr_text = json.dumps(narr, ensure_ascii=False) if narr else ""
        if qid in seen:
            raise at_line(p, lineno, f"duplicate topic_id {qid!r}", "each id once")
        seen.add(qid)
        out.append(Query(qid, _text_of(title, desc, field), code.code, desc, narr_text))
    if not out and missing:
        raise RerankError(f"{p}: no topic has a {code.name} ({code.code}) version", hint="pick another --lang")
    return _finish(out, p, field)


# -------------------------------------------------------------------------------------------- dispatch

TOPIC_FORMATS = ("auto", "tsv", "trec", "clef", "hc4")


def read_topics(
    path: str | os.PathLike, fmt: str = "auto", lang: str | None = None, field: str = "title"
) -> list[Query]:
    """Read topics in any supported format; ``auto`` decides by file name, then by content."""
    if fmt not in TOPIC_FORMATS:
        raise RerankError(f"unknown topics format {fmt!r}", hint=f"use one of: {', '.join(TOPIC_FORMATS)}")
    p = Path(path)
    if fmt == "auto":
        first = ""
        for _, line in numbered_lines(p, "topics file"):
            if line.strip():
                first = line.strip()
                break
        if not first:
            raise RerankError(f"topics file is empty: {p}", hint="give a file with at least one topic")
        if first.startswith("{"):
            fmt = "hc4"
        elif first.lower().startswith("<top"):
            fmt = "trec"
        else:
            fmt = "tsv"
    if fmt == "tsv":
        return read_tsv_topics(p, lang)
    if fmt in ("trec", "clef"):
        return read_sgml_topics(p, field, lang)
    return read_hc4_topics(p, lang or "en", field)
