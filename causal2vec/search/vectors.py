"""The vector store: everything that touches FAISS (the only module that imports it, lazily).

Vectors are L2-normalised embeddings searched by inner product, so scores are cosine similarities. Every index
carries 64-bit ids (the document store's row numbers): IVF indexes store them natively, the others are wrapped in an
``IndexIDMap``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from causal2vec.runtime import check_int, require

logger = logging.getLogger(__name__)

INSTALL_GPU = "pip install 'causal2vec[search-gpu]'"
FACTORY_EXAMPLES = "'Flat', 'HNSW32', 'IVF1024,Flat', 'IVF4096,PQ96,RFlat'"


def faiss_module() -> Any:
    """Import FAISS, or fail with the command that installs it."""
    return require("faiss", "search")


def new_index(factory: str, dim: int) -> Any:
    """An empty inner-product index with 64-bit ids, built from a FAISS factory string.

    Raises:
        ValueError: If FAISS cannot build ``factory`` for inner product in ``dim`` dimensions.
    """
    faiss = faiss_module()
    if not isinstance(factory, str) or not factory.strip():
        raise ValueError(f"factory={factory!r} must be a FAISS factory string such as {FACTORY_EXAMPLES}")
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1]
        raise ValueError(
            f"FAISS cannot build factory string {factory!r} for inner-product search in {dim} dimensions ({reason}); "
            f"examples that work: {FACTORY_EXAMPLES}"
        ) from err
    _tune_for_embeddings(index)
    return index if _stores_ids(index) else faiss.IndexIDMap(index)


DEFAULT_K_FACTOR = 16  # a refined index re-ranks k * 16 candidates exactly; FAISS's default of 1 re-ranks only k


def _tune_for_embeddings(index: Any) -> None:
    """Turn off PQ's polysemous training (slow, and only for Hamming filtering, unused here); set the refine depth."""
    faiss = faiss_module()
    parts = [faiss.downcast_index(index)]
    if (ivf := ivf_of(index)) is not None:
        parts.append(faiss.downcast_index(ivf))
    if hasattr(parts[0], "base_index"):  # IndexRefine: the base that proposes candidates
        parts[0].k_factor = DEFAULT_K_FACTOR
        parts.append(faiss.downcast_index(parts[0].base_index))
    for part in parts:
        if hasattr(part, "do_polysemous_training"):
            part.do_polysemous_training = False


def _stores_ids(index: Any) -> bool:
    """Whether the index takes ``add_with_ids`` itself: IVF indexes, also behind transforms (OPQ, PCA …)."""
    faiss = faiss_module()
    index = faiss.downcast_index(index)
    while isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return isinstance(index, faiss.IndexIVF)


def ivf_of(index: Any) -> Any | None:
    """The IVF part of an index (possibly behind a transform), or ``None``."""
    faiss = faiss_module()
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _unwrapped(index: Any) -> Any:
    """The index behind an id map (or the index itself), as its FAISS class."""
    faiss = faiss_module()
    return faiss.downcast_index(index.index if hasattr(index, "id_map") else index)


def refine_of(index: Any) -> Any | None:
    """The refining part of an index (``…,RFlat``, possibly behind an id map), or ``None``."""
    inner = _unwrapped(index)
    return inner if hasattr(inner, "k_factor") and hasattr(inner, "base_index") else None


def hnsw_of(index: Any) -> Any | None:
    """The HNSW part of an index (possibly behind an id map), or ``None``."""
    inner = _unwrapped(index)
    return inner if hasattr(inner, "hnsw") else None


def train_size(index: Any) -> int:
    """How many vectors to train an untrained index on: 64 per IVF list, at least 10,000 (PQ needs 9,984)."""
    ivf = ivf_of(index)
    return max(64 * (ivf.nlist if ivf is not None else 0), 10_000)


def min_train_size(index: Any) -> int:
    """The fewest training vectors FAISS accepts: one per IVF list (k-means needs at least k points)."""
    ivf = ivf_of(index)
    return max(ivf.nlist if ivf is not None else 1, 1)


