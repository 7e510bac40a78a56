"""Semantic search: a FAISS index of document embeddings with a SQLite document store, on disk.

An index is a folder::

    manifest.json        the commit point: model identity, dimension, metric, factory string, count, generation
    documents.sqlite     id, title, text and metadata of every document (see causal2vec.docstore)
    vectors.<g>.faiss    the FAISS index of generation g, ids = the store's row numbers

Writes never touch what readers use. :meth:`SemanticIndex.add` and :meth:`SemanticIndex.delete` stage changes as
the next generation; :meth:`SemanticIndex.save` writes a new vector file and then replaces ``manifest.json``
atomically. A writer killed before that rename leaves the previous generation exactly as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from tqdm.auto import tqdm

from causal2vec import faiss_index
from causal2vec.corpus import Document, as_document, chunked
from causal2vec.docstore import DocumentStore, StoredDocument
from causal2vec.encoding import show_progress

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DOCUMENTS = "documents.sqlite"
LOCK = ".lock"
OnDuplicate = Literal["error", "replace", "skip"]
ON_DUPLICATE = ("error", "replace", "skip")
COMPACT_FRACTION = 0.2  # rebuild an HNSW index at save time once this share of its vectors belongs to deleted docs


class IndexBusyError(RuntimeError):
    """Another process is writing to the index, or committed since this one loaded it."""


class Embedder(Protocol):
    """What an index needs from a model; :class:`causal2vec.Causal2Vec` is one."""

    @property
    def embedding_dim(self) -> int:
        """Length of the vectors."""
        ...

    def encode_query(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        """Embed queries (with the query instruction), ``(n, embedding_dim)``."""
        ...

    def encode_document(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        """Embed documents, ``(n, embedding_dim)``."""
        ...


@dataclass
class Manifest:
    """The description of an index folder, saved as ``manifest.json``; replacing it commits a write."""

    dim: int  # embedding dimension
    factory: str  # FAISS factory string, e.g. "Flat", "HNSW32", "IVF1024,PQ96"
    model: str | None  # how the model loads: "default", a checkpoint folder, a hub id (None: not loadable)
    model_config_sha256: str | None  # hash of the model's config as it embedded the documents
    model_settings: dict[str, Any] = field(default_factory=dict)  # dtype and token budgets used for documents
    metric: str = "inner_product"  # on L2-normalised vectors: cosine similarity
    generation: int = 0  # the committed generation (see causal2vec.docstore)
    count: int = 0  # documents in the committed generation
    tombstones: int = 0  # vectors of deleted documents still in an HNSW index (searches skip them)
    vectors_file: str = "vectors.0.faiss"
    created: str = ""
    updated: str = ""
    format_version: int = FORMAT_VERSION

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        """Read and check ``folder/manifest.json``.

        Raises:
            FileNotFoundError: If the folder or its manifest is missing.
            ValueError: If the manifest is not valid JSON, lacks fields, or comes from a newer format.
        """
        if not folder.is_dir():
            raise FileNotFoundError(f"index folder {folder} does not exist")
        path = folder / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a semantic index: {MANIFEST} is missing")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"the index manifest {path} is corrupt ({err})") from err
        if not isinstance(data, dict):
            raise ValueError(f"the index manifest {path} is corrupt: expected a JSON object")
        if data.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
            raise ValueError(
                f"{path} has format_version {data['format_version']}; this causal2vec reads up to {FORMAT_VERSION}. "
                f"Upgrade causal2vec"
            )
        fields = dataclasses.fields(cls)
        names = {f.name for f in fields}
        required = {f.name for f in fields if f.default is f.default_factory is dataclasses.MISSING}
        if missing := sorted(required - data.keys()):
            raise ValueError(f"the index manifest {path} is corrupt: it lacks {missing}")
        return cls(**{k: v for k, v in data.items() if k in names})

    def write(self, folder: Path) -> None:
        """Replace ``folder/manifest.json`` atomically (written aside, flushed, renamed)."""
        self.updated = _now()
        tmp = folder / f".{MANIFEST}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(dataclasses.asdict(self), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(folder / MANIFEST)
        _fsync_dir(folder)


@dataclass(frozen=True)
class Hit:
    """One search result: the document's id, its cosine ``score``, and its stored fields."""

    id: str
    score: float
    title: str | None
    text: str
    metadata: dict[str, Any]

    def snippet(self, width: int = 200) -> str:
        """The start of the text on one line, at most ``width`` characters."""
        flat = " ".join(self.text.split())
        return flat if len(flat) <= width else flat[: width - 1].rstrip() + "…"

    def to_dict(self, snippet: int | None = None) -> dict[str, Any]:
        """A JSON-ready dict; with ``snippet``, the text is cut to that many characters under ``snippet``."""
        out: dict[str, Any] = {"id": self.id, "score": self.score, "title": self.title}
        out.update({"snippet": self.snippet(snippet)} if snippet else {"text": self.text})
        return {**out, "metadata": self.metadata}


