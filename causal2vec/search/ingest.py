"""Ingestion, block by block: validate a chunk of documents, resolve duplicate ids, embed it, store it.

Memory holds one chunk of texts and vectors at a time. Indexes that must be trained (IVF, PQ …) cannot take vectors
before they are trained, so :class:`TrainingSpill` keeps the vectors in a temporary file and a uniform random
training sample in memory until the stream ends.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

import numpy as np
from tqdm.auto import tqdm

from causal2vec.search import vectors as faiss_vectors
from causal2vec.search.corpus import Document, as_document, chunked
from causal2vec.search.docstore import DocumentStore, IdTakenError

if TYPE_CHECKING:
    from causal2vec.search.commit import Generations


OnDuplicate = Literal["error", "replace", "skip"]
ON_DUPLICATE: tuple[OnDuplicate, ...] = get_args(OnDuplicate)

# Characters an id may not hold: C0 and C1 controls (newline, tab, NUL, ESC …, DEL) and the line and paragraph
# separators; printed, they would break or forge a line of output.
_ID_FORBIDDEN = ("Cc", "Zl", "Zp")
GENERATED = "documents without an id get the string of their internal number"

Embed = Callable[[list[str], Callable[[int], object]], np.ndarray]  # (texts, progress per batch) -> (n, dim)
AddVectors = Callable[[np.ndarray, np.ndarray], None]  # (vectors, vids) -> None
DeleteVids = Callable[[list[int]], None]


class Rows(Protocol):
    """Precomputed embeddings that :func:`stage_stream` reads in order, a chunk at a time: ``rows[a:b]``.

    An array is one; so is a stream of shards that holds only the rows not yet read.
    """

    def __getitem__(self, rows: slice, /) -> np.ndarray: ...


def check_add_arguments(
    documents: Iterable[Any], embeddings: Any, on_duplicate: str, total: int | None
) -> tuple[Iterable[Any], np.ndarray | None, int | None]:
    """Validate ``SemanticIndex.add``'s arguments; with precomputed embeddings, the documents become a list.

    Raises:
        ValueError: For an unknown ``on_duplicate``, or embeddings whose shape does not match the documents.
    """
    if on_duplicate not in ON_DUPLICATE:
        raise ValueError(f"on_duplicate={on_duplicate!r} is not supported; choose one of {list(ON_DUPLICATE)}")
    if embeddings is None:
        return documents, None, total
    documents = list(documents)
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or len(embeddings) != len(documents):
        raise ValueError(f"embeddings have shape {embeddings.shape}; expected ({len(documents)}, dim)")
    return documents, embeddings, len(documents)


def stage_documents(state: Generations, documents: Iterable[Any], *, embed: Embed, embeddings: np.ndarray | None,
                    on_duplicate: OnDuplicate, chunk_size: int, bar: tqdm) -> int:  # fmt: skip
    """Stage documents into an open index that is staging (see :func:`stage_stream`); returns how many.

    An untrained index (IVF, PQ …) gets its vectors through a :class:`TrainingSpill`, trained at the end.
    """
    vectors = state.vectors
    spill = None if vectors.index.is_trained else TrainingSpill(state.path, vectors.index, state.manifest.dim)
    try:
        staged = stage_stream(
            documents, store=state.store, pending=state.view, dim=state.manifest.dim, embed=embed,
            add=vectors.add if spill is None else spill.write, delete=lambda vids: delete_vids(state, vids),
            embeddings=embeddings, on_duplicate=on_duplicate, chunk_size=chunk_size, bar=bar,
        )  # fmt: skip
        if spill is not None:
            spill.train_and_add(vectors.index, state.store, state.manifest.factory)
            vectors.forget_tombstones_not_in_index()
    finally:
        if spill is not None:
            spill.close()
    return staged


def delete_vids(state: Generations, vids: list[int]) -> None:
    """Delete documents by row number from the staged generation: their rows and their vectors."""
    state.store.delete(vids, state.view)
    state.vectors.remove(np.asarray(vids, dtype=np.int64))


def stage_stream(
    documents: Iterable[Any],
    *,
    store: DocumentStore,
    pending: int,
    dim: int,
    embed: Embed,
    add: AddVectors,
    delete: DeleteVids,
    embeddings: np.ndarray | Rows | None,
    on_duplicate: OnDuplicate,
    chunk_size: int,
    bar: tqdm,
) -> int:
    """Stage a stream of documents as generation ``pending``, one chunk at a time; returns how many were staged.

    Args:
        documents: Documents, strings or dicts (see :func:`causal2vec.search.corpus.as_document`).
        store: The document store; rows are inserted as generation ``pending``.
        pending: The generation being staged.
        dim: The index's dimension, checked against every embedding.
        embed: Embeds document texts (used when ``embeddings`` is ``None``).
        add: Takes the chunk's normalised vectors and their store ids.
        delete: Deletes the vectors and rows of replaced documents.
        embeddings: Precomputed embeddings of ``documents``, row for row.
        on_duplicate: ``"error"``, ``"replace"`` or ``"skip"`` for ids already stored or repeated in a chunk.
        chunk_size: Documents per chunk.
        bar: Progress, advanced by each chunk's size.
    """
    staged, offset, generated = 0, 0, GeneratedIds()
    for chunk in chunked(documents, chunk_size):
        docs = checked_documents(chunk, offset)
        keep = resolve_duplicates(docs, store, on_duplicate, delete, generated)
        docs = [docs[i] for i in keep]
        given = None if embeddings is None else np.asarray(embeddings[offset : offset + len(chunk)], np.float32)[keep]
        vectors = chunk_vectors(docs, given, lambda texts: embed(texts, bar.update), dim, offset)
        add(vectors, insert(store, docs, pending, generated))
        staged, offset = staged + len(docs), offset + len(chunk)
        bar.update(len(chunk) - (len(docs) if given is None else 0))  # embedded documents moved it batch by batch
    return staged


def chunk_vectors(docs: list[Document], given: np.ndarray | None, embed: Embed, dim: int, offset: int) -> np.ndarray:
    """The normalised float32 vectors ``(len(docs), dim)`` of a chunk's kept documents: ``given``, else embedded.

    Args:
        docs: The chunk's documents that are staged.
        given: Their precomputed embeddings, row for row, or ``None`` to embed them with ``embed``.
        embed: Embeds document texts.
        dim: The index's dimension, checked against every vector.
        offset: The position of the chunk's first document in the input, for error messages.
    """
    if given is not None:
        vectors = given
    elif docs:
        vectors = embed([d.embedding_text() for d in docs])
    else:
        vectors = np.empty((0, dim), dtype=np.float32)
    return normalised(np.asarray(vectors, dtype=np.float32), dim, offset)


def checked_documents(chunk: list[Any], offset: int) -> list[Document]:
    """A chunk of the input as :class:`Document` objects whose ids an index can hold (see :func:`check_id`)."""
    docs = [as_document(item, f"documents[{offset + i}]") for i, item in enumerate(chunk)]
    for doc in docs:
        check_id(doc)
    return docs


def check_id(doc: Document) -> None:
    """Refuse an id that is blank or holds a control character or a line separator.

    Such an id could not be told apart in printed output (a newline in one would forge a result line), and a blank
    one cannot be passed back to ``delete``.

    Raises:
        ValueError: Naming where the document was read (``file:line``), the id and the character.
    """
    doc_id, where = doc.id, doc.source
    if doc_id is None or (doc_id.isprintable() and doc_id.strip()):
        return
    if not doc_id.strip():
        raise ValueError(f"{where}: the id {doc_id!r} is blank; give a non-empty id, or none to have one generated")
    for position, char in enumerate(doc_id):
        if unicodedata.category(char) in _ID_FORBIDDEN:
            shown = doc_id if len(doc_id) <= 60 else doc_id[:60] + "…"
            raise ValueError(
                f"{where}: id {shown!r} holds the control character {char!r} at character {position + 1}; ids may "
                "not hold control characters (newline, tab, NUL, other C0/C1 controls, DEL) or line separators "
                "(U+2028, U+2029)"
            )


def insert(store: DocumentStore, docs: list[Document], pending: int, generated: GeneratedIds) -> np.ndarray:
    """Insert a chunk's documents into the store (see :meth:`DocumentStore.insert`); returns their vids.

    Raises:
        ValueError: If an id generated for a document clashes with a given one, naming both documents' lines.
    """
    try:
        vids = store.insert(docs, pending)
    except IdTakenError as err:
        raise ValueError(clash_message(err, docs)) from None
    generated.record(docs, vids)
    return vids


def clash_message(err: IdTakenError, docs: list[Document]) -> str:
    """What a clash between a generated id and a given one is, naming where each document was read."""
    doc = docs[err.position]
    holder = None if err.holder is None else docs[err.holder]
    fix = f"({GENERATED}); give every document an explicit id"
    if doc.id is not None and holder is not None:
        return f"id {err.id!r} on {doc.source} clashes with the id generated for {holder.source} {fix}"
    if doc.id is not None:
        return f"id {err.id!r} on {doc.source} is already taken {fix}"
    where = holder.source if holder is not None else "a document already stored (in the index or earlier input)"
    return f"the id {err.id!r} generated for {doc.source} is already the id of {where} {fix}"


class GeneratedIds:
    """Which of one input's stored rows got a generated id: a flag per vid, from the first such vid on."""

    def __init__(self) -> None:
        self.first: int | None = None
        self.flags = bytearray()

    def record(self, docs: list[Document], vids: np.ndarray) -> None:
        """Note the vids of the documents that had no id of their own (vids grow with every insert)."""
        for doc, vid in zip(docs, vids.tolist(), strict=True):
            if doc.id is None:
                self.first = vid if self.first is None else self.first
                offset = vid - self.first
                self.flags.extend(bytes(max(0, offset + 1 - len(self.flags))))
                self.flags[offset] = 1

    def __contains__(self, vid: object) -> bool:
        offset = int(vid) - self.first if self.first is not None and isinstance(vid, int) else -1
        return 0 <= offset < len(self.flags) and self.flags[offset] == 1


