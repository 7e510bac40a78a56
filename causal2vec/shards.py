"""Embedding shards: a folder of Parquet files holding documents with their embeddings (the only pyarrow user).

A job that embeds a large corpus (:func:`causal2vec.ray_embed.embed_to_shards`) cuts it into *work units*, fixed
ranges of each input file's lines (or of a Parquet file's rows), and writes one shard per unit::

    shards.json                      the record: model identity, dimension, corpus fingerprint, the shards
    part-<file>-<unit>.parquet       id, title, text, metadata (JSON), source (file:line), embedding (float32 × dim)

A shard is written aside and renamed into place, and ``shards.json`` is replaced atomically after every shard, so
a job killed at any moment leaves a folder that a rerun resumes: shards that ``shards.json`` lists and whose
checksums verify are kept; every other file this module writes (a half-written ``.part-….tmp-…``, a shard renamed
just before the kill but not yet listed, a shard that fails its checksum) is removed and that unit embedded again.
A rerun with another model identity or another corpus (a file's path, size or checksum, or the unit size) is
refused. :meth:`ShardFolder.iter_shards` reads the shards back, verified, for the index builder.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
from tqdm.auto import tqdm

from causal2vec.files import (
    CHECKSUM_ALGORITHM,
    file_checksum,
    member_path,
    read_json_object,
    verify_checksum,
    write_atomic,
)
from causal2vec.identity import ModelIdentity
from causal2vec.runtime import check_int, require, show_progress
from causal2vec.search.corpus import FORMATS, CorpusFormat, Document, as_document, detect_format, read_corpus_part

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
SHARDS_JSON = "shards.json"
InputFormat = Literal["auto", "jsonl", "tsv", "lines", "parquet"]
INPUT_FORMATS: tuple[str, ...] = (*FORMATS, "parquet")
CORPUS_SUFFIXES = (".jsonl", ".json", ".ndjson", ".tsv", ".txt", ".parquet")  # what a corpus folder contributes
_SHARD_FILE = re.compile(r"part-[0-9]{5,}-[0-9]{6,}\.parquet")
_SHARD_TMP = re.compile(r"\.(part-[0-9]{5,}-[0-9]{6,}\.parquet|shards\.json)\.tmp-[0-9a-f]{8}")  # write_atomic's names


def _arrow() -> tuple[Any, Any]:
    """``pyarrow`` and ``pyarrow.parquet``, or the command that installs them."""
    return require("pyarrow", "ray"), require("pyarrow.parquet", "ray")


# ---------------------------------------------------------------------------------------------- the corpus plan


@dataclass(frozen=True)
class InputFile:
    """One file of a corpus, as the fingerprint records it."""

    path: str  # absolute, so that every worker of a cluster opens the same file
    format: str  # jsonl, tsv, lines or parquet
    size: int
    checksum: str


@dataclass(frozen=True)
class Unit:
    """A work unit: a fixed range of one input file, embedded into one shard.

    For a text file, ``start``/``stop`` are byte offsets that fall at line ends and ``first_line`` is the line
    number of the first line (as :func:`~causal2vec.search.corpus.read_corpus` counts lines); for a Parquet file
    they are row numbers within one row group, and ``first_line`` is the first row's number (from 1).
    """

    input: int  # position of the file in the corpus
    part: int  # position of the unit among the file's units
    start: int
    stop: int
    first_line: int

    @property
    def shard_name(self) -> str:
        """The file name of the unit's shard, ``part-<input>-<part>.parquet``."""
        return f"part-{self.input:05d}-{self.part:06d}.parquet"


@dataclass(frozen=True)
class CorpusPlan:
    """The files of a corpus and their work units; the same files and unit size always give the same units."""

    files: tuple[InputFile, ...]
    unit_size: int  # lines (text files) or rows (Parquet) per unit
    units: tuple[Unit, ...]

    def fingerprint(self) -> dict[str, Any]:
        """What ``shards.json`` records of the corpus: each file's path, format, size and checksum, the unit size."""
        return {"unit_size": self.unit_size, "files": [dataclasses.asdict(f) for f in self.files]}


