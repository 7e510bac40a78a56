"""Training pairs: the JSONL format (:mod:`training.data.pairs`) and the offline builders (``python -m training.data``).

Builders: :func:`~training.data.bbc.build_bbc_pairs`, :func:`~training.data.wiki.build_wiki_pairs`,
:func:`~training.data.wordnet.build_wordnet_pairs` and :func:`~training.data.pydocs.build_pydocs_pairs`. Their
sources, counts and licences are in ``training/data/CARD.md``.
"""

from training.data.pairs import Pair, read_pairs, write_pairs

__all__ = ["Pair", "read_pairs", "write_pairs"]