def resolve_duplicates(
    docs: list[Document],
    store: DocumentStore,
    on_duplicate: OnDuplicate,
    delete: DeleteVids,
    generated: GeneratedIds | None = None,
) -> list[int]:
    """Positions of ``docs`` to store, after ids repeated in the chunk or already stored are resolved.

    An id that was generated for an earlier document of the same input is never replaced or skipped: that is an
    error whatever ``on_duplicate`` says (``generated`` holds those documents' vids).

    Raises:
        ValueError: Under ``"error"``, naming the repeated or stored ids, or for a clash with a generated id;
            nothing is changed.
    """
    keep = dedupe_chunk(docs, on_duplicate)
    existing = store.live_vids([docs[i].id for i in keep if docs[i].id is not None])
    if generated is not None:
        refuse_generated(docs, existing, generated)
    if existing and on_duplicate == "error":
        raise ValueError(
            f"{len(existing)} document ids are already in the index: {preview(list(existing))}; "
            f"pass on_duplicate='replace' (--on-duplicate replace) to overwrite them, or 'skip' to keep them"
        )
    if existing and on_duplicate == "skip":
        return [i for i in keep if docs[i].id not in existing]
    if existing:
        delete([vid for vid, _ in existing.values()])
    return keep


def refuse_generated(docs: list[Document], existing: dict[str, tuple[int, int]], generated: GeneratedIds) -> None:
    """Refuse a document whose id is one the same input generated earlier (``existing``: id → (vid, added)).

    Raises:
        ValueError: Naming the document's line and the id.
    """
    for doc in docs:
        if doc.id in existing and existing[doc.id][0] in generated:
            raise ValueError(
                f"id {doc.id!r} on {doc.source} clashes with the id generated for an earlier document of this input "
                f"({GENERATED}); give every document an explicit id"
            )


