"""Training cost of the default's recipe: tokens/s in bf16 and fp32, and peak memory with and without GradCache.

Each configuration runs in its own process (so peak memory is its own), through the real recipe
(``training.recipe.train``: sentence-transformers' trainer) on the untrained default and the BBC training pairs, for
``--steps`` steps after one warm-up step:

- bf16 autocast against float32, same batch: training tokens per second (encoder and LLM tokens of the pairs the
  steps saw, counted with the model's own tokenizer);
- MultipleNegativesRankingLoss against CachedMultipleNegativesRankingLoss (GradCache, mini-batches of
  ``--mini-batch``) at the same batch: the process's peak resident memory above what it held once the model was
  loaded (on CUDA: peak allocated GPU memory).

    .venv/bin/python bench/train.py                 # about 6 minutes on 2 CPU cores
    .venv/bin/python bench/train.py --batch-size 32 --steps 3 --mini-batch 8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository's training/ package


def run_one(spec: dict) -> dict:
    """Train one configuration; returns seconds per step, tokens per second and peak memory in MiB."""
    import torch
    from transformers import TrainerCallback

    from causal2vec.data.bbc import bbc_news_split
    from training import recipe
    from training.config import DataSection, LossSection, OptimSection, OutputSection, Source, TrainConfig
    from training.data.pairs import Pair, write_pairs

    work = Path(spec["work"])
    articles = bbc_news_split("train")[: spec["batch_size"] * (spec["steps"] + 1)]
    pairs = [Pair(a.title, a.body[:1000], (), "Given a news headline, retrieve the article", "bbc") for a in articles]
    write_pairs(work / "pairs.jsonl", pairs)
    config = TrainConfig(
        data=DataSection(sources=[Source(name="bbc", path=str(work / "pairs.jsonl"))], negatives=0),
        loss=LossSection(kind=spec["loss"], mini_batch_size=spec["mini_batch"]),
        optim=OptimSection(batch_size=spec["batch_size"], max_steps=spec["steps"] + 1, bf16=spec["bf16"]),
        output=OutputSection(dir=str(work / "run"), save_steps=10_000, logging_steps=10_000),
    )
    config.model.base = "default-untrained"
    config.model.encoder_max_length, config.model.llm_max_length = 256, spec["llm_max_length"]

    marks: dict[str, float] = {}
    loaded = {}

    class Clock(TrainerCallback):
        """Times the steps after the first (warm-up) and notes the memory held once training starts."""

        def on_train_begin(self, args, state, control, **kwargs):
            Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak (VmHWM) to the current RSS
            loaded["rss"] = _status_mib("VmRSS")
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
                loaded["cuda"] = torch.cuda.memory_allocated() / 2**20

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1:
                marks["start"] = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            marks["end"] = time.perf_counter()
            loaded["peak"] = _status_mib("VmHWM")  # before the final model is saved

    original = recipe.SentenceTransformerTrainer

    def trainer_with_clock(*args, **kwargs):
        trainer = original(*args, **kwargs)
        trainer.add_callback(Clock())
        return trainer

    recipe.SentenceTransformerTrainer = trainer_with_clock
    recipe.train(config)
    seconds, peak_rss = marks["end"] - marks["start"], loaded["peak"]
    from causal2vec import Causal2Vec

    model = Causal2Vec.from_pretrained("default-untrained")
    model.set_token_budgets(encoder_max_length=256, llm_max_length=spec["llm_max_length"])
    seen = pairs[spec["batch_size"] : spec["batch_size"] * (spec["steps"] + 1)]  # about what the timed steps saw
    features = [model.tokenize([p.query for p in seen]), model.tokenize([p.positive for p in seen])]
    tokens = sum(int(f[k].sum()) for f in features for k in ("encoder_attention_mask", "llm_attention_mask"))
    peak = torch.cuda.max_memory_allocated() / 2**20 - loaded["cuda"] if torch.cuda.is_available() else None
    return {
        "seconds_per_step": seconds / spec["steps"],
        "tokens_per_second": tokens / seconds,
        "peak_mib_above_loaded": peak if peak is not None else peak_rss - loaded["rss"],
    }


def _status_mib(key: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS: now, VmHWM: peak since the last reset)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def spawn(spec: dict) -> dict:
    with tempfile.TemporaryDirectory() as work:
        out = subprocess.run(
            [sys.executable, __file__, "--one", json.dumps({**spec, "work": work})],
            check=True,
            capture_output=True,
            text=True,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per step (32)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step (3)")
    parser.add_argument("--mini-batch", type=int, default=8, help="GradCache mini-batch (8)")
    parser.add_argument("--llm-max-length", type=int, default=64, help="LLM token budget while training (64)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    base = {"batch_size": args.batch_size, "steps": args.steps, "mini_batch": args.mini_batch,
            "llm_max_length": args.llm_max_length}  # fmt: skip
    runs = {
        "bf16, MNRL": {**base, "bf16": True, "loss": "mnrl"},
        "fp32, MNRL": {**base, "bf16": False, "loss": "mnrl"},
        f"bf16, GradCache (mini-batch {args.mini_batch})": {**base, "bf16": True, "loss": "cached_mnrl"},
    }
    results = {}
    for name, spec in runs.items():
        results[name] = spawn(spec)
        print(f"  {name}: {json.dumps(results[name])}", file=sys.stderr)
    device = "CUDA" if _cuda() else "CPU"
    print(f"training the untrained default on {device}: batch {args.batch_size} pairs (BBC headline -> body), "
          f"encoder <= 256 / LLM <= {args.llm_max_length} tokens, {args.steps} timed steps")  # fmt: skip
    print("| run | s/step | tokens/s | peak memory above loaded (MiB) |\n|---|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['seconds_per_step']:.1f} | {r['tokens_per_second']:.0f} | "
              f"{r['peak_mib_above_loaded']:.0f} |")  # fmt: skip
    bf16, fp32 = results["bf16, MNRL"], results["fp32, MNRL"]
    cached = results[next(k for k in results if "GradCache" in k)]
    print(f"bf16 / fp32 tokens/s: {bf16['tokens_per_second'] / fp32['tokens_per_second']:.2f}x")
    print(f"GradCache / MNRL peak memory: {cached['peak_mib_above_loaded'] / bf16['peak_mib_above_loaded']:.2f}")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
