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
        self.ids: list[str] = []  # each block's id attribute ("" when it has none), aligned with blocks
        self.cur_id = ""

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
            self.cur, self.cur_tag, self.cur_id = [], tag, a.get("id") or ""

    def handle_endtag(self, tag):
        if tag in _VOID:
            return
        if self.hidden_at is not None and self.depth == self.hidden_at:
            self.hidden_at = None
        if self.cur is not None and tag == self.cur_tag:
            text = " ".join("".join(self.cur).split())
            if text:
                self.blocks.append((tag, text))
                self.ids.append(self.cur_id)
            self.cur = None
        if self.depth_display is not None and self.depth == self.depth_display:
            self.depth_display = None
        self.depth -= 1

    def handle_data(self, data):
        if self.cur is not None and self.hidden_at is None:
            self.cur.append(data)


def page_blocks(path: Path) -> list[tuple[str, str]]:
    """The visible headings and paragraphs of a help page, in order: (h1|h2|h3|p, text)."""
    p = _Page()
    p.feed(path.read_text(encoding="utf-8", errors="replace"))
    return p.blocks


def page_paragraphs(path: Path) -> dict[str, str]:
    """The visible paragraphs and headings of a help page that carry an ``id`` (``par_id…``, ``hd_id…``): the
    same ids in every language's help, which is what aligns a translation with its English original."""
    p = _Page()
    p.feed(path.read_text(encoding="utf-8", errors="replace"))
    out: dict[str, str] = {}
    for (_, text), pid in zip(p.blocks, p.ids, strict=True):
        if pid and pid not in out:
            out[pid] = text
    return out


def page_documents(path: Path, rel: str, min_chars: int = 80, drop: set[str] | None = None) -> list[Document]:
    """One document per section of the page. Paragraphs in ``drop`` (e.g. the English help's, for a
    translation that left them untranslated) are left out."""
    title, section, paras, docs = "", "", [], []

    def flush():
        text = " ".join(paras)
        if len(text) >= min_chars:
            head = f"{title}: {section}" if section and section != title else title
            docs.append(Document(f"{rel}#{len(docs)}", text, head))

    for tag, text in page_blocks(path):
        if drop and text in drop and tag == "p":
            continue
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


def help_pages(root: Path) -> list[Path]:
    pages = sorted(root.rglob("text/**/*.html"))
    if not pages:
        raise RerankError(f"no help pages (text/**/*.html) under {root}", hint="extract libreoffice-help-<lang> there")
    return pages


def build(
    help_root: str | os.PathLike,
    out: str | os.PathLike,
    lang: str = "en",
    overwrite: bool = False,
    untranslated_from: str | os.PathLike | None = None,
    dev_fraction: float | None = None,
) -> dict:
    """``help_root``: the extracted package's ``usr/share/libreoffice/help/<lang-REGION>`` folder (or any
    folder above it). Writes ``<out>/docs.<lang>.jsonl`` and ``<out>/README.<lang>.md`` (other languages'
    files in ``out`` stay). ``untranslated_from``: the English help's folder; paragraphs found there
    verbatim are dropped (a translation leaves many paragraphs in English: about 43% in Turkish).
    ``dev_fraction`` (default: :data:`rerank.collections.splits.DEV_FRACTION`): the pages the help's
    cross-lingual dev sets are cut from (:func:`rerank.collections.splits.is_dev` of the page's path, as
    ``rerank collections build-parallel --lohelp`` splits) are left out, and their paragraphs wherever else they
    appear, so that no language module is trained on the text of a dev query or document."""
    from rerank import languages
    from rerank.collections.docs import write_jsonl_docs
    from rerank.collections.splits import DEV_FRACTION, is_dev
    from rerank.files import atomic_write, check_writable_target

    code = languages.code(lang)
    root = Path(help_root)
    pages = help_pages(root)
    drop: set[str] = set()
    if untranslated_from is not None:
        drop = {t for page in help_pages(Path(untranslated_from)) for tag, t in page_blocks(page) if tag == "p"}
    target = Path(out) / f"docs.{code}.jsonl"
    check_writable_target(target, overwrite)
    docs: list[Document] = []
    seen: set[str] = set()
    fraction = DEV_FRACTION if dev_fraction is None else dev_fraction
    held_out = 0
    dev_pages = [p for p in pages if fraction and is_dev(p.relative_to(root).as_posix(), fraction)]
    # a dev page's paragraph repeated on another page (boilerplate) is left out there too
    drop = drop | {t for page in dev_pages for tag, t in page_blocks(page) if tag == "p"}
    for page in pages:
        rel = page.relative_to(root).as_posix()
        if fraction and is_dev(rel, fraction):
            held_out += 1
            continue
        for d in page_documents(page, rel, drop=drop):
            if d.text in seen:  # the same boilerplate section on many pages
                continue
            seen.add(d.text)
            docs.append(d)
    if not docs:
        raise RerankError(f"no text left in the help under {root}", hint="is it the right language's help?")
    write_jsonl_docs(docs, target, overwrite=True)
    dropped = f" {len(drop):,} English paragraphs were left out where they appear verbatim." if drop else ""
    with atomic_write(Path(out) / f"README.{code}.md", overwrite=True) as f:
        f.write(
            f"# LibreOffice help ({code}): training text\n\nBuilt by `rerank collections build-lohelp` from "
            f"{len(pages) - held_out} pages under {root} ({held_out} pages left out: those the cross-lingual dev "
            f"sets are cut from, hash fraction {fraction}): {len(docs)} sections (title = page: section, text = its "
            f"paragraphs; repeated sections dropped).{dropped} Source: Debian `libreoffice-help-*`, MPL-2.0. "
            "Not committed. "
            "Used for training only, never as an evaluation collection.\n"
        )
    return {
        "pages": len(pages),
        "held_out_pages": held_out,
        "documents": len(docs),
        "characters": sum(len(d.text) for d in docs),
    }
