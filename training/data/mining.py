"""Mined hard negatives: sentence-transformers' ``mine_hard_negatives``, put in front of the structural ones.

For each pair, the documents of the pairs' corpus (every distinct positive) are ranked by an embedding model (by
default all-MiniLM-L6-v2, the encoder inside the default) and the top-ranked ones that are not a positive of the
query become its negatives. A document that scores too close to the positive is more likely an unlabelled positive
than a negative, so candidates above ``relative_margin`` below the positive's score (and, optionally, above
``max_score``) are skipped (NV-Retriever's TopK-PercPos: ``relative_margin=0.05``).

The mined negatives come first in each pair's ``negatives`` (the loss reads the first ``data.negatives`` of them);
the builders' structural negatives (same BBC or Wikipedia topic, other WordNet senses, same documentation page)
follow, so a pair for which nothing was mined still has its structural negatives. Pairs left with no negative at
all are dropped unless asked otherwise: the trainer uses a source's negatives only when every pair has them.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from training.data.pairs import Pair
from training.data.sampling import check_count

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MiningSettings:
    """How ``mine_hard_negatives`` picks candidates (its arguments of the same names)."""

    count: int = 1  # mined negatives per pair (num_negatives)
    relative_margin: float | None = 0.05  # skip candidates scoring above positive - |positive| * margin
    max_score: float | None = None  # skip candidates whose cosine to the query is above this
    range_min: int = 0  # skip this many top-ranked candidates first
    range_max: int | None = None  # consider candidates up to this rank (None: sentence-transformers' default)
    batch_size: int = 64  # texts per encoding batch

    def check(self) -> None:
        """Raises ValueError naming a bad setting and the allowed range."""
        check_count("count", self.count, minimum=1)
        check_count("range_min", self.range_min)
        check_count("batch_size", self.batch_size, minimum=1)
        if self.relative_margin is not None and not 0 <= self.relative_margin < 1:
            raise ValueError(f"relative_margin must be in [0, 1), e.g. 0.05; got {self.relative_margin!r}")
        if self.max_score is not None and not -1 <= self.max_score <= 1:
            raise ValueError(f"max_score must be a cosine in [-1, 1], e.g. 0.9; got {self.max_score!r}")
        if self.range_max is not None and self.range_max <= self.range_min:
            raise ValueError(f"range_max={self.range_max} must be above range_min={self.range_min}")


def mine_negatives(
    pairs: Sequence[Pair], model: Any, settings: MiningSettings | None = None, *, keep_unmatched: bool = False
) -> tuple[list[Pair], dict[str, int]]:
    """Put negatives mined by ``model`` in front of each pair's structural negatives.

    Args:
        pairs: The pairs; their distinct positives are the corpus the negatives are mined from.
        model: A ``SentenceTransformer`` (queries are encoded as they are: the pairs' instructions are for the
            model being trained, not for the miner).
        settings: The candidate filters of ``mine_hard_negatives`` (default: :class:`MiningSettings`'s).
        keep_unmatched: Keep pairs that end with no negative at all (else they are dropped and counted).

    Returns:
        The pairs in input order (mined negatives first, then the structural ones not already mined), and counts:
        ``mined`` (pairs that got a mined negative), ``structural_only`` (kept on structural negatives alone) and
        ``dropped``.

    Raises:
        ValueError: For a bad setting or no pairs.
    """
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    settings = settings or MiningSettings()
    settings.check()
    if not pairs:
        raise ValueError("no pairs to mine negatives for")
    table = Dataset.from_dict({"query": [p.query for p in pairs], "positive": [p.positive for p in pairs]})
    mined_table = mine_hard_negatives(
        table,
        model,
        num_negatives=settings.count,
        relative_margin=settings.relative_margin,
        max_score=settings.max_score,
        range_min=settings.range_min,
        range_max=settings.range_max,
        sampling_strategy="top",
        output_format="triplet",  # one row per (query, positive, negative); rows without a negative are left out
        batch_size=settings.batch_size,
        use_faiss=True,
        verbose=logger.isEnabledFor(logging.INFO),
    )
    mined: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in mined_table:
        mined[row["query"], row["positive"]].append(row["negative"])  # in rank order, best first
    return _merge(pairs, mined, keep_unmatched)


def _merge(
    pairs: Sequence[Pair], mined: dict[tuple[str, str], list[str]], keep_unmatched: bool
) -> tuple[list[Pair], dict[str, int]]:
    counts: Counter[str] = Counter(mined=0, structural_only=0, dropped=0)
    kept = []
    for pair in pairs:
        found = mined.get((pair.query, pair.positive), [])
        negatives = tuple(dict.fromkeys([*found, *pair.negatives]))  # a structural negative mined too: once
        if found:
            counts["mined"] += 1
        elif negatives:
            counts["structural_only"] += 1
        elif not keep_unmatched:
            counts["dropped"] += 1
            continue
        kept.append(replace(pair, negatives=negatives))
    logger.info("mined negatives: %s", dict(counts))
    return kept, dict(counts)


def load_miner(path: str | None = None, device: str = "cpu") -> Any:
    """The mining model: a SentenceTransformer folder, by default the wheel's all-MiniLM-L6-v2."""
    from sentence_transformers import SentenceTransformer

    from causal2vec.assets import minilm_path

    return SentenceTransformer(path or str(minilm_path()), device=device)