def dedupe_chunk(docs: list[Document], on_duplicate: OnDuplicate) -> list[int]:
    """Positions to keep when ids repeat inside one chunk: error, keep the last (replace) or the first (skip)."""
    last: dict[str, int] = {}
    repeated: list[str] = []
    for i, doc in enumerate(docs):
        if doc.id is not None:
            if doc.id in last:
                repeated.append(doc.id)
                if on_duplicate == "skip":
                    continue
            last[doc.id] = i
    if repeated and on_duplicate == "error":
        raise ValueError(f"document ids repeat in the input: {preview(repeated)}; ids must be unique")
    chosen = set(last.values())
    return [i for i, doc in enumerate(docs) if doc.id is None or i in chosen]


def normalised(vectors: np.ndarray, dim: int, offset: int) -> np.ndarray:
    """L2-normalised copies of a chunk's embeddings.

    Raises:
        ValueError: If their shape is not ``(n, dim)`` or a value is not finite, naming the chunk's first document.
    """
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(
            f"embeddings of documents from #{offset} have shape {vectors.shape}; the index needs (n, {dim})"
        )
    if not np.isfinite(vectors).all():
        raise ValueError(f"embeddings of documents from #{offset} contain NaN or infinite values")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1)


def preview(values: list[str], limit: int = 5) -> str:
    """The first ``limit`` values, quoted, and how many more there are."""
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


