"""The ``causal2vec`` console command.

Each subcommand has a parser helper (``_add_encode_parser`` …) and a handler: a plain function that takes the
parsed namespace and returns an exit code. :func:`main` is what the console script and the tests call.

One convention holds for every subcommand that loads a model:

- ``--model``, ``--device``, ``--dtype`` and ``--max-length`` are declared once
  (:func:`causal2vec.cli_support.add_model_options`), and so are ``--batch-size``, ``--instruction`` and ``--quiet``
  (:func:`causal2vec.cli_support.add_encoding_options`);
- the device is CUDA when available, else the CPU; ``--dtype auto`` is bfloat16 on CUDA and on CPUs with native
  bfloat16, float32 elsewhere, and for an existing index the dtype that embedded its documents;
- token budgets are passed to the library as arguments, never set on a model's config;
- input files are read by :func:`causal2vec.search.corpus.read_corpus` (JSONL, TSV or one text per line).

Errors follow the policy of :mod:`causal2vec.cli_support`: a bad input exits with status 2 and one line on stderr,
Ctrl-C with 130; both lines name the subcommand and say what was left unchanged. Any other exception is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from causal2vec.backends import BackendChoiceError, backend_names, load_backend
from causal2vec.cli_support import (
    CommandParser,
    DTypeOption,
    Invocation,
    UsageError,
    add_encoding_options,
    add_model_options,
    add_verbose_option,
    choices_of,
    port_number,
    positive_float,
    positive_int,
    run_main,
)
from causal2vec.encoding import EmbeddingBackend
from causal2vec.files import write_atomic
from causal2vec.identity import ModelIdentity
from causal2vec.quantization import OUTPUT_PRECISIONS
from causal2vec.runtime import check_device, default_device
from causal2vec.search import SemanticIndex
from causal2vec.search.corpus import CorpusFormat, Document, count_lines, read_corpus
from causal2vec.search.ingest import OnDuplicate
from causal2vec.search.manifest import Manifest
from causal2vec.shards import InputFormat

__all__ = ["UsageError", "build_parser", "main", "port_number", "positive_float", "positive_int"]

EmbeddingFormat = Literal["npy", "jsonl"]  # what `causal2vec encode -o` writes
OUTPUT_FORMATS: dict[str, EmbeddingFormat] = {".npy": "npy", ".jsonl": "jsonl"}  # output suffix → format
# ---------------------------------------------------------------------- the model options every command shares


def _device(args: argparse.Namespace) -> str:
    """``--device``, checked against this torch; by default CUDA when available, else the CPU."""
    try:
        return str(check_device(args.device or default_device()))
    except ValueError as err:
        raise UsageError(f"--device: {err}") from err


def _first_device(args: argparse.Namespace) -> str:
    """``--devices``' first device (its dtype policy applies to all), checked; ``--device`` beside it is refused."""
    if args.device is not None:
        raise UsageError(f"--device {args.device} and --devices {','.join(args.devices)}: give one of them")
    try:
        return str(check_device(args.devices[0]))
    except ValueError as err:
        raise UsageError(f"--devices: {err}") from err


def _pool_options(args: argparse.Namespace, model: EmbeddingBackend) -> dict[str, object]:
    """``encode``'s ``device=[...]`` for ``--devices`` (the model waits on the CPU while workers embed)."""
    if args.devices is None:
        return {}
    if model.identity.backend != "torch":
        raise UsageError(f"--devices runs the torch backend; {args.model} runs on {model.identity.backend}")
    try:
        devices = [str(check_device(device)) for device in args.devices]
    except ValueError as err:
        raise UsageError(f"--devices: {err}") from err
    model.to("cpu")  # type: ignore[attr-defined]  # a torch model
    return {"device": devices}


