"""Search benchmark: approximate FAISS indexes against exact search, and peak memory of a streamed build.

What it measures, side by side in one run:

1. **Speed and recall** on --n synthetic, L2-normalised float32 vectors of dimension 1152 (the default model's
   embedding dimension; default 1,000,000) with --queries fresh queries (default 1,000), top 10 by inner product:

   * **Flat (exact)** — ``'Flat'``: the ground truth (exact top 10) and the reference QPS.
   * **HNSW32** — ``'HNSW32'`` (FAISS's default efConstruction, 40), efSearch swept over 16, 32, 64, 128, 192, 256.
   * **IVF-PQ** — ``'IVF<nlist>,PQ96'``, nlist = 4·√N rounded to a power of two (4,096 at 1M), nprobe swept over
     1, 2, 4 … 256. 96 bytes a vector; PQ alone may not reach recall 0.95.
   * **IVF-PQ+RFlat** — ``'IVF<nlist>,PQ96,RFlat'``: the same IVF-PQ, whose ``k_factor × 10`` best candidates are
     re-ranked by exact inner product against the full vectors (kept in RAM, so it costs what Flat costs in memory
     on top of the codes); nprobe swept again with k_factor 4, 16 and 64. The IVF-PQ rows search the IVF-PQ
     *inside* this index (its ``base_index``), which is trained and filled exactly as ``'IVF<nlist>,PQ96'`` alone
     would be: one build (the slow step, k-means of nlist centroids on 64·nlist vectors) serves both, and both
     show its build time.

   Every index is built and searched through the library (``causal2vec.search.vectors``):
   ``new_index(factory, 1152)``; ``train`` on ``train_size(index)`` vectors (the first base vectors: i.i.d. draws,
   so a uniform random sample); ``add(index, vectors, ids)`` in blocks of 50,000;
   ``set_search_parameters(index, nprobe, ef_search, k_factor)``; ``search(index, queries, 10)`` with all queries
   in one batch and FAISS on all cores (``new_index``
   id-maps the refined index, whose IVF part numbers its vectors 0, 1, 2 … as the ids given here do).

   QPS = queries / the best of --repeats timed searches (more, up to 1 s of searching, for fast settings). The
   Flat QPS is the better of two measurements, at the start (the Flat index, --flat-repeats searches) and at the
   end (the exact vector store inside the RFlat index: the same vectors in an ``IndexFlatIP``), so that a burst of
   load from another tenant of the machine does not flatter the speedups. Speedup = QPS / Flat QPS;
   recall@10 = the share of each query's exact top 10 among the 10 returned. Build time = train + add (not the
   data generation); memory = the bytes ``faiss.write_index`` writes (counted, not stored), about what the index
   holds in RAM. One index at a time is in memory, freed before the next is built; the base vectors are never
   held in full outside an index (each block is regenerated from its seed when needed).

   Synthetic data. Uniform random vectors in 1152 dimensions would be an unrealistically hard case for approximate
   search: real embeddings have a low intrinsic dimension and topical clusters. So: a seeded Gaussian mixture in a
   random 64-dimensional subspace of R^1152 plus small isotropic noise, then L2-normalised. An orthonormal basis
   B (QR of a Gaussian matrix) spans the subspace; 1,024 cluster centres c_j ~ N(0, I_64); a vector is
   x = normalise(B^T (c_j + 1.2·g) + 0.08·e) with j uniform, g ~ N(0, I_64), e ~ N(0, I_1152): clusters that
   overlap (within-cluster spread 1.2 against centres of spread 1) and noise with about 5% of the energy.
   Median cosine to the nearest neighbour is about 0.6, to the 10th about 0.5 (at 100k vectors). Queries are
   fresh draws from the same distribution (their own random stream), not copies of base vectors. Base vectors
   come in blocks of 50,000, each from its own seeded streams, so any block can be regenerated alone.

2. **Peak memory of a streamed build** at two corpus sizes (--docs, default 20,000 and 100,000 documents) and two
   factories (--factories: ``'Flat'``, whose index grows by 4.6 KB a document, and ``'IVF256,PQ96'``, whose index
   stays small and which goes through the spill-to-disk training path). Each (size, factory) runs in a fresh child
   process (this script with hidden flags; all of them run before the parent loads anything large, as Linux carries
   the peak RSS over fork and exec) that writes a synthetic JSONL corpus from a generator (short texts with ids and
   titles; never held in a list), then runs ``SemanticIndex.build(path, embedder, read_corpus(path),
   factory=..., chunk_size=--chunk-size)`` with a stand-in embedder (``embedding_dim=1152``,
   ``name_or_path=None``, deterministic normalised vectors seeded by a hash of each text: cheap, so the index
   pipeline is measured, not a model). A child reports its peak RSS (``getrusage`` ``ru_maxrss``: imports, corpus
   writing and build together), its RSS just before the build and after it, and the size of the index's vector
   file (what the in-memory index holds). The table gives peak − index per size, and per factory the ratio of
   (peak − index) between the two sizes — close to 1 when memory does not grow with the corpus beyond the index
   itself — with that growth per document against the index's own growth per document.

Target: at least one approximate index type reaches >= 20x the Flat QPS with recall@10 >= 0.95 (a PASS/FAIL
line; --strict exits 1 on FAIL). The memory ratios are printed for reading, not judged.

Run: ``.venv/bin/python bench/search.py`` (full: about 13 minutes on 2 shared CPU cores, of which the IVF-PQ build
takes about 4 and the HNSW build about 4; this process peaks at about 8 GiB RSS), ``--quick`` (20,000 vectors,
200 queries, corpora of 2,000 and 5,000 documents: about a minute), ``--no-memory`` / ``--no-ann`` to run one part,
``--n`` / ``--docs`` for other sizes, ``--strict`` to exit 1 on FAIL.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger("bench.search")

DIM = 1152  # the default model's embedding dimension
K = 10
TARGET_RECALL = 0.95
TARGET_SPEEDUP = 20.0
DEFAULT_N = 1_000_000
QUICK_N = 20_000
BLOCK = 50_000
LATENT = 64  # intrinsic dimension of the synthetic data
CLUSTERS = 1024
SPREAD = 1.2  # within-cluster standard deviation, per latent coordinate (centres have 1)
NOISE = 0.08  # isotropic noise standard deviation, per ambient coordinate
EF_SEARCH = (16, 32, 64, 128, 192, 256)
NPROBE = (1, 2, 4, 8, 16, 32, 64, 128, 256)
K_FACTORS = (4, 16, 64)
PQ = "PQ96"
DOCS = (20_000, 100_000)
QUICK_DOCS = (2_000, 5_000)
FACTORIES = ("Flat", "IVF256,PQ96")
CHILD_MARK = "BENCH_CHILD_RESULT "


# ---------------------------------------------------------------------------------------------- synthetic vectors


@dataclass(frozen=True)
class Synthetic:
    """The seeded generator of base vectors and queries (see the module docstring)."""

    basis: np.ndarray  # (LATENT, DIM), orthonormal rows
    centres: np.ndarray  # (CLUSTERS, LATENT)
    seed: int

    @classmethod
    def make(cls, seed: int = 0) -> Synthetic:
        """The model: a random subspace and the cluster centres in it."""
        rng = np.random.default_rng([seed, 0])
        basis, _ = np.linalg.qr(rng.standard_normal((DIM, LATENT)))
        centres = rng.standard_normal((CLUSTERS, LATENT)).astype(np.float32)
        return cls(np.ascontiguousarray(basis.T, dtype=np.float32), centres, seed)

    def draw(self, n: int, stream: Sequence[int]) -> np.ndarray:
        """``n`` normalised vectors from the random stream ``stream``; a prefix of a longer draw from it."""
        pick, latent, noise = (np.random.default_rng([self.seed, *stream, part]) for part in range(3))
        z = self.centres[pick.integers(0, CLUSTERS, n)]
        z += SPREAD * latent.standard_normal((n, LATENT), dtype=np.float32)
        x = z @ self.basis
        x += NOISE * noise.standard_normal((n, DIM), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    def blocks(self, n: int) -> Iterator[tuple[int, np.ndarray]]:
        """The first ``n`` base vectors as ``(start, block)`` pairs of at most :data:`BLOCK` rows."""
        for start in range(0, n, BLOCK):
            yield start, self.draw(min(BLOCK, n - start), (1, start // BLOCK))

    def head(self, n: int) -> np.ndarray:
        """The first ``n`` base vectors in one array."""
        return np.concatenate([block for _, block in self.blocks(n)])

    def queries(self, n: int) -> np.ndarray:
        """``n`` queries: fresh draws, independent of the base vectors."""
        return self.draw(n, (2,))


# ---------------------------------------------------------------------------------------------- FAISS helpers


def faiss_mod() -> Any:
    """FAISS, imported late (the memory children start before the parent loads it)."""
    from causal2vec.search import vectors as faiss_index

    return faiss_index.faiss_module()


def index_bytes(index: Any) -> int:
    """The size of the index as ``faiss.write_index`` writes it, counted without storing it."""
    faiss = faiss_mod()
    total = 0

    def count(chunk: bytes) -> int:
        nonlocal total
        total += len(chunk)
        return len(chunk)

    writer = faiss.PyCallbackIOWriter(count)
    faiss.write_index(index, writer)
    del writer  # flushes
    return total


def nlist_for(n: int) -> int:
    """IVF lists: 4·√n rounded to a power of two."""
    return 2 ** round(math.log2(4 * math.sqrt(n)))


def build(factory: str, data: Synthetic, n: int) -> tuple[Any, float]:
    """Build ``factory`` over the first ``n`` base vectors through the library; returns it and its build seconds."""
    from causal2vec.search import vectors as faiss_index

    index = faiss_index.new_index(factory, DIM)
    seconds = 0.0
    if not index.is_trained:
        sample = data.head(min(faiss_index.train_size(index), n))
        log.info("%s: training on %d vectors", factory, len(sample))
        start = time.perf_counter()
        faiss_index.train(index, sample, factory)
        seconds += time.perf_counter() - start
        del sample
    for first, block in data.blocks(n):
        start = time.perf_counter()
        faiss_index.add(index, block, np.arange(first, first + len(block), dtype=np.int64))
        seconds += time.perf_counter() - start
        log.info("%s: %d/%d vectors added (%.0f s)", factory, first + len(block), n, seconds)
    return index, seconds


def timed_search(index: Any, queries: np.ndarray, repeats: int, min_seconds: float) -> tuple[float, np.ndarray]:
    """Best time of ``repeats`` (or more, up to ``min_seconds`` of searching) top-10 searches, and the ids found."""
    from causal2vec.search import vectors as faiss_index

    best, spent, runs, ids = math.inf, 0.0, 0, np.empty(0)
    while runs < repeats or (spent < min_seconds and runs < 50):
        start = time.perf_counter()
        _, ids = faiss_index.search(index, queries, K)
        seconds = time.perf_counter() - start
        best, spent, runs = min(best, seconds), spent + seconds, runs + 1
    return best, ids


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's exact top 10 among the 10 found."""
    return float((found[:, :, None] == truth[:, None, :]).any(axis=2).sum() / truth.size)


