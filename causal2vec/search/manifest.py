"""An index's record, ``manifest.json``: what the index holds and which model embedded it.

The manifest names the committed generation's vector file and its checksum, counts the documents, and stores the
:class:`~causal2vec.identity.ModelIdentity` of the model that embedded them. An index stored on disk (built with
``on_disk=True``, see :mod:`causal2vec.search.ondisk`) also names its ``.ivfdata`` file, with its size and checksums.
Replacing it commits a write (the protocol is in :mod:`causal2vec.search.commit`).

Format 2 stores the identity as one object. Format 1 (causal2vec 0.1) stored the model's name, a config hash and a
settings dict with the dtype, backend, precision and token budget; :meth:`Manifest.read` reads it into the new form,
and the next commit writes format 2.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from causal2vec.files import write_atomic
from causal2vec.identity import ModelIdentity

if TYPE_CHECKING:
    from causal2vec.encoding import EmbeddingBackend

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
DOCUMENTS = "documents.sqlite"


@dataclass
class Manifest:
    """The description of an index folder, saved as ``manifest.json``; replacing it commits a write."""

    dim: int  # embedding dimension
    factory: str  # FAISS factory string, e.g. "Flat", "HNSW32", "IVF1024,PQ96"
    model: ModelIdentity  # the model that embedded the documents, with the token budget it used
    metric: str = "inner_product"  # on L2-normalised vectors: cosine similarity
    generation: int = 0  # the committed generation (see causal2vec.search.docstore)
    count: int = 0  # documents in the committed generation
    tombstones: int = 0  # vectors of deleted documents still in an HNSW index (searches skip them)
    vectors_file: str = "vectors.0.faiss"
    vectors_checksum: str | None = None  # of vectors_file; None in indexes written before checksums were recorded
    storage: str = "memory"  # "memory": vectors_file holds everything; "on_disk": IVF lists in ivfdata_file
    ivfdata_file: str | None = None  # on_disk: the inverted lists, memory-mapped when searching (read only)
    ivfdata_size: int | None = None  # its size in bytes, checked at every load
    ivfdata_sampled_checksum: str | None = None  # of 64 evenly spaced 64 KiB blocks of it, checked at every load
    ivfdata_checksum: str | None = None  # of the whole file, checked by SemanticIndex.verify (causal2vec verify)
    index_id: str = ""  # random, set when the folder is built: a replaced folder has another one
    created: str = ""
    updated: str = ""
    format_version: int = FORMAT_VERSION

    @classmethod
    def new(cls, dim: int, factory: str, model: ModelIdentity) -> Manifest:
        """The manifest of a new, empty index of ``model``'s embeddings."""
        now = _now()
        return cls(dim, factory, model, index_id=uuid.uuid4().hex, created=now, updated=now)

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        """Read and check ``folder/manifest.json`` (format 1 is read into format 2's form).

        Raises:
            FileNotFoundError: If the folder or its manifest is missing.
            ValueError: If the manifest is not valid JSON, lacks fields, or comes from a newer format.
        """
        if not folder.is_dir():
            raise FileNotFoundError(f"index folder {folder} does not exist")
        path = folder / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a semantic index: {MANIFEST} is missing")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"the index manifest {path} is corrupt ({err})") from err
        if not isinstance(data, dict):
            raise ValueError(f"the index manifest {path} is corrupt: expected a JSON object")
        return cls.from_dict(data, path)

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path) -> Manifest:
        """A manifest from the JSON object read from ``path`` (format 1 or 2).

        Raises:
            ValueError: If it comes from a newer format or lacks fields, naming ``path``.
        """
        version = data.get("format_version", 1)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(
                f"{path} has format_version {version}; this causal2vec reads up to {FORMAT_VERSION}. Upgrade causal2vec"
            )
        if version < 2:
            data = upgrade_format_1(data, path)
        fields = dataclasses.fields(cls)
        required = {f.name for f in fields if f.default is f.default_factory is dataclasses.MISSING}
        if missing := sorted(required - data.keys()):
            raise ValueError(f"the index manifest {path} is corrupt: it lacks {missing}")
        values = {k: v for k, v in data.items() if k in {f.name for f in fields}}
        return cls(**values | {"model": ModelIdentity.from_dict(data["model"], f"the index manifest {path}")})

    def write(self, folder: Path) -> None:
        """Replace ``folder/manifest.json`` atomically (written aside, flushed, renamed): the commit point."""
        self.updated = _now()
        self.format_version = FORMAT_VERSION
        data = dataclasses.asdict(self)
        write_atomic(folder / MANIFEST, lambda f: f.write(json.dumps(data, indent=2) + "\n"))

    def next_generation(self) -> Manifest:
        """A copy for generation ``g + 1``, naming its vector file (its checksum is set once it is written)."""
        generation = self.generation + 1
        return dataclasses.replace(
            self, generation=generation, vectors_file=f"vectors.{generation}.faiss", vectors_checksum=None
        )


