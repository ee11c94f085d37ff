"""Document collections: JSONL (Pyserini's ``id``/``contents`` or HC4's ``id``/``title``/``text``) and
TREC/CLEF SGML (``<DOC><DOCNO>…</DOCNO>…<TEXT>…</TEXT></DOC>``).

Readers are strict: a broken line or record is reported with file, line number and what was
expected; duplicate document ids are refused (they would silently shadow each other in an index).
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from rerank.errors import RerankError, at_line
from rerank.files import atomic_write, check_readable, json_lines, numbered_lines
from rerank.types import Document

_ID_KEYS = ("id", "doc_id", "docid", "_id")
_SPACE = re.compile(r"\s")
_JSONL_EXPECTED = 'a JSON object with "id" and "contents", or "id", "title" and "text"'


def _doc_from_json(obj: object, path: Path, lineno: int) -> Document:
    if not isinstance(obj, dict):
        raise at_line(path, lineno, f"a JSON {type(obj).__name__}, not an object", _JSONL_EXPECTED)
    doc_id = obj["id"] if "id" in obj else next((obj[k] for k in _ID_KEYS if k in obj), None)
    if doc_id is None or (isinstance(doc_id, str) and not doc_id.strip()):
        raise at_line(path, lineno, "document without an id", _JSONL_EXPECTED)
    if not isinstance(doc_id, str | int) or isinstance(doc_id, bool):
        raise at_line(path, lineno, f"document id is a {type(doc_id).__name__}", "a string or integer id")
    if "contents" in obj:
        text, title = obj["contents"], obj.get("title", "")
    elif "text" in obj:
        text, title = obj["text"], obj.get("title", "")
    else:
        raise at_line(path, lineno, f'document {doc_id} has neither "contents" nor "text"', _JSONL_EXPECTED)
    if not isinstance(text, str) or not isinstance(title, str | None):
        raise at_line(path, lineno, f"document {doc_id}: text and title must be strings", _JSONL_EXPECTED)
    doc_id = str(doc_id)
    if _SPACE.search(doc_id):
        raise at_line(path, lineno, f"document id {doc_id!r} contains whitespace", "ids without spaces (TREC runs)")
    if not doc_id.isprintable():
        raise at_line(path, lineno, f"document id {doc_id[:40]!r} has a control character", "printable ids")
    return Document(doc_id, text, title or "")


def read_jsonl_docs(path: str | os.PathLike) -> Iterator[Document]:
    """Stream documents from a JSONL file (one object a line; blank lines ignored; ``.gz`` ok).
    A missing file is reported at once; a malformed line when the stream reaches it."""
    return _iter_jsonl(check_readable(path, "documents file"))


def _iter_jsonl(p: Path) -> Iterator[Document]:
    seen: set[str] = set()
    for lineno, obj in json_lines(p, "documents file", _JSONL_EXPECTED):
        doc = _doc_from_json(obj, p, lineno)
        if doc.doc_id in seen:
            raise at_line(p, lineno, f"duplicate document id {doc.doc_id!r}", "each id once")
        seen.add(doc.doc_id)
        yield doc


def write_jsonl_docs(docs: Iterable[Document], path: str | os.PathLike, overwrite: bool = False) -> int:
    """Write documents as JSONL (``id``, ``title``, ``text`` when titled, else ``id``, ``contents``)."""
    n = 0
    with atomic_write(path, overwrite) as f:
        for d in docs:
            rec = (
                {"id": d.doc_id, "title": d.title, "text": d.text} if d.title else {"id": d.doc_id, "contents": d.text}
            )
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


#: SGML fields whose content is the document text, in the order they are joined. These cover TREC
#: (TEXT, HEADLINE, HL, HEAD) and the CLEF-2003 collections (e.g. LA Times TEXT/HEADLINE, Glasgow
#: Herald TEXT/HEADLINE, Frankfurter Rundschau/Spiegel TEXT/TITLE, SDA TX/TI/LD, Izvestia TEXT/TITLE).
SGML_TITLE_TAGS = ("HEADLINE", "HL", "HEAD", "TITLE", "TI")
SGML_TEXT_TAGS = ("LD", "TEXT", "TX", "TE", "LEAD")
_SGML_EXPECTED = "<DOC> … <DOCNO>id</DOCNO> … </DOC>"
_TAG = re.compile(r"<(/?)([A-Za-z][\w.-]*)[^>]*>")


def _sgml_record(lines: list[str], start: int, path: Path) -> Document:
    body = "\n".join(lines)
    m = re.search(r"<DOCNO>\s*(.*?)\s*</DOCNO>", body, flags=re.S | re.I)
    if not m or not m.group(1):
        raise at_line(path, start, "<DOC> without a <DOCNO>…</DOCNO>", _SGML_EXPECTED)
    doc_id = m.group(1)
    if _SPACE.search(doc_id):
        raise at_line(path, start, f"DOCNO {doc_id!r} contains whitespace", "one id without spaces")
    if not doc_id.isprintable():
        raise at_line(path, start, f"DOCNO {doc_id[:40]!r} has a control character", "printable ids")

    def fields(tags: tuple[str, ...]) -> list[str]:
        out = []
        for tag in tags:
            opened = len(re.findall(rf"<{tag}\b[^>]*>", body, flags=re.I))
            if opened != len(re.findall(rf"</{tag}>", body, flags=re.I)):
                raise at_line(path, start, f"<{tag}> of document {doc_id} is not closed", f"<{tag}>…</{tag}>")
            for fm in re.finditer(rf"<{tag}\b[^>]*>(.*?)</{tag}>", body, flags=re.S | re.I):
                text = html.unescape(_TAG.sub(" ", fm.group(1)))
                text = " ".join(text.split())
                if text:
                    out.append(text)
        return out

    return Document(doc_id, "\n".join(fields(SGML_TEXT_TAGS)), " ".join(fields(SGML_TITLE_TAGS)))


def read_sgml_docs(path: str | os.PathLike, encoding: str = "utf-8") -> Iterator[Document]:
    """Stream documents from a TREC/CLEF SGML file (several ``<DOC>`` records; ``.gz`` ok). CLEF's
    collections are ISO-8859-1: pass ``encoding="latin-1"`` for them."""
    return _iter_sgml(check_readable(path, "documents file"), encoding)


def _iter_sgml(p: Path, encoding: str = "utf-8") -> Iterator[Document]:
    buf: list[str] | None = None
    start = 0
    seen: set[str] = set()
    for lineno, line in numbered_lines(p, "documents file", encoding):
        stripped = line.strip()
        opens = re.match(r"<DOC>", stripped, flags=re.I) is not None
        if buf is None:
            if not stripped:
                continue
            if not opens:
                raise at_line(p, lineno, f"text outside a document: {stripped[:40]!r}", "<DOC> to open a record")
            buf, start = [], lineno
        elif opens:
            raise at_line(p, lineno, f"<DOC> opened while the one from line {start} is still open", "</DOC> first")
        buf.append(line)
        if re.search(r"</DOC>\s*$", stripped, flags=re.I):  # may close on the line that opened it
            doc = _sgml_record(buf, start, p)
            buf = None
            if doc.doc_id in seen:
                raise at_line(p, start, f"duplicate DOCNO {doc.doc_id!r}", "each id once")
            seen.add(doc.doc_id)
            yield doc
    if buf is not None:
        raise at_line(p, start, "<DOC> never closed before the end of the file", "</DOC>")


def read_docs(path: str | os.PathLike, encoding: str = "utf-8") -> Iterator[Document]:
    """Read a collection in whichever supported format ``path`` holds (decided by name, then content).
    ``encoding`` applies to SGML (JSON is UTF-8)."""
    p = check_readable(path, "documents file")
    name = p.name.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return read_jsonl_docs(p)
    if name.endswith((".sgml", ".sgm", ".xml", ".trec")):
        return read_sgml_docs(p, encoding)
    for _, line in numbered_lines(p, "documents file", encoding):
        if line.strip():
            first = line.strip()
            break
    else:
        raise RerankError(f"documents file is empty: {p}", hint="give a JSONL or SGML file with documents")
    if first.startswith("{"):
        return read_jsonl_docs(p)
    if first.upper().startswith("<DOC"):
        return read_sgml_docs(p, encoding)
    raise RerankError(
        f"cannot tell the format of {p}: it starts with {first[:30]!r}",
        hint="use JSONL (one JSON object a line) or TREC/CLEF SGML (<DOC><DOCNO>…)",
    )
