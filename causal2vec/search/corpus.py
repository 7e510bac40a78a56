"""Streaming corpus readers: JSONL, TSV and plain text, one document at a time.

A corpus is read lazily so that a million documents are never held at once; :func:`chunked` groups the stream into
lists for encoding. Every error names the file and the line. :func:`read_corpus_part` reads a range of a file's
lines exactly as :func:`read_corpus` reads them in the whole file (how distributed jobs split a corpus).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any, Literal, TextIO, get_args

CorpusFormat = Literal["auto", "jsonl", "tsv", "lines"]
FORMATS: tuple[CorpusFormat, ...] = get_args(CorpusFormat)
_RESERVED = ("id", "text", "title", "metadata")


@dataclass
class Document:
    """One document of a corpus.

    Attributes:
        text: The body that is embedded and stored.
        id: The caller's id; ``None`` lets the index assign one (the string of its internal number).
        title: An optional title; when present it is embedded in front of the text (title, newline, text).
        metadata: Any JSON object, stored and returned with search hits.
        source: Where the document was read, e.g. ``news.jsonl:12``, for error messages (not compared).
    """

    text: str
    id: str | None = None
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str | None = field(default=None, compare=False, repr=False)

    def embedding_text(self) -> str:
        """The string that is embedded: the title and the text on separate lines, or the text alone."""
        return f"{self.title}\n{self.text}" if self.title else self.text


def detect_format(path: str | Path) -> str:
    """The corpus format from the file name: ``.jsonl``/``.json`` → jsonl, ``.tsv`` → tsv, anything else → lines."""
    suffix = Path(str(path)).suffix.lower()
    return {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".tsv": "tsv"}.get(suffix, "lines")


def read_corpus(path: str | Path, fmt: CorpusFormat = "auto") -> Iterator[Document]:
    r"""Stream the documents of a corpus file (``"-"`` reads standard input), read as UTF-8.

    Formats:
        * ``jsonl``: one object per line with a string ``text``, and optionally ``id`` (string or integer;
          ``_id`` as in BEIR corpora is read the same way),
          ``title`` and ``metadata`` (an object). Other fields are kept in the metadata. Blank lines are skipped.
        * ``tsv``: tab-separated. A first row naming a ``text`` column is a header (columns ``id``, ``title``,
          ``text``; others go to the metadata). Without a header, rows are ``text`` or ``id<TAB>text``.
        * ``lines``: one document per line, ids assigned by the index. Blank lines are skipped.

    Raises:
        ValueError: For an unknown format, or a malformed record (naming the file and line), including bytes that
            are not UTF-8 and text that UTF-8 cannot hold (a lone surrogate such as the JSON escape ``\ud800``).
        FileNotFoundError: If the file does not exist.
    """
    if fmt not in FORMATS:
        raise ValueError(f"corpus format {fmt!r} is not supported; choose one of {list(FORMATS)}")
    name = "<stdin>" if str(path) == "-" else str(path)
    fmt = detect_format(name) if fmt == "auto" else fmt
    if name != "<stdin>" and not Path(name).is_file():
        raise FileNotFoundError(f"corpus file {name} does not exist")
    reader = {"jsonl": _read_jsonl, "tsv": _read_tsv, "lines": _read_lines}[fmt]
    if name == "<stdin>":
        yield from _read_stdin(reader, name)
        return
    # Bytes that are not UTF-8 become lone surrogates, so that _lines can name their line instead of the decoder
    # failing somewhere in a block of lines.
    with open(name, encoding="utf-8", errors="surrogateescape", newline="") as stream:
        yield from reader(stream, name)


def read_corpus_part(path: str | Path, fmt: CorpusFormat, start: int, stop: int, first_line: int) -> Iterator[Document]:
    r"""The documents of the bytes ``[start, stop)`` of a corpus file, which begin at line ``first_line``.

    ``start`` and ``stop`` must fall at the end of a line (after a ``\n``) or at the ends of the file; the part then
    yields exactly the documents, sources (``file:line``) and errors that :func:`read_corpus` yields for those lines
    of the whole file. A TSV part after the first line takes its columns from the file's header row.

    Raises:
        ValueError: As :func:`read_corpus` does, for an unknown format or a malformed record.
        FileNotFoundError: If the file does not exist.
    """
    if fmt not in FORMATS:
        raise ValueError(f"corpus format {fmt!r} is not supported; choose one of {list(FORMATS)}")
    name = str(path)
    fmt = detect_format(name) if fmt == "auto" else fmt
    if not Path(name).is_file():
        raise FileNotFoundError(f"corpus file {name} does not exist")
    with open(name, "rb") as raw:
        raw.seek(start)
        data = raw.read(stop - start)
    stream = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="surrogateescape", newline="")
    if fmt == "tsv":
        header = _tsv_header(name) if first_line > 1 else None
        yield from _read_tsv(stream, name, first_line, header)
    else:
        yield from {"jsonl": _read_jsonl, "lines": _read_lines}[fmt](stream, name, first_line)


def _tsv_header(name: str) -> list[str] | None:
    """The header row of a TSV file: its first line, when that names a ``text`` column."""
    with open(name, encoding="utf-8", errors="surrogateescape", newline="") as stream:
        first = next(_lines(stream, name), "")
    row = next(csv.reader([first], delimiter="\t", quoting=csv.QUOTE_NONE), [])
    return row if "text" in row else None


def _read_stdin(reader: Callable[[TextIO, str], Iterator[Document]], name: str) -> Iterator[Document]:
    """Standard input read as the files are (UTF-8, bad bytes kept for :func:`_lines` to name)."""
    if not hasattr(sys.stdin, "buffer"):  # already text, e.g. a StringIO
        yield from reader(sys.stdin, name)
        return
    stream = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape", newline="")
    try:
        yield from reader(stream, name)
    finally:
        stream.detach()  # leave sys.stdin's buffer open


def check_text(value: str, where: str, what: str) -> None:
    r"""Refuse a string that UTF-8 cannot encode: one holding a lone surrogate, e.g. from the JSON escape ``\ud800``.

    Tokenizers, SQLite and JSON output all need text that UTF-8 can encode.

    Raises:
        ValueError: Naming ``where``, ``what`` and the character's position.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"{where}: {what} holds a lone surrogate {value[err.start]!r} at character {err.start + 1}; text must be "
            "valid Unicode (an escape from \\ud800 to \\udfff is valid only as half of a surrogate pair)"
        ) from None