def _load_model(args: argparse.Namespace, source: str | ModelIdentity, device: str) -> EmbeddingBackend:
    """Load ``source`` (a name, or an index's recorded identity) by :func:`load_backend`'s policy and the options.

    ``--backend``, ``--dtype`` and ``--strict`` are passed on; a choice the policy refuses is a usage error.
    """
    try:
        return load_backend(source, backend=args.backend or "auto", device=device, dtype=args.dtype, strict=args.strict)
    except BackendChoiceError as err:
        raise UsageError(f"--{err}") from err


def _open_index(args: argparse.Namespace, device: str) -> SemanticIndex:
    """Open ``--index`` for search or append with its model: ``--model`` if given, else the one it records."""
    if args.max_length is not None:
        raise UsageError(
            f"--max-length {args.max_length}: the token budget is chosen when an index is built; {args.index} embeds "
            f"its documents and queries with the one recorded then. Rebuild it with --overwrite to change it"
        )
    index = SemanticIndex.load(args.index, gpu=args.gpu)
    try:
        recorded = index.manifest.model
        if args.model is not None:
            recorded = dataclasses.replace(recorded, name=args.model)
        if recorded.name is None:
            raise UsageError(f"{args.index} names no loadable model; pass one with --model")
        index.model = _load_model(args, recorded, device)
    except BaseException:
        index.close()
        raise
    return index


# ---------------------------------------------------------------------- encode


def read_texts(path: str, fmt: str = "auto") -> tuple[list[str], list[str | int]]:
    """Read the texts to embed with the corpus reader (JSONL, TSV or one text per line; ``"-"`` = stdin).

    Returns:
        The texts as the index embeds them (a title, a newline, the text; or the text alone), and their ids: the
        document's id, else its 0-based position among the texts.

    Raises:
        ValueError: For a malformed record, naming the file and line.
        FileNotFoundError: If the file does not exist.
    """
    texts: list[str] = []
    ids: list[str | int] = []
    for position, doc in enumerate(read_corpus(path, fmt)):
        texts.append(doc.embedding_text())
        ids.append(position if doc.id is None else doc.id)
    return texts, ids


def output_format(output: Path, requested: str | None = None) -> str:
    """The format of ``encode -o``, from its suffix (``.npy`` or ``.jsonl``).

    Raises:
        UsageError: If ``output`` is a folder, has another suffix, or disagrees with ``requested`` (``--format``).
    """
    if output.is_dir():
        raise UsageError(f"-o {output} is a folder; give a file name, e.g. {output / 'emb.npy'}")
    fmt = OUTPUT_FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise UsageError(
            f"-o {output}: unknown output suffix {output.suffix or '(none)'!r}; use .npy (a float32 (n, dim) array) "
            f"or .jsonl (one {{id, embedding}} object per line)"
        )
    if requested is not None and requested != fmt:
        raise UsageError(f"--format {requested} does not match -o {output}; name the file e.g. emb.{requested}")
    return fmt