# ---------------------------------------------------------------------------------------------- ANN benchmark


@dataclass(frozen=True)
class Row:
    """One index at one search setting."""

    kind: str
    factory: str
    param: str
    seconds: float
    queries: int
    recall: float
    build_s: float
    nbytes: int

    @property
    def qps(self) -> float:
        """Queries per second."""
        return self.queries / self.seconds


def sweep(
    kind: str,
    factory: str,
    index: Any,
    settings: Sequence[tuple[str, dict[str, int]]],
    queries: np.ndarray,
    truth: np.ndarray,
    build_s: float,
    args: argparse.Namespace,
) -> list[Row]:
    """Search ``index`` at each setting (``nprobe``, ``ef_search``, ``k_factor``) and make the rows."""
    from causal2vec.search import vectors as faiss_index

    nbytes = index_bytes(index)
    rows = []
    for param, values in settings:
        faiss_index.set_search_parameters(index, values.get("nprobe"), values.get("ef_search"), values.get("k_factor"))
        seconds, ids = timed_search(index, queries, args.repeats, 1.0)
        rows.append(Row(kind, factory, param, seconds, len(queries), recall(ids, truth), build_s, nbytes))
        log.info("%s %s: %.0f QPS, recall@10 %.3f", kind, param, rows[-1].qps, rows[-1].recall)
    return rows


