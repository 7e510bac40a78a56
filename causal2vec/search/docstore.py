"""The SQLite document store behind a semantic index.

Each row is one document: ``vid`` (its FAISS id, never reused), the caller's ``id``, ``title``, ``text`` and
``metadata`` (JSON). Rows carry the *generation* that added them and, once deleted, the generation that deleted
them. The index's manifest names the committed generation ``g``; readers see exactly the rows with
``added <= g`` that are not deleted at ``g``. A writer stages its changes as generation ``g + 1``, which no reader
sees until the manifest moves on, so a writer killed at any point leaves the committed state intact;
:meth:`DocumentStore.discard_pending` removes its leftovers.
"""

from __future__ import annotations

import errno
import json
import logging
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from causal2vec.runtime import check_int
from causal2vec.search.corpus import Document

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    vid      INTEGER PRIMARY KEY AUTOINCREMENT,  -- the FAISS id; AUTOINCREMENT never reuses one
    id       TEXT NOT NULL,                      -- the caller's id
    title    TEXT,
    text     TEXT NOT NULL,
    metadata TEXT,                               -- a JSON object, or NULL when empty
    added    INTEGER NOT NULL,                   -- generation that added the row
    deleted  INTEGER                             -- generation that deleted it; NULL while it lives
);
CREATE UNIQUE INDEX IF NOT EXISTS documents_live_id ON documents(id) WHERE deleted IS NULL;
CREATE INDEX IF NOT EXISTS documents_added ON documents(added);
CREATE INDEX IF NOT EXISTS documents_deleted ON documents(deleted) WHERE deleted IS NOT NULL;
"""

# Rows a reader at generation g sees; bind g twice.
VISIBLE = "added <= ? AND (deleted IS NULL OR deleted > ?)"
_MAX_VARIABLES = 900  # stay under SQLite's limit on bound parameters per statement


class IdTakenError(ValueError):
    """An insert whose id a live document already holds; nothing of the insert was stored.

    Attributes:
        position: The position, among the documents inserted, of the one whose id was taken.
        id: The id: the document's own, or the one generated for it (the string of its vid).
        holder: The position among the same documents of the one that holds the id, or ``None`` when it was stored
            before this insert.
    """

    def __init__(self, position: int, doc_id: str, holder: int | None) -> None:
        super().__init__(f"document id {doc_id!r} is already taken; give every document an explicit id")
        self.position, self.id, self.holder = position, doc_id, holder


@dataclass(frozen=True)
class StoredDocument:
    """A document as stored: its FAISS id ``vid`` and the caller's fields."""

    vid: int
    id: str
    title: str | None
    text: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Hit:
    """One search result: the document's id, its cosine ``score``, and its stored fields."""

    id: str
    score: float
    title: str | None
    text: str
    metadata: dict[str, Any]

    @classmethod
    def of(cls, doc: StoredDocument, score: float) -> Hit:
        """A hit for a stored document and its score."""
        return cls(id=doc.id, score=float(score), title=doc.title, text=doc.text, metadata=doc.metadata)

    def snippet(self, width: int = 200) -> str:
        """The start of the text on one line, at most ``width`` characters.

        Raises:
            ValueError: If ``width`` is not a positive integer.
        """
        check_int("snippet width", width, minimum=1)
        flat = " ".join(self.text.split())
        return flat if len(flat) <= width else flat[: width - 1].rstrip() + "…"

    def to_dict(self, snippet: int | None = None) -> dict[str, Any]:
        """A JSON-ready dict; with ``snippet``, the text is cut to that many characters under ``snippet``."""
        out: dict[str, Any] = {"id": self.id, "score": self.score, "title": self.title}
        out.update({"snippet": self.snippet(snippet)} if snippet else {"text": self.text})
        return {**out, "metadata": self.metadata}


