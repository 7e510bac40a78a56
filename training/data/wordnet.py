"""WordNet 3.0 definition pairs: lemmas -> gloss, and example sentence -> gloss.

The source is Debian's ``wordnet-base`` (``/usr/share/wordnet/data.{noun,verb,adj,adv}``, 117,659 synsets). Each
data line reads (``wndb(5WN)``)::

    synset_offset lex_filenum ss_type w_cnt word lex_id [word lex_id ...] p_cnt [ptr ...] [frames ...] | gloss

with ``w_cnt`` two hex digits, ``lex_id`` one hex digit and ``p_cnt`` three decimal digits; each pointer is four
fields (symbol, offset, part of speech, source/target). Lines that start with two spaces are the licence header.
Adjective words may carry a syntactic marker, ``(a)``, ``(p)`` or ``(ip)``, which is dropped. The gloss holds the
definition, then quoted examples: ``definition; "example one"; "example two"``.

Hard negatives are the definitions of other senses of the same lemma (``bank`` the slope and ``bank`` the
institution). Licence: the Princeton WordNet 3.0 licence (permissive; keep its copyright notice).
"""

from __future__ import annotations

import logging
import random
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from training.data.pairs import Pair
from training.data.sampling import check_count, pick_others, unique_pairs

logger = logging.getLogger(__name__)

ROOT = Path("/usr/share/wordnet")
INSTALL = "apt-get install wordnet-base"
PARTS = ("noun", "verb", "adj", "adv")
SS_TYPES = {"n", "v", "a", "s", "r"}
DATASETS = {"lemma": "wordnet", "example": "wordnet-examples"}
INSTRUCTIONS = {
    "lemma": "Given a word and its synonyms, retrieve the dictionary definition of that sense",
    "example": "Given a sentence, retrieve the definition of the word sense it uses",
}
_MARKER = re.compile(r"\((?:a|p|ip)\)$")
_EXAMPLES_START = re.compile(r'[;:]\s*"')  # the first quote after ';' or ':' opens the examples
_QUOTED = re.compile(r'"([^"]*)"')


@dataclass(frozen=True)
class Synset:
    """One WordNet synset: ``offset`` and ``ss_type`` identify it, ``words`` are its lemmas (spaces, not ``_``)."""

    offset: str
    ss_type: str
    words: tuple[str, ...]
    definition: str
    examples: tuple[str, ...]


def parse_data_line(line: str) -> Synset:
    """Parse one synset line of a WordNet ``data.*`` file.

    Raises:
        ValueError: Naming the field that does not follow the format.
    """
    head, bar, gloss = line.partition(" | ")
    fields = head.split()
    if not bar and fields and fields[-1] == "|":  # a synset without a gloss ends in " |"
        fields, gloss = fields[:-1], ""
    elif not bar:
        raise ValueError("no ' | ' before the gloss")
    if len(fields) < 6 or not fields[0].isdigit() or fields[2] not in SS_TYPES:
        raise ValueError(f"expected 'offset lex_filenum ss_type w_cnt word lex_id ...', got {head[:60]!r}")
    w_cnt = _number(fields[3], 16, "w_cnt")
    p_at = 4 + 2 * w_cnt
    if w_cnt < 1 or p_at >= len(fields):
        raise ValueError(f"w_cnt {fields[3]!r} says {w_cnt} words but the line has fewer fields")
    words = tuple(_MARKER.sub("", w).replace("_", " ") for w in fields[4:p_at:2])
    p_cnt = _number(fields[p_at], 10, "p_cnt")
    if len(fields) < p_at + 1 + 4 * p_cnt:
        raise ValueError(f"p_cnt {fields[p_at]!r} says {p_cnt} pointers but the line has fewer fields")
    definition, examples = split_gloss(gloss)
    return Synset(fields[0], fields[2], words, definition, examples)


def _number(field: str, base: int, name: str) -> int:
    try:
        return int(field, base)
    except ValueError:
        raise ValueError(f"{name} must be a base-{base} number, got {field!r}") from None


def split_gloss(gloss: str) -> tuple[str, tuple[str, ...]]:
    """Split a gloss into its definition and its quoted example sentences."""
    gloss = " ".join(gloss.split())
    start = _EXAMPLES_START.search(gloss)
    if start is None:
        return gloss.rstrip("; "), ()
    examples = tuple(e.strip() for e in _QUOTED.findall(gloss[start.end() - 1 :]) if e.strip())
    return gloss[: start.start()].rstrip("; "), examples


def read_synsets(root: str | Path = ROOT) -> list[Synset]:
    """Every synset of ``data.noun``, ``data.verb``, ``data.adj`` and ``data.adv`` under ``root``, in file order.

    Raises:
        FileNotFoundError: Naming the missing file and the install command.
        ValueError: ``file:line: problem`` for a line that does not follow the format.
    """
    synsets = []
    for part in PARTS:
        path = Path(root) / f"data.{part}"
        if not path.is_file():
            raise FileNotFoundError(f"WordNet data file {path} does not exist; run: {INSTALL} (or pass --root)")
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if line.startswith("  ") or not line.strip():  # the licence header
                    continue
                try:
                    synsets.append(parse_data_line(line.rstrip("\n")))
                except ValueError as err:
                    raise ValueError(f"{path}:{number}: {err}") from None
    return synsets


def build_wordnet_pairs(
    root: str | Path = ROOT, *, examples: bool = True, negatives: int = 1, seed: int = 0
) -> list[Pair]:
    """Definition pairs from WordNet, with other senses of the same lemma as hard negatives.

    Args:
        root: The folder with ``data.noun`` etc. (Debian's ``wordnet-base`` puts them in ``/usr/share/wordnet``).
        examples: Also add example sentence -> definition pairs (dataset ``wordnet-examples``).
        negatives: Definitions of other senses of the synset's lemmas per pair, drawn with ``seed``.
        seed: Seed of the negative draw.

    Returns:
        The lemma pairs (dataset ``wordnet``; the query is the synset's lemmas joined by ", ") in file order, then
        the example pairs; repeated (query, definition) records are dropped.
    """
    check_count("negatives", negatives)
    synsets = [s for s in read_synsets(root) if s.definition]
    drawn = _sense_negatives(synsets, negatives, random.Random(seed))
    pairs = [_pair(", ".join(s.words), s, negs, "lemma") for s, negs in zip(synsets, drawn, strict=True)]
    if examples:
        pairs += [_pair(e, s, negs, "example") for s, negs in zip(synsets, drawn, strict=True) for e in s.examples]
    pairs = unique_pairs(pairs)
    logger.info("WordNet: %d synsets -> %d pairs", len(synsets), len(pairs))
    return pairs


def _pair(query: str, synset: Synset, negatives: tuple[str, ...], kind: str) -> Pair:
    return Pair(query, synset.definition, negatives, INSTRUCTIONS[kind], DATASETS[kind])


def _sense_negatives(synsets: Sequence[Synset], count: int, rng: random.Random) -> list[tuple[str, ...]]:
    """For each synset, definitions of other synsets sharing one of its lemmas (any case, any part of speech)."""
    senses: dict[str, list[int]] = defaultdict(list)
    for i, synset in enumerate(synsets):
        for word in dict.fromkeys(w.lower() for w in synset.words):
            senses[word].append(i)
    definitions = [s.definition for s in synsets]
    drawn = []
    for i, synset in enumerate(synsets):
        others = sorted({j for w in synset.words for j in senses[w.lower()] if j != i})
        drawn.append(pick_others(definitions, others, i, count, rng) if others else ())
    return drawn