def unwrap(index: Any) -> Any:
    """The index behind an id map (or the index itself), downcast to its FAISS class."""
    faiss = faiss_mod()
    inner = faiss.downcast_index(index)
    return faiss.downcast_index(inner.index) if hasattr(inner, "id_map") else inner


@dataclass
class AnnResult:
    """What the speed/recall part measured."""

    flat: Row  # with the better of the two Flat timings
    flat_seconds: tuple[float, float]  # the Flat index at the start, the RFlat index's exact store at the end
    rows: list[Row]
    minutes: float


def ann_benchmark(args: argparse.Namespace) -> AnnResult:
    """Build Flat, HNSW32 and IVF-PQ+RFlat one at a time and search each at every setting."""
    faiss = faiss_mod()
    start = time.perf_counter()
    data = Synthetic.make(args.seed)
    queries = data.queries(args.queries)
    threads = faiss.omp_get_max_threads()
    log.info("FAISS %s, %d threads; N=%d, %d queries", faiss.__version__, threads, args.n, args.queries)

    flat, flat_build = build("Flat", data, args.n)
    first_s, truth = timed_search(flat, queries, args.flat_repeats, 0.0)
    flat_bytes = index_bytes(flat)
    log.info("Flat: %.1f QPS", args.queries / first_s)
    del flat

    rows: list[Row] = []
    hnsw, seconds = build("HNSW32", data, args.n)
    settings = [(f"efSearch={ef}", {"ef_search": ef}) for ef in EF_SEARCH]
    rows += sweep("HNSW32", "HNSW32", hnsw, settings, queries, truth, seconds, args)
    del hnsw

    nlist = nlist_for(args.n)
    factory = f"IVF{nlist},{PQ},RFlat"
    refined, seconds = build(factory, data, args.n)
    refine = unwrap(refined)
    base, store = faiss.downcast_index(refine.base_index), faiss.downcast_index(refine.refine_index)
    probes = [p for p in NPROBE if p <= nlist]
    settings = [(f"nprobe={p}", {"nprobe": p}) for p in probes]
    rows += sweep("IVF-PQ", f"IVF{nlist},{PQ}", base, settings, queries, truth, seconds, args)
    settings = [(f"nprobe={p}, k_factor={kf}", {"nprobe": p, "k_factor": kf}) for kf in K_FACTORS for p in probes]
    rows += sweep("IVF-PQ+RFlat", factory, refined, settings, queries, truth, seconds, args)
    last_s, exact = timed_search(store, queries, args.flat_repeats, 0.0)  # exact search again, same vectors
    log.info(
        "exact store of the RFlat index: %.1f QPS, agreement with the ground truth %.4f",
        args.queries / last_s,
        recall(exact, truth),
    )
    del refined, refine, base, store
    flat_row = Row("Flat (exact)", "Flat", "-", min(first_s, last_s), len(queries), 1.0, flat_build, flat_bytes)
    return AnnResult(flat_row, (first_s, last_s), rows, (time.perf_counter() - start) / 60)


