"""``SemanticIndex``: build, open, change and search an index folder (the layout is in :mod:`.manifest`).

Writes never touch what readers use: :meth:`SemanticIndex.add` and :meth:`SemanticIndex.delete` stage changes as
the next generation under the writer lock, and :meth:`SemanticIndex.save` commits them by replacing the manifest.
A handle that only reads notices a newer commit by another process and reloads before it searches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from causal2vec.backends import load_backend
from causal2vec.encoding import EmbeddingBackend, encode_texts
from causal2vec.files import verify_checksum
from causal2vec.runtime import show_progress
from causal2vec.search import ingest, ondisk
from causal2vec.search import vectors as faiss_vectors
from causal2vec.search.commit import Generations
from causal2vec.search.corpus import Document
from causal2vec.search.docstore import Hit, StoredDocument
from causal2vec.search.manifest import check_model, check_precision

logger = logging.getLogger(__name__)


class SemanticIndex:
    """A semantic search index on disk: FAISS vectors, a SQLite document store and a manifest.

    Make one with :meth:`build` (from a corpus, written atomically) or :meth:`create` (empty), open one with
    :meth:`load`. :meth:`add` and :meth:`delete` stage changes, :meth:`save` commits them; until then other
    processes see the previous state, and an error (or Ctrl-C) during :meth:`add` discards everything unsaved.

    Example:
        >>> from causal2vec import Causal2Vec, SemanticIndex
        >>> model = Causal2Vec.from_pretrained("default")
        >>> index = SemanticIndex.build("news.idx", model, [{"id": "1", "text": "Rates rise again"}])
        >>> index.search("interest rates", k=5)[0].id
        '1'
    """

    COMPACT_FRACTION = 0.2  # save() rebuilds an HNSW index once this share of its vectors belongs to deleted docs

    def __init__(self, state: Generations, model: EmbeddingBackend | None) -> None:
        self._state = state
        self._model = model
        self._load_options: dict[str, Any] = {}  # device and dtype of a model loaded from the manifest

    path = property(lambda self: self._state.path, doc="The index folder.")
    manifest = property(lambda self: self._state.manifest, doc="The committed :class:`Manifest`.")
    store = property(lambda self: self._state.store, doc="The :class:`DocumentStore`.")
    _vectors = property(lambda self: self._state.vectors)
    _view = property(lambda self: self._state.view)

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(
        cls, path: str | Path, model: EmbeddingBackend, *, factory: str = "Flat", **kwargs: Any
    ) -> SemanticIndex:
        """Create an empty index folder for ``model``'s embeddings (atomically; see :meth:`build`)."""
        path = Path(path)
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        return cls.build(path, model, [], factory=factory, **kwargs)

    @classmethod
    def build(
        cls,
        path: str | Path,
        model: EmbeddingBackend,
        documents: Iterable[Document | str | dict[str, Any]],
        *,
        factory: str = "Flat",
        overwrite: bool = False,
        gpu: bool = False,
        max_length: int | None = None,
        **add_kwargs: Any,
    ) -> SemanticIndex:
        """Build an index from a corpus, atomically: it is written in a hidden sibling folder and renamed into place.

        Args:
            path: Where the index goes.
            model: The embedding model (its identity is recorded so that searches can load it again).
            documents: Documents, strings, or dicts with ``text`` (and ``id``, ``title``, ``metadata``); streamed.
            factory: A FAISS factory string: ``"Flat"`` (exact), ``"HNSW32"``, ``"IVF1024,Flat"``, ``"IVF4096,PQ96"``…
            overwrite: Replace an existing index at ``path`` (only a semantic index is ever replaced).
            gpu: Train, add and search on the GPUs (needs faiss-gpu); files are always written from a CPU copy.
            max_length: Token budget of the model for this index's documents and queries (``None``: the model's).
            **add_kwargs: Passed to :meth:`add` (``batch_size``, ``chunk_size``, ``on_duplicate`` …).

        Raises:
            FileExistsError: If ``path`` exists and ``overwrite`` is not set, or it is not an index.
            IndexBusyError: If another process is writing to ``path``.
            ValueError: If FAISS cannot build ``factory``, or a document is bad; nothing is left behind.
        """
        identity = model.identity.with_budget(max_length)
        # Fail now, not at the first search, if the query instruction leaves no room in the token budget.
        model.tokenize([""], model.config.format_instruction(model.config.query_instruction), max_length=max_length)
        fill = cls._filler(model, documents, gpu, add_kwargs)
        state = Generations.build(Path(path).absolute(), int(model.embedding_dim), factory, identity, overwrite, fill)
        logger.info("built %s: %d documents", state.path, state.manifest.count)
        return cls(state, model)

    @classmethod
    def _filler(
        cls, model: EmbeddingBackend, documents: Iterable[Any], gpu: bool, add_kwargs: dict[str, Any]
    ) -> Callable[[Generations], Generations]:
        """What :meth:`build` does in the new, hidden folder: add the documents (on the GPUs if asked) and save."""

        def fill(state: Generations) -> Generations:
            with cls(state, model) as built:
                if gpu:
                    built.to_gpu()
                built.add(documents, **add_kwargs)
                built.save()
            return state

        return fill

    @classmethod
    def build_from_shards(
        cls, path: str | Path, shards: str | Path, *, factory: str = "Flat", model: EmbeddingBackend | None = None,
        overwrite: bool = False, sample: int | None = None, seed: int = 0, on_duplicate: ingest.OnDuplicate = "error",
        chunk_size: int = 2048, gpu: bool = False, show_progress_bar: bool | None = None, on_disk: bool = False,
    ) -> SemanticIndex:  # fmt: skip
        """Build an index from a shard folder written by :func:`causal2vec.ray_embed.embed_to_shards`, atomically.

        No model runs: the shards hold the embeddings, and the manifest records their model identity, which
        :meth:`search` loads (or pass ``model``, whose dimension must match). An untrained index (IVF, PQ …) is
        trained on a uniform ``sample`` (default: 64 vectors per IVF list, at least 10,000; drawn with ``seed``)
        across all shards; then the shards are added in corpus order, ``chunk_size`` documents at a time, the store
        filled in the same pass. Memory holds one shard and the index. ``factory``, ``overwrite``, ``on_duplicate``,
        ``gpu`` and ``show_progress_bar`` are as for :meth:`build` and :meth:`add`.

        With ``on_disk=True`` (IVF factories, for indexes bigger than RAM) each shard fills its own IVF index with the
        trained quantizer, and the parts are merged into one ``.ivfdata`` file that searches memory-map; the index is
        then read only (see :mod:`causal2vec.search.ondisk`, and :meth:`verify`).

        Raises:
            FileNotFoundError: If the shard folder or a shard is missing.
            ValueError: If the folder is incomplete, a shard is corrupt (naming it), a document is bad, or FAISS cannot
                build or train ``factory``; nothing is left behind (FileExistsError, IndexBusyError: as for build).
        """
        from causal2vec.search import from_shards

        state = from_shards.build(
            Path(path).absolute(), shards, factory=factory, overwrite=overwrite, sample=sample, seed=seed,
            on_duplicate=on_duplicate, chunk_size=chunk_size, gpu=gpu, show_progress_bar=show_progress_bar,
            compact_fraction=cls.COMPACT_FRACTION, on_disk=on_disk,
        )  # fmt: skip
        built = cls(state, None)
        if model is not None:
            built.model = model
        return built

    @classmethod
    def load(
        cls,
        path: str | Path,
        model: EmbeddingBackend | None = None,
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
            ValueError: If a file is corrupt (checksums are verified), the parts disagree, or ``model``'s
                dimension differs from the index's.
        """
        loaded = cls(Generations.open(Path(path).absolute()), None)
        if model is not None:
            loaded.model = model
        loaded._load_options = {"device": device, "dtype": dtype or "auto"}
        if gpu:
            loaded.to_gpu()
        return loaded

    def verify(self) -> None:
        """Read every byte of the committed vector files against the checksums recorded when they were written.

        Loading already verifies the ``.faiss`` file in full; for an on-disk index it checks only the ``.ivfdata``
        file's size and sampled blocks, and this reads all of it.

        Raises:
            FileNotFoundError: If a vector file is missing.
            ValueError: If one is corrupt, naming it.
        """
        m = self.manifest
        verify_checksum(self.path / m.vectors_file, m.vectors_checksum, "the index's vector file")
        if m.storage == ondisk.ON_DISK:
            ondisk.check_ivfdata(self.path, m, full=True)

    def to_gpu(self) -> None:
        """Move the FAISS index onto the GPUs (needs faiss-gpu; Flat and IVF types have GPU versions)."""
        self._state.vectors.index = faiss_vectors.to_gpu(self._vectors.index)

    def close(self) -> None:
        """Discard unsaved changes and close the document store."""
        try:
            self._state.discard()
        finally:
            self.store.close()

    def __enter__(self) -> SemanticIndex:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the model

    @property
    def model(self) -> EmbeddingBackend:
        """The model that embeds queries: the one given, or the one the manifest names (loaded on first use)."""
        if self._model is None:
            self._model = load_backend(self.manifest.model, **self._load_options)
        return self._model

    @model.setter
    def model(self, model: EmbeddingBackend) -> None:
        check_model(self.manifest, model, self.path)
        self._model = model

    def _embed(
        self, texts: list[str], instruction: str | None, batch_size: int, truncated: list[int] | None,
        progress: Callable[[int], object] | None = None,
    ) -> np.ndarray:  # fmt: skip
        """Embed in the index's token budget; truncations go to ``truncated`` (else a log), batches to ``progress``."""
        return encode_texts(
            self.model,
            texts,
            instruction=instruction,
            batch_size=batch_size,
            show_progress_bar=False,
            max_length=self.manifest.model.max_length,
            on_truncated=None if truncated is None else lambda cut, _: truncated.append(cut),
            on_batch=progress,
        )

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        """Number of documents (including staged changes)."""
        return self.store.count(self._view)

    def get(self, ids: Sequence[str]) -> list[StoredDocument | None]:
        """The stored documents for ``ids`` (``None`` where an id is not in the index)."""
        self._state.refresh()
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
        texts, single = _query_texts(queries)
        _check_k(k)
        if not texts:
            return []
        instruction = self.model.config.query_instruction if instruction is None else instruction
        vectors = self._embed(texts, instruction, batch_size, truncated=None)
        hits = self.search_vectors(np.atleast_2d(vectors), k, nprobe=nprobe, ef_search=ef_search, k_factor=k_factor)
        return hits[0] if single else hits

    def search_vectors(
        self, vectors: np.ndarray, k: int = 10, *, nprobe: int | None = None, ef_search: int | None = None,
        k_factor: int | None = None,
    ) -> list[list[Hit]]:  # fmt: skip
        """Search with query vectors ``(n, dim)`` that are already embedded (and L2-normalised); see :meth:`search`."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        _check_k(k)
        if vectors.shape[1] != self.manifest.dim:
            raise ValueError(f"query vectors have dimension {vectors.shape[1]}; the index holds {self.manifest.dim}")
        self._state.refresh()
        faiss_vectors.set_search_parameters(self._vectors.index, nprobe, ef_search, k_factor)
        if self._vectors.index.ntotal == 0:
            return [[] for _ in vectors]
        scores, vids = self._vectors.search(vectors, k)
        docs = self.store.by_vid(vids[vids >= 0].tolist(), self._view)
        if len(docs) < len(set(vids[vids >= 0].tolist())) and self._state.refresh():  # a commit landed meanwhile
            return self.search_vectors(vectors, k, nprobe=nprobe, ef_search=ef_search, k_factor=k_factor)
        return [
            [Hit.of(docs[v], s) for s, v in zip(row_scores, row_vids, strict=True) if v in docs]
            for row_scores, row_vids in zip(scores.tolist(), vids.tolist(), strict=True)
        ]

    def refresh(self) -> bool:
        """Reload if another process committed since this handle read the index; returns whether it did.

        Searches call it first, so a long-lived handle never answers from a generation whose documents are gone.
        Writes do not: a handle that writes after another process committed gets :class:`IndexBusyError`.
        """
        return self._state.refresh()

    # ------------------------------------------------------------------ writing

    def add(
        self,
        documents: Iterable[Document | str | dict[str, Any]],
        *,
        embeddings: np.ndarray | None = None,
        on_duplicate: ingest.OnDuplicate = "error",
        batch_size: int = 32,
        chunk_size: int = 2048,
        total: int | None = None,
        show_progress_bar: bool | None = None,
        force: bool = False,
    ) -> int:
        """Embed and stage documents, streamed in chunks (see :mod:`.ingest`); :meth:`save` commits them.

        Args:
            documents: :class:`Document` objects, strings, or dicts with ``text`` and optionally ``id``, ``title``
                and ``metadata``. Documents without an id get the string of their internal number.
            embeddings: Precomputed ``(n, dim)`` embeddings of ``documents`` (then a sequence); skips the model.
            on_duplicate: An id already in the index (or repeated in the input): ``"error"`` raises, staging
                nothing; ``"replace"``: the new document wins; ``"skip"``: the stored one stays.
            batch_size: Texts per forward pass of the model.
            chunk_size: Documents read, embedded and stored at a time.
            total: The number of documents, for the progress bar.
            show_progress_bar: Show documents/s; ``None`` follows the log level.
            force: Embed even if the model's backend or precision is not the one that embedded the index's documents.

        Returns:
            The number of documents staged.

        Raises:
            ValueError: For a duplicate id under ``on_duplicate="error"``, bad embeddings, or an untrainable corpus;
                all unsaved changes are discarded (so they are on any other error, and on Ctrl-C).
            IndexBusyError: If another process is writing to the index.
        """
        documents, embeddings, total = ingest.check_add_arguments(documents, embeddings, on_duplicate, total)
        if embeddings is None and not force and self.manifest.count:
            check_precision(self.manifest, self.model, self.path)
        bar = tqdm(total=total, unit="doc", desc="Indexing", disable=not show_progress(show_progress_bar))
        return self._stage(documents, embeddings, on_duplicate, batch_size, chunk_size, bar)

    def _stage(
        self,
        documents: Iterable[Any],
        embeddings: np.ndarray | None,
        on_duplicate: ingest.OnDuplicate,
        batch_size: int,
        chunk_size: int,
        bar: tqdm,
    ) -> int:
        """Stage :meth:`add`'s checked arguments as the next generation; anything that stops it discards them."""
        self._state.begin()
        truncated: list[int] = []
        try:
            staged = ingest.stage_documents(
                self._state, documents, embed=lambda texts, bar: self._embed(texts, None, batch_size, truncated, bar),
                embeddings=embeddings, on_duplicate=on_duplicate, chunk_size=chunk_size, bar=bar,
            )  # fmt: skip
        except BaseException:
            self._state.discard()
            raise
        finally:
            bar.close()
        if sum(truncated):
            logger.warning("%d of %d texts were truncated to the model's token budget%s", sum(truncated), staged,
                           f" (max_length={b})" if (b := self.manifest.model.max_length) else "")  # fmt: skip
        logger.info("staged %d documents in %s", staged, self.path)
        return staged

    def delete(self, ids: Iterable[str], *, missing_ok: bool = False) -> int:
        """Stage the deletion of documents by id; :meth:`save` commits it.

        Raises:
            KeyError: If an id is not in the index and ``missing_ok`` is not set; nothing is staged.
            IndexBusyError: If another process is writing to the index.
        """
        ids = [str(i) for i in ids]
        found = self.store.live_vids(ids)
        if missing := [i for i in dict.fromkeys(ids) if i not in found]:
            if not missing_ok:
                are = "id is" if len(missing) == 1 else "ids are"
                raise KeyError(f"{len(missing)} {are} not in the index: {ingest.preview(missing)}")
            logger.info("%d ids to delete were not in the index", len(missing))
        if found:
            self._state.begin()
            ingest.delete_vids(self._state, [vid for vid, _ in found.values()])
        return len(found)

    def save(self, path: str | Path | None = None) -> None:
        """Commit the staged changes: write the new vector file, then switch the manifest to it atomically.

        Args:
            path: Also write a copy of the committed index to this new folder (built aside, renamed into place).

        Raises:
            FileExistsError: If ``path`` already exists.
        """
        self._state.commit(self.COMPACT_FRACTION)
        if path is not None and Path(path).absolute() != self.path:
            self._state.copy_to(Path(path).absolute())

    def discard(self) -> None:
        """Drop all staged changes and return to the committed state."""
        self._state.discard()

    def compact(self) -> None:
        """Rebuild an index that cannot remove vectors (HNSW, refined) without those of deleted documents.

        :meth:`save` does it when they pass 20% of the index.
        """
        if len(self._vectors.tombstones):
            self._state.begin()
            self._vectors.compact(self.manifest.factory, self.manifest.dim)


def _query_texts(queries: object) -> tuple[list[str], bool]:
    """Queries as a list, and whether one string was given; rejects non-strings and empty queries."""
    single = isinstance(queries, str)
    texts = [queries] if single else list(queries)  # type: ignore[call-overload]
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"queries[{i}] is {type(text).__name__}; each query must be a str")
        if not text.strip():
            raise ValueError("the query is empty" if single else f"queries[{i}] is empty")
    return texts, single


def _check_k(k: object) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r} must be a positive integer")