def corpus_files(corpus: str | Path | Sequence[str | Path], fmt: InputFormat = "auto") -> list[Path]:
    """The files of a corpus given as one file, a folder, a glob pattern (``data/*.jsonl``), or a list of those.

    A folder contributes its files with a corpus suffix (:data:`CORPUS_SUFFIXES`, any file when ``fmt`` is given),
    recursively, hidden ones excepted. The result is sorted within each item and free of repeats.

    Raises:
        FileNotFoundError: If an item matches no file, naming it.
    """
    items = [corpus] if isinstance(corpus, str | Path) else list(corpus)
    found: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_file():
            matches = [path]
        elif path.is_dir():
            matches = sorted(
                p for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and (fmt != "auto" or p.suffix.lower() in CORPUS_SUFFIXES)
            )  # fmt: skip
        else:
            matches = sorted(Path(p) for p in glob.glob(str(item), recursive=True) if Path(p).is_file())
        if not matches:
            raise FileNotFoundError(f"corpus {item}: no such file, no corpus file in that folder, or no match")
        found += [p.absolute() for p in matches]
    return list(dict.fromkeys(found))


def plan_corpus(
    corpus: str | Path | Sequence[str | Path],
    fmt: InputFormat = "auto",
    unit_size: int = 10_000,
    *,
    show_progress_bar: bool | None = None,
) -> CorpusPlan:
    """Read every file of a corpus once: its checksum and the boundaries of its work units.

    Args:
        corpus: One file, a folder or a glob pattern, or a list of them (see :func:`corpus_files`).
        fmt: ``"auto"`` (from each file's suffix: ``.parquet``, ``.jsonl``, ``.tsv``, else lines), or one format.
        unit_size: Lines (or Parquet rows) per work unit, hence per shard.
        show_progress_bar: Show the bytes read; ``None`` follows the log level.

    Raises:
        ValueError: For an unknown format or a bad ``unit_size``.
        FileNotFoundError: If the corpus names no file.
    """
    if fmt not in INPUT_FORMATS:
        raise ValueError(f"corpus format {fmt!r} is not supported; choose one of {list(INPUT_FORMATS)}")
    check_int("unit_size", unit_size, minimum=1)
    paths = corpus_files(corpus, fmt)
    files, units = [], []
    total = sum(p.stat().st_size for p in paths)
    with tqdm(total=total, unit="B", unit_scale=True, desc="Reading the corpus",
              disable=not show_progress(show_progress_bar)) as bar:  # fmt: skip
        for number, path in enumerate(paths):
            file_format = fmt if fmt != "auto" else _detect_format(path)
            scan = _scan_parquet if file_format == "parquet" else _scan_lines
            checksum, ranges = scan(path, unit_size)
            files.append(InputFile(str(path), file_format, path.stat().st_size, checksum))
            units += [Unit(number, part, *bounds) for part, bounds in enumerate(ranges)]
            bar.update(path.stat().st_size)
    logger.info("corpus: %d files, %d work units of up to %d lines", len(files), len(units), unit_size)
    return CorpusPlan(tuple(files), unit_size, tuple(units))


def _detect_format(path: Path) -> str:
    """A file's format from its suffix: ``.parquet``, else as :func:`~causal2vec.search.corpus.detect_format` says."""
    return "parquet" if path.suffix.lower() == ".parquet" else detect_format(path)


def _scan_lines(path: Path, unit_size: int) -> tuple[str, list[tuple[int, int, int]]]:
    r"""A text file's checksum and its units ``(start byte, stop byte, first line)``, ``unit_size`` lines each.

    Units end after a ``\n``. Line numbers count lines as the corpus reader does (universal newlines: a lone
    ``\r`` ends a line too), so a unit's documents name the same ``file:line`` as when the whole file is read.
    """
    import xxhash

    digest, ranges = xxhash.xxh3_128(), []
    start, first, offset, lines, in_unit = 0, 1, 0, 0, 0
    with open(path, "rb") as f:
        for line in f:
            digest.update(line)
            offset += len(line)
            lines += 1 + (line.count(b"\r") - line.count(b"\r\n") if b"\r" in line else 0)
            in_unit += 1
            if in_unit == unit_size:
                ranges.append((start, offset, first))
                start, first, in_unit = offset, lines + 1, 0
    if offset > start:
        ranges.append((start, offset, first))
    return f"{CHECKSUM_ALGORITHM}:{digest.hexdigest()}", ranges


