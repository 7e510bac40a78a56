"""Model selection without the evaluation's data: retrieval by each half of the embedding.

The quality table scores the BBC test split and the PyDocsRetrieval task; choosing a recipe by them would fit the
recipe to the test. This script scores choices on data neither touches:

- 200 headlines of the BBC *validation* split against their 200 bodies;
- 300 Python documentation section titles against every section of the documentation's *selection* part of pages
  (``data/pydocs-selection.jsonl``: ``python -m training.data pydocs --part selection``), pages that are neither
  trained on nor in the PyDocsRetrieval task (the test part).

For each model it prints MRR@10 of the whole embedding ``[h_C ; h_EOS]`` and of each half alone, so a run shows
whether C carries the encoder's information (``h_C``) and whether the LLM has learnt to read it (``h_EOS``), with
all-MiniLM-L6-v2 alongside. ``isometric`` is the recipe's starting point, built from the model section of
``training/configs/default.yaml`` (the untrained assembly with its isometric projector) at mean ``|C|`` ``--norm``.

    .venv/bin/python bench/halves.py all-MiniLM-L6-v2 isometric default      # ~10 minutes on 2 CPU cores
    .venv/bin/python bench/halves.py runs/default/checkpoint-150 --llm-max-length 64
    .venv/bin/python bench/halves.py default --queries 0 --contextual-shares 0.5,0.7,0.8   # per-half normalisation
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def mrr_at_10(queries: np.ndarray, documents: np.ndarray) -> float:
    """MRR@10 when query i's one relevant document is document i (rows L2-normalised)."""
    scores = queries @ documents.T
    rank = (scores > np.diag(scores)[:, None]).sum(1)  # documents scored above the relevant one
    return float(np.mean(np.where(rank < 10, 1.0 / (rank + 1), 0.0)))


def selection_data(pairs_file: Path, queries: int = 300) -> dict[str, tuple[list[str], list[str], str]]:
    """Queries, documents (the first len(queries) relevant in order) and the query instruction, per probe.

    ``queries`` caps the queries of each probe (BBC: 200 at most); 0 takes every one there is.
    """
    from causal2vec.data.bbc import bbc_news_split
    from training.data.bbc import INSTRUCTION as BBC_INSTRUCTION  # the one the BBC training pairs carry

    articles = bbc_news_split("validation")[: min(queries, 200) or None]
    seen: set[str] = set()
    outside = []
    for line in pairs_file.read_text().splitlines():
        pair = json.loads(line)
        if pair.get("dataset") == "pydocs" and pair["positive"] not in seen:
            seen.add(pair["positive"])
            outside.append(pair)
    random.Random(0).shuffle(outside)
    return {
        "bbc-validation": ([a.title for a in articles], [a.body for a in articles], BBC_INSTRUCTION),
        "pydocs-selection": ([p["query"] for p in outside[: queries or None]], [p["positive"] for p in outside],
                                outside[0]["instruction"]),
    }  # fmt: skip


def embedder(name: str, norm: float, llm_max_length: int | None):
    """``(embed_queries, embed_documents, halves)`` for a row name; ``halves`` is False for plain models."""
    import torch

    from causal2vec import Causal2Vec

    if name == "all-MiniLM-L6-v2":
        from sentence_transformers import SentenceTransformer

        from causal2vec.assets import minilm_path

        st = SentenceTransformer(str(minilm_path()), device="cpu")
        return (lambda texts, _: st.encode(texts)), st.encode, False
    if name == "isometric":  # the recipe's own start, built as training builds it
        from training.config import TrainConfig
        from training.recipe import load_model

        section = TrainConfig.load(ROOT / "training" / "configs" / "default.yaml").model
        model = load_model(dataclasses.replace(section, contextual_norm=norm)).to(torch.bfloat16)
    else:
        model = Causal2Vec.from_pretrained(name, dtype=torch.bfloat16)
    if llm_max_length is not None:
        model.set_token_budgets(llm_max_length=llm_max_length)
    return (
        lambda texts, instruction: model.encode_query(texts, instruction=instruction, normalize=False),
        lambda texts: model.encode_document(texts, normalize=False),
        True,
    )


def score_model(
    name: str,
    probes: dict[str, tuple[list[str], list[str], str]],
    *,
    norm: float = 30000.0,
    llm_max_length: int | None = None,
    shares: Sequence[float] = (),
) -> dict[str, list[float]]:
    """MRR@10 of each part (``whole``, ``h_C``, ``h_EOS``, ``share <w>``) on each probe, in the probes' order."""
    import torch

    from causal2vec import Causal2VecConfig
    from causal2vec.encoding import normalize_embeddings

    embed_queries, embed_documents, halves = embedder(name, norm, llm_max_length)
    vectors = {p: (embed_queries(q, i), embed_documents(d)) for p, (q, d, i) in probes.items()}
    d = next(iter(vectors.values()))[0].shape[1]
    parts = {"whole": slice(None)} | ({"h_C": slice(0, d // 2), "h_EOS": slice(d // 2, None)} if halves else {})
    rows = {}
    for part, columns in parts.items():

        def unit(x: np.ndarray, columns: slice = columns) -> np.ndarray:
            x = x[:, columns]
            return x / np.linalg.norm(x, axis=1, keepdims=True)

        rows[part] = [mrr_at_10(unit(q), unit(docs)) for q, docs in vectors.values()]
    for share in shares if halves else []:
        config = Causal2VecConfig(normalization="per_half", contextual_share=share)

        def weighted(x: np.ndarray, config: Causal2VecConfig = config) -> np.ndarray:
            return normalize_embeddings(torch.from_numpy(x).float(), config).numpy()

        rows[f"share {share:g}"] = [mrr_at_10(weighted(q), weighted(docs)) for q, docs in vectors.values()]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="all-MiniLM-L6-v2, isometric, default, or checkpoint folders")
    parser.add_argument("--norm", type=float, default=30000.0, help="mean |C| of the isometric row (30000)")
    parser.add_argument("--llm-max-length", type=int, help="LLM token budget (default: each model's)")
    parser.add_argument(
        "--pairs", type=Path, default=ROOT / "data" / "pydocs-selection.jsonl", help="the pydocs selection part's pairs"
    )
    parser.add_argument(
        "--queries", type=int, default=300, help="queries per probe (BBC at most 200); 0: every one (206 / 387)"
    )
    parser.add_argument(
        "--contextual-shares",
        default="",
        help="also score per-half normalisation with these contextual_share values (the weight of cos(h_C) in the "
        "cosine), e.g. 0.5,0.7,0.8",
    )
    args = parser.parse_args()
    shares = [float(w) for w in args.contextual_shares.split(",") if w]
    probes = selection_data(args.pairs, args.queries)
    print("| model | part | " + " | ".join(f"{p} MRR@10" for p in probes) + " |")
    print("|---|---|" + "---:|" * len(probes))
    for name in args.models:
        start = time.perf_counter()
        rows = score_model(name, probes, norm=args.norm, llm_max_length=args.llm_max_length, shares=shares)
        for part, scores in rows.items():
            print(f"| {name} | {part} | " + " | ".join(f"{s:.4f}" for s in scores) + " |", flush=True)
        print(f"<!-- {name}: {time.perf_counter() - start:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