def write_embeddings(embeddings: np.ndarray, ids: Sequence[object], output: Path, fmt: str) -> None:
    """Write embeddings as ``.npy`` (float32, ``(n, dim)``) or ``.jsonl`` (``{"id", "embedding"}`` per line).

    The file is written aside and renamed into place: an interrupted write leaves ``output`` as it was.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "npy":
        write_atomic(output, lambda f: np.save(f, embeddings), binary=True)
        return

    def write_jsonl(f: IO[str]) -> None:
        for id_, row in zip(ids, embeddings, strict=True):
            f.write(json.dumps({"id": id_, "embedding": row.tolist()}) + "\n")  # ints stay ints (--precision)

    write_atomic(output, write_jsonl)


def cmd_encode(args: argparse.Namespace) -> int:
    """``causal2vec encode``: embed texts from a file or stdin and write ``.npy`` or ``.jsonl``."""
    fmt = output_format(args.output, args.format)
    device = _device(args)
    texts, ids = read_texts(args.input, args.input_format)
    if not texts:
        raise UsageError(f"{'<stdin>' if args.input == '-' else args.input}: no texts to embed")
    model = _load_model(args, args.model, device if args.devices is None else _first_device(args))
    kwargs = {"batch_size": args.batch_size, "show_progress_bar": not args.quiet, "max_length": args.max_length,
              "precision": args.precision, **_pool_options(args, model)}  # fmt: skip
    if args.query:
        embeddings = model.encode_query(texts, instruction=args.instruction, **kwargs)
    elif args.instruction:
        embeddings = model.encode(texts, instruction=args.instruction, **kwargs)
    else:
        embeddings = model.encode_document(texts, **kwargs)
    write_embeddings(embeddings, ids, args.output, fmt)
    packed = f" as {args.precision}, {embeddings.shape[1]} values each" if args.precision != "float32" else ""
    print(f"wrote {embeddings.shape[0]} embeddings of dimension {model.embedding_dim}{packed} to {args.output}")
    return 0


# ---------------------------------------------------------------------- index, search, delete


def cmd_index(args: argparse.Namespace) -> int:
    """``causal2vec index``: embed a corpus into a new index folder or append to one, or index embedding shards.

    ``--append`` adds to an existing index; ``--from-shards`` builds one from ``causal2vec embed``'s shards.
    """
    if args.from_shards is not None:
        return _index_from_shards(args)
    if args.sample is not None:
        raise UsageError("--sample applies to --from-shards; an index built from a corpus trains on its first chunk")
    if args.on_disk:
        raise UsageError("--on-disk applies to --from-shards: an on-disk index is built from embedding shards")
    device = _device(args)
    documents = read_corpus(args.corpus, args.format)
    options = {
        "batch_size": args.batch_size,
        "chunk_size": args.chunk_size,
        "on_duplicate": args.on_duplicate,
        "total": count_lines(args.corpus),
        "show_progress_bar": not args.quiet,
    }
    added, m, seconds = (_append if args.append else _build)(args, device, documents, options)
    print(
        f"{'appended' if args.append else 'indexed'} {added} documents in {seconds:.1f} s "
        f"({added / seconds:.1f} docs/s); {args.index} now holds {m.count} ({m.factory}, {m.dim}-d)"
    )
    return 0


def _index_from_shards(args: argparse.Namespace) -> int:
    """``causal2vec index --from-shards``: the index of a shard folder, trained on a sample across all shards."""
    options = ("append", "model", "max_length", "force")
    given = [f"--{name.replace('_', '-')}" for name in options if getattr(args, name)]
    if given:
        raise UsageError(f"{given[0]} does not apply to --from-shards: the shards hold the embeddings and their model")
    start = time.perf_counter()
    with SemanticIndex.build_from_shards(
        args.index, args.from_shards, factory=args.factory, overwrite=args.overwrite, sample=args.sample,
        on_duplicate=args.on_duplicate, chunk_size=args.chunk_size, gpu=args.gpu, show_progress_bar=not args.quiet,
        on_disk=args.on_disk,
    ) as index:  # fmt: skip
        m, seconds = index.manifest, time.perf_counter() - start
    print(f"indexed {m.count} documents from {args.from_shards} in {seconds:.1f} s ({m.count / seconds:.1f} docs/s); "
          f"{args.index} now holds {m.count} ({m.factory}, {m.dim}-d)")  # fmt: skip
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    """``causal2vec embed``: embed a corpus into a shard folder on Ray Data, one model per actor (resumable)."""
    from causal2vec.ray_embed import embed_to_shards

    try:
        report = embed_to_shards(
            args.corpus, args.output, model=args.model, backend=args.backend or "auto", dtype=args.dtype,
            fmt=args.format, ray_address=args.ray, actors=args.actors, batch_size=args.batch_size,
            max_length=args.max_length, unit_size=args.unit_size, show_progress_bar=not args.quiet,
        )  # fmt: skip
    except BackendChoiceError as err:
        raise UsageError(f"--{err}") from err
    rate = report.embedded / report.seconds if report.seconds else 0.0
    print(f"embedded {report.embedded} documents in {report.seconds:.1f} s ({rate:.1f} docs/s); {report.output} "
          f"holds {report.documents} in {report.shards_written + report.shards_skipped} shards "
          f"({report.shards_skipped} kept from an earlier run)")  # fmt: skip
    return 0


def _build(
    args: argparse.Namespace, device: str, documents: Iterable[Document], options: dict[str, Any]
) -> tuple[int, Manifest, float]:
    """Build ``--index`` from the corpus: the documents indexed, the manifest, the seconds after the model loaded."""
    model = _load_model(args, args.model or "default", device)
    start = time.perf_counter()
    with SemanticIndex.build(
        args.index, model, documents, factory=args.factory, overwrite=args.overwrite, gpu=args.gpu,
        max_length=args.max_length, **options,
    ) as index:  # fmt: skip
        return index.manifest.count, index.manifest, time.perf_counter() - start


def _append(
    args: argparse.Namespace, device: str, documents: Iterable[Document], options: dict[str, Any]
) -> tuple[int, Manifest, float]:
    """Append the corpus to ``--index``: the documents added, the manifest, the seconds after the model loaded."""
    with _open_index(args, device) as index:
        start = time.perf_counter()
        added = index.add(documents, force=args.force, **options)
        index.save()
        return added, index.manifest, time.perf_counter() - start


def cmd_search(args: argparse.Namespace) -> int:
    """``causal2vec search``: the nearest documents of one or more queries."""
    queries = list(args.query)
    if args.queries:
        queries += _nonblank_lines(args.queries)
    if not queries:
        raise UsageError("no query: give one as an argument or a file with --queries")
    if empty := [i for i, q in enumerate(queries, start=1) if not q.strip()]:
        raise UsageError(f"query {empty[0]} is empty; every query needs some text")
    with _open_index(args, _device(args)) as index:
        params = {"nprobe": args.nprobe, "ef_search": args.ef_search, "k_factor": args.k_factor}
        results = index.search(queries, k=args.k, **params)
    for query, hits in zip(queries, results, strict=True):
        if args.json:
            print(json.dumps({"query": query, "hits": [h.to_dict(snippet=args.snippet) for h in hits]}))
            continue
        print(f"query: {printable(query)}")
        for rank, hit in enumerate(hits, start=1):
            title = f"  {printable(hit.title)}" if hit.title else ""
            print(f"  {rank:>2}. {hit.score:.4f}  [{printable(hit.id)}]{title}")
            print(f"      {printable(hit.snippet(args.snippet))}")
        print()
    return 0


def printable(value: str) -> str:
    r"""``value`` for one line of text output: each character that is not printable escaped as ``repr`` does.

    Control characters, line separators and the like become ``\n``, ``\x1b``, ``\u2028`` …, so that stored text
    (an id of an index built before ids were checked, say) can neither break a line nor steer the terminal.
    """
    if value.isprintable():
        return value
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in value)


def cmd_delete(args: argparse.Namespace) -> int:
    """``causal2vec delete``: remove documents from an index by id."""
    ids = list(args.ids)
    if args.ids_file:
        ids += _nonblank_lines(args.ids_file)
    if not ids:
        raise UsageError("no ids to delete: give them as arguments or in a file with --ids-file")
    with SemanticIndex.load(args.index) as index:
        try:
            deleted = index.delete(ids, missing_ok=args.missing_ok)
        except KeyError as err:  # ids that are not in the index: the user's input, not a bug
            raise UsageError(f"{err.args[0]}; pass --missing-ok to ignore them") from err
        index.save()
        print(f"deleted {deleted} documents; {args.index} now holds {index.manifest.count}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """``causal2vec verify``: read an index's vector files in full against their recorded checksums.

    Loading checks the small .faiss file in full but an on-disk index's .ivfdata file only by size and sampled
    blocks; this reads all of it.
    """
    start = time.perf_counter()
    with SemanticIndex.load(args.index) as index:
        index.verify()
        m = index.manifest
    files = [m.vectors_file] + ([m.ivfdata_file] if m.ivfdata_file else [])
    print(f"verified {', '.join(files)} of {args.index} in {time.perf_counter() - start:.1f} s: {m.count} documents")
    return 0


def _nonblank_lines(path: str) -> list[str]:
    """Non-blank lines of a file (or stdin for ``-``)."""
    if path == "-":
        return [line.strip() for line in sys.stdin if line.strip()]
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def cmd_serve(args: argparse.Namespace) -> int:
    """``causal2vec serve``: embeddings (OpenAI's /v1/embeddings) and search over HTTP, with dynamic batching."""
    import os

    from causal2vec.serve import ServeSettings, run_server

    api_key = args.api_key or os.environ.get("CAUSAL2VEC_API_KEY") or None
    if args.model is None and args.index is None:
        raise UsageError("give --model (what to embed with), --index (what to search), or both")
    if args.max_wait_ms < 0:
        raise UsageError(f"--max-wait-ms {args.max_wait_ms:g}: give 0 or more milliseconds")
    device = _device(args)

    def load() -> tuple[EmbeddingBackend, SemanticIndex | None]:  # on the server's model thread, which owns both
        if args.index is None:
            return _load_model(args, args.model, device), None
        index = _open_index(args, device)
        return index.model, index

    settings = ServeSettings(
        max_batch_size=args.max_batch_size, max_batch_tokens=args.max_batch_tokens, max_wait_ms=args.max_wait_ms,
        max_inputs=args.max_inputs, max_chars=args.max_chars, timeout=args.timeout, api_key=api_key,
        max_length=None if args.index else args.max_length, max_body_bytes=args.max_body_bytes,
        read_timeout=args.read_timeout,
    )  # fmt: skip
    if args.host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        logging.getLogger(__name__).warning("serving on %s without --api-key: anyone who can reach it may use it",
                                            args.host)  # fmt: skip
    run_server(load, settings, host=args.host, port=args.port, log_level=args.log_level)
    return 0


# ---------------------------------------------------------------------- the parser


def _add_model_options(
    parser: argparse.ArgumentParser, *, model_default: str | None, model_help: str, dtype_auto: str, max_length: str
) -> None:
    """The shared "model" group (``--model``, ``--device``, ``--dtype``, ``--max-length``), then ``--backend``."""
    group = add_model_options(
        parser, model_default=model_default, model_help=model_help, dtype_auto=dtype_auto, max_length=max_length
    )
    group.add_argument(
        "--backend",
        choices=backend_names(),
        help="run the model with torch or onnxruntime (default: onnx for a folder that holds only an ONNX export, "
        "an index's own backend, else torch)",
    )
    group.add_argument("--strict", action="store_true", help="fail instead of falling back to the CPU (ONNX on CUDA)")


def _add_gpu_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpu", action="store_true", help="put the FAISS index on the GPU(s); needs faiss-gpu")


def _add_index_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", required=True, type=Path, help="the index folder, e.g. news.idx")


def _add_encode_parser(subparsers: Any) -> None:
    enc = subparsers.add_parser("encode", help="embed texts from a file or stdin", description=cmd_encode.__doc__)
    enc.add_argument(
        "input",
        help="JSONL with 'text' (and 'id', 'title'), e.g. docs.jsonl; TSV; or one text per "
        "line, e.g. texts.txt (blank lines skipped); '-' = stdin",
    )
    enc.add_argument(
        "-o", "--output", type=Path, required=True,
        help="the file to write: emb.npy (an array, float32 unless --precision) or emb.jsonl ({id, embedding} lines)",
    )  # fmt: skip
    role = enc.add_mutually_exclusive_group()
    role.add_argument("--query", action="store_true", help="embed as queries, with the query instruction")
    role.add_argument("--document", action="store_true", help="embed as documents, without instruction (default)")
    enc.add_argument(
        "--input-format", choices=choices_of(CorpusFormat), default="auto",
        help="input format, e.g. jsonl; auto goes by the suffix: .jsonl, .tsv, else lines",
    )  # fmt: skip
    enc.add_argument(
        "--format", choices=choices_of(EmbeddingFormat),
        help="output format, e.g. npy; must agree with the suffix of -o (default: the suffix's)",
    )  # fmt: skip
    enc.add_argument(
        "--devices", type=lambda value: value.split(","), metavar="DEV,DEV,...",
        help="embed on several devices, one worker process each (torch backend), e.g. cuda:0,cuda:1 or cpu,cpu",
    )  # fmt: skip
    enc.add_argument(
        "--precision", choices=OUTPUT_PRECISIONS, default="float32",
        help="embedding precision, e.g. binary (packed bits, dim/8 int8) or int8 (ranges from these texts); "
        "as sentence-transformers' quantize_embeddings",
    )  # fmt: skip
    _add_model_options(
        enc, model_default="default",
        model_help="checkpoint folder, hub id, or 'default', e.g. ./my-model",
        dtype_auto="bfloat16 on CUDA and on bf16-capable CPUs, else float32",
        max_length="token budget of both the encoder and the LLM, e.g. 256 (default: the model's)",
    )  # fmt: skip
    add_encoding_options(enc, instruction=True)
    enc.set_defaults(handler=cmd_encode)


def _add_index_parser(subparsers: Any) -> None:
    idx = subparsers.add_parser(
        "index", help="build a semantic index from a corpus, or append to one", description=cmd_index.__doc__
    )
    source = idx.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--corpus", help="JSONL (id, text, title, metadata), e.g. news.jsonl; TSV; or one text per line; '-' = stdin"
    )
    source.add_argument(
        "--from-shards", type=Path, metavar="SHARDS", help="a shard folder written by causal2vec embed (no model runs)"
    )
    _add_index_option(idx)
    _add_from_shards_options(idx)
    idx.add_argument(
        "--format", default="auto", choices=choices_of(CorpusFormat),
        help="corpus format, e.g. tsv; auto goes by the suffix: .jsonl, .tsv, else lines",
    )  # fmt: skip
    idx.add_argument(
        "--factory", default="Flat", help="FAISS factory string: Flat (exact), HNSW32, IVF1024,Flat, IVF4096,PQ96"
    )
    mode = idx.add_mutually_exclusive_group()
    mode.add_argument("--append", action="store_true", help="add to an existing index (its model by default)")
    mode.add_argument("--overwrite", action="store_true", help="replace an existing index at --index")
    idx.add_argument(
        "--on-duplicate", default="error", choices=choices_of(OnDuplicate),
        help="an id already in the index: error (change nothing), replace, or skip",
    )  # fmt: skip
    idx.add_argument(
        "--chunk-size", type=positive_int, default=2048, help="documents read and stored at a time, e.g. 512"
    )
    _add_index_model_options(idx)
    add_encoding_options(idx)
    _add_gpu_option(idx)
    idx.add_argument(
        "--force", action="store_true", help="with --append: embed with another backend or precision than the index's"
    )
    idx.set_defaults(handler=cmd_index)


