"""The ``causal2vec`` console command.

Each subcommand is a plain function that takes the parsed namespace and returns an exit code; :func:`main`
is what the console script and the tests call.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from causal2vec.search.index import IndexBusyError

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


def _load_model(name: str, args: argparse.Namespace, auto: str = "auto") -> Any:
    """Load ``name`` with the command's device, dtype (``auto``: this one) and token budget options."""
    from causal2vec import Causal2Vec
    from causal2vec.runtime import auto_dtype, default_device

    device = args.device or default_device()
    dtype = auto_dtype(auto if args.dtype == "auto" else args.dtype, device)
    model = Causal2Vec.from_pretrained(name, device=device, dtype=dtype)
    if args.max_length is not None:
        model.config.llm_max_length = model.config.encoder_max_length = args.max_length
    return model


def cmd_index(args: argparse.Namespace) -> int:
    """``causal2vec index``: embed a corpus into a new index folder, or append to one (``--append``)."""
    from causal2vec.search.corpus import count_lines, read_corpus
    from causal2vec.search.index import SemanticIndex

    documents = read_corpus(args.corpus, args.format)
    options = {
        "batch_size": args.batch_size,
        "chunk_size": args.chunk_size,
        "on_duplicate": args.on_duplicate,
        "total": count_lines(args.corpus),
        "show_progress_bar": not args.quiet,
    }
    start = time.perf_counter()
    if args.append and args.max_length is not None and args.model is None:
        raise ValueError("--max-length with --append needs --model: the index's own model keeps its token budgets")
    if args.append:
        index = SemanticIndex.load(args.index, device=args.device, dtype=None if args.dtype == "auto" else args.dtype)
        if args.model is not None:
            index.model = _load_model(args.model, args, index.manifest.model_settings.get("dtype", "auto"))
        if args.gpu:
            index.to_gpu()
        with index:
            added = index.add(documents, **options)
            index.save()
    else:
        model = _load_model(args.model or "default", args)
        with SemanticIndex.build(
            args.index, model, documents, factory=args.factory, overwrite=args.overwrite, gpu=args.gpu, **options
        ) as index:
            added = index.manifest.count
    seconds = time.perf_counter() - start
    m = index.manifest
    print(
        f"{'appended' if args.append else 'indexed'} {added} documents in {seconds:.1f} s "
        f"({added / seconds:.1f} docs/s); {args.index} now holds {m.count} ({m.factory}, {m.dim}-d)"
    )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """``causal2vec search``: the nearest documents of one or more queries."""
    from causal2vec.search.index import SemanticIndex

    queries = list(args.query)
    if args.queries:
        queries += _nonblank_lines(args.queries)
    if not queries:
        raise ValueError("no query: give one as an argument or a file with --queries")
    if empty := [i for i, q in enumerate(queries, start=1) if not q.strip()]:
        raise ValueError(f"query {empty[0]} is empty; every query needs some text")
    index = SemanticIndex.load(
        args.index, device=args.device, dtype=None if args.dtype == "auto" else args.dtype, gpu=args.gpu
    )
    with index:
        if args.model is not None:
            index.model = _load_model(args.model, args, index.manifest.model_settings.get("dtype", "auto"))
        params = {"nprobe": args.nprobe, "ef_search": args.ef_search, "k_factor": args.k_factor}
        results = index.search(queries, k=args.k, **params)
    for query, hits in zip(queries, results, strict=True):
        if args.json:
            print(json.dumps({"query": query, "hits": [h.to_dict(snippet=args.snippet) for h in hits]}))
            continue
        print(f"query: {query}")
        for rank, hit in enumerate(hits, start=1):
            title = f"  {hit.title}" if hit.title else ""
            print(f"  {rank:>2}. {hit.score:.4f}  [{hit.id}]{title}")
            print(f"      {hit.snippet(args.snippet)}")
        print()
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    """``causal2vec delete``: remove documents from an index by id."""
    from causal2vec.search.index import SemanticIndex

    ids = list(args.ids)
    if args.ids_file:
        ids += _nonblank_lines(args.ids_file)
    if not ids:
        raise ValueError("no ids to delete: give them as arguments or in a file with --ids-file")
    with SemanticIndex.load(args.index) as index:
        deleted = index.delete(ids, missing_ok=args.missing_ok)
        index.save()
        print(f"deleted {deleted} documents; {args.index} now holds {index.manifest.count}")
    return 0