class TrainingSpill:
    """Vectors of an untrained index wait in a file while a reservoir keeps a uniform random training sample."""

    def __init__(self, folder: Path, index: Any, dim: int, seed: int = 0) -> None:
        self.dim, self.seen = dim, 0
        self.sample = np.empty((faiss_vectors.train_size(index), dim), dtype=np.float32)
        self.rng = np.random.default_rng(seed)
        self.path = folder / f".spill-{os.getpid()}"
        self.file = open(self.path, "w+b")  # noqa: SIM115 - closed by close()
        self.ids: list[np.ndarray] = []

    def write(self, vectors: np.ndarray, vids: np.ndarray) -> None:
        """Append a chunk's vectors to the file and offer them to the training sample."""
        self.file.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
        self.ids.append(vids)
        # Reservoir sampling (Algorithm R), vectorised: row t replaces a random slot with probability size / (t + 1).
        size, t = len(self.sample), self.seen + np.arange(len(vectors))
        fill = t < size
        self.sample[t[fill]] = vectors[fill]
        slots = self.rng.integers(0, t[~fill] + 1) if (~fill).any() else np.empty(0, dtype=np.int64)
        take = slots < size
        self.sample[slots[take]] = vectors[~fill][take]
        self.seen += len(vectors)

    def train_and_add(self, index: Any, store: DocumentStore, factory: str, block: int = 8192) -> None:
        """Train ``index`` on the sample, then add the spilled vectors whose documents are still alive.

        Raises:
            ValueError: If there are too few vectors to train this index type, naming types that would work.
        """
        if self.seen == 0:
            return
        faiss_vectors.train(index, self.sample[: min(self.seen, len(self.sample))], factory)
        ids = np.concatenate(self.ids)
        self.file.seek(0)
        for start in range(0, len(ids), block):
            count = min(block, len(ids) - start)
            vectors = np.fromfile(self.file, dtype=np.float32, count=count * self.dim).reshape(count, self.dim)
            block_ids = ids[start : start + count]
            alive = np.isin(block_ids, store.vids_alive(block_ids))
            faiss_vectors.add(index, vectors[alive], block_ids[alive])

    def close(self) -> None:
        """Remove the spill file."""
        self.file.close()
        self.path.unlink(missing_ok=True)