def _add_from_shards_options(idx: argparse.ArgumentParser) -> None:
    idx.add_argument("--sample", type=positive_int, help="with --from-shards: vectors an IVF/PQ index trains on")
    idx.add_argument(
        "--on-disk", action="store_true",
        help="with --from-shards and an IVF factory (e.g. IVF4096,Flat): keep the inverted lists in one "
        "memory-mapped .ivfdata file, for indexes bigger than RAM (read only afterwards)",
    )  # fmt: skip


def _add_index_model_options(idx: argparse.ArgumentParser) -> None:
    _add_model_options(
        idx, model_default=None,
        model_help="checkpoint folder, hub id, or 'default', e.g. ./my-model "
        "(default: default; with --append, the index's model)",
        dtype_auto="bfloat16 on CUDA and on bf16-capable CPUs, else float32; with --append, the index's dtype",
        max_length="token budget of both the encoder and the LLM, e.g. 256, recorded in the index and used for its "
        "documents and queries (default: the model's; not with --append)",
    )  # fmt: skip


def _add_embed_parser(subparsers: Any) -> None:
    emb = subparsers.add_parser(
        "embed", help="embed a corpus into embedding shards on Ray (then: index --from-shards)",
        description=cmd_embed.__doc__,
    )  # fmt: skip
    emb.add_argument(
        "--corpus", nargs="+", required=True,
        help="files, folders or globs of JSONL, TSV, text lines or Parquet, e.g. 'corpus/*.jsonl'",
    )  # fmt: skip
    emb.add_argument("--output", type=Path, required=True, help="the shard folder, new or resumed, e.g. news.shards")
    emb.add_argument(
        "--format", default="auto", choices=choices_of(InputFormat), help="every file's format; auto goes by suffix"
    )
    emb.add_argument(
        "--ray", metavar="ADDRESS", help="join a Ray cluster: auto, or ray://host:10001 (default: a local instance)"
    )
    emb.add_argument("--actors", type=positive_int, help="model replicas (default: one per GPU, else per 4 cores)")
    emb.add_argument("--unit-size", type=positive_int, default=10_000, help="lines (Parquet rows) per shard")
    group = emb.add_argument_group("model")
    group.add_argument("--model", default="default", help="checkpoint folder, hub id, or 'default', e.g. ./my-model")
    group.add_argument("--dtype", default="auto", choices=choices_of(DTypeOption),
                       help="weight dtype of every actor; auto: bfloat16 on GPUs and bf16-capable CPUs, else float32")
    group.add_argument("--max-length", type=positive_int, metavar="TOKENS", help="token budget per document")
    group.add_argument("--backend", choices=backend_names(), help="torch or onnx (default: as load_backend picks)")
    add_encoding_options(emb)
    emb.set_defaults(handler=cmd_embed)