def train(index: Any, vectors: np.ndarray, factory: str) -> None:
    """Train an index (IVF centroids, PQ codebooks …) on a sample of vectors.

    Raises:
        ValueError: If there are too few vectors for this index type (k-means needs a point per centroid: one per
            IVF list, 256 per PQ sub-quantizer), naming the factory and types that would work.
    """
    n = len(vectors)
    needed = min_train_size(index)
    if n >= needed:
        logger.info("training the index on %d vectors", n)
        try:
            index.train(np.ascontiguousarray(vectors, dtype=np.float32))
            return
        except RuntimeError as err:  # FAISS checks the other minimums (PQ codebooks) itself, before training
            reason = str(err).strip().splitlines()[-1]
        problem = f"cannot be trained on {n} documents ({reason})"
    else:
        problem = f"needs at least {needed} documents to train on; got {n}"
    raise ValueError(
        f"factory {factory!r} {problem}. Index more documents, or choose fewer IVF lists "
        f"(e.g. 'IVF{max(1, n // 39)},Flat'), no PQ, or 'Flat'"
    )


def add(index: Any, vectors: np.ndarray, ids: np.ndarray) -> None:
    """Add vectors under the given 64-bit ids."""
    index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))


def remove(index: Any, ids: np.ndarray) -> bool:
    """Remove vectors by id; ``False`` when this index type cannot remove vectors in place (HNSW, refined)."""
    faiss = faiss_module()
    if hnsw_of(index) is not None:
        return False
    try:
        index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64)))
    except RuntimeError:  # FAISS raises "not implemented" before changing anything
        return False
    return True


def remove_on_cpu(index: Any, ids: np.ndarray) -> Any:
    """Remove vectors from a GPU index (GPU indexes cannot): on a CPU copy, moved back; returns the new index."""
    cpu = to_cpu(index)
    remove(cpu, ids)
    return to_gpu(cpu)


def ids_of(index: Any) -> np.ndarray:
    """All ids an id-mapped index holds (used to find vectors that outlived their documents)."""
    faiss = faiss_module()
    if not hasattr(index, "id_map"):
        raise ValueError("only id-mapped indexes list their ids")
    return faiss.vector_to_array(index.id_map).astype(np.int64)


def vectors_of(index: Any) -> np.ndarray:
    """All vectors of an id-mapped index, in the order of :func:`ids_of` (exact for flat storage)."""
    inner = _unwrapped(index)
    return inner.reconstruct_n(0, inner.ntotal)


def set_search_parameters(
    index: Any, nprobe: int | None = None, ef_search: int | None = None, k_factor: int | None = None
) -> None:
    """Set IVF's ``nprobe``, HNSW's ``efSearch`` and a refined index's ``k_factor`` on the index (None: unchanged).

    Raises:
        ValueError: If a parameter is not a positive integer or does not apply to this index type.
    """
    faiss = faiss_module()
    requested = {"nprobe": nprobe, "efSearch": ef_search, "k_factor": k_factor}
    if all(value is None for value in requested.values()):
        return  # the common case on every search: nothing to inspect or set
    space = faiss.GpuParameterSpace() if is_gpu(index) else faiss.ParameterSpace()
    finders = {
        "nprobe": (ivf_of, "IVF indexes"),
        "efSearch": (hnsw_of, "HNSW indexes"),
        "k_factor": (refine_of, "refined indexes (factory ending in ',RFlat')"),
    }
    for name, value in requested.items():
        if value is None:
            continue
        check_int(name, value, minimum=1)
        find, kinds = finders[name]
        if find(index) is None:
            raise ValueError(f"{name} applies to {kinds} only; this index is {describe(index)}")
        space.set_index_parameter(index, "k_factor_rf" if name == "k_factor" else name, value)


