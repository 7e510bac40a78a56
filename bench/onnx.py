"""ONNX serving speed: onnxruntime against torch on the trained default, on the same texts, in one run.

CPU rows (``--device cpu``, the default):

- ``ort fp32``, ``ort fp32 optimised`` (``--optimize``) and ``ort int8`` (``--int8``): self-contained exports written
  by :func:`export.folder.export_folder` into ``--work`` (each checked against torch before it is written; reused
  while the default's fingerprint, the opset and onnxruntime's version are unchanged);
- ``torch fp32`` and ``torch bf16``: ``Causal2Vec.from_pretrained("default")``.

Every row embeds the same BBC News validation articles (title and body; the default's encoder reads up to 512
tokens, its LLM 64) through the same ``encode()`` code, tokenisation included:

- batch 1: the median latency over ``--n1`` single texts, each text going through every row in turn (the order
  rotates from text to text, so a burst of load on this shared machine hits every row alike);
- batch 32: texts per second over ``--n32`` texts in batches of 32, interleaved per batch the same way, each batch
  timed ``--rounds`` times and its best time kept.

Each ONNX row also shows its lowest cosine with torch fp32 over those texts, and the int8 row its BBCNewsRetrieval
nDCG@10 next to fp32's (mteb through the evaluation package, ``--backend onnx``).

GPU rows (``--device cuda``): ``ort fp16`` (CUDA provider, IO binding) against ``torch bf16`` on CUDA, at batch 1 and
batch 64.

It ends with each target and PASS/FAIL: on CPU, the best ONNX batch-1 latency at most torch fp32's / 1.5 and the best
ONNX batch-32 throughput at least torch bf16's; on GPU, ort fp16 throughput at batch 64 at least torch bf16's.

    .venv/bin/python bench/onnx.py                       # CPU, about 20 minutes on 2 cores (exports included)
    .venv/bin/python bench/onnx.py --no-ndcg --n1 16     # quicker
    .venv/bin/python bench/onnx.py --device cuda         # GPU rows
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Python puts this script's folder first on the path, where this file would shadow the onnx package itself.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))  # the repository's export/ and eval/ packages

from causal2vec import Causal2Vec, OnnxCausal2Vec  # noqa: E402
from causal2vec.backends import load_backend  # noqa: E402
from causal2vec.backends.onnx import ExportManifest, require_onnxruntime  # noqa: E402
from causal2vec.data.bbc import bbc_news_split  # noqa: E402
from export.score import task_scores  # noqa: E402

Encoder = Callable[[list[str], int], np.ndarray]


def export(folder: Path, options, device: str = "cpu") -> OnnxCausal2Vec | None:
    """The default's export with ``options`` in ``folder``, written unless a current one is there; ``None`` (and the
    figures printed) when the export refuses a graph that breaks parity."""
    from export.folder import ParityError, export_folder, fingerprint

    source = Causal2Vec.from_pretrained("default")
    manifest = ExportManifest.read(folder) if folder.is_dir() else None
    ort = require_onnxruntime()
    current = {"fingerprint": fingerprint(source), "opset": options.opset, "onnxruntime": ort.__version__}
    if manifest is None or _written(manifest) != current:
        start = time.perf_counter()
        try:
            report = export_folder(source, folder, options, source="default")
        except ParityError as err:
            print(f"<!-- {folder.name}: refused by the export: {err} -->", flush=True)
            return None
        print(f"<!-- exported {folder.name} in {time.perf_counter() - start:.0f} s; checked on "
              f"{report.manifest.checked_on} -->", flush=True)  # fmt: skip
    return load_backend(folder, backend="onnx", device=device, strict=device != "cpu")


def _written(manifest: ExportManifest) -> dict:
    """What decides whether an earlier export in the work folder is still the one to time."""
    return {"fingerprint": manifest.source.get("fingerprint"), "opset": manifest.opset,
            "onnxruntime": manifest.onnxruntime}  # fmt: skip


def rows(device: str, work: Path) -> dict[str, Encoder]:
    """Each row's ``encode(texts, batch_size)``."""
    from export.folder import ExportOptions

    def encoder(model) -> Encoder:
        return lambda texts, batch: model.encode(texts, batch_size=batch, show_progress_bar=False)

    if device == "cpu":
        models = {
            "ort fp32": export(work / "fp32", ExportOptions()),
            "ort fp32 optimised": export(work / "fp32-optimised", ExportOptions(optimize=True)),
            "ort int8": export(work / "int8", ExportOptions(int8=True)),
            "torch fp32": load_backend("default", backend="torch", device="cpu", dtype="fp32"),
            "torch bf16": load_backend("default", backend="torch", device="cpu", dtype="bf16"),
        }
    else:
        models = {
            "ort fp16": export(work / "fp16", ExportOptions(fp16=True), device=device),
            "torch bf16": load_backend("default", backend="torch", device=device, dtype="bf16"),
        }
    return {name: encoder(model) for name, model in models.items() if model is not None}