def _add_search_parser(subparsers: Any) -> None:
    srch = subparsers.add_parser("search", help="search an index", description=cmd_search.__doc__)
    srch.add_argument("query", nargs="*", help='one or more queries, e.g. "interest rates and inflation"')
    _add_index_option(srch)
    srch.add_argument(
        "--queries", help="a file with one query per line, e.g. queries.txt ('-' = stdin), searched in one batch"
    )
    srch.add_argument("-k", type=positive_int, default=10, help="hits per query, e.g. 5")
    srch.add_argument("--json", action="store_true", help="one JSON object per query: {query, hits: [{id, score, …}]}")
    srch.add_argument("--snippet", type=positive_int, default=160, help="characters of text shown per hit, e.g. 80")
    srch.add_argument("--nprobe", type=positive_int, help="IVF lists to visit (IVF indexes), e.g. 32")
    srch.add_argument(
        "--k-factor", type=positive_int, help="candidates per hit re-ranked exactly (',RFlat' indexes), e.g. 16"
    )
    srch.add_argument("--ef-search", type=positive_int, help="HNSW candidate list size (HNSW indexes), e.g. 128")
    _add_model_options(
        srch,
        model_default=None,
        model_help="embed queries with this model instead of the one the index names, e.g. ./my-model",
        dtype_auto="the dtype that embedded the index's documents",
        max_length="not accepted: an index embeds queries with the token budget it was built with",
    )
    _add_gpu_option(srch)
    srch.set_defaults(handler=cmd_search)


