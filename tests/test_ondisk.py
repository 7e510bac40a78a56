"""On-disk IVF indexes built from a shard folder (written here directly, without Ray) of stand-in vectors.

They answer exactly like the in-memory IVF index with the same quantizer and ``nprobe``, reopen memory-mapped, detect
a truncated or corrupt ``.ivfdata`` file (sampled blocks at load, every byte in ``verify``), and refuse changes.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow.parquet")
faiss = pytest.importorskip("faiss")

from causal2vec.cli import main  # noqa: E402
from causal2vec.identity import ModelIdentity  # noqa: E402
from causal2vec.search import SemanticIndex  # noqa: E402
from causal2vec.search.manifest import Manifest  # noqa: E402
from causal2vec.shards import ShardFolder, plan_corpus, read_unit, write_shard  # noqa: E402
from tests.helpers import clustered  # noqa: E402

N, DIM, UNIT = 20_000, 64, 3_000  # a 5.3 MB .ivfdata file: more than the 64 blocks of 64 KiB sampled at load
FACTORY, SAMPLE = "IVF64,Flat", 4_000


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered(N, DIM, seed=5)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, vectors) -> Path:
    """A complete shard folder of N documents ``d<i>`` in 7 shards, embedded as ``vectors``."""
    root = tmp_path_factory.mktemp("shards")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": f"text {i}"}) + "\n" for i in range(N)))
    plan = plan_corpus(corpus, unit_size=UNIT, show_progress_bar=False)
    identity = ModelIdentity("stand-in", None, precision="fp32")
    folder = ShardFolder.resume(root / "shards", identity, DIM, plan)
    start = 0
    for unit in plan.units:
        documents = list(read_unit(plan.files[unit.input], unit))
        folder.record(write_shard(folder.path, unit, documents, vectors[start : start + len(documents)]))
        start += len(documents)
    assert start == N and folder.complete
    return folder.path


@pytest.fixture(scope="module")
def built(tmp_path_factory, shards) -> dict[str, Path]:
    """The same shards indexed in memory and on disk, trained on the same sample."""
    root = tmp_path_factory.mktemp("indexes")
    paths = {"memory": root / "memory.idx", "disk": root / "disk.idx"}
    for name, path in paths.items():
        SemanticIndex.build_from_shards(
            path, shards, factory=FACTORY, sample=SAMPLE, on_disk=name == "disk", show_progress_bar=False
        ).close()
    return paths


def hits(path: Path, queries: np.ndarray, nprobe: int) -> list[list[tuple[str, float]]]:
    with SemanticIndex.load(path) as index:
        return [[(h.id, h.score) for h in row] for row in index.search_vectors(queries, 10, nprobe=nprobe)]


def invlists_of(index: SemanticIndex):
    return faiss.downcast_InvertedLists(faiss.extract_index_ivf(index._vectors.index).invlists)


@pytest.mark.parametrize("nprobe", [1, 4, 64])
def test_on_disk_hits_equal_the_in_memory_index(built, vectors, nprobe):
    queries = clustered(50, DIM, seed=6)
    memory, disk = hits(built["memory"], queries, nprobe), hits(built["disk"], queries, nprobe)
    assert memory == disk, f"nprobe={nprobe}: {sum(a != b for a, b in zip(memory, disk, strict=True))} queries differ"
    if nprobe == 64:  # every list: exact search
        exact = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :10]
        assert [[d for d, _ in row] for row in disk] == [[f"d{i}" for i in row] for row in exact]


def test_both_share_one_quantizer_and_the_lists_are_memory_mapped(built):
    with SemanticIndex.load(built["memory"]) as memory, SemanticIndex.load(built["disk"]) as disk:
        centroids = [faiss.extract_index_ivf(i._vectors.index).quantizer.reconstruct_n(0, 64) for i in (memory, disk)]
        np.testing.assert_array_equal(*centroids)
        lists = invlists_of(disk)
        assert isinstance(lists, faiss.OnDiskInvertedLists) and lists.read_only
        assert isinstance(invlists_of(memory), faiss.ArrayInvertedLists)
        assert len(disk) == disk._vectors.index.ntotal == N


def test_the_manifest_records_the_ivfdata_file_and_round_trips(built):
    m = Manifest.read(built["disk"])
    path_size = (built["disk"] / m.ivfdata_file).stat().st_size
    recorded = (m.storage, m.ivfdata_file, m.ivfdata_size, m.factory)
    assert recorded == ("on_disk", "vectors.1.ivfdata", path_size, FACTORY)
    assert m.ivfdata_checksum.startswith("xxh3_128:") and m.ivfdata_sampled_checksum.startswith("xxh3_128-sampled:")
    data = dataclasses.asdict(m)
    assert Manifest.from_dict(json.loads(json.dumps(data)), built["disk"]) == m
    names = sorted(p.name for p in built["disk"].iterdir())
    assert names == ["documents.sqlite", "manifest.json", "vectors.1.faiss", "vectors.1.ivfdata"]  # no parts left
    older = {k: v for k, v in data.items() if not k.startswith(("storage", "ivfdata"))}
    assert Manifest.from_dict(older, built["disk"]).storage == Manifest.read(built["memory"]).storage == "memory"


def test_a_moved_or_copied_index_opens_its_own_ivfdata(built, tmp_path):
    queries = clustered(5, DIM, seed=7)
    moved = tmp_path / "moved.idx"
    shutil.copytree(built["disk"], moved)
    with SemanticIndex.load(moved) as index:
        assert hits(moved, queries, 8) == hits(built["disk"], queries, 8)
        index.save(tmp_path / "copy.idx")
    (moved / "vectors.1.ivfdata").write_bytes(b"")  # the copy must not read the folder it was copied from
    assert hits(tmp_path / "copy.idx", queries, 8) == hits(built["disk"], queries, 8)


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_a_truncated_or_corrupt_ivfdata_is_detected_and_named(built, tmp_path):
    copy = tmp_path / "bad.idx"
    shutil.copytree(built["disk"], copy)
    ivfdata = copy / "vectors.1.ivfdata"
    size = ivfdata.stat().st_size
    step = (size - 65536) / 63  # the load samples 64 blocks of 64 KiB at round(i * step)
    assert step > 65536 + 2
    flip(ivfdata, round(31 * step) + 65536 + 1)  # between two sampled blocks: unseen at load
    with SemanticIndex.load(copy) as index, pytest.raises(ValueError, match=rf"list file {ivfdata} is corrupt"):
        index.verify()
    assert main(["verify", "--index", str(copy)]) == 2
    assert main(["verify", "--index", str(built["disk"])]) == 0
    flip(ivfdata, 10)  # in the first block
    with pytest.raises(ValueError, match=rf"{ivfdata} is corrupt: a checksum of its sampled blocks"):
        SemanticIndex.load(copy)
    with open(ivfdata, "r+b") as f:
        f.truncate(size - 100)
    with pytest.raises(ValueError, match=rf"{ivfdata} is truncated: it holds {size - 100} bytes, {size} were"):
        SemanticIndex.load(copy)
    ivfdata.unlink()
    with pytest.raises(FileNotFoundError, match=str(ivfdata)):
        SemanticIndex.load(copy)


def test_appending_deleting_and_compacting_are_refused(built, vectors, tmp_path):
    path = tmp_path / "ro.idx"
    shutil.copytree(built["disk"], path)
    before = Manifest.read(path)
    with SemanticIndex.load(path) as index:
        with pytest.raises(ValueError, match=r"stored on disk .* --from-shards SHARDS .* --on-disk --overwrite"):
            index.add([{"id": "new", "text": "new"}], embeddings=vectors[:1])
        with pytest.raises(ValueError, match="read only: adding, deleting and compacting are not supported"):
            index.delete(["d1"])
        index.compact()  # nothing to compact: no tombstones
        index.save()
        assert len(index) == N and index.get(["d1"])[0] is not None
    assert main(["delete", "--index", str(path), "d1"]) == 2
    assert Manifest.read(path) == before


@pytest.mark.parametrize(
    ("factory", "options", "message"),
    [
        ("Flat", {}, "needs an IVF factory"),
        ("HNSW32", {}, "needs an IVF factory"),
        ("IVF16,Flat,RFlat", {}, "needs an IVF factory whose vectors all live in its inverted lists"),
        (FACTORY, {"on_duplicate": "replace"}, "on_duplicate='replace' .* is not supported with on_disk=True"),
    ],
)
def test_factories_and_options_an_on_disk_index_cannot_hold_are_refused(shards, tmp_path, factory, options, message):
    with pytest.raises(ValueError, match=message):
        SemanticIndex.build_from_shards(tmp_path / "x.idx", shards, factory=factory, on_disk=True, **options)
    assert list(tmp_path.iterdir()) == []


def test_the_command_line_builds_an_on_disk_index(shards, built, tmp_path, capsys):
    path = tmp_path / "cli.idx"
    argv = ["index", "--from-shards", str(shards), "--index", str(path), "--factory", FACTORY, "--quiet"]
    assert main([*argv, "--sample", str(SAMPLE), "--on-disk"]) == 0
    assert f"indexed {N} documents from {shards}" in capsys.readouterr().out
    assert Manifest.read(path).storage == "on_disk"
    queries = clustered(5, DIM, seed=8)
    assert hits(path, queries, 4) == hits(built["memory"], queries, 4)
    assert main(["verify", "--index", str(path)]) == 0
    assert "verified vectors.1.faiss, vectors.1.ivfdata" in capsys.readouterr().out
    assert main(["index", "--corpus", str(shards / "shards.json"), "--index", str(tmp_path / "y"), "--on-disk"]) == 2


def test_a_pca_transformed_pq_index_on_disk_answers_like_in_memory(shards, tmp_path):
    factory, queries = "PCAR32,IVF16,PQ8", clustered(20, DIM, seed=9)
    for name in ("memory", "disk"):
        SemanticIndex.build_from_shards(
            tmp_path / name, shards, factory=factory, sample=SAMPLE, on_disk=name == "disk", show_progress_bar=False
        ).close()
    assert Manifest.read(tmp_path / "disk").storage == "on_disk"
    assert hits(tmp_path / "memory", queries, 4) == hits(tmp_path / "disk", queries, 4)
