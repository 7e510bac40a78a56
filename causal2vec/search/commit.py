"""The commit protocol of an index folder: the writer lock, generations and checksummed vector files.

An index is a folder::

    manifest.json        the commit point (see causal2vec.search.manifest)
    documents.sqlite     id, title, text and metadata of every document (see causal2vec.search.docstore)
    vectors.<g>.faiss    the FAISS index of generation g, ids = the store's row numbers
    vectors.<g>.ivfdata  an on-disk index's inverted lists (see causal2vec.search.ondisk; such an index is read only)

and, beside it while a writer works, ``.<name>.lock``: the lock every writer of the folder holds (first build,
overwrite, append, delete, compact). It lives next to the folder rather than in it, so that an overwrite, which
swaps in a new folder, is excluded by the same lock as an append to the old one.

A writer stages its changes as generation ``g + 1``, writes ``vectors.<g+1>.faiss`` and then replaces
``manifest.json`` atomically; readers never see a partial write. The manifest records a checksum of the vector file,
verified whenever it is read, and a random ``index_id``, so a writer notices that the folder was replaced under it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from causal2vec.files import file_checksum, remove_stale_siblings, replace_dir, verify_checksum
from causal2vec.identity import ModelIdentity
from causal2vec.search import ondisk
from causal2vec.search import vectors as faiss_vectors
from causal2vec.search.docstore import DocumentStore
from causal2vec.search.manifest import DOCUMENTS, MANIFEST, Manifest
from causal2vec.search.vectors import VectorStore

logger = logging.getLogger(__name__)


class IndexBusyError(RuntimeError):
    """Another process is writing to the index, or committed since this one loaded it."""


def manifest_stamp(folder: Path) -> tuple[int, int] | None:
    """A cheap fingerprint of the committed manifest (inode, mtime): every commit renames a new file into place."""
    try:
        st = os.stat(folder / MANIFEST)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def write_vectors(index: Any, folder: Path, manifest: Manifest) -> None:
    """Write the vector file ``manifest`` names (aside, then renamed) and record its checksum in ``manifest``."""
    path = folder / manifest.vectors_file
    tmp = folder / f".{manifest.vectors_file}.tmp"
    try:
        faiss_vectors.write(index, tmp)
        manifest.vectors_checksum = file_checksum(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_committed(folder: Path, attempts: int = 3) -> tuple[Manifest, Any]:
    """The manifest and its vector file, checksum verified.

    An on-disk index's ``.ivfdata`` file is checked by size and sampled blocks (see :mod:`causal2vec.search.ondisk`).
    Re-reads when a writer commits (and removes the old vector file) between the two reads.

    Raises:
        FileNotFoundError: If the folder, the manifest or the vector file is missing.
        ValueError: If one of them is corrupt; the message names the file.
    """
    for attempt in range(attempts):
        manifest = Manifest.read(folder)
        path = folder / manifest.vectors_file
        try:
            verify_checksum(path, manifest.vectors_checksum, "the index's vector file")
            ivfdata = ondisk.check_ivfdata(folder, manifest) if manifest.storage == ondisk.ON_DISK else None
            return manifest, faiss_vectors.read(path, ivfdata=ivfdata)
        except (FileNotFoundError, ValueError):
            if attempt == attempts - 1 or Manifest.read(folder).generation == manifest.generation:
                raise
    raise AssertionError("unreachable")


def remove_leftovers(folder: Path, keep: str) -> None:
    """Remove what a killed writer left in ``folder``: vector files other than ``keep``, temporary files, spills."""
    for leftover in [*folder.glob("vectors.*.faiss"), *folder.glob(".*.tmp*"), *folder.glob(".spill-*")]:
        if leftover.name != keep and leftover.is_file():
            leftover.unlink()


class WriterLock:
    """The exclusive lock of an index's writers, on ``.<name>.lock`` beside the folder; held until released.

    Example:
        >>> with WriterLock.acquire(Path("news.idx")):
        ...     ...  # build, overwrite, append, delete or compact news.idx
    """

    def __init__(self, handle: IO[str], path: Path) -> None:
        self._handle: IO[str] | None = handle
        self.path = path

    @classmethod
    def acquire(cls, folder: Path) -> WriterLock:
        """Take the lock of ``folder`` without waiting.

        Raises:
            IndexBusyError: If another writer holds it.
        """
        folder = Path(folder).absolute()
        folder.parent.mkdir(parents=True, exist_ok=True)
        path = folder.with_name(f".{folder.name}.lock")
        while True:
            handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - the open file is the lock
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as err:
                handle.close()
                raise IndexBusyError(f"another process is writing to {folder}; try again when it has finished") from err
            if _same_file(handle, path):
                return cls(handle, path)
            handle.close()  # the holder released and removed the file between our open and our lock: try again

    def release(self) -> None:
        """Release the lock and remove its file (idempotent); the file is removed while still locked."""
        if self._handle is not None:
            self.path.unlink(missing_ok=True)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


class Generations:
    """The commit protocol of one open index folder: what is committed, what is staged, and who may write.

    Holds the committed :class:`Manifest`, the in-memory :class:`VectorStore` and the :class:`DocumentStore`.
    :meth:`begin` takes the writer lock and starts staging generation ``g + 1``; :meth:`commit` writes its vector
    file and switches the manifest to it; :meth:`discard` returns to generation ``g``. :meth:`refresh` reloads a
    reading handle after another process committed.
    """

    def __init__(self, path: Path, manifest: Manifest, vectors: VectorStore) -> None:
        self.path, self.manifest, self.vectors = path, manifest, vectors
        self.store = DocumentStore(path / DOCUMENTS)
        self.stamp = manifest_stamp(path)
        self.lock: WriterLock | None = None  # held while staging
        self.owns_lock = True  # False while a build holds the lock of the folder this one will become
        self.staging = False

    @classmethod
    def open(cls, path: Path) -> Generations:
        """Open the committed state of an index folder, checksums verified.

        Raises:
            FileNotFoundError: If the folder, its manifest, vector file or document store is missing.
            ValueError: If a file is corrupt or the parts disagree, naming the file.
        """
        manifest, index = read_committed(path)
        if not (path / DOCUMENTS).is_file():
            raise FileNotFoundError(f"the index's document store {path / DOCUMENTS} is missing")
        opened = cls(path, manifest, VectorStore(index))
        opened.check_consistency()
        return opened

    @classmethod
    def build(
        cls, path: Path, dim: int, factory: str, model: ModelIdentity,
        overwrite: bool, fill: Callable[[Generations], Generations],
    ) -> Generations:  # fmt: skip
        """Create an index folder under the writer lock: built aside, filled by ``fill``, renamed into place.

        Returns:
            The committed state at ``path``, with the vectors ``fill`` left in memory (not read a second time).

        Raises:
            FileExistsError: If ``path`` exists and ``overwrite`` is not set, or it is not an index.
            IndexBusyError: If another process is writing to ``path``.
        """
        with WriterLock.acquire(path) as lock:
            if path.exists() and not overwrite:
                raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) or append to it")
            if path.exists() and not (path / MANIFEST).is_file():
                raise FileExistsError(f"refusing to overwrite {path}: it is not a semantic index (no {MANIFEST})")
            remove_stale_siblings(path)
            with replace_dir(path) as tmp:
                manifest = Manifest.new(dim, factory, model)
                vectors = VectorStore.new(factory, dim)
                write_vectors(vectors.index, tmp, manifest)
                manifest.write(tmp)
                state = cls(tmp, manifest, vectors)
                state.lock, state.owns_lock = lock, False
                filled = fill(state)
        return cls(path, filled.manifest, filled.vectors)

    @property
    def view(self) -> int:
        """The generation a reader of this handle sees: the committed one, or the staged one while it writes."""
        return self.manifest.generation + (1 if self.staging else 0)

    def refresh(self) -> bool:
        """Reload if another process committed since this handle read the folder; returns whether it did."""
        stamp = manifest_stamp(self.path)
        if self.staging or stamp == self.stamp:
            return False
        on_disk, index = read_committed(self.path)
        if on_disk.index_id != self.manifest.index_id:  # the folder was rebuilt (overwrite): a new store file
            self.store.close()
            self.store = DocumentStore(self.path / DOCUMENTS)
        self.manifest, self.stamp = on_disk, stamp
        self._replace_vectors(index)
        logger.info("reloaded %s at generation %d (committed by another process)", self.path, on_disk.generation)
        return True

    def begin(self) -> None:
        """Take the writer lock, check nobody committed or rebuilt the folder since, clear a killed writer's leftovers.

        Raises:
            IndexBusyError: If another process holds the lock, or changed the folder after this handle read it.
            ValueError: If the index is stored on disk (read only; see :mod:`causal2vec.search.ondisk`).
        """
        if self.staging:
            return
        ondisk.refuse_change(self.path, self.manifest)
        if self.lock is None:
            self.lock = WriterLock.acquire(self.path)
        on_disk = Manifest.read(self.path)
        if (on_disk.index_id, on_disk.generation) != (self.manifest.index_id, self.manifest.generation):
            self.end()
            raise IndexBusyError(
                f"{self.path} was changed by another writer (generation {on_disk.generation}, loaded "
                f"{self.manifest.generation}, or the folder was rebuilt); refresh() or load it again before writing"
            )
        if dropped := self.store.discard_pending(self.manifest.generation):
            logger.warning("discarded %d documents left by an interrupted write to %s", dropped, self.path)
        self.store.purge(self.manifest.generation)
        remove_leftovers(self.path, keep=self.manifest.vectors_file)
        self.staging = True

    def commit(self, compact_fraction: float) -> None:
        """Write the staged generation's vector file, then replace the manifest (the commit point)."""
        if not self.staging:
            return
        if self.vectors.needs_compaction(compact_fraction):
            self.vectors.compact(self.manifest.factory, self.manifest.dim)
        old, m = self.manifest, self.manifest.next_generation()
        m.count, m.tombstones = self.store.count(m.generation), len(self.vectors.tombstones)
        if self.vectors.live != m.count:
            raise RuntimeError(f"index inconsistency: {self.vectors.live} live vectors, {m.count} documents")
        write_vectors(self.vectors.index, self.path, m)
        m.write(self.path)
        self.manifest, self.stamp = m, manifest_stamp(self.path)
        (self.path / old.vectors_file).unlink(missing_ok=True)
        self.store.purge(m.generation)
        self.end()
        logger.info("saved %s: generation %d, %d documents", self.path, m.generation, m.count)

    def copy_to(self, path: Path) -> None:
        """Write a copy of the committed index to the new folder ``path`` (built aside, renamed into place).

        Raises:
            FileExistsError: If ``path`` already exists.
        """
        with WriterLock.acquire(path):
            if path.exists():
                raise FileExistsError(f"{path} already exists; save a copy to a new folder")
            with replace_dir(path) as tmp:
                self.store.backup_to(tmp / DOCUMENTS)
                copy = dataclasses.replace(self.manifest)
                if copy.ivfdata_file is not None:  # an on-disk index: its lists are a file of their own
                    shutil.copyfile(self.path / copy.ivfdata_file, tmp / copy.ivfdata_file)
                write_vectors(self.vectors.index, tmp, copy)
                copy.write(tmp)
        logger.info("saved a copy of %s to %s", self.path, path)

    def discard(self) -> None:
        """Drop the staged changes: the store's pending rows, the vectors, temporary files; release the lock."""
        if not self.staging:
            return
        try:  # on a full disk this can fail; the next writer's begin() drops the rows then
            self.store.discard_pending(self.manifest.generation)
        finally:
            self._replace_vectors(faiss_vectors.read(self.path / self.manifest.vectors_file))
            remove_leftovers(self.path, keep=self.manifest.vectors_file)
            self.end()

    def _replace_vectors(self, index: Any) -> None:
        """Take a freshly read vector index, checked against the manifest, on the GPUs if the old one was."""
        gpu = faiss_vectors.is_gpu(self.vectors.index)
        self.vectors = VectorStore(index)
        self.check_consistency()
        if gpu:
            self.vectors.index = faiss_vectors.to_gpu(self.vectors.index)

    def end(self) -> None:
        """Stop staging and release the lock this handle took."""
        self.staging = False
        if self.lock is not None and self.owns_lock:
            self.lock.release()
            self.lock = None

    def check_consistency(self) -> None:
        """Check the committed manifest, vectors and store against each other; recompute the tombstones.

        Raises:
            ValueError: If they disagree, with the counts of each.
        """
        m, index = self.manifest, self.vectors.index
        if index.d != m.dim:
            raise ValueError(f"{self.path}: the vector file holds {index.d}-d vectors, the manifest says {m.dim}")
        stored = self.store.count(m.generation)
        if stored != m.count or index.ntotal - m.tombstones != m.count:
            raise ValueError(
                f"{self.path} is inconsistent: the manifest counts {m.count} documents, the store {stored}, "
                f"the vector file {index.ntotal} vectors ({m.tombstones} stale)"
            )
        if m.tombstones:
            self.vectors.set_tombstones(self.store.vids(m.generation))


def _same_file(handle: IO[str], path: Path) -> bool:
    """Whether ``path`` still names the file ``handle`` has open (lock files are removed on release)."""
    try:
        return os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False