def check_document(doc: Document, where: str) -> None:
    """Check every string of a document with :func:`check_text` (the metadata as the JSON it is stored as).

    Raises:
        ValueError: Naming ``where`` and the field.
    """
    check_text(doc.text, where, "'text'")
    if doc.title is not None:
        check_text(doc.title, where, "'title'")
    if doc.id is not None:
        check_text(doc.id, where, "'id'")
    if doc.metadata:
        check_text(json.dumps(doc.metadata, ensure_ascii=False), where, "'metadata'")


def _lines(stream: TextIO, name: str, first_line: int = 1) -> Iterator[str]:
    """The lines of a stream read with ``errors="surrogateescape"``, each checked to have been UTF-8.

    Raises:
        ValueError: Naming the file, the line and the first byte that is not UTF-8.
    """
    for lineno, line in enumerate(stream, start=first_line):
        try:
            line.encode("utf-8")
        except UnicodeEncodeError as err:
            char = line[err.start]
            if not "\udc80" <= char <= "\udcff":  # a real lone surrogate (text from a StringIO, not bytes)
                check_text(line, f"{name}:{lineno}", "the line")
            raise ValueError(
                f"{name}:{lineno}: not valid UTF-8 (byte 0x{ord(char) - 0xDC00:02x} at character {err.start + 1}); "
                "save the file as UTF-8"
            ) from None
        yield line