def upgrade_format_1(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """Format 1's model fields (``model``, ``model_config_sha256``, ``model_settings``) as format 2's identity.

    Format 1's settings held ``dtype`` (torch's name), ``backend`` (absent: torch), ``precision`` (the torch dtype
    or an ONNX export's ``fp32``/``fp16``/``int8``) and ``max_length``; the oldest held ``encoder_max_length`` and
    ``llm_max_length`` instead, of which the smaller was the budget.

    Raises:
        ValueError: If the model fields are not of format 1's types, naming ``path``.
    """
    settings = data.get("model_settings") or {}
    if not isinstance(settings, dict) or "model" not in data:
        raise ValueError(f"the index manifest {path} is corrupt: format 1 needs 'model' and a 'model_settings' object")
    if "max_length" in settings:
        budget = settings["max_length"]
    else:
        budgets = [settings[k] for k in ("encoder_max_length", "llm_max_length") if k in settings]
        budget = min(budgets) if budgets else None
    identity = {
        "name": data["model"],
        "config_sha256": data.get("model_config_sha256"),
        "backend": settings.get("backend", "torch"),
        "precision": settings.get("precision", settings.get("dtype")),
        "max_length": budget,
    }
    rest = {k: v for k, v in data.items() if k not in ("model", "model_config_sha256", "model_settings")}
    return rest | {"model": identity, "format_version": 2}


def check_precision(manifest: Manifest, model: EmbeddingBackend, where: Path) -> None:
    """Refuse to add documents embedded by another backend or precision than the index's.

    Raises:
        ValueError: Naming both, and how to proceed.
    """
    theirs, ours = manifest.model, model.identity
    if theirs.precision is not None and (ours.backend, ours.precision) != (theirs.backend, theirs.precision):
        raise ValueError(
            f"the index {where} was embedded by {theirs.describe()}, and this model is {ours.backend} in "
            f"{ours.precision}: its vectors would differ slightly from the stored ones. Use the same backend "
            f"and precision, or force it (add(..., force=True), --force)"
        )


def check_model(manifest: Manifest, model: EmbeddingBackend, where: Path) -> None:
    """Check that ``model`` can embed queries for the index at ``where``; warn if its config differs.

    Raises:
        ValueError: If its dimension differs from the index's, naming both and the model that built the index.
    """
    dim = int(model.embedding_dim)
    if dim != manifest.dim:
        raise ValueError(
            f"the model embeds in {dim} dimensions but the index {where} holds {manifest.dim}-dimensional "
            f"vectors (built with model {manifest.model.name!r}); use that model or rebuild the index"
        )
    ours, theirs = model.identity, manifest.model  # the identity hashes the config: computed once
    if None not in (ours.config_sha256, theirs.config_sha256) and ours.config_sha256 != theirs.config_sha256:
        logger.warning(
            "model %r has a different config from the one that embedded this index's documents (%r); "
            "scores may be meaningless", ours.name, theirs.name,
        )  # fmt: skip


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
