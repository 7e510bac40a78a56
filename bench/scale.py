"""Scale benchmark: indexes built from embedding shards, in memory and on disk (``--on-disk``).

What it measures, side by side in one run, on stand-in vectors (no model runs; the index pipeline is measured):

1. **Peak RSS of ``index --from-shards``** at two corpus sizes (--sizes, default 20,000 and 100,000 documents of
   dimension --dim, default 384, in shards of --unit documents) for an in-memory IVF index and the same factory
   ``--on-disk``. Each build runs in a fresh child process (this script with ``--child``), which reports its peak
   RSS (``getrusage`` ``ru_maxrss``, imports included), its peak heap (``RssAnon``, sampled every 5 ms) and what the
   index holds (the vector files' bytes). ``ru_maxrss`` also counts the pages of memory-mapped files, which the
   on-disk merge maps (the parts and the ``.ivfdata`` file: page cache the kernel reclaims under pressure), so the
   heap is what a build needs. In memory the index itself grows with the corpus, so the table gives heap − index;
   on disk the lists are in the ``.ivfdata`` file. The ratio between the two sizes is close to 1 when memory stays
   flat.
2. **Search latency and RAM, on disk against in memory**, on the largest size: a child per storage loads the index
   and searches --queries fresh queries (one batch, best of 3, through ``SemanticIndex.search_vectors``) at each
   nprobe, reporting recall@10 against exact search (computed when the shards are written) and its RSS after the
   searches minus its RSS before loading: what the index needs in RAM. Both indexes share the quantizer and give
   the same hits, so they are compared at the same recall. The page cache is warm (the files were just written);
   a cold cache would cost a disk read per list visited.

Stand-in vectors: unit vectors around 200 cluster centres in a random 32-dimensional subspace plus isotropic noise,
each shard from its own seed; queries are fresh draws.

    python bench/scale.py                # about 3 minutes on 2 loaded cores
    python bench/scale.py --sizes 20000 100000 --dim 384 --factory IVF256,Flat
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(99).standard_normal((32, dim))
    centres = np.random.default_rng(98).standard_normal((200, 32)) * 2
    x = (centres[rng.integers(0, 200, n)] + rng.standard_normal((n, 32))) @ basis + 0.2 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def rss_mb(kind: str = "") -> float:
    """Resident memory in MB: all of it, or ``"Anon"`` (heap: what the process needs) or ``"File"`` (mapped files)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(f"Rss{kind}:" if kind else "VmRSS:")) / 1024


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------- children


def child_write(args: argparse.Namespace) -> dict:
    """A corpus of ``n`` short documents, its shard folder, queries and their exact top 10."""
    from causal2vec.identity import ModelIdentity
    from causal2vec.shards import ShardFolder, plan_corpus, read_unit, write_shard

    out = Path(args.out)
    out.mkdir(parents=True)
    with open(out / "corpus.jsonl", "w") as f:
        for i in range(args.n):
            f.write(json.dumps({"id": f"d{i}", "text": f"document {i}"}) + "\n")
    plan = plan_corpus(out / "corpus.jsonl", unit_size=args.unit, show_progress_bar=False)
    folder = ShardFolder.resume(out / "shards", ModelIdentity("stand-in", None, precision="fp32"), args.dim, plan)
    queries = clustered(args.queries, args.dim, seed=10**6)
    best = np.full((len(queries), 10), -np.inf, np.float32), np.zeros((len(queries), 10), np.int64)
    start = 0
    for number, unit in enumerate(plan.units):
        docs = list(read_unit(plan.files[unit.input], unit))
        vectors = clustered(len(docs), args.dim, seed=number)
        folder.record(write_shard(folder.path, unit, docs, vectors))
        scores = np.concatenate([best[0], queries @ vectors.T], axis=1)
        numbers = np.broadcast_to(np.arange(start, start + len(docs)), (len(queries), len(docs)))
        ids = np.concatenate([best[1], numbers], axis=1)
        top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
        best = np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1)
        start += len(docs)
    np.save(out / "queries.npy", queries)
    np.save(out / "truth.npy", best[1])
    return {"shards": len(plan.units)}


def child_build(args: argparse.Namespace) -> dict:
    """Build the index, sampling the heap (RssAnon) every 5 ms: ru_maxrss also counts mapped file pages."""
    from causal2vec.search import SemanticIndex

    peaks, done = {"Anon": rss_mb("Anon"), "File": rss_mb("File")}, threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            for kind in peaks:
                peaks[kind] = max(peaks[kind], rss_mb(kind))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    SemanticIndex.build_from_shards(
        args.index, args.shards, factory=args.factory, on_disk=args.on_disk, show_progress_bar=False
    ).close()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    files = {p.suffix: p.stat().st_size for p in Path(args.index).glob("vectors.*")}
    return {"peak_mb": peak_mb(), "anon_mb": peaks["Anon"], "file_mb": peaks["File"], "seconds": seconds,
            "faiss_mb": files.get(".faiss", 0) / 2**20, "ivfdata_mb": files.get(".ivfdata", 0) / 2**20}  # fmt: skip


