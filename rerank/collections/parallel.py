"""Parallel text as cross-lingual relevance data: the query is a text in one language, the relevant document its
English counterpart.

Readers (strict: a bad line is reported as ``file:line``):

* :func:`read_parallel_tsv` — TSV pairs: ``source<TAB>english`` or Tatoeba's export ``src_id<TAB>source<TAB>
  en_id<TAB>english`` (a UTF-8 byte-order mark is allowed);
* :func:`read_mo` — a gettext ``.mo`` catalogue (Debian's UI translations): English msgid → translation;
* :func:`lohelp_paragraphs` — LibreOffice's help in two languages, paragraphs aligned by page and ``id``.

:func:`build_parallel_collection` writes a relevance collection (:mod:`rerank.collections.splits`) with a
train/dev split by a group key (the English text, or a help page).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rerank.errors import RerankError, at_line


@dataclass(frozen=True)
class Pair:
    """A text (``lang``) and its English counterpart; ``group``: what keeps related pairs on one side of the
    split (default: the English text); ``en_id``: the English item's id when the source has one."""

    text: str
    lang: str
    en: str
    group: str = ""
    pair_id: str = ""
    en_id: str = ""


def _clean(text: str) -> str:
    return " ".join(text.replace("\ufeff", "").split())


def read_parallel_tsv(path: str | os.PathLike, lang: str) -> Iterator[Pair]:
    """``source<TAB>english`` or ``src_id<TAB>source<TAB>en_id<TAB>english`` a line; blank lines skipped."""
    from rerank import languages
    from rerank.files import numbered_lines

    code = languages.code(lang)
    p = Path(path)
    n = 0
    expected = "source<TAB>english, or src_id<TAB>source<TAB>en_id<TAB>english (Tatoeba)"
    for lineno, line in numbered_lines(p, "parallel text file"):
        line = line.replace("\ufeff", "")
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) == 2:
            src_id, text, en_id, en = f"{lineno}", cols[0], "", cols[1]
        elif len(cols) == 4:
            src_id, text, en_id, en = cols
        else:
            raise at_line(p, lineno, f"{len(cols)} tab-separated fields", expected)
        text, en = _clean(text), _clean(en)
        if not text or not en:
            raise at_line(p, lineno, "an empty side", expected)
        n += 1
        yield Pair(text, code, en, group=en, pair_id=src_id.strip(), en_id=en_id.strip())
    if not n:
        raise RerankError(f"{p} holds no pairs", hint=f"expected lines of {expected}")


def read_mo(path: str | os.PathLike, lang: str) -> Iterator[Pair]:
    """The translated messages of a gettext catalogue: (translation, English msgid). Plural forms give their
    first form; the catalogue header and untranslated or identical messages are skipped; accelerator markers
    (``~``, ``_``, ``&`` before a letter) are removed."""
    import gettext
    import re

    from rerank import languages
    from rerank.files import check_readable

    code = languages.code(lang)
    p = check_readable(path, ".mo catalogue")
    try:
        with open(p, "rb") as f:
            catalog = gettext.GNUTranslations(f)._catalog  # noqa: SLF001 - the parsed table is what we read
    except (OSError, UnicodeDecodeError, gettext.error if hasattr(gettext, "error") else OSError) as e:
        raise RerankError(f"{p} is not a readable .mo catalogue ({e})", hint="give a compiled gettext file") from None
    except Exception as e:  # noqa: BLE001 - gettext raises OSError("Bad magic number") and others
        raise RerankError(f"{p} is not a readable .mo catalogue ({e})", hint="give a compiled gettext file") from None
    accel = re.compile(r"[~_&](?=\w)")
    for key, value in catalog.items():
        if isinstance(key, tuple):  # (msgid, plural index)
            if key[1] != 0:
                continue
            key = key[0]
        msgid = key.split("\x04", 1)[-1]  # drop a msgctxt
        if not msgid or not isinstance(value, str):
            continue
        en, text = _clean(accel.sub("", msgid)), _clean(accel.sub("", value))
        if text and en and text != en:
            yield Pair(text, code, en, group=en)


def lohelp_paragraphs(
    en_root: str | os.PathLike, root: str | os.PathLike, lang: str, min_words: int = 5
) -> Iterator[Pair]:
    """LibreOffice help paragraphs aligned by (page, paragraph ``id``): the translation and its English
    original; ``group`` is the page. Paragraphs left in English (identical to the original) and short ones
    (fewer than ``min_words`` English words) are skipped."""
    from rerank import languages
    from rerank.collections.lohelp import help_pages, page_paragraphs

    code = languages.code(lang)
    en_root, root = Path(en_root), Path(root)
    en_pages = {p.relative_to(en_root).as_posix(): p for p in help_pages(en_root)}
    n = 0
    for page in help_pages(root):
        rel = page.relative_to(root).as_posix()
        if rel not in en_pages:
            continue
        english = page_paragraphs(en_pages[rel])
        for pid, text in page_paragraphs(page).items():
            en = english.get(pid)
            if en is None or en == text or len(en.split()) < min_words:
                continue
            n += 1
            yield Pair(text, code, en, group=rel, pair_id=f"{rel}#{pid}", en_id=f"{rel}#{pid}")
    if not n:
        raise RerankError(
            f"no translated paragraphs were aligned between {root} and {en_root}",
            hint="give the help folders of both languages (…/help/en-US, …/help/tr)",
        )


