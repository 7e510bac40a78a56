"""The ``causal2vec`` console command.

Each subcommand is a plain function that takes the parsed namespace and returns an exit code; :func:`main`
is what the console script and the tests call.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

logger = logging.getLogger("causal2vec.cli")


def read_texts(stream: TextIO, jsonl: bool, source: str) -> tuple[list[str], list[object]]:
    """Read texts, one per line or one JSON object with a ``text`` field per line.

    Returns:
        The texts, and their ids (the JSONL ``id`` field, else the 0-based line number among texts).

    Raises:
        ValueError: Naming the line of a bad JSON record.
    """
    texts, ids = [], []
    for lineno, line in enumerate(_lines(stream), start=1):
        if not jsonl:
            ids.append(len(texts))
            texts.append(line)
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{source}:{lineno}: not valid JSON ({err.msg})") from err
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise ValueError(f"{source}:{lineno}: each JSONL record needs a string 'text' field")
        ids.append(record.get("id", len(texts)))
        texts.append(record["text"])
    return texts, ids


def _lines(stream: TextIO) -> Iterator[str]:
    for line in stream:
        yield line.rstrip("\n").rstrip("\r")


def write_embeddings(embeddings: np.ndarray, ids: list[object], output: Path, fmt: str) -> None:
    """Write embeddings as ``.npy`` (float32, ``(n, dim)``) or ``.jsonl`` (``{"id", "embedding"}`` per line)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    if fmt == "npy":
        with open(tmp, "wb") as f:
            np.save(f, embeddings)
    else:
        with open(tmp, "w", encoding="utf-8") as f:
            for id_, row in zip(ids, embeddings, strict=True):
                f.write(json.dumps({"id": id_, "embedding": [float(x) for x in row]}) + "\n")
    tmp.replace(output)


def cmd_encode(args: argparse.Namespace) -> int:
    """``causal2vec encode``: embed texts from a file or stdin and write ``.npy`` or ``.jsonl``."""
    from causal2vec import Causal2Vec

    source = "<stdin>" if args.input == "-" else args.input
    jsonl = args.input_format == "jsonl" or (args.input_format == "auto" and source.endswith(".jsonl"))
    if args.input == "-":
        texts, ids = read_texts(sys.stdin, jsonl, source)
    else:
        with open(args.input, encoding="utf-8") as f:
            texts, ids = read_texts(f, jsonl, source)
    fmt = args.format or ("jsonl" if args.output.suffix == ".jsonl" else "npy")
    model = Causal2Vec.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    if args.max_length is not None:
        model.config.llm_max_length = model.config.encoder_max_length = args.max_length
    kwargs = {"batch_size": args.batch_size, "show_progress_bar": not args.quiet}
    if args.query:
        embeddings = model.encode_query(texts, instruction=args.instruction, **kwargs)
    elif args.instruction:
        embeddings = model.encode(texts, instruction=args.instruction, **kwargs)
    else:
        embeddings = model.encode_document(texts, **kwargs)
    write_embeddings(embeddings, ids, args.output, fmt)
    print(f"wrote {embeddings.shape[0]} embeddings of dimension {model.embedding_dim} to {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``causal2vec`` command."""
    parser = argparse.ArgumentParser(prog="causal2vec", description="Causal2Vec text embeddings.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    enc = sub.add_parser("encode", help="embed texts from a file or stdin", description=cmd_encode.__doc__)
    enc.add_argument("input", help="texts, one per line, or JSONL with a 'text' field (e.g. docs.jsonl); '-' = stdin")
    enc.add_argument("-o", "--output", type=Path, required=True, help="where to write, e.g. emb.npy or emb.jsonl")
    enc.add_argument("--model", default="default", help="checkpoint folder, hub id, or 'default' (default: default)")
    enc.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default: 32)")
    role = enc.add_mutually_exclusive_group()
    role.add_argument("--query", action="store_true", help="embed as queries, with the query instruction")
    role.add_argument("--document", action="store_true", help="embed as documents, without instruction (default)")
    enc.add_argument("--instruction", help="instruction to use instead of the model's query instruction")
    enc.add_argument("--input-format", choices=["auto", "lines", "jsonl"], default="auto",
                     help="input format; 'auto' reads JSONL when the file name ends in .jsonl")  # fmt: skip
    enc.add_argument("--format", choices=["npy", "jsonl"], help="output format (default: from the output suffix)")
    enc.add_argument("--max-length", type=int, help="token budget of both the encoder and the LLM, e.g. 256")
    enc.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cpu)")
    enc.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                     help="weight dtype (default: float32)")  # fmt: skip
    enc.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    enc.set_defaults(handler=cmd_encode)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``causal2vec`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.handler(args)
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError, ModuleNotFoundError) as err:
        print(f"causal2vec {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