def count_lines(path: str | Path) -> int | None:
    """The number of lines of a file (for a progress bar's total), or ``None`` for standard input."""
    if str(path) == "-":
        return None
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))


def chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Group an iterable into lists of ``size`` items (the last one may be shorter)."""
    if size < 1:
        raise ValueError(f"chunk size {size!r} must be a positive integer")
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def as_document(item: Document | str | dict[str, Any], where: str = "document") -> Document:
    """Accept a :class:`Document`, a plain string, or a dict with the JSONL fields.

    Raises:
        TypeError: For anything else, naming ``where`` and the type.
        ValueError: For a dict without a string ``text``, or text that UTF-8 cannot encode (see :func:`check_text`).
    """
    if isinstance(item, Document):
        check_document(item, item.source or where)
        return item if item.source else replace(item, source=where)
    if isinstance(item, str):
        check_text(item, where, "the text")
        return Document(text=item, source=where)
    if isinstance(item, dict):
        return _record_to_document(item, where)
    raise TypeError(f"{where} is {type(item).__name__}; pass a Document, a str, or a dict with a 'text' field")


def _record_to_document(record: dict[str, Any], where: str) -> Document:
    text = record.get("text")
    if not isinstance(text, str):
        raise ValueError(f"{where}: each record needs a string 'text' field")
    id_field = "id" if "id" in record else "_id"  # BEIR corpora name it "_id"
    doc_id = record.get(id_field)
    if doc_id is not None and (isinstance(doc_id, bool) or not isinstance(doc_id, str | int)):
        raise ValueError(f"{where}: 'id' must be a string or an integer, not {type(doc_id).__name__}")
    title = record.get("title")
    if title is not None and not isinstance(title, str):
        raise ValueError(f"{where}: 'title' must be a string, not {type(title).__name__}")
    metadata = record.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ValueError(f"{where}: 'metadata' must be a JSON object, not {type(metadata).__name__}")
    extra = {k: v for k, v in record.items() if k not in _RESERVED and k != id_field}
    doc = Document(text, None if doc_id is None else str(doc_id), title, {**extra, **metadata}, source=where)
    check_document(doc, where)
    return doc


def _read_jsonl(stream: TextIO, name: str, first_line: int = 1) -> Iterator[Document]:
    for lineno, line in enumerate(_lines(stream, name, first_line), start=first_line):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{name}:{lineno}: not valid JSON ({err.msg})") from err
        if not isinstance(record, dict):
            raise ValueError(f"{name}:{lineno}: each line must be a JSON object, not {type(record).__name__}")
        yield _record_to_document(record, f"{name}:{lineno}")


def _read_tsv(stream: TextIO, name: str, first_line: int = 1, header: list[str] | None = None) -> Iterator[Document]:
    rows = csv.reader(_lines(stream, name, first_line), delimiter="\t", quoting=csv.QUOTE_NONE)
    for lineno, row in enumerate(rows, start=first_line):
        if not row or row == [""]:
            continue
        if lineno == 1 and "text" in row:
            header = row
            continue
        where = f"{name}:{lineno}"
        if header is not None:
            if len(row) != len(header):
                raise ValueError(f"{where}: {len(row)} columns, but the header names {len(header)}: {header}")
            yield _record_to_document(dict(zip(header, row, strict=True)), where)
        elif len(row) == 1:
            yield Document(text=row[0], source=where)
        elif len(row) == 2:
            yield Document(text=row[1], id=row[0], source=where)
        else:
            raise ValueError(
                f"{where}: {len(row)} columns; without a header a TSV row is 'text' or 'id<TAB>text'. "
                f"Add a header row such as 'id<TAB>title<TAB>text'"
            )


def _read_lines(stream: TextIO, name: str, first_line: int = 1) -> Iterator[Document]:
    for lineno, line in enumerate(_lines(stream, name, first_line), start=first_line):
        text = line.rstrip("\n").rstrip("\r")
        if text.strip():
            yield Document(text=text, source=f"{name}:{lineno}")
