"""``python -m export``: write a checkpoint's ONNX export and check it against torch.

:func:`main` returns the exit code: 0 when the export matches torch, 1 when it does not (the files stay for
inspection), 2 for bad input.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from causal2vec.config import CONFIG_NAME

EPILOG = """\
examples:
  python -m export --model default --output models/default-onnx       # checkpoint + onnx/model.onnx
  python -m export --model models/mine --output models/mine           # add onnx/ to an existing checkpoint
  python -m eval --model models/mine --backend onnx --benchmark BBCNews --output runs/onnx
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m export``."""
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description="Export a Causal2Vec checkpoint to ONNX (float32) and compare onnxruntime with torch.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="'default', a checkpoint folder or a hub id (e.g. default)")
    parser.add_argument(
        "--output",
        required=True,
        type=Path,
        help="checkpoint folder to write; the model's own folder adds onnx/ to it (e.g. models/default-onnx)",
    )
    parser.add_argument(
        "--opset",
        type=int,
        default=18,
        help="ONNX opset version, 18 to the newest the installed exporter converts to (25 with onnxscript 0.7); "
        "default 18",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Load, save (unless exporting in place), export, check parity; returns the exit code."""
    from causal2vec import Causal2Vec
    from causal2vec.onnx_backend import require_onnxruntime
    from export.onnx_export import check_opset, export_onnx

    ort = require_onnxruntime()
    check_opset(args.opset, name="--opset")
    output, source = args.output.expanduser(), Path(args.model).expanduser()
    in_place = source.exists() and output.resolve() == source.resolve()
    if output.exists() and not (output / CONFIG_NAME).is_file():
        raise ValueError(f"--output {output} exists and is not a Causal2Vec checkpoint; name a new folder")
    model = Causal2Vec.from_pretrained(args.model)
    if not in_place:
        model.save_pretrained(output)
    path = export_onnx(model, output, opset=args.opset)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return _check_parity(model, output, args.opset, ort)


def _check_parity(model: Any, folder: Path, opset: int, ort: Any) -> int:
    """Compare onnxruntime with torch and print the result; returns the exit code."""
    from causal2vec.onnx_backend import OnnxCausal2Vec
    from export.onnx_export import PARITY_TEXTS, check_parity

    try:
        parity = check_parity(model, OnnxCausal2Vec.from_pretrained(folder))
    except _onnxruntime_errors(ort) as err:
        print(
            f"python -m export: error: onnxruntime {ort.__version__} cannot run the opset {opset} export "
            f"({type(err).__name__}: {str(err).splitlines()[0]}); the files stay for inspection. Opset 18 is the "
            "one checked here",
            file=sys.stderr,
        )
        return 1
    print(
        f"onnxruntime vs torch on {len(PARITY_TEXTS)} texts × 2 instructions: max |diff| "
        f"{parity.max_abs:.2e} (relative {parity.max_rel:.2e}), min cosine {parity.min_cosine:.7f}; "
        f"{parity.truncated} of {parity.texts} texts were truncated to the token budgets"
    )
    if not parity.ok():
        print("python -m export: error: the ONNX model does not match torch closely enough", file=sys.stderr)
        return 1
    return 0


def _onnxruntime_errors(ort: Any) -> tuple[type[BaseException], ...]:
    """The errors onnxruntime raises for a graph it cannot load or run (they derive from ``Exception`` only)."""
    state = ort.capi.onnxruntime_pybind11_state
    names = ("Fail", "InvalidArgument", "InvalidGraph", "NotImplemented", "RuntimeException")
    return tuple(getattr(state, name) for name in names if hasattr(state, name))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m export``; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return run(args)
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as err:
        print(f"python -m export: error: {err}", file=sys.stderr)
        return 2
