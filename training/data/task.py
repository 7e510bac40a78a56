"""Turn held-out training pairs into a retrieval task folder that ``python -m eval --tasks DIR`` reads.

A source kept out of training becomes the evaluation's outside-domain task: every distinct positive of the chosen
dataset is a corpus document (or, with a corpus size, the queries' positives plus a seeded sample of the others), a
seeded sample of its queries are the queries, and each query's own positive is its one relevant document. The
folder layout is the one ``eval.tasks.load_jsonl_task`` documents.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

from causal2vec.files import replace_dir
from training.data.pairs import Pair


def write_task_folder(
    pairs: Sequence[Pair],
    output: Path,
    *,
    name: str,
    dataset: str,
    queries: int,
    corpus: int | None = None,
    seed: int = 0,
) -> dict[str, int]:
    """Write ``corpus.jsonl``, ``queries.jsonl``, ``qrels.tsv`` and ``task.json`` for one dataset of ``pairs``.

    Args:
        pairs: Training pairs; only those whose ``dataset`` is ``dataset`` are used.
        output: The task folder to write (replaced whole if it exists).
        name: The task name recorded in ``task.json`` (e.g. ``PyDocsRetrieval``).
        dataset: Which dataset of ``pairs`` becomes the task.
        queries: How many queries to sample (all when there are fewer).
        corpus: How many documents to keep: the sampled queries' positives plus a seeded sample of the others
            (``None``: every positive). A smaller corpus makes the task cheaper to evaluate on CPU.
        seed: Seed of the query and document samples.

    Returns:
        The corpus and query counts.

    Raises:
        ValueError: If no pair belongs to ``dataset`` (the message lists the datasets present), or ``queries`` < 1,
            or ``corpus`` is smaller than the number of queries.
    """
    if queries < 1:
        raise ValueError(f"queries={queries} must be at least 1")
    if corpus is not None and corpus < queries:
        raise ValueError(f"corpus={corpus} must be at least queries={queries}: every query's positive is a document")
    chosen = [pair for pair in pairs if pair.dataset == dataset]
    if not chosen:
        present = sorted({str(pair.dataset) for pair in pairs})
        raise ValueError(f"no pair has dataset {dataset!r}; the input holds {present}")
    instructions = {pair.instruction for pair in chosen}
    if len(instructions) != 1:
        raise ValueError(f"dataset {dataset!r} has {len(instructions)} instructions; a task needs exactly one")
    doc_ids: dict[str, str] = {}
    for pair in chosen:
        doc_ids.setdefault(pair.positive, f"d{len(doc_ids)}")
    # A query text that repeats (with different positives) would be ambiguous as a task query: keep unique ones.
    counts: dict[str, int] = {}
    for pair in chosen:
        counts[pair.query] = counts.get(pair.query, 0) + 1
    candidates = [pair for pair in chosen if counts[pair.query] == 1]
    rng = random.Random(seed)
    sample = rng.sample(candidates, min(queries, len(candidates)))
    if corpus is not None and corpus < len(doc_ids):
        needed = {pair.positive for pair in sample}
        others = [text for text in doc_ids if text not in needed]
        kept = needed | set(rng.sample(others, corpus - len(needed)))
        doc_ids = {text: doc_id for text, doc_id in doc_ids.items() if text in kept}
    spec = {"name": name, "description": f"{dataset} pairs held out of training, as retrieval"}
    if instructions != {None}:
        spec["instruction"] = instructions.pop()
    with replace_dir(output) as folder:
        with (folder / "corpus.jsonl").open("w", encoding="utf-8") as f:
            for text, doc_id in doc_ids.items():
                f.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
        with (folder / "queries.jsonl").open("w", encoding="utf-8") as f:
            for i, pair in enumerate(sample):
                f.write(json.dumps({"id": f"q{i}", "text": pair.query}, ensure_ascii=False) + "\n")
        with (folder / "qrels.tsv").open("w", encoding="utf-8") as f:
            for i, pair in enumerate(sample):
                f.write(f"q{i}\t{doc_ids[pair.positive]}\t1\n")
        (folder / "task.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
    return {"corpus": len(doc_ids), "queries": len(sample)}
