"""Embed a corpus on a Ray cluster into a shard folder (:mod:`causal2vec.shards`); the only module importing Ray.

``pip install 'causal2vec[ray]'``. The job, :func:`embed_to_shards`:

1. reads every corpus file once on the driver: its checksum and its work units (fixed ranges of lines or rows);
2. fixes the model identity (backend, precision, token budget) and checks it, and the corpus, against a folder
   being resumed;
3. runs ``map_batches`` over the units still missing, with a class UDF: one model per actor, loaded once through
   :func:`~causal2vec.backends.load_backend`; each call reads its unit with the library's own reader, embeds it in
   length-sorted batches and writes its shard;
4. lists each shard in ``shards.json`` as its result reaches the driver.

The output folder, the corpus and the model must be at paths that every node of the cluster sees (a shared file
system), and every node needs causal2vec installed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from causal2vec.backends import get_backend, load_backend
from causal2vec.encoding import encode_texts
from causal2vec.identity import ModelIdentity, precision_of
from causal2vec.runtime import auto_dtype, check_int, require, show_progress
from causal2vec.search.commit import WriterLock
from causal2vec.shards import (
    SHARDS_JSON,
    CorpusPlan,
    InputFile,
    InputFormat,
    ShardFolder,
    ShardManifest,
    ShardRecord,
    Unit,
    plan_corpus,
    read_unit,
    write_shard,
)

logger = logging.getLogger(__name__)

__all__ = ["EmbedReport", "actor_pool_arguments", "embed_to_shards"]

CORES_PER_CPU_ACTOR = 4  # default CPU pool: one actor per 4 cores (one process with 2 threads beat 2 actors of 1)


def _ray() -> Any:
    """Import Ray, or fail with the command that installs it."""
    return require("ray", "ray")


@dataclass(frozen=True)
class EmbedReport:
    """What :func:`embed_to_shards` did.

    Attributes:
        output: The shard folder.
        identity: The model identity every shard was embedded with.
        documents: Documents in the folder's shards.
        embedded: Documents embedded by this run.
        shards_written: Shards written by this run.
        shards_skipped: Shards already written and verified, kept.
        seconds: Wall time of the run.
    """

    output: Path
    identity: ModelIdentity
    documents: int
    embedded: int
    shards_written: int
    shards_skipped: int
    seconds: float


def embed_to_shards(
    corpus: str | Path | Sequence[str | Path],
    output: str | Path,
    *,
    model: str | Path | ModelIdentity = "default",
    backend: str = "auto",
    dtype: str = "auto",
    fmt: InputFormat = "auto",
    ray_address: str | None = None,
    actors: int | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    unit_size: int = 10_000,
    show_progress_bar: bool | None = None,
) -> EmbedReport:
    """Embed a corpus on Ray Data into a shard folder; a rerun resumes it, writing only the missing shards.

    ``corpus`` is a file, a folder, a glob (``"data/*.jsonl"``) or a list of them: JSONL, TSV, plain lines or
    Parquet (``fmt``: by suffix, or one for all), read with ``causal2vec index``'s document rules. ``model``,
    ``backend`` and ``dtype`` are :func:`~causal2vec.backends.load_backend`'s, decided once on the driver for every
    actor. ``ray_address``: ``None`` starts a local Ray instance on this machine's cores (stopped after), ``"auto"``
    or ``"ray://host:10001"`` joins a cluster, and a Ray already initialised here is used. ``actors``: one per GPU,
    else one per 4 CPU cores, which split the cores evenly. ``unit_size`` lines (Parquet rows) make a work unit and
    a shard. ``max_length`` is recorded with the identity; ``show_progress_bar`` shows Ray's bars.

    Returns:
        An :class:`EmbedReport`; the final log line gives documents, seconds and documents/s.

    Raises:
        ValueError: If ``output`` holds shards of another model or corpus (naming both), or for bad arguments.
        FileExistsError, IndexBusyError: If ``output`` is not a shard folder, or another job writes to it.
        ModuleNotFoundError: Without Ray, naming ``pip install 'causal2vec[ray]'``.
    """
    start, output = time.perf_counter(), Path(output).absolute()
    job = _Job(model, backend, dtype, ray_address, actors, batch_size, max_length, show_progress_bar)
    with WriterLock.acquire(output):
        plan = plan_corpus(corpus, fmt, unit_size, show_progress_bar=show_progress_bar)
        _check_corpus_early(output, plan)
        folder, identity, written, embedded, truncated = _embed_pending(job, output, plan)
    return _report(folder, identity, written, embedded, truncated, time.perf_counter() - start)


def _report(
    folder: ShardFolder, identity: ModelIdentity, written: int, embedded: int, truncated: int, seconds: float
) -> EmbedReport:
    """Log the job's final line (documents, seconds, documents/s) and say what it did."""
    if truncated:
        logger.warning("%d of %d documents were truncated to the token budget", truncated, embedded)
    logger.info(
        "embedded %d documents in %.1f s (%.1f documents/s) into %d new shards; %s holds %d documents in %d shards",
        embedded, seconds, embedded / seconds, written, folder.path, folder.count, len(folder.manifest.shards),
    )  # fmt: skip
    skipped = len(folder.manifest.shards) - written
    return EmbedReport(folder.path, identity, folder.count, embedded, written, skipped, seconds)

