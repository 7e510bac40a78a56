"""The shared BBC News split: by article, repeats merged, stable, stratified by topic."""

from __future__ import annotations

from collections import Counter

import pytest

from causal2vec.data.bbc import SPLITS, Article, bbc_news_articles, bbc_news_split, split_articles, unique_articles


@pytest.fixture(scope="module")
def articles() -> list[Article]:
    return bbc_news_articles()


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _groups_by_fixpoint(articles: list[Article]) -> list[set[str]]:
    """Reference: merge id sets that share a normalised title or body until nothing changes (quadratic, obvious)."""
    groups = [({a.id}, {_norm(a.title)}, {_norm(a.body)}) for a in articles]
    merged = True
    while merged:
        merged = False
        out: list[tuple[set[str], set[str], set[str]]] = []
        for ids, titles, bodies in groups:
            for other in out:
                if other[1] & titles or other[2] & bodies:
                    other[0].update(ids), other[1].update(titles), other[2].update(bodies)
                    merged = True
                    break
            else:
                out.append((ids, titles, bodies))
        groups = out
    return [ids for ids, _, _ in groups]


def test_unique_articles_keeps_the_lowest_id_of_each_repeat_group(articles):
    kept = unique_articles(articles)
    expected = sorted(min(group) for group in _groups_by_fixpoint(articles))
    assert sorted(a.id for a in kept) == expected
    assert len(kept) < len(articles), "the corpus is known to repeat articles"


def test_splits_are_disjoint_by_text_and_cover_every_unique_article(articles):
    splits = split_articles(articles)
    ids = [a.id for part in splits.values() for a in part]
    assert len(ids) == len(set(ids))
    assert set(ids) == {a.id for a in unique_articles(articles)}
    for field in ("title", "body"):
        seen: dict[str, str] = {}
        for name, part in splits.items():
            for a in part:
                text = _norm(getattr(a, field))
                assert seen.setdefault(text, name) == name, f"{field} of {a.id} appears in {seen[text]} and {name}"


def test_each_topic_is_cut_70_10_20(articles):
    splits = split_articles(articles)
    totals = Counter(a.topic for part in splits.values() for a in part)
    for name, fraction in SPLITS.items():
        counts = Counter(a.topic for a in splits[name])
        for topic, total in totals.items():
            assert abs(counts[topic] - fraction * total) <= 1, (name, topic, counts[topic], total)


def test_split_depends_only_on_the_seed(articles):
    first = split_articles(articles)
    assert split_articles(list(reversed(articles))) == first
    assert [a.id for a in bbc_news_split("test")] == [a.id for a in first["test"]]
    assert split_articles(articles, seed=1)["test"] != first["test"]


def test_unknown_split_names_the_choices():
    with pytest.raises(ValueError, match=r"'dev' does not exist; choose one of \['train', 'validation', 'test'\]"):
        bbc_news_split("dev")
