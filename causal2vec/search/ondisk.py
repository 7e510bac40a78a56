"""Indexes bigger than RAM: IVF indexes whose inverted lists live in one memory-mapped ``.ivfdata`` file.

Built from a shard folder (``SemanticIndex.build_from_shards(..., on_disk=True)``) by FAISS's recipe: one quantizer
is trained on a uniform sample of all shards; each part (about one shard of vectors) fills its own IVF index with
that quantizer and is written to a file; the parts are then merged into ``vectors.<g>.ivfdata`` beside the small
``vectors.<g>.faiss`` (quantizer and list offsets), and memory is freed part by part. Searches memory-map the lists
read only, so the operating system pages in what ``nprobe`` lists touch.

What is checked when: every load verifies the ``.faiss`` file's full checksum (it is small), and the ``.ivfdata``
file's size and a checksum of 64 evenly spaced 64 KiB blocks (4 MiB read, whatever its size);
:meth:`SemanticIndex.verify` (``causal2vec verify``) also reads the whole ``.ivfdata`` file against the full checksum
recorded when it was written.

An on-disk index is read only: adding, deleting and compacting are refused (rebuild it from the shards instead),
since FAISS's on-disk lists are slow to grow and an in-place change would bypass the commit protocol.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from causal2vec.files import file_checksum, member_path, sampled_checksum, verify_checksum
from causal2vec.search import vectors as faiss_vectors
from causal2vec.search.manifest import Manifest

logger = logging.getLogger(__name__)

ON_DISK = "on_disk"


class IvfParts:
    """Per-part IVF indexes that share one trained quantizer, each written to a hidden file when it is full.

    Args:
        folder: Where the part files go (the index folder being built; removed by :meth:`close`).
        trained: The trained, empty IVF index every part is a copy of.
        part_size: Vectors per part (memory holds one part).
    """

    def __init__(self, folder: Path, trained: Any, part_size: int) -> None:
        self.folder, self.trained, self.part_size = folder, trained, max(1, part_size)
        self.paths: list[Path] = []
        self.current = faiss_vectors.clone(trained)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add vectors under their ids to the current part; write it once it holds ``part_size`` vectors."""
        faiss_vectors.add(self.current, vectors, ids)
        if self.current.ntotal >= self.part_size:
            self.flush()

    def flush(self) -> None:
        """Write the current part (if it holds anything) and start an empty one."""
        if self.current.ntotal:
            path = self.folder / f".part-{len(self.paths):06d}.faiss.tmp"
            faiss_vectors.write(self.current, path)
            self.paths.append(path)
            logger.info("wrote index part %d (%d vectors)", len(self.paths), self.current.ntotal)
            self.current = faiss_vectors.clone(self.trained)

    def merge(self, ivfdata: Path) -> Any:
        """Merge every part into the file ``ivfdata``; returns the on-disk index (the parts' files are removed)."""
        self.flush()
        merged = faiss_vectors.clone(self.trained)
        faiss_vectors.merge_on_disk(merged, self.paths, ivfdata)
        logger.info("merged %d parts into %s (%d vectors)", len(self.paths), ivfdata, merged.ntotal)
        self.close()
        return merged

    def close(self) -> None:
        """Remove the part files."""
        for path in self.paths:
            path.unlink(missing_ok=True)
        self.paths = []


def record_ivfdata(manifest: Manifest, path: Path) -> None:
    """Record in ``manifest`` that its index keeps its lists in the file ``path``: its name, size and checksums."""
    manifest.storage, manifest.ivfdata_file = ON_DISK, path.name
    manifest.ivfdata_size = path.stat().st_size
    manifest.ivfdata_sampled_checksum = sampled_checksum(path)
    manifest.ivfdata_checksum = file_checksum(path)


def check_ivfdata(folder: Path, manifest: Manifest, *, full: bool = False) -> Path:
    """Check an on-disk index's ``.ivfdata`` file: its size and sampled blocks, or (``full``) all its bytes.

    Returns:
        Its path.

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: If it is truncated, extended or corrupt, naming the file and what was recorded.
    """
    if manifest.ivfdata_file is None:
        raise ValueError(f"the index manifest in {folder} says storage 'on_disk' but names no ivfdata_file")
    path = member_path(folder, manifest.ivfdata_file, "the index's inverted-list file")
    if not path.is_file():
        raise FileNotFoundError(f"the index's inverted-list file {path} is missing")
    size = path.stat().st_size
    if manifest.ivfdata_size is not None and size != manifest.ivfdata_size:
        raise ValueError(
            f"the index's inverted-list file {path} is {'truncated' if size < manifest.ivfdata_size else 'extended'}:"
            f" it holds {size} bytes, {manifest.ivfdata_size} were written; rebuild the index from its shards"
        )
    if full:
        verify_checksum(path, manifest.ivfdata_checksum, "the index's inverted-list file")
    elif manifest.ivfdata_sampled_checksum is not None and sampled_checksum(path) != manifest.ivfdata_sampled_checksum:
        raise ValueError(
            f"the index's inverted-list file {path} is corrupt: a checksum of its sampled blocks differs from the "
            "one recorded when it was written; rebuild the index from its shards"
        )
    return path


def refuse_change(folder: Path, manifest: Manifest) -> None:
    """Refuse to stage changes to an on-disk index.

    Raises:
        ValueError: If the index at ``folder`` is stored on disk, naming what to do instead.
    """
    if manifest.storage == ON_DISK:
        raise ValueError(
            f"the index {folder} is stored on disk (its IVF lists are memory-mapped from {manifest.ivfdata_file}) "
            "and is read only: adding, deleting and compacting are not supported. Rebuild it from the shards with "
            f"the changes: causal2vec index --from-shards SHARDS --index {folder} --on-disk --overwrite"
        )
