"""``python -m export``: write a self-contained ONNX export of a model and check it against torch.

:func:`main` returns the exit code: 0 when the export matches torch, 1 when it does not (nothing is written), 2 for
bad input (the policy of :mod:`causal2vec.cli_support`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from causal2vec.cli_support import CommandFailed, CommandParser, add_verbose_option, run_main
from causal2vec.config import CONFIG_NAME
from causal2vec.runtime import require

EPILOG = """\
examples:
  python -m export --model default --output models/default-onnx                  # float32, serves on CPU or GPU
  python -m export --model default --output models/default-onnx-fp16 --fp16      # float16 for GPUs
  python -m export --model default --output models/default-onnx-int8 --int8      # int8 for CPUs, scored on BBC
  python -m export --model models/mine --output models/mine-onnx --optimize --keep-torch
  causal2vec index --corpus news.jsonl --index news-onnx.idx --model models/default-onnx   # embedded on ONNX
  causal2vec search --index news-onnx.idx "a query"                                      # and searched there
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m export``."""
    parser = CommandParser(
        prog="python -m export",
        description="Export a Causal2Vec model to a self-contained ONNX folder, checked against torch.",
        epilog=EPILOG,
    )
    parser.add_argument("--model", required=True, help="'default', a checkpoint folder or a hub id (e.g. default)")
    parser.add_argument("--output", required=True, type=Path, help="the export folder to write (e.g. models/x-onnx)")
    parser.add_argument(
        "--opset",
        type=int,
        default=None,
        help="ONNX opset version, 18 to the newest the installed exporter converts to (25 with onnxscript 0.7); "
        "(default: 23, whose fused attention, rotary and RMS norm ops onnxruntime's CPU provider runs; 18 with --fp16)",
    )
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="a float16 graph for GPUs (float32 in and out)")
    precision.add_argument("--int8", action="store_true", help="an int8 graph for CPUs (int8 matrix products)")
    parser.add_argument("--optimize", action="store_true", help="apply onnxruntime's transformer fusions first")
    parser.add_argument(
        "--score",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="score the export and its float32 source on BBCNewsRetrieval (mteb) and report the cost, a few minutes "
        "for the default model on CPU (default: with --int8)",
    )
    parser.add_argument("--keep-torch", action="store_true", help="also write the torch weights (a checkpoint too)")
    parser.add_argument(
        "--external-data", action="store_true", help="weights in model.onnx.data even under 2 GB (always above)"
    )
    add_verbose_option(parser, "log progress (INFO; the default)", progress_by_default=True)
    return parser


def run(args: argparse.Namespace) -> int:
    """Load, export, check parity, write; returns the exit code."""
    from causal2vec import Causal2Vec
    from export.folder import ExportOptions, ParityError, check_output, export_folder
    from export.onnx_export import check_opset

    for module in ("onnx", "onnxscript"):  # a missing exporter is named with its pip install, before any work
        require(module, "onnx")
    if args.opset is not None:
        check_opset(args.opset, name="--opset")
    options = ExportOptions(
        opset=args.opset,
        fp16=args.fp16,
        optimize=args.optimize,
        int8=args.int8,
        keep_torch=args.keep_torch,
        external_data=True if args.external_data else None,
    )
    source = Path(args.model).expanduser()
    check_output(args.output, source if source.exists() else None)
    if source.exists() and not (source / CONFIG_NAME).is_file():
        raise ValueError(f"--model {source} is not a Causal2Vec checkpoint (it has no {CONFIG_NAME})")
    model = Causal2Vec.from_pretrained(args.model)
    try:
        report = export_folder(model, args.output, options, source=args.model)
    except ParityError as err:
        raise CommandFailed(str(err)) from err
    manifest, parity = report.manifest, report.parity
    graph = report.folder / "onnx" / "model.onnx"
    print(f"wrote {report.folder} ({manifest.precision}, opset {manifest.opset}; graph "
          f"{sum(p.stat().st_size for p in graph.parent.glob('model.onnx*')) / 2**20:.1f} MiB"
          f"{', external data' if manifest.external_data else ''})")  # fmt: skip
    if manifest.fused is not None:
        print(f"fused by onnxruntime's transformer optimizer: {manifest.fused or 'nothing'}")
    if manifest.quantized is not None:
        print("int8 matrix products: {blockwise} block-wise, {dynamic} dynamic".format(**manifest.quantized))
    if parity is None:
        print(f"parity not checked: no onnxruntime provider here can run the {manifest.precision} graph")
    else:
        print(
            f"onnxruntime ({manifest.checked_on}) vs torch float32 on {parity.texts} texts: max |diff| "
            f"{parity.max_abs:.2e} (relative {parity.max_rel:.2e}), min cosine {parity.min_cosine:.7f}; "
            f"{parity.truncated} texts were truncated to the token budgets"
        )
    if args.int8 if args.score is None else args.score:
        from export.score import score_export

        cost = score_export(args.model, report.folder, manifest.precision)
        print(f"{cost['task']} nDCG@10 x 100 on CPU: float32 {cost['float32']:.2f} (torch), {manifest.precision} "
              f"{cost[manifest.precision]:.2f} (onnxruntime): cost {cost['cost']:+.2f} points")  # fmt: skip
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m export``; returns the exit code."""
    return run_main(build_parser, run, argv)
