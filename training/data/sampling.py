"""Helpers the builders share: cutting text, seeded structural negatives, option checks and mixing sources."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Hashable, Sequence

from training.data.pairs import Pair


def check_count(name: str, value: int, minimum: int = 0) -> int:
    """Return ``value`` when it is an int of at least ``minimum``.

    Raises:
        ValueError: Naming the option, the value and the allowed range.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def clip(text: str, max_chars: int) -> str:
    """Cut ``text`` to at most ``max_chars`` characters, at the last space before the limit when there is one."""
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars + 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > max_chars // 2 else cut[:max_chars]).rstrip()


def group_negatives(
    texts: Sequence[str], groups: Sequence[Hashable], count: int, rng: random.Random
) -> list[tuple[str, ...]]:
    """For each text, up to ``count`` other texts of the same group, drawn with ``rng``.

    Texts equal to the item's own text are never chosen, so a negative is never the positive itself.

    Args:
        texts: The document of each item.
        groups: The group of each item (a topic, a page); negatives come from the same group.
        count: How many negatives per item (fewer when the group is small).
        rng: The seeded generator; the same seed and input give the same negatives.

    Returns:
        One tuple of negative texts per item, in input order.
    """
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, group in enumerate(groups):
        members[group].append(i)
    return [pick_others(texts, members[group], i, count, rng) for i, group in enumerate(groups)]


def pick_others(
    texts: Sequence[str], candidates: Sequence[int], own: int, count: int, rng: random.Random
) -> tuple[str, ...]:
    """Up to ``count`` distinct texts of ``candidates`` (indices into ``texts``) that differ from ``texts[own]``."""
    if count == 0:
        return ()
    tried = min(len(candidates), count + 3)
    chosen = _distinct(texts, candidates, rng.sample(range(len(candidates)), tried), texts[own], count)
    if len(chosen) < count and tried < len(candidates):  # rare: repeats among the first draws; draw from all
        chosen = _distinct(texts, candidates, rng.sample(range(len(candidates)), len(candidates)), texts[own], count)
    return tuple(chosen)


def _distinct(texts: Sequence[str], candidates: Sequence[int], order: Sequence[int], own: str, count: int) -> list[str]:
    chosen: list[str] = []
    for k in order:
        text = texts[candidates[k]]
        if text != own and text not in chosen:
            chosen.append(text)
            if len(chosen) == count:
                break
    return chosen


def unique_pairs(pairs: Sequence[Pair]) -> list[Pair]:
    """Drop repeated (query, positive) records, keeping the first."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for pair in pairs:
        key = (pair.query, pair.positive)
        if key not in seen:
            seen.add(key)
            kept.append(pair)
    return kept


def mix_pairs(pairs: Sequence[Pair], cap: int | None = None, seed: int = 0) -> list[Pair]:
    """Keep at most ``cap`` records of each ``dataset`` (a seeded sample, in input order), then shuffle with ``seed``.

    Records without a ``dataset`` count as one source named ``None``.

    Raises:
        ValueError: When ``cap`` is below 1.
    """
    if cap is not None:
        check_count("cap", cap, minimum=1)
    rng = random.Random(seed)
    by_source: dict[str | None, list[int]] = defaultdict(list)
    for i, pair in enumerate(pairs):
        by_source[pair.dataset].append(i)
    keep: list[int] = []
    for indices in by_source.values():
        keep.extend(sorted(rng.sample(indices, cap)) if cap is not None and len(indices) > cap else indices)
    mixed = [pairs[i] for i in sorted(keep)]
    rng.shuffle(mixed)
    return mixed
