"""Which BM25 analyzer a language gets. Lucene (through Anserini) has stemmers and stop lists for the languages in
:data:`LUCENE_ANALYZERS`. Every other language — Kyrgyz and Uyghur among them — is *not* sent to Lucene's English
analyzer (which is what Anserini silently does): its text is pre-tokenized in Python by
:mod:`rerank.indexes.tokenize`, identically for documents and queries.
"""

from __future__ import annotations

from rerank.indexes.tokenize import TOKENIZER_NAME

#: Languages for which Anserini ships a Lucene analyzer (``-language XX``); English is its default.
LUCENE_ANALYZERS = frozenset("ar bn da de en es fa fi fr hi hu id it ja ko nl no pl pt ru sv te th tr uk zh".split())


def has_lucene(code: str) -> bool:
    """True when Anserini has a Lucene analyzer for the language with this ISO 639-1 code."""
    return code in LUCENE_ANALYZERS


def analyzer_for(code: str) -> str:
    """The BM25 analyzer the language with this ISO 639-1 code gets: ``lucene-XX`` or our pre-tokenizer."""
    return f"lucene-{code}" if has_lucene(code) else TOKENIZER_NAME
