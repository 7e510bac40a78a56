"""SemanticIndex against brute force, through appends, deletes, crashes and bad input."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

from causal2vec.encoding import EmbeddingBackend
from causal2vec.search import IndexBusyError, SemanticIndex
from causal2vec.search import vectors as faiss_index
from causal2vec.search.corpus import Document
from causal2vec.search.ingest import TrainingSpill
from causal2vec.search.manifest import Manifest
from tests.helpers import HashEmbedder, assert_consistent, clustered, docs


def exact_top_k(queries: np.ndarray, base: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ base.T), axis=1, kind="stable")[:, :k]


# ---------------------------------------------------------------------- brute force


def test_flat_returns_exactly_the_numpy_top_k(tmp_path, tiny_model, corpus):
    records = [{"id": f"bbc{i}", "text": text} for i, text in enumerate(corpus)]
    index = SemanticIndex.build(tmp_path / "idx", tiny_model, records, factory="Flat", chunk_size=25)
    queries = ["interest rates and inflation", "a football club signs a striker", "film awards", "mobile phones"]
    got = index.search(queries, k=10)
    doc_emb, query_emb = tiny_model.encode_document(corpus), tiny_model.encode_query(queries)
    expected = exact_top_k(query_emb, doc_emb, 10)
    scores = query_emb @ doc_emb.T
    for q, hits in enumerate(got):
        assert [h.id for h in hits] == [f"bbc{j}" for j in expected[q]], f"query {queries[q]!r}"
        np.testing.assert_allclose([h.score for h in hits], scores[q, expected[q]], atol=1e-5)
        assert hits[0].text == corpus[expected[q][0]]


@pytest.mark.parametrize(
    ("factory", "params"),
    [("HNSW32", {"ef_search": 64}), ("IVF64,Flat", {"nprobe": 16}), ("IVF64,PQ8,RFlat", {"nprobe": 16})],
)
def test_approximate_indexes_reach_recall_095(tmp_path, factory, params):
    base, queries = clustered(5000, 48, seed=0), clustered(200, 48, seed=1)
    index = SemanticIndex.create(tmp_path / "idx", HashEmbedder(48), factory=factory)
    index.add([Document(text=f"v{i}", id=str(i)) for i in range(len(base))], embeddings=base, chunk_size=700)
    index.save()
    hits = index.search_vectors(queries, k=10, **params)
    truth = exact_top_k(queries, base, 10)
    recall = np.mean([len({int(h.id) for h in row} & set(t.tolist())) / 10 for row, t in zip(hits, truth, strict=True)])
    assert recall >= 0.95, f"{factory} {params}: recall@10 = {recall:.3f}"


def test_pq_skips_polysemous_training_and_refinement_goes_deep():
    # Both indexes stay referenced: the parts FAISS hands out die with their index.
    ivf_pq, refined = faiss_index.new_index("IVF8,PQ4", 16), faiss_index.new_index("IVF8,PQ4,RFlat", 16)
    assert faiss.downcast_index(faiss_index.ivf_of(ivf_pq)).do_polysemous_training is False
    assert faiss_index.refine_of(refined).k_factor == 16


def test_ivf_is_trained_on_a_uniform_sample_of_the_stream(tmp_path):
    index = faiss_index.new_index("IVF16,Flat", 4)
    spill = TrainingSpill(tmp_path, index, 4, seed=0)
    spill.sample = np.empty((1000, 4), dtype=np.float32)
    for start in range(0, 20_000, 512):  # vectors carry their position, so the sample shows where it came from
        rows = np.arange(start, min(start + 512, 20_000), dtype=np.float32)
        spill.write(np.repeat(rows[:, None], 4, axis=1), rows.astype(np.int64))
    spill.close()
    positions = spill.sample[:, 0]
    assert len(np.unique(positions)) == 1000
    # A uniform sample of 0..19999 has mean ~10000 (sd ~180) and every fifth of the stream holds ~200 rows.
    assert abs(positions.mean() - 10_000) < 1000
    assert np.histogram(positions, bins=5, range=(0, 20_000))[0].min() > 140


# ---------------------------------------------------------------------- appends and deletes


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF8,Flat", "OPQ4,IVF8,PQ4x4", "IVF8,PQ4x4,RFlat"])
def test_faiss_and_sqlite_stay_consistent_through_append_and_delete(tmp_path, factory):
    model, path = HashEmbedder(), tmp_path / "idx"
    index = SemanticIndex.build(path, model, docs(300), factory=factory, chunk_size=64)
    expected = {f"d{i}" for i in range(300)}
    assert_consistent(index, expected)

    index.add(docs(100, start=300), chunk_size=30)
    index.delete([f"d{i}" for i in range(0, 400, 9)])  # committed and freshly staged documents alike
    expected = {f"d{i}" for i in range(400)} - {f"d{i}" for i in range(0, 400, 9)}
    assert_consistent(index, expected)
    index.save()
    assert_consistent(index, expected)

    replaced = [{"id": f"d{i}", "text": f"replacement {i}"} for i in range(1, 40, 2)]  # d9 and d27 come back
    index.add(replaced, on_duplicate="replace")
    index.save()
    expected |= {"d9", "d27"}
    assert_consistent(index, expected)
    assert index.get(["d1"])[0].text == "replacement 1"

    reloaded = SemanticIndex.load(path, model=model)
    assert reloaded.manifest.count == len(expected)
    assert_consistent(reloaded, expected)
    for doc_id in ("d0", "d18", "d36"):
        hits = reloaded.search_vectors(model.embed([f"T{doc_id[1:]}\ndocument number {doc_id[1:]}"]), k=5)
        assert doc_id not in {h.id for h in hits[0]}, f"deleted {doc_id} is still found"
    top = reloaded.search(["T2\ndocument number 2"], k=1)[0][0]
    assert (top.id, top.title) == ("d2", "T2")
    if "PQ" not in factory or "RFlat" in factory:  # scores are exact unless PQ codes stand in for the vectors
        assert round(top.score, 5) == 1.0


@pytest.mark.parametrize("factory", ["HNSW32", "IVF4,PQ4x4,RFlat"])
def test_unremovable_deletions_are_compacted_once_they_pile_up(tmp_path, factory):
    index = SemanticIndex.build(tmp_path / "idx", HashEmbedder(), docs(200), factory=factory)
    index.delete([f"d{i}" for i in range(30)])
    index.save()
    assert index.manifest.tombstones == 30 and index._vectors.index.ntotal == 200
    index.delete([f"d{i}" for i in range(30, 50)])  # 50 of 200 > 20%: the save rebuilds the graph
    index.save()
    assert index.manifest.tombstones == 0 and index._vectors.index.ntotal == 150
    assert_consistent(SemanticIndex.load(tmp_path / "idx"), {f"d{i}" for i in range(50, 200)})


@pytest.mark.parametrize("factory", ["IVF4,Flat", "IVF4,PQ4x4,RFlat"])
def test_replacing_while_training_on_the_first_add(tmp_path, factory):
    repeated = [*docs(300), *[{"id": f"d{i}", "text": f"second version {i}"} for i in range(0, 300, 7)]]
    options = {"factory": factory, "on_duplicate": "replace", "chunk_size": 64}
    index = SemanticIndex.build(tmp_path / "idx", HashEmbedder(), repeated, **options)
    assert_consistent(index, {f"d{i}" for i in range(300)})
    assert index.get(["d7"])[0].text == "second version 7"


def test_save_a_copy(tmp_path):
    index = SemanticIndex.build(tmp_path / "idx", HashEmbedder(), docs(20), factory="HNSW32")
    index.delete(["d3"])
    index.save(tmp_path / "copy")
    copy = SemanticIndex.load(tmp_path / "copy", model=HashEmbedder())
    assert_consistent(copy, {f"d{i}" for i in range(20)} - {"d3"})
    query = "T4\ndocument number 4"
    assert [h.id for h in copy.search(query, k=3)] == [h.id for h in index.search(query, k=3)]
    with pytest.raises(FileExistsError, match="already exists"):
        index.save(tmp_path / "copy")


def test_documents_without_ids_get_unique_ones_across_appends(tmp_path):
    index = SemanticIndex.build(tmp_path / "idx", HashEmbedder(), ["first text", "second text"])
    index.add(["third text"])
    index.save()
    ids = [h.id for h in index.search("anything", k=10)]
    assert len(ids) == 3 and len(set(ids)) == 3


def test_metadata_and_titles_round_trip(tmp_path):
    record = {"id": "x", "title": "Headline", "text": "Body text", "metadata": {"topic": "tech", "year": 2005}}
    index = SemanticIndex.build(tmp_path / "idx", HashEmbedder(), [record])
    hit = index.search("Headline\nBody text", k=1)[0]
    assert (hit.id, hit.title, hit.text) == ("x", "Headline", "Body text")
    assert hit.metadata == {"topic": "tech", "year": 2005}
    assert hit.score == pytest.approx(1.0, abs=1e-5)


def test_the_corpus_is_streamed_in_chunks(tmp_path):
    pulled = 0

    def stream():
        nonlocal pulled
        for d in docs(1000):
            pulled += 1
            yield d

    model = HashEmbedder()
    seen_at_call: list[int] = []
    original = model.forward
    model.forward = lambda rows: (seen_at_call.append(pulled), original(rows))[1]
    SemanticIndex.build(tmp_path / "idx", model, stream(), chunk_size=100, batch_size=1000)
    assert seen_at_call[0] == 100, "the whole corpus was read before embedding started"
    assert max(model.calls) == 100 and len(model.calls) == 10


# ---------------------------------------------------------------------- atomic writes


@pytest.mark.parametrize("crash_in", ["vectors", "manifest"])
def test_a_crash_during_save_leaves_the_previous_index(tmp_path, monkeypatch, crash_in):
    path = tmp_path / "idx"
    SemanticIndex.build(path, HashEmbedder(), docs(50)).close()
    index = SemanticIndex.load(path, model=HashEmbedder())
    index.add(docs(20, start=50))
    index.delete(["d0"])

    def crash(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(faiss_index, "write", crash) if crash_in == "vectors" else monkeypatch.setattr(
        Manifest, "write", crash
    )
    with pytest.raises(OSError, match="disk full"):
        index.save()
    monkeypatch.undo()
    index._state.end()  # the crashed process lets go of its lock

    survivor = SemanticIndex.load(path, model=HashEmbedder())
    assert survivor.manifest.count == 50 and survivor.manifest.generation == 1
    assert_consistent(survivor, {f"d{i}" for i in range(50)})
    survivor.add(docs(5, start=100))  # the next writer clears the leftovers
    survivor.save()
    assert_consistent(survivor, {f"d{i}" for i in range(50)} | {f"d{i}" for i in range(100, 105)})
    assert sorted(p.name for p in path.glob("vectors.*")) == ["vectors.2.faiss"]


def test_a_failed_add_discards_everything_unsaved(tmp_path):
    index = SemanticIndex.build(tmp_path / "idx", HashEmbedder(), docs(30))
    with pytest.raises(ValueError, match=r"already in the index: 'd5'"):
        index.add([*docs(10, start=100), {"id": "d5", "text": "clash"}], chunk_size=4)
    assert_consistent(index, {f"d{i}" for i in range(30)})
    assert index.get(["d5"])[0].text == "document number 5"
    assert_consistent(SemanticIndex.load(tmp_path / "idx"), {f"d{i}" for i in range(30)})


def test_build_leaves_nothing_behind_when_it_fails(tmp_path):
    with pytest.raises(ValueError, match="needs at least 64 documents"):
        SemanticIndex.build(tmp_path / "idx", HashEmbedder(), docs(10), factory="IVF64,Flat")
    assert list(tmp_path.iterdir()) == []


def test_one_writer_at_a_time(tmp_path):
    path = tmp_path / "idx"
    SemanticIndex.build(path, HashEmbedder(), docs(10)).close()
    first, second = SemanticIndex.load(path, model=HashEmbedder()), SemanticIndex.load(path, model=HashEmbedder())
    first.add(docs(1, start=10))
    with pytest.raises(IndexBusyError, match="another process is writing"):
        second.add(docs(1, start=20))
    first.save()
    with pytest.raises(IndexBusyError, match="changed by another writer"):
        second.add(docs(1, start=20))
    assert len(second) == 10 and len(SemanticIndex.load(path)) == 11


# ---------------------------------------------------------------------- bad input


def test_duplicate_ids(tmp_path):
    index = SemanticIndex.build(tmp_path / "idx", HashEmbedder(), docs(5))
    with pytest.raises(ValueError, match="ids repeat in the input: 'x'"):
        index.add([{"id": "x", "text": "a"}, {"id": "x", "text": "b"}])
    index.add([{"id": "d1", "text": "kept out"}], on_duplicate="skip")
    index.add([{"id": "x", "text": "a"}, {"id": "x", "text": "b"}], on_duplicate="replace")
    index.save()
    assert index.get(["d1", "x"])[0].text == "document number 1"
    assert index.get(["x"])[0].text == "b" and len(index) == 6
    with pytest.raises(ValueError, match="on_duplicate='merge' is not supported"):
        index.add(docs(1), on_duplicate="merge")


@pytest.mark.parametrize(
    ("doc_id", "shown"),
    [
        (
            "line1\nFORGED 0.999 fake-title",
            r"'line1\\nFORGED 0.999 fake-title' holds the control character '\\n' at character 6",
        ),
        ("tab\there", r"'tab\\there' holds the control character '\\t' at character 4"),
        ("nul\x00id", r"'nul\\x00id' holds the control character '\\x00' at character 4"),
        ("esc\x1b[2J", r"'esc\\x1b\[2J' holds the control character '\\x1b' at character 4"),
        ("c1\x85", r"'c1\\x85' holds the control character '\\x85' at character 3"),
        ("sep\u2028x", r"'sep\\u2028x' holds the control character '\\u2028' at character 4"),
        ("del\x7f", r"'del\\x7f' holds the control character '\\x7f' at character 4"),
    ],
)
def test_ids_with_control_characters_are_refused(tmp_path, doc_id, shown):
    index = SemanticIndex.build(tmp_path / "idx", HashEmbedder(), docs(5))
    with pytest.raises(ValueError, match=r"documents\[1\]: id " + shown + "; ids may not hold control characters"):
        index.add([{"id": "fine", "text": "a"}, {"id": doc_id, "text": "b"}])
    assert_consistent(index, {f"d{i}" for i in range(5)})


@pytest.mark.parametrize("doc_id", ["", "   "])
def test_blank_ids_are_refused(tmp_path, doc_id):
    with pytest.raises(ValueError, match=rf"documents\[0\]: the id '{doc_id}' is blank; give a non-empty id, or none"):
        SemanticIndex.build(tmp_path / "idx", HashEmbedder(), [{"id": doc_id, "text": "a"}])
    assert not (tmp_path / "idx").exists()


def test_ids_that_only_look_odd_are_kept_exactly(tmp_path):
    ids = ["café/ü", "a b", "nbsp\u00a0id", "zwj\u200did", "日本", "x" * 1000]
    index = SemanticIndex.build(tmp_path / "idx", HashEmbedder(), [{"id": i, "text": i} for i in ids])
    assert [d.id for d in index.get(ids)] == ids


def test_a_generated_id_that_clashes_with_a_given_one_names_both_lines(tmp_path):
    given_later = [{"text": "no id: gets '1'"}, {"id": "1", "text": "given '1'"}]
    with pytest.raises(ValueError, match=r"^id '1' on documents\[1\] clashes with the id generated for documents\[0\] "
                                         r"\(documents without an id get the string of their internal number\); give "
                                         r"every document an explicit id$"):  # fmt: skip
        SemanticIndex.build(tmp_path / "a", HashEmbedder(), given_later)
    given_first = [{"id": "2", "text": "given '2'"}, {"text": "no id: gets '2'"}]
    with pytest.raises(
        ValueError, match=r"^the id '2' generated for documents\[1\] is already the id of documents\[0\] \("
    ):
        SemanticIndex.build(tmp_path / "b", HashEmbedder(), given_first)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("on_duplicate", ["error", "replace", "skip"])
def test_a_clash_with_an_id_generated_in_an_earlier_chunk_is_an_error(tmp_path, on_duplicate):
    index = SemanticIndex.build(tmp_path / "idx", HashEmbedder(), docs(3))
    generated = str(index.store._next_vid())  # what the next document without an id is given
    batch = [{"text": "no id"}, {"text": "filler"}, {"id": generated, "text": "given the same id"}]
    with pytest.raises(ValueError, match=rf"id '{generated}' on documents\[2\] clashes with the id generated for an "
                                         "earlier document of this input"):  # fmt: skip
        index.add(batch, chunk_size=1, on_duplicate=on_duplicate)
    assert_consistent(index, {"d0", "d1", "d2"})
    clashing = [{"id": "d1", "text": "given"}, {"text": "generated"}]  # a generated id that is a stored id is fine
    assert index.add(clashing, on_duplicate="skip") == 1


def test_a_discard_that_fails_on_a_full_disk_still_ends_the_staging(tmp_path, monkeypatch):
    from causal2vec.search.docstore import DocumentStore

    index = SemanticIndex.build(tmp_path / "idx", HashEmbedder(), docs(10))
    calls = []
    real = DocumentStore.discard_pending

    def full_once(self, g):
        calls.append(g)
        if len(calls) == 2:  # begin() runs first; the discard after the failure runs second
            raise OSError(errno.ENOSPC, "could not write the document store: database or disk is full")
        return real(self, g)

    monkeypatch.setattr(DocumentStore, "discard_pending", full_once)
    failing = [*docs(8, start=100), {"id": "d3", "text": "already stored"}]
    with pytest.raises(OSError, match="disk is full"):
        index.add(failing, chunk_size=4)
    index.add(docs(2, start=200))  # must start a fresh staging that drops the failed one's rows
    index.save()
    assert_consistent(index, {f"d{i}" for i in range(10)} | {"d200", "d201"})
    assert_consistent(SemanticIndex.load(tmp_path / "idx"), {f"d{i}" for i in range(10)} | {"d200", "d201"})


def _on_a_small_tmpfs(folder, spare_kb: int) -> dict[str, str]:
    """Run tests/full_disk_process.py on a 400 KB tmpfs mounted at ``folder`` in a mount namespace of its own."""
    script = 'mount -t tmpfs -o size=400k tmpfs "$1" && exec "$2" -m tests.full_disk_process "$1" "$3"'
    root = Path(__file__).parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", str(folder), sys.executable, str(spare_kb)],
        capture_output=True, text=True, cwd=root, env=env, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return dict(line.split(" ", 1) for line in run.stdout.splitlines())


@pytest.mark.parametrize("spare_kb", [0, 40])
def test_after_a_full_disk_the_next_writer_folds_the_leftover_log_or_says_to_free_space(tmp_path, spare_kb):
    folder = tmp_path / "small"
    folder.mkdir()
    probe = subprocess.run(["unshare", "-rm", "mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(folder)],
                           capture_output=True, text=True) if shutil.which("unshare") else None  # fmt: skip
    if probe is None or probe.returncode != 0:
        pytest.skip("needs a small tmpfs mounted in a user namespace of its own (unshare -rm), which this machine "
                    f"does not allow: {probe.stderr.strip() if probe else 'no unshare command'}")  # fmt: skip
    index = folder / "idx"
    steps = _on_a_small_tmpfs(folder, spare_kb)
    free_space = f"database or disk is full; free some space in {index}"
    assert steps["APPEND"].startswith(f"{errno.ENOSPC} ") and free_space in steps["APPEND"], steps
    assert "documents.sqlite-wal" in steps["AFTER"], "the failed append was expected to leave its log behind"
    if spare_kb == 0:  # still no room: the delete says to free space, and the index is as it was
        assert steps["DELETE"].startswith(f"{errno.ENOSPC} ") and free_space in steps["DELETE"], steps
        assert "vectors.1.faiss" in steps["LEFT"]
    else:  # 40 KB freed: the leftover log is folded and truncated first, so the delete fits and nothing is left
        assert steps["DELETE"] == "OK 19", steps
        assert steps["LEFT"] == "documents.sqlite manifest.json vectors.2.faiss", steps


def test_model_dimension_must_match(tmp_path):
    SemanticIndex.build(tmp_path / "idx", HashEmbedder(16), docs(3)).close()
    with pytest.raises(ValueError, match=r"embeds in 8 dimensions but the index .* holds 16-dimensional"):
        SemanticIndex.load(tmp_path / "idx", model=HashEmbedder(8))
    index = SemanticIndex.load(tmp_path / "idx")
    with pytest.raises(ValueError, match=r"shape \(1, 8\); the index needs \(n, 16\)"):
        index.add([{"id": "y", "text": "t"}], embeddings=np.ones((1, 8)))
    assert len(SemanticIndex.load(tmp_path / "idx")) == 3


def test_missing_or_corrupt_index_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SemanticIndex.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"not a semantic index: manifest\.json is missing"):
        SemanticIndex.load(tmp_path / "empty")

    def fresh(name: str):
        SemanticIndex.build(tmp_path / name, HashEmbedder(), docs(20)).close()
        return tmp_path / name

    path = fresh("bad_json")
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"manifest .* is corrupt"):
        SemanticIndex.load(path)
    path = fresh("newer")
    data = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99; this causal2vec reads up to 2"):
        SemanticIndex.load(path)
    path = fresh("truncated")
    vectors = path / "vectors.1.faiss"
    vectors.write_bytes(vectors.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"vectors\.1\.faiss is corrupt"):
        SemanticIndex.load(path)
    path = fresh("no_vectors")
    (path / "vectors.1.faiss").unlink()
    with pytest.raises(FileNotFoundError, match=r"vector file .*vectors\.1\.faiss is missing"):
        SemanticIndex.load(path)
    path = fresh("no_store")
    (path / "documents.sqlite").unlink()
    with pytest.raises(FileNotFoundError, match=r"document store .* is missing"):
        SemanticIndex.load(path)
    path = fresh("garbage_store")
    (path / "documents.sqlite").write_bytes(b"garbage" * 100)
    with pytest.raises(ValueError, match="corrupt or not a SQLite database"):
        SemanticIndex.load(path)
    path = fresh("disagree")
    with sqlite3.connect(path / "documents.sqlite") as db:
        db.execute("DELETE FROM documents WHERE id = 'd3'")
    with pytest.raises(ValueError, match="inconsistent: the manifest counts 20 documents, the store 19"):
        SemanticIndex.load(path)


def test_queries_and_k(tmp_path):
    index = SemanticIndex.build(tmp_path / "idx", HashEmbedder(), docs(4))
    with pytest.raises(ValueError, match="the query is empty"):
        index.search("   ")
    with pytest.raises(ValueError, match=r"queries\[1\] is empty"):
        index.search(["fine", ""])
    with pytest.raises(TypeError, match=r"queries\[0\] is int"):
        index.search([3])
    with pytest.raises(ValueError, match="k=0 must be a positive integer"):
        index.search("x", k=0)
    assert len(index.search("x", k=50)) == 4, "k beyond the index returns every document"
    with pytest.raises(ValueError, match="nprobe applies to IVF indexes only"):
        index.search("x", nprobe=4)
    with pytest.raises(ValueError, match=r"k_factor applies to refined indexes \(factory ending in ',RFlat'\) only"):
        index.search("x", k_factor=4)
    assert SemanticIndex.build(tmp_path / "empty", HashEmbedder(), []).search("x") == []


def test_bad_factory_and_existing_paths(tmp_path):
    with pytest.raises(ValueError, match="cannot build factory string 'IVF,Nonsense'"):
        SemanticIndex.build(tmp_path / "idx", HashEmbedder(), docs(3), factory="IVF,Nonsense")
    SemanticIndex.build(tmp_path / "idx", HashEmbedder(), docs(3)).close()
    with pytest.raises(FileExistsError, match="already exists"):
        SemanticIndex.build(tmp_path / "idx", HashEmbedder(), docs(3))
    rebuilt = SemanticIndex.build(tmp_path / "idx", HashEmbedder(), docs(7), overwrite=True)
    assert len(rebuilt) == 7
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not a semantic index"):
        SemanticIndex.build(tmp_path / "notes", HashEmbedder(), docs(3), overwrite=True)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "precious"


def test_deleting_unknown_ids_changes_nothing(tmp_path):
    index = SemanticIndex.build(tmp_path / "idx", HashEmbedder(), docs(5))
    with pytest.raises(KeyError, match="1 id is not in the index: 'nope'"):
        index.delete(["d1", "nope"])
    assert len(index) == 5
    assert index.delete(["d1", "nope"], missing_ok=True) == 1
    index.save()
    assert len(SemanticIndex.load(tmp_path / "idx")) == 4


@pytest.mark.skipif(hasattr(faiss, "StandardGpuResources"), reason="faiss has GPU support here")
def test_gpu_without_faiss_gpu_names_the_install(tmp_path):
    SemanticIndex.build(tmp_path / "idx", HashEmbedder(), docs(3)).close()
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'causal2vec\[search-gpu\]'"):
        SemanticIndex.load(tmp_path / "idx", gpu=True)


# ---------------------------------------------------------------------- the real model


def test_search_loads_the_model_named_in_the_manifest(tmp_path, tiny_checkpoint, tiny_model, corpus):
    from causal2vec import Causal2Vec

    model = Causal2Vec.from_pretrained(tiny_checkpoint)
    SemanticIndex.build(tmp_path / "idx", model, corpus[:30]).close()
    index = SemanticIndex.load(tmp_path / "idx", device="cpu")
    assert index.manifest.model.name == str(tiny_checkpoint.resolve())
    hits = index.search("football results", k=5)
    assert index.model is not model and index.model.name_or_path == str(tiny_checkpoint.resolve())
    expected = SemanticIndex.load(tmp_path / "idx", model=tiny_model).search("football results", k=5)
    assert [h.id for h in hits] == [h.id for h in expected]


def test_truncation_is_reported_once_per_add(tmp_path, tiny_model, corpus, caplog):
    truncated = sum(len(tiny_model.tokenize([t])["llm_input_ids"][0]) >= 128 for t in corpus[:12])
    assert truncated >= 2, "the corpus sample should hold several over-long texts"
    with caplog.at_level("WARNING", logger="causal2vec"):
        SemanticIndex.build(tmp_path / "idx", tiny_model, corpus[:12], chunk_size=4)
    messages = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert messages == [f"{truncated} of 12 texts were truncated to the model's token budget"], messages


def test_the_stand_in_backend_satisfies_the_protocol(tiny_model):
    assert isinstance(HashEmbedder(), EmbeddingBackend) and isinstance(tiny_model, EmbeddingBackend)


def test_the_progress_bar_moves_with_every_encoded_batch(tmp_path, monkeypatch):
    """Indexing 10 documents in one chunk at batch size 3 advances the bar 3, 3, 3, 1 as batches are embedded,
    not once per chunk; a duplicate skipped is counted when its chunk ends."""
    from causal2vec.search import index as index_module

    updates: list[int] = []

    class RecordingBar:
        def __init__(self, *args, **kwargs):
            pass

        def update(self, n):
            updates.append(n)

        def close(self):
            pass

    monkeypatch.setattr(index_module, "tqdm", RecordingBar)
    with SemanticIndex.build(tmp_path / "idx", HashEmbedder(), docs(10), batch_size=3, chunk_size=100) as index:
        assert updates == [3, 3, 3, 1, 0]
        updates.clear()
        index.add([*docs(2, start=10), docs(1)[0]], on_duplicate="skip", batch_size=3)
        assert updates == [2, 1]  # the two new documents as one batch, the skipped one at the chunk's end