def _scan_parquet(path: Path, unit_size: int) -> tuple[str, list[tuple[int, int, int]]]:
    """A Parquet file's checksum and its units ``(start row, stop row, first row)``, within row groups."""
    _, pq = _arrow()
    try:
        metadata = pq.ParquetFile(path).metadata
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError … for a file that is not Parquet
        raise ValueError(f"corpus file {path} is not a readable Parquet file ({err})") from err
    ranges, row = [], 0
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        ranges += [(row + a, row + min(a + unit_size, rows), row + a + 1) for a in range(0, rows, unit_size)]
        row += rows
    return file_checksum(path), ranges


def read_unit(file: InputFile, unit: Unit) -> Iterator[Document]:
    """The documents of one work unit, read with the rules of ``causal2vec index`` (see :mod:`.search.corpus`).

    Parquet rows follow the JSONL rules (a string ``text``; ``id``, ``title``, ``metadata`` (a struct), other
    columns into the metadata); a null cell counts as an absent field.

    Raises:
        ValueError: For a malformed record, naming the file and the line (or row).
    """
    if file.format != "parquet":
        fmt = cast("CorpusFormat", file.format)
        yield from read_corpus_part(file.path, fmt, unit.start, unit.stop, unit.first_line)
        return
    _, pq = _arrow()
    parquet = pq.ParquetFile(file.path)
    group, offset = 0, 0
    while offset + parquet.metadata.row_group(group).num_rows <= unit.start:
        offset += parquet.metadata.row_group(group).num_rows
        group += 1
    table = parquet.read_row_group(group).slice(unit.start - offset, unit.stop - unit.start)
    for number, record in enumerate(table.to_pylist(), start=unit.first_line):
        yield as_document({k: v for k, v in record.items() if v is not None}, f"{file.path}:row {number}")


# ---------------------------------------------------------------------------------------------- shards


@dataclass(frozen=True)
class ShardRecord:
    """One shard as ``shards.json`` lists it."""

    file: str
    unit: Unit
    count: int  # documents
    checksum: str

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> ShardRecord:
        """Read :meth:`to_dict`'s data back.

        Raises:
            ValueError: If it is not such a record, naming ``where``.
        """
        try:
            record = cls(data["file"], Unit(**data["unit"]), data["count"], data["checksum"])
        except (KeyError, TypeError) as err:
            raise ValueError(f"{where}: {data!r:.200} is not a shard record ({err!r})") from None
        if record.file != record.unit.shard_name or not isinstance(record.count, int) or record.count < 0:
            raise ValueError(f"{where}: shard record {data!r:.200} is inconsistent")
        return record


@dataclass
class Shard:
    """The content of one shard: its documents and their ``(count, dim)`` float32 embeddings, row for row."""

    record: ShardRecord
    documents: list[Document]
    embeddings: np.ndarray


def write_shard(folder: Path, unit: Unit, documents: Sequence[Document], embeddings: np.ndarray) -> ShardRecord:
    """Write one unit's documents and embeddings as a Parquet shard (aside, flushed, renamed); returns its record.

    Raises:
        ValueError: If the embeddings are not ``(len(documents), dim)``.
    """
    pa, pq = _arrow()
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or len(embeddings) != len(documents):
        raise ValueError(f"embeddings have shape {embeddings.shape}; expected ({len(documents)}, dim)")
    metadata = [json.dumps(d.metadata, ensure_ascii=False) if d.metadata else None for d in documents]
    table = pa.table({
        "id": pa.array([d.id for d in documents], pa.string()),
        "title": pa.array([d.title for d in documents], pa.string()),
        "text": pa.array([d.text for d in documents], pa.string()),
        "metadata": pa.array(metadata, pa.string()),
        "source": pa.array([d.source for d in documents], pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1)), embeddings.shape[1]),
    })  # fmt: skip
    path = Path(folder) / unit.shard_name
    write_atomic(path, lambda f: pq.write_table(table, f), binary=True)
    return ShardRecord(unit.shard_name, unit, len(documents), file_checksum(path))


