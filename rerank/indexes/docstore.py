"""The text of indexed documents, kept beside every index in one SQLite file.

Lucene keeps what it needs to *find* documents; later stages (snippets, the cross-encoder) need the
original title and text — which, for a pre-tokenized index, Lucene never saw. One small store serves
both BM25 and dense indexes of the same folder.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from rerank.errors import RerankError
from rerank.types import Document

_SCHEMA = "CREATE TABLE docs (doc_id TEXT PRIMARY KEY, title TEXT NOT NULL, text TEXT NOT NULL) WITHOUT ROWID"


def write_docstore(path: Path, docs: Iterable[Document]) -> Iterator[Document]:
    """Write documents to a new store at ``path`` while passing them through (so a caller can index
    them in the same pass). The transaction commits only when the iteration completes."""
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        con.execute(_SCHEMA)
        rows: list[tuple[str, str, str]] = []
        for d in docs:
            rows.append((d.doc_id, d.title, d.text))
            if len(rows) >= 1000:
                con.executemany("INSERT INTO docs VALUES (?, ?, ?)", rows)
                rows = []
            yield d
        con.executemany("INSERT INTO docs VALUES (?, ?, ?)", rows)
        con.commit()
    finally:
        con.close()


class DocStore:
    """Read-only access to a store written by :func:`write_docstore`. A damaged file (truncated, or not
    a database at all) is reported as one line naming it, when opened or whenever a read meets the damage."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self._con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        except sqlite3.Error as e:
            raise self._damaged(e) from None
        self._rows("SELECT doc_id FROM docs LIMIT 1")  # not a database, or no documents table: said now

    def _damaged(self, e: Exception) -> RerankError:
        return RerankError(f"{self.path} is damaged ({e})", hint="rebuild the index with `rerank index --overwrite`")

    def _rows(self, sql: str, params: Sequence = ()) -> list[tuple]:
        try:
            return self._con.execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise self._damaged(e) from None

    def __len__(self) -> int:
        return self._rows("SELECT COUNT(*) FROM docs")[0][0]

    def get(self, doc_id: str) -> Document | None:
        rows = self._rows("SELECT doc_id, text, title FROM docs WHERE doc_id = ?", (doc_id,))
        return Document(*rows[0]) if rows else None

    def ids(self) -> list[str]:
        """Every document id, sorted."""
        return [row[0] for row in self._rows("SELECT doc_id FROM docs ORDER BY doc_id")]

    def get_many(self, doc_ids: Sequence[str]) -> dict[str, Document]:
        return {row[0]: Document(*row) for row in self._in(doc_ids, "doc_id, text, title")}

    def has_many(self, doc_ids: Sequence[str]) -> set[str]:
        """The ids of ``doc_ids`` the store holds (without reading their texts)."""
        return {row[0] for row in self._in(doc_ids, "doc_id")}

    def _in(self, doc_ids: Sequence[str], columns: str) -> Iterator[tuple]:
        for i in range(0, len(doc_ids), 500):
            chunk = list(doc_ids[i : i + 500])
            marks = ",".join("?" * len(chunk))
            yield from self._rows(f"SELECT {columns} FROM docs WHERE doc_id IN ({marks})", chunk)

    def __iter__(self) -> Iterator[Document]:
        try:
            for row in self._con.execute("SELECT doc_id, text, title FROM docs ORDER BY doc_id"):
                yield Document(*row)
        except sqlite3.Error as e:
            raise self._damaged(e) from None

    def close(self) -> None:
        self._con.close()
