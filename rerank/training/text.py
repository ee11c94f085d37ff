"""Monolingual text for language modules: reading, the script check, and a deterministic dev split."""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from rerank.errors import RerankError, warn

# the script a language is written in (as Unicode names a letter's script)
SCRIPTS = {
    "ky": "CYRILLIC",
    "ru": "CYRILLIC",
    "kk": "CYRILLIC",
    "uk": "CYRILLIC",
    "bg": "CYRILLIC",
    "tt": "CYRILLIC",
    "ug": "ARABIC",
    "ar": "ARABIC",
    "fa": "ARABIC",
    "ur": "ARABIC",
    "tr": "LATIN",
    "en": "LATIN",
    "de": "LATIN",
    "fr": "LATIN",
    "es": "LATIN",
    "it": "LATIN",
    "nl": "LATIN",
    "fi": "LATIN",
    "sv": "LATIN",
    "uz": "LATIN",
    "az": "LATIN",
    "zh": "CJK",
    "ja": "CJK",
    "ko": "HANGUL",
    "el": "GREEK",
    "he": "HEBREW",
    "hi": "DEVANAGARI",
}
MIN_CHARS = 2_000
DOC_SUFFIXES = (".jsonl", ".json", ".ndjson", ".sgml", ".sgm", ".xml", ".trec")  # read as a document collection


def read_texts(paths: Sequence[str | os.PathLike], min_chars: int = MIN_CHARS) -> list[str]:
    """Documents from plain-text files: blank-line separated when a file has blank lines between text,
    else one per line; or from a document collection (JSONL or SGML, as ``rerank index`` reads: each
    document's title and text). Refuses missing, empty or tiny text."""
    from rerank.collections.docs import read_docs
    from rerank.files import numbered_lines

    docs: list[str] = []
    for path in paths:
        if Path(path).name.lower().removesuffix(".gz").endswith(DOC_SUFFIXES):
            docs.extend(" ".join(d.contents.split()) for d in read_docs(path) if d.contents.strip())
            continue
        lines = [line.strip() for _, line in numbered_lines(Path(path), "text file")]
        if any(not line for line in lines[1:-1]) and sum(1 for line in lines if not line) * 3 < len(lines):
            block: list[str] = []
            for line in [*lines, ""]:
                if line:
                    block.append(line)
                elif block:
                    docs.append(" ".join(block))
                    block = []
        else:
            docs.extend(line for line in lines if line)
    total = sum(len(d) for d in docs)
    if not docs:
        raise RerankError("the text is empty", hint="give plain text, one document per line or blank-line separated")
    if total < min_chars:
        raise RerankError(
            f"only {total:,} characters of text: too little to learn a language from",
            hint=f"give at least {min_chars:,} characters (a few hundred sentences)",
        )
    return docs


def script(ch: str) -> str | None:
    """The script of a letter, as the first word of its Unicode name (LATIN, CYRILLIC, ARABIC…)."""
    if not ch.isalpha():
        return None
    name = unicodedata.name(ch, "")
    if name.startswith("CJK") or "HIRAGANA" in name or "KATAKANA" in name:
        return "CJK"
    return name.split(" ")[0] if name else None


def dominant_script(docs: Sequence[str], sample: int = 200_000) -> tuple[str, float]:
    counts: Counter = Counter()
    n = 0
    for d in docs:
        for ch in d:
            s = script(ch)
            if s:
                counts[s] += 1
        n += len(d)
        if n > sample:
            break
    if not counts:
        return "NONE", 0.0
    top, c = counts.most_common(1)[0]
    return top, c / sum(counts.values())


def check_script(docs: Sequence[str], lang: str) -> str:
    """Warn when the text's letters are mostly in another script than the language is written in."""
    found, share = dominant_script(docs)
    want = SCRIPTS.get(lang)
    if want and found != want:
        warn(
            f"the text for {lang} is mostly in {found.title()} script ({share:.0%} of letters), but {lang} is "
            f"written in {want.title()}: is it the right file?"
        )
    return found


def split_dev(docs: Sequence[str], fraction: float = 0.05, cap: int = 500) -> tuple[list[str], list[str]]:
    """A deterministic held-out split by a hash of each document (stable when the file grows)."""
    train, dev = [], []
    for d in docs:
        h = int(hashlib.sha1(d.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (dev if h < fraction and len(dev) < cap else train).append(d)
    if not dev:
        dev = train[-1:]
    return train, dev