def read_shard(
    path: Path, record: ShardRecord, dim: int, *, columns: Sequence[str] | None = None, verify: bool = True
) -> Any:
    """The Arrow table of a shard (only ``columns`` when given), its checksum verified first unless ``verify=False``.

    Raises:
        FileNotFoundError: If the shard is missing.
        ValueError: If its checksum, row count or embedding type differs from its record, naming the file.
    """
    _, pq = _arrow()
    verify_checksum(path, record.checksum if verify else None, "shard")
    try:
        table = pq.read_table(path, columns=None if columns is None else list(columns))
    except Exception as err:  # pyarrow's errors (ArrowInvalid …) for a file that is not what was written
        raise ValueError(f"shard {path} is corrupt: {err}") from err
    embedding = table.schema.field("embedding").type if "embedding" in table.column_names else None
    if table.num_rows != record.count or (embedding is not None and getattr(embedding, "list_size", None) != dim):
        raise ValueError(
            f"shard {path} is corrupt: {table.num_rows} rows of {embedding}; its record says {record.count} rows "
            f"of {dim}-d embeddings"
        )
    return table


def shard_embeddings(table: Any, dim: int) -> np.ndarray:
    """The ``(n, dim)`` float32 embeddings of a shard's table."""
    column = table.column("embedding").combine_chunks()
    return column.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)


def shard_documents(table: Any) -> list[Document]:
    """The documents of a shard's table, as they were read from the corpus."""
    columns = {name: table.column(name).to_pylist() for name in ("id", "title", "text", "metadata", "source")}
    return [
        Document(text, doc_id, title, json.loads(meta) if meta else {}, source)
        for doc_id, title, text, meta, source in zip(*columns.values(), strict=True)
    ]


# ---------------------------------------------------------------------------------------------- the folder


