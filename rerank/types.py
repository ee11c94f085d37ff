"""The records that flow between stages.

They are plain NamedTuples with the field names ir_measures and ir_datasets use
(``query_id``, ``doc_id``, ``score``, ``relevance``), so a list of them can be handed to
``ir_measures.calc_aggregate`` or ``ir_measures.iter_calc`` as it is.
"""

from __future__ import annotations

from typing import NamedTuple


class Query(NamedTuple):
    """A topic. ``text`` is what is searched; ``lang`` is its ISO 639-1 code ('' when unknown)."""

    query_id: str
    text: str
    lang: str = ""
    description: str = ""
    narrative: str = ""


class Document(NamedTuple):
    """A document. ``title`` is kept apart so that readers and snippets can show it."""

    doc_id: str
    text: str
    title: str = ""

    @property
    def contents(self) -> str:
        """Title and body as one string: what gets indexed."""
        return f"{self.title}\n{self.text}" if self.title else self.text


class ScoredDoc(NamedTuple):
    """One line of a run: same fields, same order as ``ir_measures.ScoredDoc``."""

    query_id: str
    doc_id: str
    score: float


class Qrel(NamedTuple):
    """One relevance judgement: same fields, same order as ``ir_measures.Qrel``."""

    query_id: str
    doc_id: str
    relevance: int
    iteration: str = "0"