def build_parallel_collection(
    pairs: Iterable[Pair],
    out: str | os.PathLike,
    *,
    name: str,
    dev_fraction: float = 0.05,
    max_train: int | None = None,
    max_dev: int | None = None,
    separate_train_pool: bool = False,
    source: str = "",
    overwrite: bool = False,
) -> dict:
    """Write a cross-lingual relevance collection: English documents (the distinct English texts), queries
    the other side (each distinct text once; every English text it translates is relevant).

    ``separate_train_pool``: dev topics are searched over the English texts of dev groups only, and training
    over those of the training groups it uses (``docs.train.en.jsonl``) — for a source as large as a manual,
    where the whole pool would be slow to index: the dev pool is every English text of every dev group, the
    training pool those of the training groups in use. ``max_train``: at most this many training topics per
    language, whole group by whole group in hash order (so the training pool stays small); ``max_dev``: at most
    this many dev topics per language, spread over the dev groups."""
    import hashlib

    from rerank.collections.splits import Split, is_dev, write_collection
    from rerank.types import Document

    split = Split(dev_fraction=dev_fraction, key="the English text's group (its text, or its page)")
    by_src: dict[tuple[str, str], dict] = {}
    for pr in pairs:
        rec = by_src.setdefault((pr.lang, pr.text), {"group": pr.group or pr.en, "en": [], "id": pr.pair_id})
        if pr.en not in rec["en"]:
            rec["en"].append(pr.en)
    if not by_src:
        raise RerankError("no parallel pairs were read", hint="check the input files")

    def order(g: str) -> str:
        return hashlib.sha1(f"order:{g}".encode()).hexdigest()

    chosen: dict[tuple[str, str], list] = {}
    # dev: at most max_dev topics per language, spread over all dev groups (in hash order of the text);
    # train: whole groups in hash order until max_train (so that a separate training pool stays small)
    for (lang, text), rec in sorted(by_src.items(), key=lambda kv: (order(kv[1]["group"]), kv[0])):
        if is_dev(rec["group"], dev_fraction):
            chosen.setdefault(("dev", lang), []).append((text, rec))
            continue
        bucket = chosen.setdefault(("train", lang), [])
        if max_train is not None and len(bucket) >= max_train and rec["group"] != bucket[-1][1]["group"]:
            continue
        bucket.append((text, rec))
    for key in [k for k in chosen if k[0] == "dev"]:
        if max_dev is not None:
            chosen[key] = sorted(chosen[key], key=lambda tr: order(tr[0]))[:max_dev]
    doc_id: dict[str, str] = {}

    def doc_of(en: str) -> str:
        if en not in doc_id:
            doc_id[en] = f"{name}-{hashlib.sha1(en.encode()).hexdigest()[:12]}"
        return doc_id[en]

    topics, qrels = [], []
    dev_en, train_en = {}, {}
    for (s, lang), items in chosen.items():
        for text, rec in items:
            qid = f"{name}-{lang}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"
            topics.append((qid, text, lang, rec["group"]))
            for en in rec["en"]:
                qrels.append((qid, doc_of(en)))
                (dev_en if s == "dev" else train_en)[en] = rec["group"]
    if separate_train_pool:
        # the pools: every English text of the groups in use, not only the ones some query translates
        used = {"train": set(train_en.values())}
        for (_lang, _text), rec in by_src.items():
            for en in rec["en"]:
                if is_dev(rec["group"], dev_fraction):
                    dev_en.setdefault(en, rec["group"])
                elif rec["group"] in used["train"]:
                    train_en.setdefault(en, rec["group"])
        docs = [Document(doc_of(en), en) for en in sorted(dev_en, key=doc_of)]
        train_docs = [Document(doc_of(en), en) for en in sorted(train_en, key=doc_of)]
    else:
        every = {en for rec in by_src.values() for en in rec["en"]}
        docs, train_docs = [Document(doc_of(en), en) for en in sorted(every, key=doc_of)], None
    return write_collection(
        out,
        docs=docs,
        train_docs=train_docs,
        doc_lang="en",
        topics=topics,
        qrels=qrels,
        split=split,
        overwrite=overwrite,
        facts={
            "kind": "translations: a text, its English counterpart relevant",
            "name": name,
            "source": source,
            "max_train": max_train,
            "max_dev": max_dev,
        },
    )
