"""Integrity of index writers: concurrent processes, corrupt files, stale handles, Ctrl-C and a full disk."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from causal2vec.search import IndexBusyError, SemanticIndex
from causal2vec.search import vectors as faiss_vectors
from causal2vec.search.docstore import DocumentStore
from causal2vec.search.ingest import TrainingSpill
from tests.helpers import HashEmbedder, assert_consistent, docs

ROOT = Path(__file__).resolve().parent.parent


class Writer:
    """A writer in another process (tests/writer_process.py), paused in flight until :meth:`release`."""

    def __init__(self, tmp_path: Path, mode: str, path: Path, n: int = 20) -> None:
        self.ready, self.gate = tmp_path / f"{mode}.ready", tmp_path / f"{mode}.gate"
        paths = [str(p) for p in (path, self.ready, self.gate)]
        command = [sys.executable, "-m", "tests.writer_process", mode, *paths, str(n)]
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_in_flight(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.process.poll() is not None:
                raise AssertionError(f"the writer exited early: {self.process.communicate()}")
            assert time.monotonic() < deadline, "the writer never got going"
            time.sleep(0.05)

    def release(self) -> tuple[int, str]:
        self.gate.touch()
        out, err = self.process.communicate(timeout=120)
        return self.process.returncode, out + err


def leftovers(folder: Path) -> list[str]:
    """Hidden files and folders next to and inside an index: temporary copies, spills, locks."""
    return sorted(p.name for p in [*folder.parent.glob(".*"), *folder.glob(".*")])


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "idx"
    SemanticIndex.build(path, HashEmbedder(), docs(40)).close()
    return path


# ---------------------------------------------------------------------- concurrent writers


@pytest.mark.parametrize("second", ["overwrite", "append", "delete", "compact", "build"])
def test_every_writer_waits_for_an_append_in_flight(tmp_path, base, second):
    writer = Writer(tmp_path, "append", base, n=30)
    writer.wait_in_flight()
    with pytest.raises(IndexBusyError, match=f"another process is writing to {base}"):
        if second in ("overwrite", "build"):
            SemanticIndex.build(base, HashEmbedder(), docs(240, prefix="x"), overwrite=second == "overwrite")
        else:
            index = SemanticIndex.load(base, model=HashEmbedder())
            index.delete(["d1"]) if second != "append" else index.add(docs(5, prefix="y"))
            index.compact() if second == "compact" else None
    code, output = writer.release()
    assert (code, output.split()[:2]) == (0, ["OK", "70"]), output
    assert_consistent(SemanticIndex.load(base), {f"d{i}" for i in range(40)} | {f"more{i}" for i in range(30)})


def test_an_append_waits_for_an_overwrite_in_flight(tmp_path, base):
    writer = Writer(tmp_path, "overwrite", base, n=24)
    writer.wait_in_flight()
    index = SemanticIndex.load(base, model=HashEmbedder())
    with pytest.raises(IndexBusyError, match="another process is writing"):
        index.add(docs(5, prefix="y"))
    code, output = writer.release()
    assert (code, output.split()[:2]) == (0, ["OK", "24"]), output
    assert_consistent(SemanticIndex.load(base), {f"new{i}" for i in range(24)})
    with pytest.raises(IndexBusyError, match="changed by another writer"):  # the old handle saw the old folder
        index.add(docs(5, prefix="y"))
    assert leftovers(base) == []


def test_two_first_builds_of_one_path(tmp_path):
    path = tmp_path / "fresh"
    writer = Writer(tmp_path, "build", path, n=16)
    writer.wait_in_flight()
    with pytest.raises(IndexBusyError, match="another process is writing"):
        SemanticIndex.build(path, HashEmbedder(), docs(5))
    code, output = writer.release()
    assert (code, output.split()[:2]) == (0, ["OK", "16"]), output
    with pytest.raises(FileExistsError, match="already exists"):
        SemanticIndex.build(path, HashEmbedder(), docs(5))
    assert_consistent(SemanticIndex.load(path), {f"new{i}" for i in range(16)})
    assert leftovers(path) == []


# ---------------------------------------------------------------------- stale handles and corrupt files


def test_a_long_lived_handle_reloads_after_another_process_deletes(tmp_path, base):
    reader = SemanticIndex.load(base, model=HashEmbedder())
    query = HashEmbedder().embed(["T3\ndocument number 3"])
    assert reader.search_vectors(query, k=10)[0][0].id == "d3"
    writer = Writer(tmp_path, "delete", base, n=10)  # deletes d0 … d9
    writer.wait_in_flight()
    writer.release()
    hits = reader.search_vectors(query, k=10)[0]
    assert len(hits) == 10 and not {h.id for h in hits} & {f"d{i}" for i in range(10)}
    assert reader.manifest.count == 30 and len(reader) == 30 and reader.get(["d3"]) == [None]


def test_a_long_lived_handle_follows_an_overwrite(tmp_path, base):
    reader = SemanticIndex.load(base, model=HashEmbedder())
    writer = Writer(tmp_path, "overwrite", base, n=12)
    writer.wait_in_flight()
    writer.release()
    hits = reader.search("T4\ndocument number 4", k=50)
    assert sorted(h.id for h in hits) == sorted(f"new{i}" for i in range(12))


def test_vector_file_overwritten_with_random_bytes_is_detected(base, tmp_path):
    reader = SemanticIndex.load(base, model=HashEmbedder())
    vectors = base / reader.manifest.vectors_file
    vectors.write_bytes(np.random.default_rng(0).bytes(vectors.stat().st_size))
    with pytest.raises(ValueError, match=rf"vector file {vectors} is corrupt: its checksum is xxh3_128:"):
        SemanticIndex.load(base)


# ---------------------------------------------------------------------- interrupted and failed writes


class Interrupting(HashEmbedder):
    """Ctrl-C arrives while the second batch is embedded."""

    def forward(self, rows):
        if len(self.calls) == 1:
            raise KeyboardInterrupt
        return super().forward(rows)


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat"])
def test_ctrl_c_during_an_append_changes_nothing(tmp_path, factory):
    path = tmp_path / "idx"
    SemanticIndex.build(path, HashEmbedder(), docs(200), factory=factory).close()
    index = SemanticIndex.load(path, model=Interrupting())
    with pytest.raises(KeyboardInterrupt):
        index.add(docs(100, prefix="more"), chunk_size=10, batch_size=10)
    assert leftovers(path) == [], "temporary files, a spill or the lock survived the interruption"
    assert_consistent(index, {f"d{i}" for i in range(200)})
    index.model = HashEmbedder()
    index.add(docs(5, prefix="later"))
    index.save()
    assert_consistent(SemanticIndex.load(path), {f"d{i}" for i in range(200)} | {f"later{i}" for i in range(5)})


def test_sigint_to_an_appending_process(tmp_path, base):
    writer = Writer(tmp_path, "append", base)
    writer.wait_in_flight()
    writer.process.send_signal(signal.SIGINT)
    writer.gate.touch()
    out, err = writer.process.communicate(timeout=60)
    assert (writer.process.returncode, out.strip()) == (130, "INTERRUPTED"), err
    assert leftovers(base) == []
    assert_consistent(SemanticIndex.load(base), {f"d{i}" for i in range(40)})


def disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def sqlite_full(*_args, **_kwargs):
    raise sqlite3.OperationalError("database or disk is full")


@pytest.mark.parametrize(
    ("target", "name", "failure", "match"),
    [
        (faiss_vectors, "write", disk_full, "No space left on device"),
        (TrainingSpill, "write", disk_full, "No space left on device"),
        (DocumentStore, "_next_vid", sqlite_full, "could not write the document store .* database or disk is full"),
    ],
    ids=["vector-file", "training-spill", "document-store"],
)
def test_a_full_disk_during_a_build_or_an_append_leaves_the_index_usable(tmp_path, monkeypatch, target, name, failure,
                                                                          match):  # fmt: skip
    path, factory = tmp_path / "idx", "IVF4,Flat"
    unnamed = [d["text"] for d in docs(300, prefix="u")]  # documents without ids draw new row numbers
    monkeypatch.setattr(target, name, failure)
    with pytest.raises(OSError, match=match):
        SemanticIndex.build(path, HashEmbedder(), unnamed, factory=factory)
    assert not path.exists() and leftovers(path) == []
    monkeypatch.undo()
    SemanticIndex.create(path, HashEmbedder(), factory=factory).close()  # untrained: an append spills first
    index = SemanticIndex.load(path, model=HashEmbedder())
    monkeypatch.setattr(target, name, failure)
    with pytest.raises(OSError, match=match):
        index.add(unnamed)
        index.save()
    monkeypatch.undo()
    index.discard()
    assert leftovers(path) == [] and len(SemanticIndex.load(path)) == 0
    index.add(docs(300))
    index.save()
    assert_consistent(SemanticIndex.load(path), {f"d{i}" for i in range(300)})


def test_pq_on_too_few_documents_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"factory 'IVF1,PQ96' cannot be trained on 20 documents .*'Flat'"):
        SemanticIndex.build(tmp_path / "idx", HashEmbedder(192), docs(20), factory="IVF1,PQ96")
    assert list(tmp_path.iterdir()) == []


def test_a_token_budget_without_room_for_the_query_instruction_is_refused_at_build(tmp_path, tiny_model):
    with pytest.raises(ValueError, match=r"the instruction takes \d+ LLM tokens, more than llm_max_length=8"):
        SemanticIndex.build(tmp_path / "idx", tiny_model, ["a document"], max_length=8)
    assert list(tmp_path.iterdir()) == []