class DocumentStore:
    """A SQLite file of documents with generation-tagged rows (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        """Open (creating if needed) the store at ``path``.

        Raises:
            ValueError: If the file is not a SQLite database of documents.
        """
        self.path = path
        try:
            self.db = sqlite3.connect(path, isolation_level=None)  # autocommit; transactions are explicit
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as err:
            raise ValueError(f"the document store {path} is corrupt or not a SQLite database ({err})") from err

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    # ------------------------------------------------------------------ reading (committed generation g)

    def count(self, g: int) -> int:
        """Number of documents visible at generation ``g``."""
        return self.db.execute(f"SELECT COUNT(*) FROM documents WHERE {VISIBLE}", (g, g)).fetchone()[0]

    def vids(self, g: int) -> np.ndarray:
        """The FAISS ids of the documents visible at generation ``g``, sorted."""
        rows = self.db.execute(f"SELECT vid FROM documents WHERE {VISIBLE} ORDER BY vid", (g, g))
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def by_vid(self, vids: Iterable[int], g: int) -> dict[int, StoredDocument]:
        """The documents visible at generation ``g`` among ``vids``, keyed by vid."""
        found: dict[int, StoredDocument] = {}
        for part in _parts(sorted({int(v) for v in vids})):
            marks = ",".join("?" * len(part))
            sql = f"SELECT vid, id, title, text, metadata FROM documents WHERE vid IN ({marks}) AND {VISIBLE}"
            for row in self.db.execute(sql, [*part, g, g]):
                found[row[0]] = _stored(row)
        return found

    def by_id(self, ids: Iterable[str], g: int) -> dict[str, StoredDocument]:
        """The documents visible at generation ``g`` among the caller's ``ids``, keyed by id."""
        found: dict[str, StoredDocument] = {}
        for part in _parts(list(dict.fromkeys(ids))):
            marks = ",".join("?" * len(part))
            sql = f"SELECT vid, id, title, text, metadata FROM documents WHERE id IN ({marks}) AND {VISIBLE}"
            for row in self.db.execute(sql, [*part, g, g]):
                found[row[1]] = _stored(row)
        return found

    # ------------------------------------------------------------------ writing (pending generation g + 1)

    def live_vids(self, ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """``id -> (vid, added)`` among ``ids`` for documents alive in the working state (committed + pending)."""
        found: dict[str, tuple[int, int]] = {}
        for part in _parts(list(dict.fromkeys(ids))):
            marks = ",".join("?" * len(part))
            sql = f"SELECT id, vid, added FROM documents WHERE id IN ({marks}) AND deleted IS NULL"
            for doc_id, vid, added in self.db.execute(sql, part):
                found[doc_id] = (vid, added)
        return found

    def vids_alive(self, vids: Sequence[int]) -> np.ndarray:
        """Those of ``vids`` whose documents are alive in the working state."""
        alive: list[int] = []
        for part in _parts([int(v) for v in vids]):
            marks = ",".join("?" * len(part))
            rows = self.db.execute(f"SELECT vid FROM documents WHERE vid IN ({marks}) AND deleted IS NULL", part)
            alive.extend(r[0] for r in rows)
        return np.asarray(alive, dtype=np.int64)

    def insert(self, documents: Sequence[Document], pending: int) -> np.ndarray:
        """Insert documents as generation ``pending`` in one transaction; returns their vids in order.

        Documents without an id get the string of their vid.

        Raises:
            IdTakenError: If an id is already taken (an assigned id can clash with a caller's numeric id); nothing
                is inserted.
        """
        vids = np.empty(len(documents), dtype=np.int64)
        sql = "INSERT INTO documents (vid, id, title, text, metadata, added) VALUES (?, ?, ?, ?, ?, ?)"
        with self._transaction():
            for i, doc in enumerate(documents):
                metadata = json.dumps(doc.metadata, ensure_ascii=False) if doc.metadata else None
                vid = None if doc.id is not None else self._next_vid()
                doc_id = doc.id if doc.id is not None else str(vid)
                try:
                    vids[i] = self.db.execute(sql, (vid, doc_id, doc.title, doc.text, metadata, pending)).lastrowid
                except sqlite3.IntegrityError:
                    raise IdTakenError(i, doc_id, self._holder(doc_id, vids[:i])) from None
        return vids

    def _holder(self, doc_id: str, inserted: np.ndarray) -> int | None:
        """The position in ``inserted`` of the live row holding ``doc_id``, or ``None`` if it was there before."""
        row = self.db.execute("SELECT vid FROM documents WHERE id = ? AND deleted IS NULL", (doc_id,)).fetchone()
        where = np.flatnonzero(inserted == row[0]) if row else []
        return int(where[0]) if len(where) else None

    def _next_vid(self) -> int:
        row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'documents'").fetchone()
        return (row[0] if row else 0) + 1

    def delete(self, vids: Sequence[int], pending: int) -> None:
        """Delete documents in generation ``pending``: rows added by it go at once, older rows are marked."""
        with self._transaction():
            for part in _parts([int(v) for v in vids]):
                marks = ",".join("?" * len(part))
                self.db.execute(f"DELETE FROM documents WHERE vid IN ({marks}) AND added = ?", [*part, pending])
                self.db.execute(
                    f"UPDATE documents SET deleted = ? WHERE vid IN ({marks}) AND deleted IS NULL", [pending, *part]
                )

    def discard_pending(self, g: int) -> int:
        """Undo everything staged after generation ``g`` (an unsaved or killed write); returns rows dropped.

        A write-ahead log left by a writer that failed (on a full disk, say) is folded into the store first, so that
        its space is free for this and the next writes (see :meth:`truncate_wal`).

        Raises:
            OSError: ENOSPC, naming the store, if the disk is too full to fold the log or to undo the rows.
        """
        self.truncate_wal()
        with self._transaction():
            dropped = self.db.execute("DELETE FROM documents WHERE added > ?", (g,)).rowcount
            self.db.execute("UPDATE documents SET deleted = NULL WHERE deleted > ?", (g,))
        return dropped

    def truncate_wal(self) -> None:
        """Fold the write-ahead log into the store and truncate it to zero bytes (``wal_checkpoint(TRUNCATE)``).

        SQLite does this when the last connection closes, unless that fails, e.g. on a full disk; then the log keeps
        its space (often most of what the failed write used) and every later write would append to it. A checkpoint
        that readers keep from finishing within the busy timeout is left for a later one.

        Raises:
            OSError: ENOSPC, naming the store, if there is not even room to fold the log into the store.
        """
        try:
            busy, log_frames, _ = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.OperationalError as err:
            raise write_error(err, self.path) from err
        if busy:
            logger.info("the write-ahead log of %s (%d pages) is still in use by a reader", self.path, log_frames)

    def purge(self, g: int) -> int:
        """Drop rows deleted at or before the committed generation ``g``; no reader of ``g`` needs them."""
        with self._transaction():
            return self.db.execute("DELETE FROM documents WHERE deleted <= ?", (g,)).rowcount

    def backup_to(self, path: Path) -> None:
        """Copy the whole store into a new SQLite file (a consistent snapshot)."""
        target = sqlite3.connect(path)
        try:
            self.db.backup(target)
        finally:
            target.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self.db, self.path)


class _Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, or ``ROLLBACK`` on an exception.

    SQLite's own write failures (a full disk, a read-only file) become ``OSError`` naming the store, as the other
    files' write failures are.
    """

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db, self.path = db, path

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, *_: object) -> None:
        try:
            if exc_type is None:
                self.db.execute("COMMIT")
                return
        except sqlite3.OperationalError as err:
            exc = err
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.OperationalError):
            raise write_error(exc, self.path) from exc


def write_error(err: sqlite3.OperationalError, path: Path) -> OSError:
    """An ``OSError`` naming the store for a failed write; a full disk (``SQLITE_FULL``) carries ``ENOSPC``."""
    message = f"could not write the document store {path}: {err}"
    if getattr(err, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return OSError(errno.ENOSPC, f"{message}; free some space in {path.parent}", str(path))
    return OSError(message)


def _parts(values: list[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(values), _MAX_VARIABLES):
        yield values[start : start + _MAX_VARIABLES]


def _stored(row: tuple[Any, ...]) -> StoredDocument:
    vid, doc_id, title, text, metadata = row
    return StoredDocument(vid=vid, id=doc_id, title=title, text=text, metadata=json.loads(metadata) if metadata else {})