class SemanticIndex:
    """A semantic search index on disk: FAISS vectors, a SQLite document store and a manifest.

    Make one with :meth:`build` (from a corpus, written atomically) or :meth:`create` (empty), open one with
    :meth:`load`. :meth:`add` and :meth:`delete` stage changes, :meth:`save` commits them; until then other
    processes see the previous state, and an error during :meth:`add` discards everything unsaved.

    Example:
        >>> from causal2vec import Causal2Vec, SemanticIndex
        >>> model = Causal2Vec.from_pretrained("default")
        >>> index = SemanticIndex.build("news.idx", model, [{"id": "1", "text": "Rates rise again"}])
        >>> index.search("interest rates", k=5)[0].id
        '1'
    """

    def __init__(self, path: Path, manifest: Manifest, vectors: Any, store: DocumentStore, model: Any) -> None:
        self.path = path
        self.manifest = manifest
        self._vectors = vectors
        self.store = store
        self._model = model
        self._device: str | None = None
        self._dtype: str | None = None
        self._lock: Any = None  # open lock file while changes are staged
        self._tombstones = np.empty(0, dtype=np.int64)

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(cls, path: str | Path, model: Embedder, *, factory: str = "Flat", gpu: bool = False) -> SemanticIndex:
        """Create an empty index folder for ``model``'s embeddings (atomically, like :meth:`build`).

        Args:
            path: The folder to create; it must not exist, or be empty.
            model: The embedding model (its identity is recorded so that searches can load it again).
            factory: A FAISS factory string: ``"Flat"`` (exact), ``"HNSW32"``, ``"IVF1024,Flat"``, ``"IVF4096,PQ96"``…
            gpu: Train, add and search on the GPUs (needs faiss-gpu); files are always written from a CPU copy.

        Raises:
            FileExistsError: If ``path`` exists and is not an empty folder.
            ValueError: If FAISS cannot build ``factory``.
        """
        path = Path(path)
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        return cls.build(path, model, [], factory=factory, gpu=gpu)

    @classmethod
    def _create_at(cls, path: Path, model: Embedder, factory: str) -> SemanticIndex:
        """Write generation 0 of an empty index into a new folder ``path``."""
        dim = int(model.embedding_dim)
        vectors = faiss_index.new_index(factory, dim)
        name, sha, settings = model_identity(model)
        now = _now()
        manifest = Manifest(dim, factory, name, sha, settings, created=now, updated=now)
        path.mkdir(parents=True)
        store = DocumentStore(path / DOCUMENTS)
        faiss_index.write(vectors, path / manifest.vectors_file)
        manifest.write(path)
        return cls(path, manifest, vectors, store, model)

    @classmethod
    def build(
        cls,
        path: str | Path,
        model: Embedder,
        documents: Iterable[Document | str | dict[str, Any]],
        *,
        factory: str = "Flat",
        overwrite: bool = False,
        gpu: bool = False,
        **add_kwargs: Any,
    ) -> SemanticIndex:
        """Build an index from a corpus, atomically: it is written in a hidden sibling folder and renamed into place.

        Args:
            path: Where the index goes.
            model: The embedding model.
            documents: Documents, strings, or dicts with ``text`` (and ``id``, ``title``, ``metadata``); streamed.
            factory: A FAISS factory string (see :meth:`create`).
            overwrite: Replace an existing index at ``path`` (only a semantic index is ever replaced).
            gpu: Train, add and search on the GPUs (needs faiss-gpu).
            **add_kwargs: Passed to :meth:`add` (``batch_size``, ``chunk_size``, ``on_duplicate`` …).

        Raises:
            FileExistsError: If ``path`` exists and ``overwrite`` is not set, or it is not an index.
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) or append to it")
        if path.exists() and not (path / MANIFEST).is_file():
            raise FileExistsError(f"refusing to overwrite {path}: it is not a semantic index (no {MANIFEST})")
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_siblings(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with cls._create_at(tmp, model, factory) as built:
                if gpu:
                    built.to_gpu()
                built.add(documents, **add_kwargs)
                built.save()
            _swap_into_place(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        logger.info("built %s: %d documents", path, built.manifest.count)
        # Reopen the store at its final place, keeping the vectors in memory rather than reading a second copy.
        index = cls(path, built.manifest, built._vectors, DocumentStore(path / DOCUMENTS), model)
        index._tombstones = built._tombstones
        return index

    @classmethod
    def load(
        cls,
        path: str | Path,
        model: Embedder | None = None,
        *,
        device: str | None = None,
        dtype: str | None = None,
        gpu: bool = False,
    ) -> SemanticIndex:
        """Open an index folder.

        Args:
            path: The index folder.
            model: The model to embed queries with; by default the one named in the manifest, loaded on first use.
            device: Device of a model loaded from the manifest (default: CUDA when available, else CPU).
            dtype: Its dtype (default: the dtype that embedded the documents).
            gpu: Move the FAISS index to the GPUs (needs faiss-gpu).

        Raises:
            FileNotFoundError: If the folder, its manifest, its vector file or its document store is missing.
            ValueError: If a file is corrupt, the parts disagree, or ``model``'s dimension differs from the index's.
        """
        path = Path(path)
        manifest, vectors = _read_committed(path)
        if not (path / DOCUMENTS).is_file():
            raise FileNotFoundError(f"the index's document store {path / DOCUMENTS} is missing")
        store = DocumentStore(path / DOCUMENTS)
        index = cls(path, manifest, vectors, store, None)
        index._check_consistency()
        if model is not None:
            index.model = model
        index._device, index._dtype = device, dtype
        if gpu:
            index.to_gpu()
        return index

    def to_gpu(self) -> None:
        """Move the FAISS index onto the GPUs (needs faiss-gpu; Flat and IVF types have GPU versions)."""
        self._vectors = faiss_index.to_gpu(self._vectors)

    def close(self) -> None:
        """Discard unsaved changes and close the document store."""
        if self._lock is not None:
            self.discard()
        self.store.close()

    def __enter__(self) -> SemanticIndex:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the model

    @property
    def model(self) -> Embedder:
        """The model that embeds queries: the one given, or the one the manifest names (loaded on first use)."""
        if self._model is None:
            self._model = load_model(self.manifest, self._device, self._dtype)
        return self._model

    @model.setter
    def model(self, model: Embedder) -> None:
        dim = int(model.embedding_dim)
        if dim != self.manifest.dim:
            raise ValueError(
                f"the model embeds in {dim} dimensions but the index {self.path} holds {self.manifest.dim}-dimensional "
                f"vectors (built with model {self.manifest.model!r}); use that model or rebuild the index"
            )
        name, sha, _ = model_identity(model)
        if sha is not None and self.manifest.model_config_sha256 not in (None, sha):
            logger.warning(
                "model %r has a different config from the one that embedded this index's documents (%r); "
                "scores may be meaningless", name, self.manifest.model,
            )  # fmt: skip
        self._model = model

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        """Number of documents (including staged changes)."""
        return self.store.count(self._view)

    @property
    def _view(self) -> int:
        """The generation this object reads: the committed one, or the staged one while it writes."""
        return self.manifest.generation + (1 if self._lock is not None else 0)

    def get(self, ids: Sequence[str]) -> list[StoredDocument | None]:
        """The stored documents for ``ids`` (``None`` where an id is not in the index)."""
        found = self.store.by_id([str(i) for i in ids], self._view)
        return [found.get(str(i)) for i in ids]

    def search(
        self,
        queries: str | Sequence[str],
        k: int = 10,
        *,
        instruction: str | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
        k_factor: int | None = None,
        batch_size: int = 32,
    ) -> list[Hit] | list[list[Hit]]:
        """Embed queries with the query instruction and return the ``k`` nearest documents of each.

        Args:
            queries: One query (returns a list of hits) or a list of queries (returns one list per query).
            k: Hits per query; when the index holds fewer documents, all of them are returned.
            instruction: Use this instruction instead of the model's query instruction.
            nprobe: IVF lists to visit (IVF indexes); more is slower and more accurate.
            ef_search: HNSW candidate list size (HNSW indexes); more is slower and more accurate.
            k_factor: Candidates per hit that a refined index (``…,RFlat``) re-ranks exactly (default 16).
            batch_size: Queries per forward pass.

        Raises:
            ValueError: If a query is empty, ``k`` is not a positive integer, or a parameter does not apply.
            TypeError: If a query is not a string.
        """
        single = isinstance(queries, str)
        texts = [queries] if single else list(queries)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"queries[{i}] is {type(text).__name__}; each query must be a str")
            if not text.strip():
                raise ValueError("the query is empty" if single else f"queries[{i}] is empty")
        _check_k(k)
        if not texts:
            return []
        kwargs = {"instruction": instruction, "batch_size": batch_size, "show_progress_bar": False}
        vectors = self.model.encode_query(texts, **kwargs)
        params = {"nprobe": nprobe, "ef_search": ef_search, "k_factor": k_factor}
        hits = self.search_vectors(np.atleast_2d(vectors), k, **params)
        return hits[0] if single else hits

    def search_vectors(
        self,
        vectors: np.ndarray,
        k: int = 10,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
        k_factor: int | None = None,
    ) -> list[list[Hit]]:
        """Search with query vectors ``(n, dim)`` that are already embedded (and L2-normalised); see :meth:`search`."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        _check_k(k)
        if vectors.shape[1] != self.manifest.dim:
            raise ValueError(f"query vectors have dimension {vectors.shape[1]}; the index holds {self.manifest.dim}")
        faiss_index.set_search_parameters(self._vectors, nprobe, ef_search, k_factor)
        if self._vectors.ntotal == 0:
            return [[] for _ in vectors]
        scores, vids = faiss_index.search(self._vectors, vectors, min(k, self._vectors.ntotal), self._tombstones)
        docs = self.store.by_vid(vids[vids >= 0].tolist(), self._view)
        return [
            [_hit(docs[v], s) for s, v in zip(row_scores, row_vids, strict=True) if v in docs]
            for row_scores, row_vids in zip(scores.tolist(), vids.tolist(), strict=True)
        ]

    # ------------------------------------------------------------------ writing

    def add(
        self,
        documents: Iterable[Document | str | dict[str, Any]],
        *,
        embeddings: np.ndarray | None = None,
        on_duplicate: OnDuplicate = "error",
        batch_size: int = 32,
        chunk_size: int = 2048,
        total: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> int:
        """Embed and stage documents, streamed in chunks; :meth:`save` commits them.

        Memory holds one chunk of texts and vectors at a time. An untrained index (IVF, PQ …) is trained on a
        uniform random sample of the documents' vectors, which wait in a temporary file meanwhile.

        Args:
            documents: :class:`Document` objects, strings, or dicts with ``text`` and optionally ``id``, ``title``
                and ``metadata``. Documents without an id get the string of their internal number.
            embeddings: Precomputed ``(n, dim)`` embeddings of ``documents`` (then a sequence); skips the model.
            on_duplicate: What an id that is already in the index (or repeats in the input) does: ``"error"``
                (default: raise, staging nothing), ``"replace"`` (the new document wins), ``"skip"`` (the stored
                one stays).
            batch_size: Texts per forward pass of the model.
            chunk_size: Documents read, embedded and stored at a time.
            total: The number of documents, for the progress bar.
            show_progress_bar: Show documents/s; ``None`` follows the log level.

        Returns:
            The number of documents staged.

        Raises:
            ValueError: For a duplicate id under ``on_duplicate="error"``, bad embeddings, or an untrainable corpus;
                all unsaved changes are discarded.
        """
        if on_duplicate not in ON_DUPLICATE:
            raise ValueError(f"on_duplicate={on_duplicate!r} is not supported; choose one of {list(ON_DUPLICATE)}")
        if embeddings is not None:
            documents = list(documents)
            embeddings = np.asarray(embeddings, dtype=np.float32)
            if embeddings.ndim != 2 or len(embeddings) != len(documents):
                raise ValueError(f"embeddings have shape {embeddings.shape}; expected ({len(documents)}, dim)")
            total = len(documents)
        self._begin_write()
        bar = tqdm(total=total, unit="doc", desc="Indexing", disable=not show_progress(show_progress_bar))
        truncation = _FirstTruncationWarning()
        logging.getLogger("causal2vec.encoding").addFilter(truncation)
        try:
            staged = self._stage_all(documents, embeddings, on_duplicate, batch_size, chunk_size, bar)
        except BaseException:
            self.discard()
            raise
        finally:
            bar.close()
            logging.getLogger("causal2vec.encoding").removeFilter(truncation)
        if truncation.hidden:
            logger.warning("texts were also truncated in %d later chunks (warnings not repeated)", truncation.hidden)
        logger.info("staged %d documents in %s", staged, self.path)
        return staged

    def delete(self, ids: Iterable[str], *, missing_ok: bool = False) -> int:
        """Stage the deletion of documents by id; :meth:`save` commits it.

        Raises:
            KeyError: If an id is not in the index and ``missing_ok`` is not set; nothing is staged.
        """
        ids = [str(i) for i in ids]
        found = self.store.live_vids(ids)
        if missing := [i for i in dict.fromkeys(ids) if i not in found]:
            if not missing_ok:
                raise KeyError(f"{len(missing)} ids are not in the index: {_preview(missing)}")
            logger.info("%d ids to delete were not in the index", len(missing))
        if found:
            self._begin_write()
            self._delete_vids([vid for vid, _ in found.values()])
        return len(found)

    def save(self, path: str | Path | None = None) -> None:
        """Commit the staged changes: write the new vector file, then switch the manifest to it atomically.

        Args:
            path: Also write a copy of the committed index to this new folder (built aside, renamed into place).

        Raises:
            FileExistsError: If ``path`` already exists.
        """
        self._commit()
        if path is not None and Path(path).resolve() != self.path.resolve():
            self._copy_to(Path(path))

    def _copy_to(self, path: Path) -> None:
        if path.exists():
            raise FileExistsError(f"{path} already exists; save a copy to a new folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            tmp.mkdir()
            self.store.backup_to(tmp / DOCUMENTS)
            faiss_index.write(self._vectors, tmp / self.manifest.vectors_file)
            dataclasses.replace(self.manifest).write(tmp)
            _swap_into_place(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        logger.info("saved a copy of %s to %s", self.path, path)

    def _commit(self) -> None:
        if self._lock is None:
            return
        if self._tombstones.size > COMPACT_FRACTION * max(self._vectors.ntotal, 1):
            self.compact()
        old, m = self.manifest, dataclasses.replace(self.manifest)
        m.generation += 1
        m.vectors_file = f"vectors.{m.generation}.faiss"
        m.count, m.tombstones = self.store.count(m.generation), int(self._tombstones.size)
        if self._vectors.ntotal - m.tombstones != m.count:
            raise RuntimeError(
                f"index inconsistency: {self._vectors.ntotal} vectors, {m.tombstones} stale, {m.count} documents"
            )
        tmp = self.path / f".{m.vectors_file}.tmp"
        faiss_index.write(self._vectors, tmp)
        tmp.replace(self.path / m.vectors_file)
        m.write(self.path)  # the commit point
        self.manifest = m
        with contextlib.suppress(FileNotFoundError):
            (self.path / old.vectors_file).unlink()
        self.store.purge(m.generation)
        self._release()
        logger.info("saved %s: generation %d, %d documents", self.path, m.generation, m.count)

    def discard(self) -> None:
        """Drop all staged changes and return to the committed state."""
        if self._lock is None:
            return
        self.store.discard_pending(self.manifest.generation)
        on_gpu = faiss_index.is_gpu(self._vectors)
        self._vectors = faiss_index.read(self.path / self.manifest.vectors_file)
        if on_gpu:
            self._vectors = faiss_index.to_gpu(self._vectors)
        self._tombstones = self._stale_vids()
        self._release()

    def compact(self) -> None:
        """Rebuild an index that cannot remove vectors (HNSW, refined) without those of deleted documents.

        :meth:`save` does it when they pass 20% of the index.
        """
        if self._tombstones.size == 0:
            return
        self._begin_write()
        ids, vectors = faiss_index.ids_of(self._vectors), faiss_index.vectors_of(self._vectors)
        keep = ~np.isin(ids, self._tombstones)
        logger.info("compacting: rebuilding the index over %d vectors, dropping %d", keep.sum(), (~keep).sum())
        rebuilt = faiss_index.new_index(self.manifest.factory, self.manifest.dim)
        vectors, ids = vectors[keep], ids[keep]
        if not rebuilt.is_trained:
            sample = np.random.default_rng(0).permutation(len(vectors))[: faiss_index.train_size(rebuilt)]
            faiss_index.train(rebuilt, vectors[np.sort(sample)])
        faiss_index.add(rebuilt, vectors, ids)
        self._vectors, self._tombstones = rebuilt, np.empty(0, dtype=np.int64)

    # ------------------------------------------------------------------ internals

    def _stage_all(
        self,
        documents: Iterable[Any],
        embeddings: np.ndarray | None,
        on_duplicate: OnDuplicate,
        batch_size: int,
        chunk_size: int,
        bar: tqdm,
    ) -> int:
        spill = None if self._vectors.is_trained else _TrainingSpill(self.path, self._vectors, self.manifest.dim)
        staged, offset = 0, 0
        try:
            for chunk in chunked(documents, chunk_size):
                given = None if embeddings is None else embeddings[offset : offset + len(chunk)]
                docs, vectors = self._prepare(chunk, given, offset, on_duplicate, batch_size)
                offset += len(chunk)
                vids = self.store.insert(docs, self._view)
                if spill is None:
                    faiss_index.add(self._vectors, vectors, vids)
                else:
                    spill.write(vectors, vids)
                staged += len(docs)
                bar.update(len(chunk))
            if spill is not None:
                spill.train_and_add(self._vectors, self.store, self.manifest.factory)
                if self._tombstones.size:  # replaced documents that never left the spill have no vector to skip
                    self._tombstones = np.intersect1d(self._tombstones, faiss_index.ids_of(self._vectors))
        finally:
            if spill is not None:
                spill.close()
        return staged

    def _prepare(
        self, chunk: list[Any], given: np.ndarray | None, offset: int, on_duplicate: OnDuplicate, batch_size: int
    ) -> tuple[list[Document], np.ndarray]:
        """Validate a chunk, resolve duplicate ids, and embed what remains."""
        docs = [as_document(item, f"documents[{offset + i}]") for i, item in enumerate(chunk)]
        keep = _dedupe_chunk(docs, on_duplicate)
        ids = [docs[i].id for i in keep if docs[i].id is not None]
        existing = self.store.live_vids(ids)
        if existing and on_duplicate == "error":
            raise ValueError(
                f"{len(existing)} document ids are already in the index: {_preview(list(existing))}; "
                f"pass on_duplicate='replace' (--on-duplicate replace) to overwrite them, or 'skip' to keep them"
            )
        if existing and on_duplicate == "skip":
            keep = [i for i in keep if docs[i].id not in existing]
        elif existing:
            self._delete_vids([vid for vid, _ in existing.values()])
        docs = [docs[i] for i in keep]
        if given is not None:
            vectors = np.asarray(given, dtype=np.float32)[keep]
        elif docs:
            texts = [d.embedding_text() for d in docs]
            vectors = self.model.encode_document(texts, batch_size=batch_size, show_progress_bar=False)
        else:
            vectors = np.empty((0, self.manifest.dim), dtype=np.float32)
        return docs, _normalised(np.asarray(vectors, dtype=np.float32), self.manifest.dim, offset)

    def _delete_vids(self, vids: list[int]) -> None:
        self.store.delete(vids, self._view)
        array = np.asarray(vids, dtype=np.int64)
        if faiss_index.is_gpu(self._vectors):
            self._vectors = faiss_index.remove_on_cpu(self._vectors, array)
        elif not faiss_index.remove(self._vectors, array):
            self._tombstones = np.union1d(self._tombstones, array)

    def _begin_write(self) -> None:
        """Take the writer lock, check nobody committed since loading, and clear a killed writer's leftovers."""
        if self._lock is not None:
            return
        self._lock = _lock(self.path)
        on_disk = Manifest.read(self.path).generation
        if on_disk != self.manifest.generation:
            self._release()
            raise IndexBusyError(
                f"{self.path} was changed by another writer (generation {on_disk}, loaded {self.manifest.generation});"
                f" load it again before writing"
            )
        if dropped := self.store.discard_pending(self.manifest.generation):
            logger.warning("discarded %d documents left by an interrupted write to %s", dropped, self.path)
        self.store.purge(self.manifest.generation)
        for leftover in [*self.path.glob("vectors.*.faiss"), *self.path.glob(".*.tmp"), *self.path.glob(".spill-*")]:
            if leftover.name != self.manifest.vectors_file:
                leftover.unlink()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _stale_vids(self) -> np.ndarray:
        """Ids of vectors whose documents were deleted (HNSW keeps them until compaction)."""
        if self.manifest.tombstones == 0:
            return np.empty(0, dtype=np.int64)
        return np.setdiff1d(faiss_index.ids_of(self._vectors), self.store.vids(self.manifest.generation))

    def _check_consistency(self) -> None:
        m, vectors = self.manifest, self._vectors
        if vectors.d != m.dim:
            raise ValueError(f"{self.path}: the vector file holds {vectors.d}-d vectors, the manifest says {m.dim}")
        stored = self.store.count(m.generation)
        if stored != m.count or vectors.ntotal - m.tombstones != m.count:
            raise ValueError(
                f"{self.path} is inconsistent: the manifest counts {m.count} documents, the store {stored}, "
                f"the vector file {vectors.ntotal} vectors ({m.tombstones} stale)"
            )
        self._tombstones = self._stale_vids()


class _FirstTruncationWarning(logging.Filter):
    """Lets the first "texts were truncated" warning of a streamed add through, and counts the rest."""

    def __init__(self) -> None:
        super().__init__()
        self.shown, self.hidden = False, 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "truncated" not in str(record.msg):
            return True
        if self.shown:
            self.hidden += 1
            return False
        self.shown = True
        return True


class _TrainingSpill:
    """Vectors of an untrained index wait in a file while a reservoir keeps a uniform random training sample."""

    def __init__(self, folder: Path, vectors: Any, dim: int, seed: int = 0) -> None:
        self.dim, self.seen = dim, 0
        self.sample = np.empty((faiss_index.train_size(vectors), dim), dtype=np.float32)
        self.rng = np.random.default_rng(seed)
        self.path = folder / f".spill-{os.getpid()}"
        self.file = open(self.path, "w+b")  # noqa: SIM115 - closed by close()
        self.ids: list[np.ndarray] = []

    def write(self, vectors: np.ndarray, vids: np.ndarray) -> None:
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
        if self.seen == 0:
            return
        needed = faiss_index.min_train_size(index)
        if self.seen < needed:
            raise ValueError(
                f"factory {factory!r} needs at least {needed} documents to train on; got {self.seen}. "
                f"Index more documents, or choose fewer IVF lists (e.g. 'IVF{max(1, self.seen // 39)},Flat') or 'Flat'"
            )
        faiss_index.train(index, self.sample[: min(self.seen, len(self.sample))])
        ids = np.concatenate(self.ids)
        self.file.seek(0)
        for start in range(0, len(ids), block):
            count = min(block, len(ids) - start)
            vectors = np.fromfile(self.file, dtype=np.float32, count=count * self.dim).reshape(count, self.dim)
            block_ids = ids[start : start + count]
            alive = np.isin(block_ids, store.vids_alive(block_ids))
            faiss_index.add(index, vectors[alive], block_ids[alive])

    def close(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


# ---------------------------------------------------------------------- helpers


def model_identity(model: Any) -> tuple[str | None, str | None, dict[str, Any]]:
    """The name a model loads by, a SHA-256 of its config, and the settings that shaped its embeddings."""
    name = getattr(model, "name_or_path", None)
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return name, None, {}
    data = config.to_dict()
    sha = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
    settings = {k: data[k] for k in ("encoder_max_length", "llm_max_length") if k in data}
    if (dtype := getattr(model, "dtype", None)) is not None:
        settings["dtype"] = str(dtype).removeprefix("torch.")
    return name, sha, settings


def load_model(manifest: Manifest, device: str | None = None, dtype: str | None = None) -> Any:
    """Load the model a manifest names, with the token budgets and dtype that embedded its documents.

    Raises:
        ValueError: If the manifest names no loadable model.
    """
    if manifest.model is None:
        raise ValueError(
            "this index does not name a loadable model (it was built with a model that was never saved); "
            "pass the model explicitly (SemanticIndex.load(path, model=...) or --model)"
        )
    from causal2vec.encoding import auto_dtype, default_device
    from causal2vec.model import Causal2Vec

    device = device or default_device()
    dtype = auto_dtype(dtype or manifest.model_settings.get("dtype", "float32"), device)
    logger.info("loading model %s (%s on %s) for %s", manifest.model, dtype, device, "queries")
    model = Causal2Vec.from_pretrained(manifest.model, device=device, dtype=dtype)
    for key in ("encoder_max_length", "llm_max_length"):
        if key in manifest.model_settings:
            setattr(model.config, key, manifest.model_settings[key])
    return model


def _dedupe_chunk(docs: list[Document], on_duplicate: OnDuplicate) -> list[int]:
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
        raise ValueError(f"document ids repeat in the input: {_preview(repeated)}; ids must be unique")
    chosen = set(last.values())
    return [i for i, doc in enumerate(docs) if doc.id is None or i in chosen]


def _normalised(vectors: np.ndarray, dim: int, offset: int) -> np.ndarray:
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(
            f"embeddings of documents from #{offset} have shape {vectors.shape}; the index needs (n, {dim})"
        )
    if not np.isfinite(vectors).all():
        raise ValueError(f"embeddings of documents from #{offset} contain NaN or infinite values")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1)


def _hit(doc: StoredDocument, score: float) -> Hit:
    return Hit(id=doc.id, score=float(score), title=doc.title, text=doc.text, metadata=doc.metadata)


def _check_k(k: object) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r} must be a positive integer")


def _preview(values: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock(folder: Path) -> Any:
    """An exclusive lock on ``folder/.lock`` (one writer at a time), held until the file is closed."""
    import fcntl

    handle = open(folder / LOCK, "a+")  # noqa: SIM115 - the open file is the lock
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as err:
        handle.close()
        raise IndexBusyError(f"another process is writing to {folder}; try again when it has finished") from err
    return handle


def _swap_into_place(tmp: Path, path: Path) -> None:
    """Move a finished index folder to ``path``, replacing an existing index there."""
    if not path.exists():
        tmp.rename(path)
        _fsync_dir(path.parent)
        return
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    path.rename(old)
    tmp.rename(path)
    _fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def _remove_stale_siblings(path: Path) -> None:
    """Remove hidden build folders next to ``path`` whose building process is gone."""
    for stale in path.parent.glob(f".{path.name}.*-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_committed(path: Path, attempts: int = 3) -> tuple[Manifest, Any]:
    """The manifest and its vector file; re-reads when a writer commits (and removes the old file) in between."""
    for attempt in range(attempts):
        manifest = Manifest.read(path)
        try:
            return manifest, faiss_index.read(path / manifest.vectors_file)
        except FileNotFoundError:
            if attempt == attempts - 1 or Manifest.read(path).generation == manifest.generation:
                raise
    raise AssertionError("unreachable")