def report_ann(args: argparse.Namespace, result: AnnResult) -> bool:
    """Print the table, the per-type summaries and the verdict; return whether the target passed."""
    flat, rows = result.flat, result.rows
    print("\n" + "=" * 118)
    print(
        f"Search: N={args.n:,} synthetic normalised {DIM}-d vectors (Gaussian mixture: {CLUSTERS:,} clusters in a "
        f"{LATENT}-d subspace + noise), {args.queries:,} fresh queries, top {K} by inner product, "
        f"{faiss_mod().omp_get_max_threads()} FAISS threads, {os.cpu_count()} CPUs; {result.minutes:.1f} min"
    )
    if args.n != DEFAULT_N:
        print(f"  N = {args.n:,} (--n; the default is {DEFAULT_N:,})")
    header = (
        f"{'index':<13} {'factory':<24} {'setting':<24} {'QPS':>9} {'vs flat':>8} {'recall@10':>9} {'build s':>8} "
        f"{'memory MiB':>10}"
    )
    print(header)
    print("-" * len(header))
    for row in [flat, *rows]:
        print(
            f"{row.kind:<13} {row.factory:<24} {row.param:<24} {row.qps:9,.0f} {row.qps / flat.qps:7.1f}x "
            f"{row.recall:9.3f} {row.build_s:8.1f} {row.nbytes / 2**20:10,.0f}"
        )
    print(
        "QPS: all queries in one batch, best of the timed searches; 'vs flat' = QPS / Flat QPS; build = train + add; "
        "memory = serialised index size. The IVF-PQ rows search the IVF-PQ inside the IVF-PQ+RFlat index (one "
        "build; same build time)."
    )
    first, last = (args.queries / s for s in result.flat_seconds)
    print(
        f"Flat QPS = the better of {first:,.1f} (the Flat index, at the start) and {last:,.1f} (the exact store of "
        f"the RFlat index, same vectors, at the end)."
    )
    print(f"\nFastest setting with recall@{K} >= {TARGET_RECALL} per index type:")
    winners: list[Row] = []
    for kind in dict.fromkeys(row.kind for row in rows):
        own = [row for row in rows if row.kind == kind]
        good = [row for row in own if row.recall >= TARGET_RECALL]
        if good:
            best = max(good, key=lambda r: r.qps)
            winners.append(best)
            print(
                f"  {kind:<13} {best.param:<24} {best.qps:9,.0f} QPS = {best.qps / flat.qps:6.1f}x flat, "
                f"recall@{K} {best.recall:.3f}"
            )
        else:
            top = max(own, key=lambda r: r.recall)
            print(f"  {kind:<13} none reaches recall {TARGET_RECALL} (best {top.recall:.3f} at {top.param})")
    ok = any(row.qps / flat.qps >= TARGET_SPEEDUP for row in winners)
    if winners:
        top = max(winners, key=lambda r: r.qps)
        detail = f"fastest: {top.kind} {top.param}, {top.qps / flat.qps:.1f}x flat at recall {top.recall:.3f}"
    else:
        detail = f"no setting reaches recall@{K} {TARGET_RECALL}"
    print(
        f"\nTarget: an index type with >= {TARGET_SPEEDUP:.0f}x flat QPS at recall@{K} >= {TARGET_RECALL}: "
        f"{'PASS' if ok else 'FAIL'} ({detail})"
    )
    return ok


