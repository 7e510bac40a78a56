"""An index built from a shard folder (:mod:`causal2vec.shards`) instead of a corpus: no model runs.

Two passes over the shards, one shard in memory at a time: an untrained index (IVF, PQ …) is trained on a uniform
random sample drawn across all shards; then the shards' documents and embeddings are staged in corpus order, the
document store filled in the same pass, through the same ingestion (:func:`~causal2vec.search.ingest.
stage_stream`: ids checked, duplicates resolved, vectors normalised) and committed by the same protocol (writer
lock, folder built aside, checksummed vector file) as :meth:`SemanticIndex.build`. The manifest records the shards'
model identity, so searching the index loads that model.

With ``on_disk=True`` the vectors go into per-shard IVF indexes sharing the trained quantizer, merged into one
memory-mapped ``.ivfdata`` file at the end (see :mod:`causal2vec.search.ondisk`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from causal2vec.runtime import check_int, show_progress
from causal2vec.search import ingest, ondisk
from causal2vec.search import vectors as faiss_vectors
from causal2vec.search.commit import Generations
from causal2vec.search.corpus import Document
from causal2vec.shards import ShardFolder

logger = logging.getLogger(__name__)


class ShardStream:
    """A shard folder as one stream: its documents, then their rows as :class:`~.ingest.Rows` (read once, in order).

    Rows are handed out from the shards whose documents have been read; memory holds about one shard.
    """

    def __init__(self, folder: ShardFolder) -> None:
        self._shards = folder.iter_shards()
        self._waiting: list[np.ndarray] = []  # embeddings of documents read, not yet taken
        self._taken = 0  # rows handed out so far
        self.dim = folder.dim

    def documents(self) -> Iterator[Document]:
        """Every shard's documents, in corpus order."""
        for shard in self._shards:
            self._waiting.append(shard.embeddings)
            yield from shard.documents

    def __getitem__(self, rows: slice, /) -> np.ndarray:
        """The embeddings of the next ``rows.stop - rows.start`` documents read (from where the last slice stopped)."""
        if rows.start != self._taken:
            raise RuntimeError(f"shard rows are read in order: asked for {rows.start}, next is {self._taken}")
        count, parts = rows.stop - rows.start, []
        while count:
            head = self._waiting[0]
            parts.append(head[:count])
            self._waiting[0] = head[count:]
            count -= len(parts[-1])
            if not len(self._waiting[0]):
                self._waiting.pop(0)
        self._taken = rows.stop
        return np.concatenate(parts) if parts else np.empty((0, self.dim), dtype=np.float32)


def build(
    path: Path, shards: str | Path, *, factory: str, overwrite: bool, sample: int | None, seed: int,
    on_duplicate: ingest.OnDuplicate, chunk_size: int, gpu: bool, show_progress_bar: bool | None,
    compact_fraction: float, on_disk: bool = False,
) -> Generations:  # fmt: skip
    """Build the index folder ``path`` from a complete shard folder (see :meth:`SemanticIndex.build_from_shards`).

    Returns:
        The committed state at ``path`` (an on-disk index: opened again from disk, its lists memory-mapped).
    """
    folder = ShardFolder.open(shards)
    folder.check_complete()
    if sample is not None:
        check_int("sample", sample, minimum=1)
    if on_duplicate not in ingest.ON_DUPLICATE:
        raise ValueError(f"on_duplicate={on_duplicate!r} is not supported; choose one of {list(ingest.ON_DUPLICATE)}")
    if on_disk:
        _check_on_disk_options(on_duplicate, gpu)
    fill = functools.partial(
        _fill, folder=folder, factory=factory, sample=sample, seed=seed, on_duplicate=on_duplicate,
        chunk_size=chunk_size, gpu=gpu, show_progress_bar=show_progress_bar, compact_fraction=compact_fraction,
        on_disk=on_disk,
    )  # fmt: skip
    state = Generations.build(path, folder.dim, factory, folder.identity, overwrite, fill)
    logger.info(
        "built %s from %d shards of %s: %d documents", path, len(folder.shards), folder.path, state.manifest.count
    )
    if on_disk:  # reopen read only: the lists that the build wrote through are memory-mapped again
        state.store.close()
        state = Generations.open(path)
    return state


