"""Language codes: one canonical ISO 639-1 code per language, aliases, and what each backend supports.

Every command takes a language as any common spelling — ``ky``, ``kir``, ``kg`` (the country code
people type for Kyrgyz), ``Kyrgyz`` — and works with the two-letter ISO 639-1 code from then on.
Codes come from ``pycountry``'s ISO 639-3 table, so every language with a two-letter code is known,
not only the handful the product was first built for.

Which BM25 analyzer a language gets is the indexes' business (:mod:`rerank.indexes.analyzers`).
"""

from __future__ import annotations

import difflib
import functools
from typing import NamedTuple

from rerank.errors import RerankError

#: Aliases that are not ISO codes or names but that users type. ``kg`` is Kyrgyzstan's country code;
#: as an ISO 639-1 code it would be Kongo, which no backend here supports, so it means Kyrgyz.
EXTRA_ALIASES = {"kg": "ky", "kyrgyz": "ky", "kirgiz": "ky", "uighur": "ug", "uygur": "ug"}

#: Names people use today, where ISO's reference name is an older spelling.
DISPLAY_NAMES = {"ky": "Kyrgyz", "ug": "Uyghur"}


class Language(NamedTuple):
    code: str  # ISO 639-1
    name: str
    alpha_3: str


@functools.cache
def _table() -> tuple[dict[str, Language], dict[str, str]]:
    import pycountry

    by_code: dict[str, Language] = {}
    alias: dict[str, str] = {}
    for lang in pycountry.languages:
        two = getattr(lang, "alpha_2", None)
        if not two:
            continue
        by_code[two] = Language(two, DISPLAY_NAMES.get(two, lang.name), lang.alpha_3)
        alias[two] = two
        alias[lang.alpha_3] = two
        bib = getattr(lang, "bibliographic", None)
        if bib:
            alias[bib] = two
        for field in ("name", "common_name", "inverted_name"):
            for name in getattr(lang, field, "").lower().replace(";", ",").split(","):
                if name.strip():
                    alias.setdefault(name.strip(), two)
    alias.update(EXTRA_ALIASES)
    return by_code, alias


def resolve(code: str) -> Language:
    """Return the language for any accepted spelling, or raise with the nearest suggestions.

    Accepts ISO 639-1 (``ky``), ISO 639-2/3 (``kir``, ``ger``/``deu``), English names
    (``Kyrgyz``), underscores/regions (``uig_arab``, ``de-CH``) and the aliases above.
    """
    by_code, alias = _table()
    key = (code or "").strip().lower()
    if not key:
        raise RerankError("no language given", hint="pass an ISO 639-1 code such as en, de, ru, tr, ky or ug")
    candidates = [key, key.replace("-", "_").split("_")[0]]
    for cand in candidates:
        if cand in alias:
            return by_code[alias[cand]]
    near = dict.fromkeys(alias[n] for n in difflib.get_close_matches(key, list(alias), n=6, cutoff=0.6))
    suggestion = ", ".join(f"{c} ({by_code[c].name})" for c in list(near)[:3]) or "en, de, ru, tr, ky, ug"
    shown = code if len(code) <= 40 else code[:37] + "..."
    raise RerankError(f"unknown language code {shown!r}", hint=f"did you mean: {suggestion}?")


def code(code: str) -> str:
    """Shorthand for ``resolve(code).code``."""
    return resolve(code).code