# ---------------------------------------------------------------------------------------------- memory children

SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "di", "fo", "gu", "he", "ja")


def corpus_lines(n: int, seed: int) -> Iterator[str]:
    """``n`` JSONL records with an id, a title and a short text of pseudo-words, one at a time."""
    rng = np.random.default_rng(seed)
    vocabulary = [a + b + c for a in SYLLABLES for b in SYLLABLES for c in SYLLABLES]
    for i in range(n):
        words = rng.integers(0, len(vocabulary), rng.integers(8, 48))
        text = " ".join(vocabulary[w] for w in words)
        yield json.dumps({"id": f"doc-{i}", "title": f"Document {i}", "text": text}) + "\n"


class HashEmbedder:
    """A stand-in backend: deterministic, normalised pseudo-random vectors seeded by a hash of each text.

    It satisfies ``causal2vec.encoding.EmbeddingBackend``, so the index embeds through the library's batch loop.
    """

    embedding_dim = DIM
    name_or_path = None
    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(self) -> None:
        from causal2vec import Causal2VecConfig

        self.config = Causal2VecConfig()

    def tokenize(self, texts: list[str], prompt: str = "", *, max_length: int | None = None) -> Any:
        """The vectors themselves, as the one feature."""
        from causal2vec.layout import Features

        return Features({"rows": torch.from_numpy(self._vectors(texts))})

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """The vectors, unchanged."""
        return rows

    @staticmethod
    def _vectors(texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), DIM), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
            out[i] = np.random.default_rng(seed).standard_normal(DIM, dtype=np.float32)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out