def child_search(args: argparse.Namespace) -> dict:
    from causal2vec.search import SemanticIndex

    queries, truth = np.load(Path(args.data) / "queries.npy"), np.load(Path(args.data) / "truth.npy")
    before = {kind: rss_mb(kind) for kind in ("Anon", "File")}
    rows = []
    with SemanticIndex.load(args.index) as index:
        for nprobe in args.nprobe:
            times = []
            for _ in range(3):
                start = time.perf_counter()
                hits = index.search_vectors(queries, 10, nprobe=nprobe)
                times.append(time.perf_counter() - start)
            found = [{int(h.id[1:]) for h in row} for row in hits]
            recall = np.mean([len(f & set(t.tolist())) / 10 for f, t in zip(found, truth, strict=True)])
            ram = {kind: rss_mb(kind) - before[kind] for kind in before}
            rows.append({"nprobe": nprobe, "ms_per_query": 1000 * min(times) / len(queries), "recall": recall} | ram)
    return {"rows": rows, "peak_mb": peak_mb()}


def run_child(mode: str, *argv: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, __file__, "--child", mode, *argv], env=env, check=True,
                         capture_output=True, text=True).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- the report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=[20_000, 100_000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--unit", type=int, default=10_000, help="documents per shard")
    parser.add_argument("--factory", default="IVF256,Flat")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    for hidden in ("--n", "--out", "--index", "--shards", "--data"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--on-disk", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.n = int(args.n) if args.n else 0
        print(json.dumps({"write": child_write, "build": child_build, "search": child_search}[args.child](args)))
        return
    report(args)


def report(args: argparse.Namespace) -> None:
    common = ["--dim", str(args.dim), "--unit", str(args.unit), "--factory", args.factory,
              "--queries", str(args.queries), "--nprobe", *map(str, args.nprobe)]  # fmt: skip
    print(f"factory {args.factory}, dim {args.dim}, shards of {args.unit}; CPU: {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        builds = {}
        for n in args.sizes:
            data = Path(tmp) / f"n{n}"
            run_child("write", "--n", str(n), "--out", str(data), *common)
            for storage in ("memory", "disk"):
                flags = ["--on-disk"] if storage == "disk" else []
                index = str(data / f"{storage}.idx")
                builds[n, storage] = run_child("build", "--shards", str(data / "shards"), "--index", index,
                                               *flags, *common)  # fmt: skip
        print_builds(args.sizes, builds)
        n = max(args.sizes)
        data = Path(tmp) / f"n{n}"
        searches = {s: run_child("search", "--index", str(data / f"{s}.idx"), "--data", str(data), *common)
                    for s in ("memory", "disk")}  # fmt: skip
        print_searches(n, searches, builds)


def print_builds(sizes: list[int], builds: dict) -> None:
    print("\n1. index --from-shards, MB: peak RSS (ru_maxrss, mapped file pages included), peak heap (RssAnon sampled")
    print("   every 5 ms: what the build needs in RAM), peak mapped file pages; index = the vector files held in RAM")
    print(f"{'documents':>10} {'storage':>8} {'peak RSS':>9} {'heap':>7} {'file':>7} {'index':>7} {'.ivfdata':>9} "
          f"{'heap-index':>11} {'s':>6}")  # fmt: skip
    for (n, storage), b in builds.items():
        held = b["faiss_mb"] if storage == "disk" else b["faiss_mb"] + b["ivfdata_mb"]
        b["net"] = b["anon_mb"] - held
        print(f"{n:>10} {storage:>8} {b['peak_mb']:>9.0f} {b['anon_mb']:>7.0f} {b['file_mb']:>7.0f} {held:>7.1f} "
              f"{b['ivfdata_mb']:>9.1f} {b['net']:>11.0f} {b['seconds']:>6.1f}")  # fmt: skip
    small, large = sizes
    for storage in ("memory", "disk"):
        ratio = builds[large, storage]["net"] / builds[small, storage]["net"]
        rss = builds[large, storage]["peak_mb"] / builds[small, storage]["peak_mb"]
        print(f"  {storage}: (heap - index) at {large} / at {small} = {ratio:.2f} (flat: <= 1.2); peak RSS {rss:.2f}")


def print_searches(n: int, searches: dict, builds: dict) -> None:
    print(f"\n2. search at {n} documents, one batch of queries, warm page cache; RAM = RSS growth since before the")
    print(
        "   load, cumulative over the rows: heap (anon, what the index needs) + mapped file pages (reclaimable cache)"
    )
    print(f"{'nprobe':>6} {'recall mem':>10} {'recall disk':>11} {'ms/q mem':>9} {'ms/q disk':>10} {'disk/mem':>9}"
          f" {'heap mem':>9} {'heap disk':>10} {'file disk':>10}")  # fmt: skip
    for mem, disk in zip(searches["memory"]["rows"], searches["disk"]["rows"], strict=True):
        print(f"{mem['nprobe']:>6} {mem['recall']:>10.3f} {disk['recall']:>11.3f} {mem['ms_per_query']:>9.3f} "
              f"{disk['ms_per_query']:>10.3f} {disk['ms_per_query'] / mem['ms_per_query']:>9.2f} "
              f"{mem['Anon']:>9.0f} {disk['Anon']:>10.0f} {disk['File']:>10.0f}")  # fmt: skip
    print(
        f"heap ratio disk/memory after the last row: {heap_ratio(searches):.3f}; "
        f".ivfdata {builds[n, 'disk']['ivfdata_mb']:.0f} MB"
    )


def heap_ratio(searches: dict) -> float:
    return searches["disk"]["rows"][-1]["Anon"] / max(1e-9, searches["memory"]["rows"][-1]["Anon"])


if __name__ == "__main__":
    main()
