"""Python documentation pairs: section title -> section text, and FAQ question -> answer.

The source is Debian's ``python3.11-doc``: the reST sources of the Python 3.11 documentation under
``/usr/share/doc/python3.11/html/_sources/**/*.rst.txt``. Every heading starts a section whose text runs to the
next heading; markup is stripped (:mod:`training.data.rst`). A section's query is its title, prefixed by the page's
short title for sections below the page title (``"os: Files and Directories"``). Headings of the ``faq/`` pages that
end in ``?`` are FAQ questions instead. Hard negatives are other sections (or answers) of the same page.
Licence: the PSF licence (Python documentation, © Python Software Foundation).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from training.data.pairs import Pair
from training.data.rst import plain_text, split_sections
from training.data.sampling import check_count, clip, group_negatives

logger = logging.getLogger(__name__)

ROOT = Path("/usr/share/doc/python3.11/html/_sources")
INSTALL = "apt-get install python3.11-doc"
DATASETS = {"section": "pydocs", "faq": "pydocs-faq"}
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


def build_pydocs_pairs(
    root: str | Path = ROOT, *, body_chars: int = 1000, min_chars: int = 200, negatives: int = 1, seed: int = 0
) -> list[Pair]:
    """Title -> text pairs from the Python documentation, plus FAQ question -> answer pairs.

    Args:
        root: The ``_sources`` folder of the HTML documentation.
        body_chars: Cut each text to this many characters, at a word boundary.
        min_chars: Drop sections whose stripped text is shorter (FAQ answers need ``FAQ_MIN_CHARS``).
        negatives: Other sections (answers) of the same page per pair, drawn with ``seed``.
        seed: Seed of the negative draw.

    Returns:
        Section pairs (dataset ``pydocs``) then FAQ pairs (``pydocs-faq``), each in page order. A query that
        several sections share (``"Examples"`` twice on one page) is ambiguous and skipped.
    """
    check_count("body_chars", body_chars, minimum=1)
    check_count("min_chars", min_chars)
    check_count("negatives", negatives)
    sections = read_doc_sections(root)
    uses = Counter(s.query for s in sections)
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
    logger.info("Python docs: %d sections -> %d pairs", len(sections), len(pairs))
    return pairs