def rss_mib(field: str = "VmRSS") -> float | None:
    """A figure of ``/proc/self/status`` in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def maxrss_mib() -> float:
    """``getrusage`` peak RSS in MiB (KiB on Linux, bytes on macOS)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)


def child_main(args: argparse.Namespace) -> None:
    """Write a corpus, build an index from it, and print this process's memory figures as one JSON line."""
    from causal2vec.search.corpus import read_corpus
    from causal2vec.search.index import SemanticIndex

    logging.getLogger("causal2vec").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-search-", dir=args.workdir) as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        with open(corpus, "w", encoding="utf-8") as f:
            f.writelines(corpus_lines(args.child_docs, args.seed))
        before = rss_mib()
        start = time.perf_counter()
        index = SemanticIndex.build(
            Path(tmp) / "index",
            HashEmbedder(),
            read_corpus(corpus),
            factory=args.child_factory,
            chunk_size=args.chunk_size,
            show_progress_bar=False,
        )
        seconds = time.perf_counter() - start
        peak, after = maxrss_mib(), rss_mib()
        result = {
            "docs": len(index),
            "factory": args.child_factory,
            "seconds": seconds,
            "before_mib": before,
            "peak_mib": peak,
            "after_mib": after,
            "index_mib": (index.path / index.manifest.vectors_file).stat().st_size / 2**20,
            "corpus_mib": corpus.stat().st_size / 2**20,
        }
        index.close()
    print(CHILD_MARK + json.dumps(result), flush=True)


def measure_memory(args: argparse.Namespace, docs: int, factory: str) -> dict[str, Any]:
    """Run one (corpus size, factory) build in a fresh child process and return what it reports."""
    command = [sys.executable, os.path.abspath(__file__), "--child-docs", str(docs), "--child-factory", factory]
    command += ["--chunk-size", str(args.chunk_size), "--seed", str(args.seed)]
    command += ["--workdir", args.workdir] if args.workdir else []
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.startswith(CHILD_MARK):
            return json.loads(line[len(CHILD_MARK) :])
    tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
    raise RuntimeError(f"memory child for {docs} docs / {factory} failed (rc={done.returncode}): {tail}")


