"""Training text from LibreOffice's help (Debian ``libreoffice-help-<lang>``, MPL-2.0): one document per
section of a help page — ``title`` = "page title: section heading", ``text`` = the section's paragraphs.

It is *training* data (for `rerank train pairs` and language modules), kept apart from the bundled
evaluation collection (UDHR): nothing in it is a query or document of an evaluation. Fetched at
set-up time with ``apt-get download libreoffice-help-en-us`` and ``dpkg -x`` (see the Makefile), read
in place, never committed.
"""

from __future__ import annotations

import os
from html.parser import HTMLParser
from pathlib import Path

from rerank.errors import RerankError
from rerank.types import Document

_VOID = {"br", "img", "meta", "link", "input", "hr", "wbr", "source", "area", "base", "col", "embed", "param"}


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth_display = None  # depth of the DisplayArea element
        self.depth = 0
        self.hidden_at: int | None = None
        self.cur: list[str] | None = None
        self.cur_tag = ""
        self.blocks: list[tuple[str, str]] = []  # (tag, text) in order: h1/h2/h3/p

    def handle_starttag(self, tag, attrs):
        if tag in _VOID:
            return
        self.depth += 1
        a = dict(attrs)
        if a.get("id") == "DisplayArea":
            self.depth_display = self.depth
        if self.depth_display is None:
            return
        if self.hidden_at is None and ("hidden" in a or tag in ("script", "style")):
            self.hidden_at = self.depth
        if tag in ("h1", "h2", "h3", "p") and self.hidden_at is None:
            self.cur, self.cur_tag = [], tag

    def handle_endtag(self, tag):
        if tag in _VOID:
            return
        if self.hidden_at is not None and self.depth == self.hidden_at:
            self.hidden_at = None
        if self.cur is not None and tag == self.cur_tag:
            text = " ".join("".join(self.cur).split())
            if text:
                self.blocks.append((tag, text))
            self.cur = None
        if self.depth_display is not None and self.depth == self.depth_display:
            self.depth_display = None
        self.depth -= 1

    def handle_data(self, data):
        if self.cur is not None and self.hidden_at is None:
            self.cur.append(data)


def page_documents(path: Path, rel: str, min_chars: int = 80) -> list[Document]:
    p = _Page()
    p.feed(path.read_text(encoding="utf-8", errors="replace"))
    title, section, paras, docs = "", "", [], []

    def flush():
        text = " ".join(paras)
        if len(text) >= min_chars:
            head = f"{title}: {section}" if section and section != title else title
            docs.append(Document(f"{rel}#{len(docs)}", text, head))

    for tag, text in p.blocks:
        if tag == "h1":
            flush()
            title, section, paras = text, "", []
        elif tag in ("h2", "h3"):
            flush()
            section, paras = text, []
        else:
            paras.append(text)
    flush()
    return docs


def build(help_root: str | os.PathLike, out: str | os.PathLike, lang: str = "en", overwrite: bool = False) -> dict:
    """``help_root``: the extracted package's ``usr/share/libreoffice/help/<lang-REGION>`` folder (or any
    folder above it). Writes ``<out>/docs.<lang>.jsonl`` and a README."""
    from rerank import languages
    from rerank.collections._io import atomic_dir
    from rerank.collections.docs import write_jsonl_docs

    code = languages.code(lang)
    root = Path(help_root)
    pages = sorted(root.rglob("text/**/*.html"))
    if not pages:
        raise RerankError(f"no help pages (text/**/*.html) under {root}", hint="extract libreoffice-help-<lang> there")
    docs: list[Document] = []
    seen: set[str] = set()
    for page in pages:
        rel = page.relative_to(root).as_posix()
        for d in page_documents(page, rel):
            if d.text in seen:  # the same boilerplate section on many pages
                continue
            seen.add(d.text)
            docs.append(d)
    with atomic_dir(out, overwrite) as tmp:
        write_jsonl_docs(docs, tmp / f"docs.{code}.jsonl")
        (tmp / "README.md").write_text(
            f"# LibreOffice help ({code}): training text\n\nBuilt by `rerank collections build-lohelp` from "
            f"{len(pages)} pages under {root}: {len(docs)} sections (title = page: section, text = its paragraphs; "
            "repeated sections dropped). Source: Debian `libreoffice-help-*`, MPL-2.0. Not committed. Used for "
            "training only, never as an evaluation collection.\n",
            encoding="utf-8",
        )
    return {"pages": len(pages), "documents": len(docs), "characters": sum(len(d.text) for d in docs)}