def _add_delete_parser(subparsers: Any) -> None:
    dele = subparsers.add_parser("delete", help="delete documents from an index by id", description=cmd_delete.__doc__)
    dele.add_argument("ids", nargs="*", help="document ids, e.g. business/001")
    _add_index_option(dele)
    dele.add_argument("--ids-file", help="a file with one id per line, e.g. stale.txt ('-' = stdin)")
    dele.add_argument("--missing-ok", action="store_true", help="ignore ids that are not in the index")
    dele.set_defaults(handler=cmd_delete)


def _add_verify_parser(subparsers: Any) -> None:
    ver = subparsers.add_parser(
        "verify", help="check every byte of an index's vector files against their checksums",
        description=cmd_verify.__doc__,
    )  # fmt: skip
    _add_index_option(ver)
    ver.set_defaults(handler=cmd_verify)


def _add_serve_parser(subparsers: Any) -> None:
    srv = subparsers.add_parser("serve", help="serve embeddings and search over HTTP", description=cmd_serve.__doc__)
    srv.add_argument("--index", type=Path, help="an index folder to search at POST /search, e.g. news.idx")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 serves other machines")
    srv.add_argument("--port", type=port_number, default=8000, help="TCP port, 0 to 65535")
    srv.add_argument(
        "--api-key", help="require 'Authorization: Bearer KEY' on every route but /health (or CAUSAL2VEC_API_KEY)"
    )
    srv.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level, e.g. debug",
    )
    _add_serve_limits(srv)
    _add_model_options(
        srv,
        model_default=None,
        model_help="the model to serve, e.g. default or ./my-model (default: the model --index names)",
        dtype_auto="bfloat16 on CUDA and on CPUs with native bfloat16, else float32 (an index: its own dtype)",
        max_length="token budget of every text, e.g. 256 (default: the model's; an index: its own)",
    )
    _add_gpu_option(srv)
    srv.set_defaults(handler=cmd_serve)