def _nonblank_lines(path: str) -> list[str]:
    """Non-blank lines of a file (or stdin for ``-``)."""
    if path == "-":
        return [line.strip() for line in sys.stdin if line.strip()]
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def _add_model_options(parser: argparse.ArgumentParser, model_help: str, auto_dtype_help: str) -> None:
    parser.add_argument("--model", help=model_help)
    parser.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when available, else cpu)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help=f"weight dtype; auto = {auto_dtype_help}")  # fmt: skip
    parser.add_argument("--max-length", type=int, help="token budget of both the encoder and the LLM, e.g. 256")
    parser.add_argument("--gpu", action="store_true", help="put the FAISS index on the GPU(s); needs faiss-gpu")


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

    idx = sub.add_parser("index", help="build a semantic index from a corpus, or append to one",
                         description=cmd_index.__doc__)  # fmt: skip
    idx.add_argument(
        "--corpus", required=True, help="JSONL (id, text, title, metadata), TSV, or one text per line; '-' = stdin"
    )
    idx.add_argument("--index", required=True, type=Path, help="the index folder, e.g. news.idx")
    idx.add_argument("--format", default="auto", choices=["auto", "jsonl", "tsv", "lines"],
                     help="corpus format; 'auto' goes by the suffix (.jsonl, .tsv, else lines)")  # fmt: skip
    idx.add_argument("--factory", default="Flat",
                     help="FAISS factory string: Flat (exact), HNSW32, IVF1024,Flat, IVF4096,PQ96 …")  # fmt: skip
    mode = idx.add_mutually_exclusive_group()
    mode.add_argument("--append", action="store_true", help="add to an existing index (its model by default)")
    mode.add_argument("--overwrite", action="store_true", help="replace an existing index at --index")
    idx.add_argument("--on-duplicate", default="error", choices=["error", "replace", "skip"],
                     help="an id already in the index: fail, changing nothing (default), replace, or skip")  # fmt: skip
    idx.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default: 32)")
    idx.add_argument("--chunk-size", type=int, default=2048, help="documents read and stored at a time (default: 2048)")
    _add_model_options(
        idx,
        "checkpoint folder, hub id, or 'default' (default: default; with --append, the index's)",
        "bfloat16 on GPUs and bf16-capable CPUs, else float32 (with --append: the index's dtype)",
    )
    idx.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    idx.set_defaults(handler=cmd_index)

    srch = sub.add_parser("search", help="search an index", description=cmd_search.__doc__)
    srch.add_argument("query", nargs="*", help='one or more queries, e.g. "interest rates and inflation"')
    srch.add_argument("--index", required=True, type=Path, help="the index folder, e.g. news.idx")
    srch.add_argument("--queries", help="a file with one query per line ('-' = stdin), searched in one batch")
    srch.add_argument("-k", type=int, default=10, help="hits per query (default: 10)")
    srch.add_argument("--json", action="store_true", help="one JSON object per query: {query, hits: [{id, score, …}]}")
    srch.add_argument("--snippet", type=int, default=160, help="characters of text shown per hit (default: 160)")
    srch.add_argument("--nprobe", type=int, help="IVF lists to visit (IVF indexes), e.g. 32")
    srch.add_argument("--k-factor", type=int, help="candidates per hit re-ranked exactly (',RFlat' indexes), e.g. 16")
    srch.add_argument("--ef-search", type=int, help="HNSW candidate list size (HNSW indexes), e.g. 128")
    _add_model_options(
        srch,
        "embed queries with this model instead of the one the index names",
        "the dtype that embedded the index's documents",
    )
    srch.set_defaults(handler=cmd_search)

    dele = sub.add_parser("delete", help="delete documents from an index by id", description=cmd_delete.__doc__)
    dele.add_argument("ids", nargs="*", help="document ids, e.g. business/001")
    dele.add_argument("--index", required=True, type=Path, help="the index folder")
    dele.add_argument("--ids-file", help="a file with one id per line ('-' = stdin)")
    dele.add_argument("--missing-ok", action="store_true", help="ignore ids that are not in the index")
    dele.set_defaults(handler=cmd_delete)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``causal2vec`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.handler(args)
    except (ValueError, TypeError, KeyError, OSError, ModuleNotFoundError, IndexBusyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"causal2vec {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