@dataclass(frozen=True)
class _Job:
    """The model and Ray settings of one :func:`embed_to_shards` call."""

    model: str | Path | ModelIdentity
    backend: str
    dtype: str
    ray_address: str | None
    actors: int | None
    batch_size: int
    max_length: int | None
    show_progress_bar: bool | None

    def __post_init__(self) -> None:
        check_int("batch_size", self.batch_size, minimum=1)
        if self.actors is not None:
            check_int("actors", self.actors, minimum=1)


def _embed_pending(job: _Job, output: Path, plan: CorpusPlan) -> tuple[ShardFolder, ModelIdentity, int, int, int]:
    """Resume ``output`` for ``plan`` and embed the units it lacks on Ray.

    Returns:
        The folder, the job's model identity, shards written, documents embedded, documents truncated.
    """
    ray = _ray()
    with _ray_session(ray, job.ray_address):
        gpus = int(ray.cluster_resources().get("GPU", 0))
        identity, dim = job_identity(job.model, job.backend, job.dtype, "cuda" if gpus else "cpu", job.max_length)
        folder = ShardFolder.resume(output, identity, dim, plan)
        todo = folder.pending(plan)
        embedded, truncated = 0, 0
        if todo:
            logger.info("%d of %d shards to embed (%d kept)", len(todo), len(plan.units), len(folder.manifest.shards))
            runs = _run(ray, plan, todo, folder, identity, gpus, job.actors, job.batch_size, job.show_progress_bar)
            for record, cut in runs:
                folder.record(record)
                embedded, truncated = embedded + record.count, truncated + cut
    return folder, identity, len(todo), embedded, truncated

def _check_corpus_early(output: Path, plan: CorpusPlan) -> None:
    """Refuse a changed corpus before Ray starts (the model is checked once the job's identity is known)."""
    if (output / SHARDS_JSON).is_file():
        ShardFolder(output, ShardManifest.read(output / SHARDS_JSON)).check_corpus(plan)


@contextmanager
def _ray_session(ray: Any, address: str | None) -> Iterator[None]:
    """Use the Ray this process has initialised, or start a local one (``None``) or join ``address``, then leave."""
    if ray.is_initialized():
        yield
        return
    if address is None:
        ray.init(include_dashboard=False)
    else:
        ray.init(address=address)
    try:
        yield
    finally:
        ray.shutdown()


def job_identity(
    model: str | Path | ModelIdentity, backend: str, dtype: str, device: str, max_length: int | None
) -> tuple[ModelIdentity, int]:
    """The identity every actor must load, and the dimension: the model is loaded once on the driver's CPU.

    ``dtype="auto"`` is resolved here for the actors' device type (``device``), so that actors on different
    machines cannot end up in different precisions; for a :class:`ModelIdentity` it is the one recorded.
    """
    if isinstance(model, str | Path) and Path(model).is_dir():
        model = str(Path(model).resolve())  # the same path on every node
    probe = load_backend(model, backend=backend, device="cpu", dtype=dtype)
    identity = probe.identity
    recorded = isinstance(model, ModelIdentity)  # then "auto" means the precision it records
    if dtype == "auto" and not recorded and get_backend(identity.backend).precisions:
        identity = dataclasses.replace(identity, precision=precision_of(auto_dtype("auto", device)))
    return identity.with_budget(max_length), int(probe.embedding_dim)


def actor_pool_arguments(size: int, version: str | None = None) -> dict[str, Any]:
    """The ``map_batches`` argument that asks for a pool of ``size`` actors, for the installed Ray (or ``version``).

    Ray 2.9 replaced ``compute=ActorPoolStrategy(size=n)`` with ``concurrency=n``, and 2.51 deprecated
    ``concurrency`` in favour of ``compute`` again.
    """
    ray = _ray()
    major, minor = (int(part) for part in (version or ray.__version__).split(".")[:2])
    if (2, 9) <= (major, minor) < (2, 51):
        return {"concurrency": size}
    return {"compute": ray.data.ActorPoolStrategy(size=size)}