def report_memory(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    """Print the peak-memory table and the (peak − index) ratio between the two corpus sizes."""
    print("\n" + "=" * 118)
    print(
        f"Peak memory of SemanticIndex.build over a streamed JSONL corpus (chunk_size={args.chunk_size}, stand-in "
        f"embedder, {DIM}-d), each in a fresh process; MiB"
    )
    header = (
        f"{'factory':<14} {'docs':>8} {'build s':>8} {'corpus':>8} {'RSS before':>10} {'peak RSS':>9} "
        f"{'RSS after':>9} {'index':>8} {'peak-index':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['factory']:<14} {r['docs']:>8,} {r['seconds']:8.1f} {r['corpus_mib']:8.1f} {r['before_mib']:10.0f} "
            f"{r['peak_mib']:9.0f} {r['after_mib']:9.0f} {r['index_mib']:8.1f} {r['peak_mib'] - r['index_mib']:10.0f}"
        )
    print(
        "peak RSS = getrusage ru_maxrss of the child (imports, corpus writing and build); RSS before / after = just "
        "before the build / after it returned; index = the vector file (what the loaded index holds in RAM)."
    )
    small, large = min(args.docs), max(args.docs)
    for factory in dict.fromkeys(r["factory"] for r in results):
        by_size = {r["docs"]: r for r in results if r["factory"] == factory}
        if small in by_size and large in by_size:
            a, b = by_size[small], by_size[large]
            ratio = (b["peak_mib"] - b["index_mib"]) / (a["peak_mib"] - a["index_mib"])
            extra = (b["peak_mib"] - b["index_mib"]) - (a["peak_mib"] - a["index_mib"])
            per_doc, index_per_doc = (x * 2**20 / (large - small) for x in (extra, b["index_mib"] - a["index_mib"]))
            print(
                f"  {factory:<14} (peak - index) at {large:,} / at {small:,} docs = {ratio:.3f}: {extra:+,.0f} MiB "
                f"for {large - small:+,} docs = {per_doc:+,.0f} B/doc (the index itself grows {index_per_doc:,.0f} "
                f"B/doc)"
            )


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--n", type=int, default=None, help=f"base vectors (default {DEFAULT_N:,}; quick {QUICK_N:,})")
    parser.add_argument("--queries", type=int, default=None, help="queries (default 1,000; quick 200)")
    parser.add_argument("--repeats", type=int, default=3, help="timed searches per ANN setting (default 3)")
    parser.add_argument("--flat-repeats", type=int, default=2, help="timed exact searches (default 2)")
    parser.add_argument("--docs", default=None, help="two corpus sizes, comma-separated (default 20000,100000)")
    parser.add_argument("--factories", default=";".join(FACTORIES), help="';'-separated factories for the memory part")
    parser.add_argument("--chunk-size", type=int, default=2048, help="SemanticIndex.add chunk size (default 2048)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--workdir", default=None, help="folder for temporary corpora and indexes (default: $TMPDIR)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20,000 vectors, 2,000/5,000 documents")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory part")
    parser.add_argument("--no-ann", action="store_true", help="skip the speed/recall part")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when the target fails")
    parser.add_argument("--child-docs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-factory", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.n = args.n or (QUICK_N if args.quick else DEFAULT_N)
    args.queries = args.queries or (200 if args.quick else 1000)
    sizes = args.docs.split(",") if args.docs else (QUICK_DOCS if args.quick else DOCS)
    args.docs = [int(s) for s in sizes]
    args.factories = [f.strip() for f in args.factories.split(";") if f.strip()]
    if len(args.docs) != 2 or min(args.docs) < 1:
        parser.error("--docs takes two positive corpus sizes, e.g. 20000,100000")
    if min(args.n, args.queries, args.repeats, args.flat_repeats, args.chunk_size) < 1 or args.n < 4 * K:
        parser.error("--n, --queries, --repeats, --flat-repeats and --chunk-size must be positive (--n >= 40)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (or one memory child)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.child_docs:
        child_main(args)
        return 0
    start = time.perf_counter()
    memory = []
    if not args.no_memory:  # first, while this process is small (see the module docstring)
        for factory in args.factories:
            for docs in args.docs:
                memory.append(measure_memory(args, docs, factory))
                log.info("memory %s", memory[-1])
    ok = True
    if not args.no_ann:
        ok = report_ann(args, ann_benchmark(args))
    if memory:
        report_memory(args, memory)
    print(f"\nTotal {(time.perf_counter() - start) / 60:.1f} min; this process's peak RSS {maxrss_mib():,.0f} MiB.")
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
