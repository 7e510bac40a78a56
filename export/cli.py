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

logger = logging.getLogger("export")

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
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset version (default 18)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Load, save (unless exporting in place), export, check parity; returns the exit code."""
    from causal2vec import Causal2Vec
    from causal2vec.onnx_backend import OnnxCausal2Vec, require_onnxruntime
    from export.onnx_export import PARITY_TEXTS, check_parity, export_onnx

    require_onnxruntime()
    output, source = args.output.expanduser(), Path(args.model).expanduser()
    in_place = source.exists() and output.resolve() == source.resolve()
    if output.exists() and not (output / "causal2vec_config.json").is_file():
        raise ValueError(f"--output {output} exists and is not a Causal2Vec checkpoint; name a new folder")
    model = Causal2Vec.from_pretrained(args.model)
    if not in_place:
        model.save_pretrained(output)
    path = export_onnx(model, output, opset=args.opset)
    parity = check_parity(model, OnnxCausal2Vec.from_pretrained(output))
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    print(
        f"onnxruntime vs torch on {len(PARITY_TEXTS)} texts × 2 instructions: max |diff| "
        f"{parity.max_abs:.2e} (relative {parity.max_rel:.2e}), min cosine {parity.min_cosine:.7f}"
    )
    if not parity.ok():
        print("python -m export: error: the ONNX model does not match torch closely enough", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m export``; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return run(args)
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as err:
        print(f"python -m export: error: {err}", file=sys.stderr)
        return 2