def _run(
    ray: Any, plan: CorpusPlan, todo: list[Unit], folder: ShardFolder, identity: ModelIdentity, gpus: int,
    actors: int | None, batch_size: int, show_progress_bar: bool | None,
) -> Iterator[tuple[ShardRecord, int]]:  # fmt: skip
    """Embed ``todo`` on an actor pool; yields each shard's record and truncated count as it is written."""
    size, threads = pool_size(gpus, int(ray.cluster_resources().get("CPU", 1)), actors, len(todo))
    resources = {"num_gpus": 1} if gpus else {"num_cpus": threads}
    logger.info(
        "embedding on %d %s actors%s", size, "GPU" if gpus else "CPU", f", {threads} threads each" * bool(threads)
    )
    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars, context.raise_original_map_exception
    context.enable_progress_bars, context.raise_original_map_exception = show_progress(show_progress_bar), True
    # Work units, not Ray's readers: a unit's range, hence its shard's name, is fixed by the file, so a rerun finds
    # what is done, and each unit is read by the library's own reader, so the document rules are `causal2vec index`'s.
    units = ray.data.from_items(
        [{"unit": json.dumps(dataclasses.asdict(u))} for u in todo], override_num_blocks=len(todo)
    )
    embedded = units.map_batches(
        EmbedUnits, batch_size=1, **actor_pool_arguments(size), **resources,
        fn_constructor_kwargs={
            "identity": identity.to_dict(), "files": [dataclasses.asdict(f) for f in plan.files],
            "output": str(folder.path), "batch_size": batch_size, "device": "cuda" if gpus else "cpu",
            "threads": threads,
        },
    )  # fmt: skip
    try:
        for row in embedded.iter_rows():
            yield ShardRecord.from_dict(json.loads(row["shard"]), "an actor's result"), int(row["truncated"])
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, Exception):  # what the actor raised (a corpus error names its file:line)
            raise err.cause from err
        raise
    finally:
        context.enable_progress_bars, context.raise_original_map_exception = saved


class EmbedUnits:
    """The class UDF of :func:`embed_to_shards`: loads the model once per actor, then embeds one unit per call."""

    def __init__(
        self, identity: dict[str, Any], files: list[dict[str, Any]], output: str, batch_size: int, device: str,
        threads: int | None,
    ) -> None:  # fmt: skip
        if threads is not None:
            torch.set_num_threads(threads)
        self.identity = ModelIdentity.from_dict(identity, "the job's model identity")
        self.model = load_backend(self.identity, device=device)
        loaded = self.model.identity.with_budget(self.identity.max_length)
        if loaded != self.identity:
            raise RuntimeError(f"this worker loaded the model as {loaded.to_dict()}; the job embeds with {identity}")
        self.files = [InputFile(**f) for f in files]
        self.output, self.batch_size = Path(output), batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Embed the units of a batch (``{"unit": JSON}``) into shards; returns their records (``{"shard": JSON}``)."""
        done = [self.embed(Unit(**json.loads(str(text)))) for text in batch["unit"]]
        return {
            "shard": np.array([json.dumps(record.to_dict()) for record, _ in done], dtype=object),
            "truncated": np.array([truncated for _, truncated in done], dtype=np.int64),
        }

    def embed(self, unit: Unit) -> tuple[ShardRecord, int]:
        """Read, embed and write one unit; returns its shard's record and how many of its texts were truncated."""
        documents = list(read_unit(self.files[unit.input], unit))
        truncated: list[int] = []
        embeddings = encode_texts(
            self.model, [d.embedding_text() for d in documents], batch_size=self.batch_size, show_progress_bar=False,
            max_length=self.identity.max_length, on_truncated=lambda count, _: truncated.append(count),
        )  # fmt: skip
        return write_shard(self.output, unit, documents, embeddings), sum(truncated)


def pool_size(gpus: int, cpus: int, actors: int | None, units: int) -> tuple[int, int | None]:
    """The actor pool: how many actors, and for CPU actors the torch threads of each (``None`` for GPU actors).

    ``actors``, else one per GPU, else one per :data:`CORES_PER_CPU_ACTOR` cores; never more than the units. CPU
    actors share the cores evenly.
    """
    size = min(actors or gpus or max(1, cpus // CORES_PER_CPU_ACTOR), units)
    return size, None if gpus else max(1, cpus // size)
