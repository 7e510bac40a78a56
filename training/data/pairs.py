"""The training-pair JSONL format: one JSON object per line, UTF-8.

Fields:

- ``query`` (str, required, non-empty): the text that is encoded as a query.
- ``positive`` (str, required, non-empty): the document that answers it.
- ``negatives`` (list of str, optional): hard negatives, documents that look relevant and are not.
- ``instruction`` (str, optional): the query instruction for this record. Documents (the positive and the
  negatives) never get one.
- ``dataset`` (str, optional): the source name; training batches are drawn from one source at a time. The builders
  give every ``dataset`` exactly one instruction.

Example::

    {"query": "dog", "positive": "a member of the genus Canis", "negatives": ["a dull unattractive woman"],
     "instruction": "Given a word, retrieve its dictionary definition", "dataset": "wordnet"}

(one line in the file). Any other field name is an error, and so is a wrongly typed or empty value. Blank lines are
ignored. :func:`read_pairs` names the file and line of the first bad record, or skips and counts bad records.
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from causal2vec.files import write_atomic

logger = logging.getLogger(__name__)

REQUIRED = ("query", "positive")
FIELDS = ("query", "positive", "negatives", "instruction", "dataset")


@dataclass(frozen=True)
class Pair:
    """One training example: a query, its positive document, optional hard negatives, instruction and source.

    Raises:
        ValueError: When a field is empty or has the wrong type (the message names the field and the value).
    """

    query: str
    positive: str
    negatives: tuple[str, ...] = ()
    instruction: str | None = None
    dataset: str | None = None

    def __post_init__(self) -> None:
        for name in REQUIRED:
            _check_text(name, getattr(self, name))
        if not isinstance(self.negatives, tuple):
            raise ValueError(f"'negatives' must be a list of strings, got {type(self.negatives).__name__}")
        for i, negative in enumerate(self.negatives):
            _check_text(f"negatives[{i}]", negative)
        for name in ("instruction", "dataset"):
            if getattr(self, name) is not None:
                _check_text(name, getattr(self, name))

    def to_json(self) -> dict[str, Any]:
        """The record as written to JSONL: optional fields only when set."""
        record: dict[str, Any] = {"query": self.query, "positive": self.positive}
        if self.negatives:
            record["negatives"] = list(self.negatives)
        for name in ("instruction", "dataset"):
            if getattr(self, name) is not None:
                record[name] = getattr(self, name)
        return record

    @classmethod
    def from_json(cls, record: object) -> Pair:
        """Check one decoded JSON value and build a :class:`Pair` from it.

        Raises:
            ValueError: For a value that is not an object, an unknown field (naming the closest valid one), a
                missing required field, or a wrongly typed or empty value.
        """
        if not isinstance(record, dict):
            raise ValueError(f"expected a JSON object with fields {list(FIELDS)}, got {type(record).__name__}")
        for name in record:
            if name not in FIELDS:
                raise ValueError(f"unknown field {name!r}{_closest(name)}; the fields are {list(FIELDS)}")
        for name in REQUIRED:
            if name not in record:
                raise ValueError(f"missing required field {name!r}")
        negatives = record.get("negatives", [])
        if not isinstance(negatives, list):
            raise ValueError(f"'negatives' must be a list of strings, got {type(negatives).__name__}: {negatives!r}")
        fields = {name: record.get(name) for name in ("query", "positive", "instruction", "dataset")}
        return cls(negatives=tuple(negatives), **fields)


def _check_text(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{name!r} must be a string, got {type(value).__name__}: {value!r}")
    if not value.strip():
        raise ValueError(f"{name!r} must be non-empty text, got {value!r}")


def _closest(name: str) -> str:
    match = difflib.get_close_matches(name, FIELDS, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def write_pairs(path: str | Path, pairs: Iterable[Pair]) -> int:
    """Write pairs as JSONL, atomically (readers see the old file or the complete new one).

    Args:
        path: The ``.jsonl`` file to create or replace; its folder must exist.
        pairs: The records, written in order.

    Returns:
        The number of records written.

    Raises:
        ValueError: When there are no pairs (an empty file could not be read back).
        FileNotFoundError: When the folder of ``path`` does not exist.
    """
    path = Path(path)
    records = [json.dumps(pair.to_json(), ensure_ascii=False) for pair in pairs]
    if not records:
        raise ValueError(f"no pairs to write to {path}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"the folder of {path} does not exist; create {path.parent} first")

    def write(f: TextIO) -> None:
        for record in records:
            f.write(record + "\n")

    write_atomic(path, write)
    return len(records)


def read_pairs(path: str | Path, *, skip_bad: bool = False) -> tuple[list[Pair], int]:
    """Read a JSONL file of pairs.

    Args:
        path: The file to read.
        skip_bad: Skip malformed records and count them (one warning gives the count) instead of raising.

    Returns:
        The pairs, in file order, and the number of skipped records.

    Raises:
        ValueError: For a malformed record (``file:line: problem``) unless ``skip_bad``, or when the file holds no
            valid record.
        FileNotFoundError: When ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training data file {path} does not exist")
    pairs: list[Pair] = []
    skipped = 0
    with open(path, "rb") as f:  # bytes, so one line that is not UTF-8 is one bad record
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                pairs.append(_parse_line(line))
            except ValueError as err:
                if not skip_bad:
                    raise ValueError(f"{path}:{number}: {err}") from None
                skipped += 1
    if skipped:
        logger.warning("%s: skipped %d malformed record(s), kept %d", path, skipped, len(pairs))
    if not pairs:
        raise ValueError(
            f"{path} holds no training pairs" + (f" ({skipped} malformed records skipped)" * bool(skipped))
        )
    return pairs, skipped


def _parse_line(line: bytes) -> Pair:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"not UTF-8 text (byte {err.start + 1})") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON ({err.msg} at column {err.colno})") from None
    return Pair.from_json(record)
