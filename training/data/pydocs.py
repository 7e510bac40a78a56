"""Python documentation pairs: section title -> section text, and FAQ question -> answer.

The source is Debian's ``python3.11-doc``: the reST sources of the Python 3.11 documentation under
``/usr/share/doc/python3.11/html/_sources/**/*.rst.txt``. Every heading starts a section whose text runs to the
next heading; markup is stripped (:mod:`training.data.rst`). A section's query is its title, prefixed by the page's
short title for sections below the page title (``"os: Files and Directories"``). Headings of the ``faq/`` pages that
end in ``?`` are FAQ questions instead. Hard negatives are other sections (or answers) of the same page.

Pages fall into three fixed parts by a hash of their path (:func:`page_part`): ``train`` (about 45% of the pages),
``selection`` (10%, for choosing a recipe) and ``test`` (45%, the evaluation's PyDocsRetrieval task). A page belongs
to one part whole, so no section of a test page, nor a sibling section as a negative, is seen in training; a text
that repeats on pages of two parts is left out of both.
Licence: the PSF licence (Python documentation, © Python Software Foundation).
"""

from __future__ import annotations

import logging
import random
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from training.data.pairs import Pair
from training.data.rst import plain_text, split_sections
from training.data.sampling import check_count, clip, group_negatives

logger = logging.getLogger(__name__)

ROOT = Path("/usr/share/doc/python3.11/html/_sources")
INSTALL = "apt-get install python3.11-doc"
DATASETS = {"section": "pydocs", "faq": "pydocs-faq"}
PydocsPart = Literal["all", "train", "selection", "test"]  # "all" pages, or one part of page_part
PARTS: tuple[PydocsPart, ...] = get_args(PydocsPart)
FAQ_MIN_CHARS = 40  # drops non-answers such as "See the next question."
INSTRUCTIONS = {
    "section": "Given the title of a section of the Python documentation, retrieve the section's text",
    "faq": "Given a question about Python, retrieve the answer from the Python FAQ",
}


@dataclass(frozen=True)
class DocSection:
    """One section of a page: ``kind`` is ``"section"`` or ``"faq"``, ``query`` its title (with page context)."""

    page: str
    kind: str
    query: str
    text: str


def read_doc_sections(root: str | Path = ROOT) -> list[DocSection]:
    """Every titled section (and FAQ question) of the ``*.rst.txt`` pages under ``root``, pages in path order.

    Raises:
        FileNotFoundError: Naming ``root`` and the install command when it holds no ``.rst.txt`` page.
    """
    root = Path(root)
    paths = sorted(root.rglob("*.rst.txt"))
    if not paths:
        raise FileNotFoundError(f"no *.rst.txt pages under {root}; run: {INSTALL} (or pass --root)")
    found = []
    for path in paths:
        page = path.relative_to(root).as_posix().removesuffix(".rst.txt")
        sections = split_sections(path.read_text(encoding="utf-8", errors="replace"))
        short = sections[0].title.split(" — ")[0].strip() if sections else ""
        for section in sections:
            is_faq = page.startswith("faq/") and section.title.endswith("?")
            query = section.title if is_faq or section.level == 0 else f"{short}: {section.title}"
            found.append(DocSection(page, "faq" if is_faq else "section", query, plain_text(section.lines)))
    return found


def page_part(page: str) -> str:
    """The fixed part of a page, by its path under ``_sources`` (``"library/os"``): train, selection or test.

    A CRC-32 of the path, not Python's ``hash``, so the split is the same in every process and on every machine.
    """
    bucket = zlib.crc32(page.encode("utf-8")) % 20
    return "train" if bucket < 9 else "selection" if bucket < 11 else "test"


def build_pydocs_pairs(
    root: str | Path = ROOT,
    *,
    part: PydocsPart = "all",
    body_chars: int = 1000,
    min_chars: int = 200,
    negatives: int = 1,
    seed: int = 0,
) -> list[Pair]:
    """Title -> text pairs from the Python documentation, plus FAQ question -> answer pairs.

    Args:
        root: The ``_sources`` folder of the HTML documentation.
        part: Which pages: ``"all"``, or one part of :func:`page_part` (``"train"``, ``"selection"``, ``"test"``).
        body_chars: Cut each text to this many characters, at a word boundary.
        min_chars: Drop sections whose stripped text is shorter (FAQ answers need ``FAQ_MIN_CHARS``).
        negatives: Other sections (answers) of the same page per pair, drawn with ``seed``.
        seed: Seed of the negative draw.

    Returns:
        Section pairs (dataset ``pydocs``) then FAQ pairs (``pydocs-faq``), each in page order. A query that
        several sections share (``"Examples"`` twice on one page) is ambiguous and skipped.

    Raises:
        ValueError: If ``part`` is not one of :data:`PARTS`, or a count is negative.
    """
    if part not in PARTS:
        raise ValueError(f"part={part!r} is not a part of the Python documentation; choose one of {list(PARTS)}")
    check_count("body_chars", body_chars, minimum=1)
    check_count("min_chars", min_chars)
    check_count("negatives", negatives)
    sections = read_doc_sections(root)
    # Ambiguity is judged over every page, so a part's pairs are among the "all" pairs of its pages.
    uses = Counter(s.query for s in sections)
    if part != "all":
        # Some texts repeat on pages of different parts (the same security note in several "What's New" pages): a
        # part drops them, so no text, as positive or negative, is shared between parts.
        parts_of: dict[str, set[str]] = defaultdict(set)
        for section in sections:
            parts_of[clip(section.text, body_chars)].add(page_part(section.page))
        sections = [s for s in sections if parts_of[clip(s.text, body_chars)] == {part}]
    rng = random.Random(seed)
    pairs = []
    for kind, least in (("section", max(min_chars, 1)), ("faq", FAQ_MIN_CHARS)):
        chosen = [s for s in sections if s.kind == kind and len(s.text) >= least and uses[s.query] == 1]
        texts = [clip(s.text, body_chars) for s in chosen]
        drawn = group_negatives(texts, [s.page for s in chosen], negatives, rng)
        pairs += [
            Pair(s.query, text, negs, INSTRUCTIONS[kind], DATASETS[kind])
            for s, text, negs in zip(chosen, texts, drawn, strict=True)
        ]
    logger.info("Python docs (%s pages): %d sections -> %d pairs", part, len(sections), len(pairs))
    return pairs
