"""``python -m training``: train a Causal2Vec model from one YAML config.

Examples::

    python -m training --config training/configs/default.yaml
    python -m training --config training/configs/default.yaml --resume          # continue from the last checkpoint
    python -m training --config training/configs/default.yaml --merge           # a finished run: fold its LoRA
    torchrun --nproc_per_node 2 -m training --config my.yaml                    # data-parallel, one process per GPU
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from causal2vec.cli_support import CommandParser, add_verbose_option, run_main


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m training``."""
    parser = CommandParser(prog="python -m training", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--config", type=Path, required=True, help="the run's YAML file, e.g. training/configs/default.yaml"
    )
    parser.add_argument("--output", type=Path, help="override output.dir, e.g. runs/my-run (default: the config's)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest complete checkpoint in the output folder (incomplete ones are skipped)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="train into an output folder that is not this config's run (its checkpoint-*/ and final/ are replaced)",
    )
    merge = parser.add_mutually_exclusive_group()
    merge.add_argument(
        "--merge",
        dest="merge",
        action="store_true",
        default=None,
        help="merge LoRA into the saved weights; on a finished run (final/ exists), fold its LoRA without training "
        "(default: the config's output.merge)",
    )
    merge.add_argument("--no-merge", dest="merge", action="store_false", help="keep LoRA as an adapter")
    parser.add_argument(
        "--skip-bad", action="store_true", help="skip malformed JSONL lines (counted) instead of failing"
    )
    add_verbose_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Validate the config, then train (or, with ``--merge`` on a finished run, fold its LoRA); the exit code."""
    from training.config import TrainConfig

    config = TrainConfig.load(args.config)
    if args.output is not None:
        config.output.dir = str(args.output)
    if args.merge is not None:
        config.output.merge = args.merge
    if args.skip_bad:
        config.data.skip_bad = True
    from training import recipe

    if args.merge and (final := recipe.merge_finished(config)) is not None:
        print(f"merged model: {final}")
        return 0
    final = recipe.train(config, resume=args.resume, overwrite=args.overwrite)
    print(f"trained model: {final}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m training``; returns the exit code (see :mod:`causal2vec.cli_support`)."""
    return run_main(build_parser, run, argv)