def _add_serve_limits(srv: argparse.ArgumentParser) -> None:
    limits = srv.add_argument_group("limits")
    limits.add_argument("--max-batch-size", type=positive_int, default=32, help="texts per model batch at most")
    limits.add_argument("--max-batch-tokens", type=positive_int, default=16384, help="tokens per model batch at most")
    limits.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="how long a batch waits for more requests, in ms"
    )
    limits.add_argument("--max-inputs", type=positive_int, default=2048, help="texts per request at most")
    limits.add_argument("--max-chars", type=positive_int, default=32768, help="characters per text at most")
    limits.add_argument("--timeout", type=positive_float, default=30.0, help="seconds a request may wait before a 503")
    limits.add_argument(
        "--max-body-bytes", type=positive_int, default=2_000_000,
        help="request bodies over this many bytes get 413 before they are read (as TEI's payload limit)",
    )  # fmt: skip
    limits.add_argument(
        "--read-timeout", type=positive_float, default=30.0,
        help="seconds a client may take to send a request's headers and body before it is disconnected",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``causal2vec`` command."""
    parser = CommandParser(prog="causal2vec", description="Causal2Vec text embeddings.")
    add_verbose_option(parser)
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_encode_parser(subparsers)
    _add_index_parser(subparsers)
    _add_embed_parser(subparsers)
    _add_search_parser(subparsers)
    _add_delete_parser(subparsers)
    _add_verify_parser(subparsers)
    _add_serve_parser(subparsers)
    return parser


# ---------------------------------------------------------------------- main


def _target(args: argparse.Namespace) -> Path | None:
    """What the command writes: encode's output file, or the index folder of index and delete."""
    return {"encode": getattr(args, "output", None), "index": getattr(args, "index", None),
            "embed": getattr(args, "output", None),
            "delete": getattr(args, "index", None)}.get(args.command)  # fmt: skip


def _left_as_it_was(target: Path | None, existed: bool) -> str:
    if target is None:
        return "nothing was written"
    return f"{target} is unchanged" if existed else f"{target} was not created"


def _invocation(args: argparse.Namespace) -> Invocation:
    """The subcommand's name and what it leaves as it was if it stops: told apart before it starts."""
    target = _target(args)
    existed = target is not None and target.exists()
    return Invocation(f"causal2vec {args.command}", unchanged=_left_as_it_was(target, existed))


def _dispatch(args: argparse.Namespace) -> int:
    return args.handler(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``causal2vec`` command; returns the exit code (2 for a bad input, 130 for Ctrl-C)."""
    return run_main(build_parser, _dispatch, argv, invocation=_invocation)


if __name__ == "__main__":
    sys.exit(main())