def interleaved(encoders: dict[str, Encoder], chunks: list[list[str]], batch: int, rounds: int) -> dict[str, list]:
    """Per row, the best time of each chunk over ``rounds``; rows take turns chunk by chunk, in rotating order."""
    names = list(encoders)
    best = {name: [float("inf")] * len(chunks) for name in names}
    for _ in range(rounds):
        for i, chunk in enumerate(chunks):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                start = time.perf_counter()
                encoders[name](chunk, batch)
                best[name][i] = min(best[name][i], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (ORT fp32/optimised/int8 vs torch) or cuda (ORT fp16)")
    parser.add_argument("--n1", type=int, default=48, help="texts timed one at a time (48)")
    parser.add_argument("--n32", type=int, default=192, help="texts timed in batches (192)")
    parser.add_argument("--rounds", type=int, default=2, help="timings of each batch; the best is kept (2)")
    parser.add_argument("--no-ndcg", action="store_true", help="skip the BBCNewsRetrieval scores of fp32 and int8")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-onnx", help="exports and eval results")
    args = parser.parse_args()
    big = 32 if args.device == "cpu" else 64
    articles = bbc_news_split("validation")
    texts = [f"{a.title}\n{a.body}" for a in articles[: max(args.n1, args.n32)]]
    encoders = rows(args.device, args.work)
    for encode in encoders.values():  # warm-up: the longest batch once
        encode(sorted(texts, key=len)[-big:], big)
    reference_name = "torch fp32" if args.device == "cpu" else "torch bf16"
    reference = encoders[reference_name](texts[: args.n32], big)
    cosines = {n: float((encode(texts[: args.n32], big) * reference).sum(1).min()) for n, encode in encoders.items()}
    single = interleaved(encoders, [[t] for t in texts[: args.n1]], 1, 1)
    batched = interleaved(encoders, [texts[i : i + big] for i in range(0, args.n32, big)], big, args.rounds)
    latency = {name: 1000 * statistics.median(times) for name, times in single.items()}
    throughput = {name: args.n32 / sum(times) for name, times in batched.items()}
    scores = {}
    if args.device == "cpu" and not args.no_ndcg:
        folders = {name: args.work / folder for name, folder in (("ort fp32", "fp32"), ("ort int8", "int8"))
                   if name in encoders}  # fmt: skip
        scores = task_scores(folders, "onnx", output=args.work / "eval")
    print(f"\n{args.n1} texts at batch 1, {args.n32} at batch {big}; BBC News validation articles; device "
          f"{args.device}\n")  # fmt: skip
    print(f"| row | batch 1 latency (ms) | batch {big} texts/s | min cosine vs {reference_name} | "
          "BBCNewsRetrieval nDCG@10 |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    for name in encoders:
        score = f"{scores[name]:.2f}" if name in scores else ""
        print(f"| {name} | {latency[name]:.1f} | {throughput[name]:.1f} | {cosines[name]:.6f} | {score} |")
    ort = [n for n in encoders if n.startswith("ort")]
    print()
    if args.device == "cpu":
        fastest = min(ort, key=latency.get)
        ratio = latency["torch fp32"] / latency[fastest]
        print(f"batch 1: torch fp32 latency / {fastest} latency = {ratio:.2f} (target >= 1.5): "
              f"{'PASS' if ratio >= 1.5 else 'FAIL'}")  # fmt: skip
        best = max(ort, key=throughput.get)
        ratio = throughput[best] / throughput["torch bf16"]
        print(f"batch 32: {best} throughput / torch bf16 throughput = {ratio:.2f} (target >= 1.0): "
              f"{'PASS' if ratio >= 1.0 else 'FAIL'}")  # fmt: skip
    else:
        ratio = throughput["ort fp16"] / throughput["torch bf16"]
        print(f"batch 64: ort fp16 throughput / torch bf16 throughput = {ratio:.2f} (target >= 1.0): "
              f"{'PASS' if ratio >= 1.0 else 'FAIL'}")  # fmt: skip


if __name__ == "__main__":
    main()