def search(index: Any, queries: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` inner products and ids per query; missing results have id -1.

    Args:
        index: The index.
        queries: ``(n, dim)`` float32 query vectors.
        k: Results per query.
        exclude: Ids to leave out: vectors of deleted documents that the index type cannot remove. HNSW skips them
            while it searches; other types search ``k + len(exclude)`` deep and drop them after.
    """
    faiss = faiss_module()
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if exclude is None or len(exclude) == 0:
        return index.search(queries, k)
    if (hnsw := hnsw_of(index)) is not None:
        selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.ascontiguousarray(exclude, dtype=np.int64)))
        return index.search(queries, k, params=faiss.SearchParametersHNSW(sel=selector, efSearch=hnsw.hnsw.efSearch))
    scores, ids = index.search(queries, min(k + len(exclude), index.ntotal))
    keep = ~np.isin(ids, exclude)
    out_scores, out_ids = np.full((len(ids), k), -np.inf, dtype=np.float32), np.full((len(ids), k), -1, np.int64)
    for row, mask in enumerate(keep):
        found = min(k, int(mask.sum()))
        out_scores[row, :found], out_ids[row, :found] = scores[row][mask][:found], ids[row][mask][:found]
    return out_scores, out_ids


def describe(index: Any) -> str:
    """A short name of the index type, e.g. ``IndexHNSWFlat``."""
    return type(_unwrapped(index)).__name__


def write(index: Any, path: Path) -> None:
    """Write an index (a GPU index is copied to the CPU first), flushed to disk before returning."""
    faiss = faiss_module()
    faiss.write_index(to_cpu(index), str(path))
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def read(path: Path, *, ivfdata: Path | None = None) -> Any:
    """Read an index written by :func:`write`.

    Args:
        path: The vector file.
        ivfdata: For an on-disk IVF index (:func:`merge_on_disk`), its ``.ivfdata`` file, memory-mapped read only
            (in place of the path recorded where the index was built, which may have moved since).

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: If FAISS cannot read it (truncated or not an index).
    """
    faiss = faiss_module()
    if not path.is_file():
        raise FileNotFoundError(f"the index's vector file {path} is missing")
    flags = 0 if ivfdata is None else faiss.IO_FLAG_SKIP_IVF_DATA | faiss.IO_FLAG_READ_ONLY  # map it below
    try:
        index = faiss.read_index(str(path), flags)
        if ivfdata is not None:
            _map_ivfdata(index, ivfdata, path)
        return index
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1]
        raise ValueError(f"the vector file {path} is corrupt or not a FAISS index ({reason})") from err


def check_on_disk_factory(index: Any, factory: str) -> None:
    """Refuse a factory whose index cannot keep its vectors in on-disk inverted lists.

    Raises:
        ValueError: If it is not an IVF index, or it refines (``…,RFlat``) or is an ``IVF…,PQ…R`` index, whose extra
            vectors stay in RAM; names factories that work.
    """
    faiss = faiss_module()
    ivf = ivf_of(index)
    if ivf is None or refine_of(index) is not None or isinstance(faiss.downcast_index(ivf), faiss.IndexIVFPQR):
        raise ValueError(
            f"on_disk (--on-disk) needs an IVF factory whose vectors all live in its inverted lists, such as "
            f"'IVF4096,Flat', 'IVF4096,PQ64' or 'OPQ64,IVF4096,PQ64'; {factory!r} is {describe(index)}"
        )


def clone(index: Any) -> Any:
    """A copy of an index (e.g. an empty trained IVF index, to fill one part of an on-disk index)."""
    return faiss_module().clone_index(index)


def merge_on_disk(trained: Any, parts: list[Path], ivfdata: Path) -> None:
    """Merge the inverted lists of the IVF indexes in ``parts`` into ``trained``, stored in the file ``ivfdata``.

    FAISS's recipe for indexes bigger than RAM (``faiss.contrib.ondisk.merge_ondisk``): the parts are read
    memory-mapped, their lists concatenated part by part into one ``OnDiskInvertedLists`` file, which ``trained``
    (empty, with the quantizer the parts were filled with) then uses. The file is flushed to disk before returning.
    """
    from faiss.contrib.ondisk import merge_ondisk

    merge_ondisk(trained, [str(p) for p in parts], str(ivfdata))
    with open(ivfdata, "rb") as f:
        os.fsync(f.fileno())


def _map_ivfdata(index: Any, ivfdata: Path, path: Path) -> None:
    """Memory-map an on-disk index's lists (read with ``IO_FLAG_SKIP_IVF_DATA``) from ``ivfdata``, read only.

    Raises:
        ValueError: If ``path`` is not an on-disk IVF index.
    """
    faiss = faiss_module()
    lists = faiss.downcast_InvertedLists(ivf.invlists) if (ivf := ivf_of(index)) is not None else None
    if not isinstance(lists, faiss.OnDiskInvertedLists):
        raise ValueError(f"the vector file {path} is not an on-disk IVF index, but the manifest says it is")
    lists.filename = str(ivfdata)
    lists.do_mmap()


def is_gpu(index: Any) -> bool:
    """Whether the index lives on one GPU (``GpuIndex…``) or several (replicas across GPUs)."""
    names = (type(index).__name__, describe(index))
    return any("Gpu" in name or name in ("IndexReplicas", "IndexShards") for name in names)


def to_gpu(index: Any) -> Any:
    """Copy an index onto all visible GPUs.

    Raises:
        ModuleNotFoundError: If the installed FAISS has no GPU support; names the install command.
        ValueError: If no GPU is visible, or this index type has no GPU version.
    """
    faiss = faiss_module()
    if not hasattr(faiss, "StandardGpuResources"):
        raise ModuleNotFoundError(f"--gpu needs FAISS with GPU support; the installed one is CPU-only: {INSTALL_GPU}")
    if faiss.get_num_gpus() < 1:
        raise ValueError("--gpu: FAISS sees no GPU (check CUDA_VISIBLE_DEVICES and the driver)")
    try:
        gpu_index = faiss.index_cpu_to_all_gpus(index)
    except RuntimeError as err:
        raise ValueError(
            f"FAISS has no GPU version of {describe(index)}; on GPUs use Flat or IVF indexes (e.g. 'IVF4096,Flat')"
        ) from err
    logger.info("moved the index to %d GPU(s)", faiss.get_num_gpus())
    return gpu_index


def to_cpu(index: Any) -> Any:
    """The CPU copy of an index (the index itself when it is on the CPU)."""
    faiss = faiss_module()
    return faiss.index_gpu_to_cpu(index) if is_gpu(index) else index


class VectorStore:
    """A FAISS index plus the ids of vectors it cannot remove (tombstones): what an index folder's vectors are.

    HNSW and refined indexes cannot remove vectors, so a deleted document's vector stays and is skipped at search
    time until :meth:`compact` rebuilds the index without it.
    """

    def __init__(self, index: Any, tombstones: np.ndarray | None = None) -> None:
        self.index = index
        self.tombstones = np.empty(0, dtype=np.int64) if tombstones is None else tombstones

    @classmethod
    def new(cls, factory: str, dim: int) -> VectorStore:
        """An empty store for a FAISS factory string (see :func:`new_index`)."""
        return cls(new_index(factory, dim))

    @property
    def live(self) -> int:
        """Vectors that belong to live documents."""
        return int(self.index.ntotal) - len(self.tombstones)

    def needs_compaction(self, fraction: float) -> bool:
        """Whether tombstones are more than ``fraction`` of the stored vectors."""
        return len(self.tombstones) > fraction * max(int(self.index.ntotal), 1)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add vectors under the given ids."""
        add(self.index, vectors, ids)

    def remove(self, ids: np.ndarray) -> None:
        """Remove vectors by id, or tombstone them where the index type cannot remove them."""
        ids = np.asarray(ids, dtype=np.int64)
        if is_gpu(self.index):
            self.index = remove_on_cpu(self.index, ids)
        elif not remove(self.index, ids):
            self.tombstones = np.union1d(self.tombstones, ids)

    def forget_tombstones_not_in_index(self) -> None:
        """Drop tombstones of vectors that never reached the index (replaced while waiting to train)."""
        if len(self.tombstones):
            self.tombstones = np.intersect1d(self.tombstones, ids_of(self.index))

    def set_tombstones(self, live_ids: np.ndarray) -> None:
        """Recompute the tombstones as every stored id that is not in ``live_ids`` (id-mapped indexes only)."""
        self.tombstones = np.setdiff1d(ids_of(self.index), live_ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k`` (at most the live count) scores and ids per query, tombstones skipped; ids -1 pad."""
        return search(self.index, queries, min(k, int(self.index.ntotal)), self.tombstones)

    def compact(self, factory: str, dim: int) -> None:
        """Rebuild the index without its tombstoned vectors (retraining trainable types on the survivors)."""
        if len(self.tombstones) == 0:
            return
        ids, vectors = ids_of(self.index), vectors_of(self.index)
        keep = ~np.isin(ids, self.tombstones)
        logger.info("compacting: rebuilding the index over %d vectors, dropping %d", keep.sum(), (~keep).sum())
        rebuilt = new_index(factory, dim)
        vectors, ids = vectors[keep], ids[keep]
        if not rebuilt.is_trained:
            sample = np.random.default_rng(0).permutation(len(vectors))[: train_size(rebuilt)]
            train(rebuilt, vectors[np.sort(sample)], factory)
        add(rebuilt, vectors, ids)
        self.index, self.tombstones = rebuilt, np.empty(0, dtype=np.int64)


# ---------------------------------------------------------------- binary indexes with rescoring

DEFAULT_RESCORE_MULTIPLIER = 10  # Hamming candidates per hit kept, re-ranked against int8 or float vectors; on
# 5k clustered stand-in vectors, 4 kept recall@10 at 0.78 of exact float search, 8 at 0.97 (tests/test_binary_index.py)


def new_binary_index(dim: int, nlist: int | None = None) -> Any:
    """An empty binary index over ``dim``-dimensional embeddings, one bit per dimension (Hamming distance).

    ``nlist=None`` gives an exhaustive ``IndexBinaryFlat``; a count gives an ``IndexBinaryIVF`` with that many
    lists, to train (:func:`train_binary`) before adding. Vectors get the ids of their rows, in the order added.

    Raises:
        ValueError: If ``dim`` is not a positive multiple of 8 or ``nlist`` not a positive integer.
    """
    faiss = faiss_module()
    check_int("dim", dim, minimum=8)
    if dim % 8:
        raise ValueError(f"dim={dim} must be a multiple of 8 for a binary index (one byte holds 8 dimensions)")
    if nlist is None:
        return faiss.IndexBinaryFlat(dim)
    check_int("nlist", nlist, minimum=1)
    return faiss.index_binary_factory(dim, f"BIVF{nlist}")  # the factory's index owns its quantizer


def binary_codes(embeddings: np.ndarray) -> np.ndarray:
    """Float embeddings ``(n, dim)`` as the packed bits a binary index stores (``ubinary``: ``(n, dim / 8)`` uint8)."""
    return np.ascontiguousarray(np.packbits(np.asarray(embeddings) > 0, axis=-1))


def train_binary(index: Any, embeddings: np.ndarray) -> None:
    """Train a binary IVF index's lists on float embeddings (a flat index needs no training)."""
    if not index.is_trained:
        index.train(binary_codes(embeddings))


def search_binary(
    index: Any,
    queries: np.ndarray,
    k: int,
    *,
    rescore: np.ndarray | None = None,
    ranges: np.ndarray | None = None,
    multiplier: int = DEFAULT_RESCORE_MULTIPLIER,
) -> tuple[np.ndarray, np.ndarray]:
    """Search a binary index with float queries; re-rank the candidates against stored vectors when given.

    The recipe sentence-transformers documents: binarise the queries, take ``k * multiplier`` candidates by
    Hamming distance, then score them with the float queries against the corpus's ``rescore`` vectors (float32
    ``(n, dim)``, or int8/uint8 codes with the ``ranges`` they were quantised with) and keep the best ``k``.

    Returns:
        ``(scores, ids)``, each ``(len(queries), k)``: inner products after rescoring (else ``-hamming``
        distances); ids -1 pad where fewer than ``k`` vectors exist.
    """
    check_int("k", k, minimum=1)
    candidates = k * check_int("multiplier", multiplier, minimum=1) if rescore is not None else k
    distances, ids = index.search(binary_codes(queries), candidates)
    if rescore is None:
        return -distances.astype(np.float32), ids
    vectors = _rescore_vectors(rescore[np.maximum(ids, 0)], ranges)  # (q, candidates, dim), only those gathered
    scores = np.einsum("qd,qcd->qc", np.asarray(queries, dtype=np.float32), vectors)
    scores[ids < 0] = -np.inf
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, best, axis=1), np.take_along_axis(ids, best, axis=1)


def _rescore_vectors(vectors: np.ndarray, ranges: np.ndarray | None) -> np.ndarray:
    """Float32 vectors to score candidates with: the floats, or int8/uint8 codes mapped back through ``ranges``."""
    if vectors.dtype.kind == "f":
        return vectors.astype(np.float32, copy=False)
    if ranges is None:
        raise ValueError(f"{vectors.dtype} rescore vectors need the ranges they were quantised with (ranges=)")
    ranges = np.asarray(ranges, dtype=np.float32)
    steps = (ranges[1] - ranges[0]) / 255
    steps = np.where(steps == 0, 1, steps)
    levels = vectors.astype(np.float32) + (128 if vectors.dtype == np.int8 else 0)
    return (levels + 0.5) * steps + ranges[0]  # the middle of each step
