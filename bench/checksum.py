"""Checksum benchmark: what verifying a file on load costs, next to loading it.

Writers record a checksum of each data file (``causal2vec.files.file_checksum``, xxh3_128) and readers verify
it before loading. This measures, side by side in one run and on the same files:

1. **FAISS index** — a ``'Flat'`` inner-product index of random unit vectors (dimension --dim, 1152 by default,
   the default model's embedding size), about --size-mb MB, built and written through
   ``causal2vec.search.vectors`` (``new_index``, ``add``, ``write``); the load is ``faiss.read_index``.
2. **safetensors** — one float32 tensor of the same size written with ``safetensors.torch.save_file``; the load
   is ``safetensors.torch.load_file``.

For each file, each the best of --repeats runs after one untimed read (the file is in the page cache, as it is
when a loader has just read it, so the ratios compare CPU work, not the disk):

- the load;
- ``file_checksum(path)`` as the library calls it (xxh3_128, ``readinto`` of one reused 1 MiB buffer);
- xxh3_128 and ``hashlib.sha256`` each fed the same way, written out here: their ratio is the hashes' own.

``safetensors.torch.load_file`` maps the file and may read nothing until a tensor is used, so its load is timed
as ``load_file`` plus one sum over each tensor (what the finite-weights check at load does). Printed: seconds,
GB/s, and each hash's time as a fraction of the load.

--checkpoint PATH (or ``default``) also times ``Causal2Vec.from_pretrained`` of a checkpoint folder against the
two integrity checks it runs: verifying every recorded checksum and the finite-weights check.

Run: ``python bench/checksum.py`` (~400 MB files) or ``python bench/checksum.py --quick`` (~40 MB).
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from causal2vec.files import file_checksum


def hash_file(path: Path, digest: Any, block: int = 1 << 20) -> str:
    """Hash a file read into one reused buffer (no allocation per block)."""
    buffer = bytearray(block)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def best_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def write_faiss_index(path: Path, n: int, dim: int) -> None:
    from causal2vec.search import vectors

    rng = np.random.default_rng(0)
    index = vectors.new_index("Flat", dim)
    for start in range(0, n, 50_000):
        block = rng.standard_normal((min(50_000, n - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        vectors.add(index, block, np.arange(start, start + len(block), dtype=np.int64))
    vectors.write(index, path)


def write_safetensors(path: Path, n: int, dim: int) -> None:
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    save_file({"weight": torch.randn(n, dim, generator=generator)}, path)


def measure(name: str, path: Path, load: Callable[[], object], repeats: int) -> None:
    path.read_bytes()  # into the page cache
    size = path.stat().st_size
    t_load = best_time(load, repeats)
    rows = {
        "file_checksum (library, xxh3_128)": best_time(lambda: file_checksum(path), repeats),
        "xxh3_128 (1 MiB readinto)": best_time(lambda: hash_file(path, xxhash.xxh3_128()), repeats),
        "sha256 (1 MiB readinto)": best_time(lambda: hash_file(path, hashlib.sha256()), repeats),
    }
    gb = size / 1e9
    print(f"{name}: {size / 1e6:.0f} MB, load {t_load:.3f} s ({gb / t_load:.2f} GB/s)")
    for label, seconds in rows.items():
        print(f"  {label:<40} {seconds:7.3f} s {gb / seconds:6.2f} GB/s  = {seconds / t_load:7.1%} of the load")
    xxh, sha = rows["xxh3_128 (1 MiB readinto)"], rows["sha256 (1 MiB readinto)"]
    print(f"  sha256 / xxh3_128: {sha / xxh:.1f}x")


def measure_checkpoint(source: str, repeats: int) -> None:
    from causal2vec import Causal2Vec
    from causal2vec.checkpoint import check_finite, verify_files
    from causal2vec.config import CONFIG_NAME, Causal2VecConfig

    model = Causal2Vec.from_pretrained(source)  # builds the default's cache folder if needed
    if source == "default":
        from causal2vec.assets import default_checkpoint

        folder = default_checkpoint(Causal2Vec)
    else:
        folder = Path(source)
    config = Causal2VecConfig.load(folder / CONFIG_NAME)
    size = sum((folder / name).stat().st_size for name in config.checksums)
    t_load = best_time(lambda: Causal2Vec.from_pretrained(source), repeats)
    t_verify = best_time(lambda: verify_files(folder, config), repeats)
    t_finite = best_time(lambda: check_finite(model, folder), repeats)
    print(
        f"checkpoint {source}: {len(config.checksums)} checksummed files, {size / 1e6:.0f} MB, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters\n"
        f"  from_pretrained {t_load:6.3f} s (checks included) | verify checksums {t_verify:6.3f} s = "
        f"{t_verify / t_load:5.1%} | finite-weights check {t_finite:6.3f} s = {t_finite / t_load:5.1%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=400, help="size of each file in MB (default: 400)")
    parser.add_argument("--dim", type=int, default=1152, help="vector dimension (default: 1152)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement, best kept (default: 3)")
    parser.add_argument("--quick", action="store_true", help="~40 MB files and 2 repeats")
    parser.add_argument("--checkpoint", help="also time loading this checkpoint folder, e.g. 'default'")
    parser.add_argument("--workdir", type=Path, help="where to write the files (default: a temporary folder)")
    args = parser.parse_args()
    size_mb, repeats = (40, 2) if args.quick else (args.size_mb, args.repeats)
    n = max(1, size_mb * 1_000_000 // (4 * args.dim))

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        index_path, tensors_path = Path(tmp) / "vectors.faiss", Path(tmp) / "weights.safetensors"
        write_faiss_index(index_path, n, args.dim)
        write_safetensors(tensors_path, n, args.dim)
        from safetensors.torch import load_file

        from causal2vec.search import vectors

        print(f"{n} vectors x {args.dim} float32 in each file; best of {repeats}; files in the page cache")
        measure("faiss", index_path, lambda: vectors.faiss_module().read_index(str(index_path)), repeats)
        measure("safetensors", tensors_path, lambda: [t.sum() for t in load_file(tensors_path).values()], repeats)
    if args.checkpoint:
        measure_checkpoint(args.checkpoint, repeats)


if __name__ == "__main__":
    main()
