"""The declared pre-tokenizer for languages Lucene has no analyzer for (Kyrgyz, Uyghur, …).

A token is a maximal run of letters, combining marks and digits (Unicode categories L*, M*, N*),
after NFKC normalisation and case folding. Marks are kept inside tokens so that scripts with
combining characters (Arabic-script Uyghur, decomposed Cyrillic) are not cut mid-word. There is no
stemming and no stop list: both would be guesses for these languages. The same function is applied
to documents at indexing time and to queries at search time; its name and version are stored in the
index metadata, and an index built with another version is refused.
"""

from __future__ import annotations

import unicodedata

import regex

TOKENIZER_NAME = "unicode-words-v1"

_TOKEN = regex.compile(r"[\p{L}\p{M}\p{N}]+")


def tokenize(text: str) -> list[str]:
    """Split ``text`` into normalised, case-folded word tokens."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())


def pretokenize(text: str) -> str:
    """Tokens joined by single spaces: what Lucene's whitespace analyzer then splits again."""
    return " ".join(tokenize(text))


def snippet(text: str, query: str, width: int = 90) -> str:
    """One line of the document, starting a little before the earliest query word it contains."""
    flat = " ".join(text.split())
    low = flat.casefold()
    hits = [pos for tok in set(tokenize(query)) if len(tok) > 2 and (pos := low.find(tok)) >= 0]
    start = min(hits) if hits else 0
    start = 0 if start < width // 3 else flat.rfind(" ", 0, max(0, start - 15)) + 1
    piece = flat[start : start + width]
    return ("…" if start else "") + piece + ("…" if start + width < len(flat) else "")