@dataclass
class ShardManifest:
    """``shards.json``: which model embedded which corpus, and the shards written so far."""

    model: ModelIdentity
    dim: int
    corpus: dict[str, Any]  # CorpusPlan.fingerprint()
    units: int  # work units of the corpus: the folder is complete when every one has its shard
    shards: list[ShardRecord] = dataclasses.field(default_factory=list)
    embedding_dtype: str = "float32"  # how the vectors are stored; model.precision is what computed them
    created: str = ""
    updated: str = ""
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON-ready data, shards in corpus order."""
        shards = sorted(self.shards, key=lambda r: (r.unit.input, r.unit.part))
        data = dataclasses.asdict(self) | {"model": self.model.to_dict(), "shards": [r.to_dict() for r in shards]}
        return data | {"count": sum(r.count for r in shards), "complete": len(shards) == self.units}

    @classmethod
    def read(cls, path: Path) -> ShardManifest:
        """Read and check ``path`` (a ``shards.json``).

        Raises:
            FileNotFoundError: If it is missing.
            ValueError: If it is not a shard manifest this version reads, naming the file and what is wrong.
        """
        data = read_json_object(path, "shard manifest")
        version = data.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(f"{path} has format_version {version!r}; this causal2vec reads up to {FORMAT_VERSION}")
        try:
            manifest = cls(
                ModelIdentity.from_dict(data["model"], str(path)), data["dim"], data["corpus"], data["units"],
                [ShardRecord.from_dict(r, str(path)) for r in data["shards"]], data.get("embedding_dtype", "float32"),
                data.get("created", ""), data.get("updated", ""), version,
            )  # fmt: skip
        except KeyError as err:
            raise ValueError(f"corrupt shard manifest {path}: it lacks {err}") from None
        if not (isinstance(manifest.dim, int) and isinstance(manifest.units, int)):
            raise ValueError(f"corrupt shard manifest {path}: dim and units must be integers")
        if manifest.embedding_dtype != "float32":
            raise ValueError(f"{path}: embedding_dtype {manifest.embedding_dtype!r} is not supported (float32)")
        return manifest

    def write(self, folder: Path) -> None:
        """Replace ``folder/shards.json`` atomically: the commit point of every shard."""
        self.updated = datetime.now(UTC).isoformat(timespec="seconds")
        self.created = self.created or self.updated
        write_atomic(folder / SHARDS_JSON, lambda f: f.write(json.dumps(self.to_dict(), indent=1) + "\n"))


class ShardFolder:
    """A folder of embedding shards and its ``shards.json``.

    Open a finished folder with :meth:`open` to read it; a job starts or resumes one with :meth:`resume` (under its
    lock) and commits each new shard with :meth:`record`.
    """

    def __init__(self, path: Path, manifest: ShardManifest) -> None:
        self.path, self.manifest = path, manifest

    identity = property(lambda self: self.manifest.model, doc="The model identity that embedded every shard.")
    dim = property(lambda self: self.manifest.dim, doc="The embedding dimension.")
    count = property(lambda self: sum(r.count for r in self.manifest.shards), doc="Documents in the shards.")
    complete = property(lambda self: len(self.manifest.shards) == self.manifest.units, doc="Every unit is embedded.")

    @property
    def shards(self) -> list[ShardRecord]:
        """The shards' records, in corpus order."""
        return sorted(self.manifest.shards, key=lambda r: (r.unit.input, r.unit.part))

    @classmethod
    def open(cls, path: str | Path) -> ShardFolder:
        """Open a shard folder to read it.

        Raises:
            FileNotFoundError: If the folder or its ``shards.json`` is missing.
            ValueError: If ``shards.json`` is corrupt or names a file outside the folder.
        """
        path = Path(path).absolute()
        if not (path / SHARDS_JSON).is_file():
            raise FileNotFoundError(f"{path} is not a shard folder: {SHARDS_JSON} is missing")
        manifest = ShardManifest.read(path / SHARDS_JSON)
        for record in manifest.shards:
            member_path(path, record.file, "shard")
        return cls(path, manifest)

    @classmethod
    def resume(
        cls, path: str | Path, model: ModelIdentity, dim: int, plan: CorpusPlan, *, verify: bool = True
    ) -> ShardFolder:
        """Start a shard folder for ``plan`` embedded by ``model``, or resume the one at ``path``.

        Call it under the folder's lock: files this module writes that ``shards.json`` does not list are removed,
        and so are listed shards that are missing or fail their checksum (with a warning naming them), so that
        their units are embedded again.

        Raises:
            FileExistsError: If ``path`` exists and is not a shard folder.
            ValueError: If the folder holds another model's embeddings or another corpus's, naming both.
        """
        path = Path(path).absolute()
        if path.exists() and not (path / SHARDS_JSON).is_file() and (not path.is_dir() or any(path.iterdir())):
            raise FileExistsError(
                f"{path} exists and is not a shard folder (no {SHARDS_JSON}); refusing to write there"
            )
        if not (path / SHARDS_JSON).is_file():
            path.mkdir(parents=True, exist_ok=True)
            folder = cls(path, ShardManifest(model, dim, plan.fingerprint(), len(plan.units)))
            folder.manifest.write(path)
            return folder
        folder = cls.open(path)
        folder.check_job(model, dim, plan)
        folder._clean(verify)
        return folder

    def check_job(self, model: ModelIdentity, dim: int, plan: CorpusPlan) -> None:
        """Refuse to add shards of another model or another corpus to this folder.

        Raises:
            ValueError: Naming the folder's model (or corpus) and the job's.
        """
        ours = self.manifest
        if model != ours.model or dim != ours.dim:
            raise ValueError(
                f"{self.path} holds embeddings by model {ours.model.to_dict()} ({ours.dim}-d); this job embeds with "
                f"{model.to_dict()} ({dim}-d). Use a new output folder, or the folder's model"
            )
        self.check_corpus(plan)

    def check_corpus(self, plan: CorpusPlan) -> None:
        """Refuse to add shards of another corpus (or another unit size) to this folder.

        Raises:
            ValueError: Naming the first difference: the folder's file and the job's.
        """
        if plan.fingerprint() != self.manifest.corpus:
            difference = _corpus_difference(self.manifest.corpus, plan)
            raise ValueError(
                f"{self.path} was embedded from another corpus: {difference}. Use a new output folder, or the "
                "folder's corpus unchanged"
            )

    def _clean(self, verify: bool) -> None:
        """Remove unlisted and temporary files of this module, and listed shards that are missing or corrupt."""
        listed = {r.file for r in self.manifest.shards}
        for entry in self.path.iterdir():
            ours = _SHARD_TMP.fullmatch(entry.name) or (_SHARD_FILE.fullmatch(entry.name) and entry.name not in listed)
            if ours and entry.is_file() and not entry.is_symlink():
                logger.info("removing %s, left by an interrupted job", entry)
                entry.unlink()
        kept = []
        bar = tqdm(self.manifest.shards, desc="Verifying shards", unit="shard", disable=not show_progress(None))
        for record in bar:
            try:
                if verify:
                    verify_checksum(self.path / record.file, record.checksum, "shard")
                elif not (self.path / record.file).is_file():
                    raise FileNotFoundError(f"shard {self.path / record.file} is missing")
                kept.append(record)
            except (FileNotFoundError, ValueError) as err:
                logger.warning("%s; its unit is embedded again", err)
                (self.path / record.file).unlink(missing_ok=True)
        if len(kept) != len(self.manifest.shards):
            self.manifest.shards = kept
            self.manifest.write(self.path)

    def pending(self, plan: CorpusPlan) -> list[Unit]:
        """The units of ``plan`` that have no shard yet."""
        done = {r.file for r in self.manifest.shards}
        return [unit for unit in plan.units if unit.shard_name not in done]

    def record(self, record: ShardRecord) -> None:
        """List a shard that was just written and commit ``shards.json``."""
        self.manifest.shards = [r for r in self.manifest.shards if r.file != record.file] + [record]
        self.manifest.write(self.path)

    def check_complete(self) -> None:
        """Refuse a folder whose job has not finished.

        Raises:
            ValueError: Naming how many units are embedded, and how to finish.
        """
        if not self.complete:
            raise ValueError(
                f"{self.path} is incomplete: {len(self.manifest.shards)} of {self.manifest.units} work units are "
                "embedded; run the same embed job again to finish it"
            )

    def iter_shards(self, *, verify: bool = True) -> Iterator[Shard]:
        """The shards in corpus order, one in memory at a time, each checksum-verified before it is read.

        Raises:
            FileNotFoundError: If a shard is missing.
            ValueError: If a shard is corrupt, naming it.
        """
        for record in self.shards:
            table = read_shard(self.path / record.file, record, self.dim, verify=verify)
            yield Shard(record, shard_documents(table), shard_embeddings(table, self.dim))

    def sample_embeddings(self, size: int, seed: int = 0) -> np.ndarray:
        """A uniform random sample of ``size`` embeddings drawn across all shards (all of them if there are fewer).

        The rows are chosen first, then each shard's embedding column is read once, so memory holds one shard's
        embeddings and the sample. Rows keep the corpus order.
        """
        total = self.count
        rng = np.random.default_rng(seed)
        rows = np.arange(total) if size >= total else np.sort(rng.choice(total, size, replace=False))
        parts, offset = [], 0
        for record in self.shards:
            wanted = rows[(rows >= offset) & (rows < offset + record.count)] - offset
            if len(wanted):
                table = read_shard(self.path / record.file, record, self.dim, columns=["embedding"])
                parts.append(shard_embeddings(table, self.dim)[wanted])
            offset += record.count
        return np.concatenate(parts) if parts else np.empty((0, self.dim), dtype=np.float32)


def _corpus_difference(recorded: dict[str, Any], plan: CorpusPlan) -> str:
    """How the job's corpus differs from the one a folder recorded: the unit size, or the first differing file."""
    theirs, ours = recorded.get("files", []), plan.fingerprint()["files"]
    if recorded.get("unit_size") != plan.unit_size:
        return f"the folder's unit size is {recorded.get('unit_size')} lines, this job's {plan.unit_size}"
    for position in range(max(len(theirs), len(ours))):
        a = theirs[position] if position < len(theirs) else None
        b = ours[position] if position < len(ours) else None
        if a != b:
            return f"file {position + 1} of the folder's corpus is {a}; this job's is {b}"
    return "the fingerprints differ"