def _check_on_disk_options(on_duplicate: str, gpu: bool) -> None:
    """Refuse what an on-disk build cannot do: replace a document of an earlier part, fill the parts on GPUs.

    Raises:
        ValueError: Naming the option and what to use instead.
    """
    if on_duplicate == "replace":
        raise ValueError(
            "on_duplicate='replace' (--on-duplicate replace) is not supported with on_disk=True (--on-disk): a "
            "replaced document may sit in a part already written; use 'error' or 'skip' (the first copy stays)"
        )
    if gpu:
        raise ValueError("gpu=True (--gpu) is not supported with on_disk=True (--on-disk); build on the CPU")


def _fill(
    state: Generations, *, folder: ShardFolder, factory: str, sample: int | None, seed: int,
    on_duplicate: ingest.OnDuplicate, chunk_size: int, gpu: bool, show_progress_bar: bool | None,
    compact_fraction: float, on_disk: bool,
) -> Generations:  # fmt: skip
    """Train the new index if it needs it, stage every shard in corpus order, and commit."""
    state.begin()
    parts = None
    try:
        if gpu:
            state.vectors.index = faiss_vectors.to_gpu(state.vectors.index)
        if on_disk:
            faiss_vectors.check_on_disk_factory(state.vectors.index, factory)
        if not state.vectors.index.is_trained:
            train(state, folder, factory, sample, seed)
        if on_disk:
            parts = ondisk.IvfParts(state.path, state.vectors.index, max((r.count for r in folder.shards), default=1))
        _stage_shards(state, folder, on_duplicate, chunk_size, show_progress_bar, add=parts)
        if parts is not None:
            ivfdata = state.path / f"vectors.{state.manifest.generation + 1}.ivfdata"
            state.vectors.index = parts.merge(ivfdata)
            ondisk.record_ivfdata(state.manifest, ivfdata)
        state.commit(compact_fraction)
    except BaseException:
        if parts is not None:
            parts.close()
        state.discard()
        raise
    finally:
        state.store.close()
    return state


def _stage_shards(
    state: Generations, folder: ShardFolder, on_duplicate: ingest.OnDuplicate, chunk_size: int,
    show_progress_bar: bool | None, add: ondisk.IvfParts | None,
) -> None:  # fmt: skip
    """Stage every shard's documents and vectors in corpus order: vectors into the index, or into on-disk parts."""
    stream = ShardStream(folder)
    with tqdm(total=folder.count, unit="doc", desc="Indexing shards",
              disable=not show_progress(show_progress_bar)) as bar:  # fmt: skip
        ingest.stage_stream(
            stream.documents(), store=state.store, pending=state.view, dim=folder.dim, embed=_no_model,
            add=state.vectors.add if add is None else add.add, delete=lambda vids: ingest.delete_vids(state, vids),
            embeddings=stream, on_duplicate=on_duplicate, chunk_size=chunk_size, bar=bar,
        )  # fmt: skip


def train(state: Generations, folder: ShardFolder, factory: str, sample: int | None, seed: int) -> None:
    """Train the staged index on a uniform sample of the shards' (normalised) embeddings.

    Args:
        state: The index being built.
        folder: The shards.
        factory: The FAISS factory string (for the messages).
        sample: How many vectors; ``None``: FAISS's rule (64 per IVF list, at least 10,000).
        seed: Seed of the sample.
    """
    size = faiss_vectors.train_size(state.vectors.index) if sample is None else sample
    vectors = ingest.normalised(folder.sample_embeddings(size, seed), folder.dim, 0)
    faiss_vectors.train(state.vectors.index, vectors, factory)


def _no_model(texts: list[str], progress: Callable[[int], object]) -> np.ndarray:
    raise RuntimeError("an index built from shards embeds nothing: every document comes with its embedding")
