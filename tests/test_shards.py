"""Embedding shards on a real local Ray instance (started once for the module) with the tiny random model.

The shards are checked against single-process ``encode_document``; a job killed with SIGKILL part-way is resumed;
changed models and corpora are refused; corrupt shards are named; and indexes built from shards answer like
indexes built from the corpus.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from itertools import chain
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

from causal2vec.backends import load_backend  # noqa: E402
from causal2vec.ray_embed import actor_pool_arguments, embed_to_shards, pool_size  # noqa: E402
from causal2vec.search import SemanticIndex  # noqa: E402
from causal2vec.search.corpus import as_document, read_corpus  # noqa: E402
from causal2vec.shards import SHARDS_JSON, ShardFolder, plan_corpus, read_unit  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")  # Ray Data's own context fields

ROOT = Path(__file__).resolve().parents[1]
UNIT = 2  # lines per work unit: many small shards


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory, corpus):
    """Three files, one per format: ids, titles, metadata, a TSV header, blank lines, ids left to the index."""
    folder = tmp_path_factory.mktemp("corpus")
    bodies = [text[: 60 + 37 * i % 400] for i, text in enumerate(corpus[:24] * 2)]
    with open(folder / "a.jsonl", "w", encoding="utf-8") as f:
        for i, body in enumerate(bodies[:20]):
            record = {"id": f"a{i}", "text": body, "title": f"Title {i}" if i % 3 else None, "metadata": {"n": i}}
            f.write(json.dumps({k: v for k, v in record.items() if v is not None}) + ("\n\n" if i % 4 == 1 else "\n"))
    flat = [" ".join(body.split()) for body in bodies]  # no newline or tab inside a TSV field or a line
    rows = [f"b{i}\tHead {i}\t{body}" for i, body in enumerate(flat[20:32])]
    (folder / "b.tsv").write_text("id\ttitle\ttext\n" + "\n".join(rows) + "\n", encoding="utf-8")
    lines = flat[32:44]
    (folder / "c.txt").write_text("\n".join(lines[:6]) + "\n\n" + "\n".join(lines[6:]) + "\n", encoding="utf-8")
    return folder


def corpus_documents(folder: Path) -> list:
    return list(chain.from_iterable(read_corpus(path) for path in sorted(folder.iterdir())))


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_backend(tiny_checkpoint, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def shards(ray_cluster, corpus_dir, tiny_checkpoint, tmp_path_factory):
    """One uninterrupted job on 2 actors; returns the folder and the job's report."""
    output = tmp_path_factory.mktemp("jobs") / "shards"
    report = embed_to_shards(corpus_dir, output, model=tiny_checkpoint, dtype="float32", actors=2, unit_size=UNIT)
    return output, report


def shard_rows(folder: Path) -> tuple[list, np.ndarray]:
    parts = list(ShardFolder.open(folder).iter_shards())
    return [d for p in parts for d in p.documents], np.concatenate([p.embeddings for p in parts])


# ---------------------------------------------------------------------------------------------- without Ray


def test_units_read_exactly_what_the_corpus_reader_reads(tmp_path):
    """Lone \\r line ends, \\r\\n, blank lines, a TSV header, no final newline: every unit size gives the documents
    (and file:line sources) of the whole-file reader."""
    (tmp_path / "a.txt").write_bytes(b"one\r\ntwo\rthree\n\n  \nfour\r\rfive\nsix")
    (tmp_path / "b.tsv").write_text("id\ttext\textra\n" + "".join(f"i{i}\tbody {i}\tx{i}\n" for i in range(7)))
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"_id": i, "text": f"t{i}"}) + "\n\n" for i in range(5)))
    for unit_size in (1, 2, 3, 100):
        plan = plan_corpus(tmp_path, unit_size=unit_size)
        for number, file in enumerate(plan.files):
            whole = [(d, d.source) for d in read_corpus(file.path, file.format)]
            parts = [(d, d.source) for u in plan.units if u.input == number for d in read_unit(file, u)]
            assert parts == whole, (unit_size, file.path)


def test_parquet_rows_follow_the_jsonl_rules(tmp_path):
    import pyarrow as pa

    records = [{"id": i, "text": f"doc {i}", "title": None if i % 2 else f"T{i}", "lang": "en"} for i in range(7)]
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "c.parquet", row_group_size=3)
    plan = plan_corpus(tmp_path / "c.parquet", unit_size=2)
    assert [(u.start, u.stop) for u in plan.units] == [(0, 2), (2, 3), (3, 5), (5, 6), (6, 7)]
    read = [d for u in plan.units for d in read_unit(plan.files[0], u)]
    expected = [as_document({k: v for k, v in r.items() if v is not None}) for r in records]
    assert [(d.id, d.title, d.text, d.metadata) for d in read] == [
        (d.id, d.title, d.text, d.metadata) for d in expected
    ]
    assert read[4].source.endswith("c.parquet:row 5")


def test_actor_pool_argument_follows_the_ray_version():
    installed = actor_pool_arguments(3)
    assert set(installed) == {"compute"} and installed["compute"].min_size == installed["compute"].max_size == 3
    assert actor_pool_arguments(3, "2.40.0") == {"concurrency": 3}  # 2.9 to 2.50
    assert set(actor_pool_arguments(3, "2.8.1")) == {"compute"}
    assert pool_size(gpus=0, cpus=2, actors=None, units=50) == (1, 2)  # one actor per 4 cores, at least one
    assert pool_size(gpus=0, cpus=16, actors=None, units=50) == (4, 4)
    assert pool_size(gpus=0, cpus=2, actors=2, units=50) == (2, 1)
    assert pool_size(gpus=8, cpus=64, actors=None, units=5) == (5, None)  # one per GPU, no more than the units


# ---------------------------------------------------------------------------------------------- on Ray


def test_shards_equal_single_process_encode_document(shards, corpus_dir, model):
    output, report = shards
    expected = corpus_documents(corpus_dir)
    documents, embeddings = shard_rows(output)
    assert [(d.id, d.title, d.text, d.metadata, d.source) for d in documents] == [
        (d.id, d.title, d.text, d.metadata, d.source) for d in expected
    ]
    reference = model.encode_document([d.embedding_text() for d in expected], batch_size=32)
    assert embeddings.dtype == np.float32 and embeddings.shape == reference.shape
    assert np.abs(embeddings - reference).max() < 1e-5, np.abs(embeddings - reference).max()
    folder = ShardFolder.open(output)
    assert folder.complete and folder.count == report.documents == report.embedded == len(expected)
    assert folder.identity == model.identity and report.shards_written == len(folder.shards) > 10


def test_a_rerun_of_a_finished_job_writes_nothing(shards, corpus_dir, tiny_checkpoint):
    output, first = shards
    again = embed_to_shards(corpus_dir, output, model=tiny_checkpoint, dtype="float32", unit_size=UNIT)
    assert (again.shards_written, again.shards_skipped, again.documents) == (0, first.shards_written, first.documents)


def test_a_changed_model_or_corpus_is_refused_naming_both(shards, corpus_dir, tiny_checkpoint):
    output, _ = shards
    before = (output / SHARDS_JSON).read_bytes()
    with pytest.raises(ValueError, match="holds embeddings by model") as refused:
        embed_to_shards(corpus_dir, output, model=tiny_checkpoint, dtype="bfloat16", unit_size=UNIT)
    assert "'precision': 'fp32'" in str(refused.value) and "'precision': 'bf16'" in str(refused.value)
    with pytest.raises(ValueError, match="unit size is 2 lines, this job's 3"):
        embed_to_shards(corpus_dir, output, model=tiny_checkpoint, dtype="float32", unit_size=UNIT + 1)
    tsv = corpus_dir / "b.tsv"
    original = tsv.read_bytes()
    tsv.write_bytes(original + b"b99\tLate\tA document added after the job\n")
    try:
        with pytest.raises(ValueError, match="another corpus") as refused:
            embed_to_shards(corpus_dir, output, model=tiny_checkpoint, dtype="float32", unit_size=UNIT)
    finally:
        tsv.write_bytes(original)
    message = str(refused.value)
    assert message.count(str(tsv)) == 2 and message.count("'size'") == 2, message
    assert (output / SHARDS_JSON).read_bytes() == before


def test_a_malformed_record_fails_the_job_naming_its_line(ray_cluster, tiny_checkpoint, tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"id": "1", "text": "fine"}\n\n{"id": "2", "text": 3}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:3: each record needs a string 'text' field"):
        embed_to_shards(tmp_path / "bad.jsonl", tmp_path / "out", model=tiny_checkpoint, dtype="float32", actors=1)
    assert not ShardFolder.open(tmp_path / "out").manifest.shards


def test_a_corrupt_shard_is_named(shards, tmp_path):
    copy = shutil.copytree(shards[0], tmp_path / "copy")
    victim = ShardFolder.open(copy).shards[4].file
    data = bytearray((copy / victim).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / victim).write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"shard {copy / victim} is corrupt"):
        list(ShardFolder.open(copy).iter_shards())
    with pytest.raises(ValueError, match=f"shard {copy / victim} is corrupt"):
        SemanticIndex.build_from_shards(tmp_path / "idx", copy)
    assert not (tmp_path / "idx").exists()


def test_a_killed_job_resumes_writing_only_the_missing_shards(
    ray_cluster, shards, corpus_dir, tiny_checkpoint, tmp_path, caplog
):
    """SIGKILL once shards.json lists two shards; one listed shard is then corrupted; the rerun writes exactly the
    unlisted shards and the corrupt one, keeps the others untouched, and ends equal to the uninterrupted job."""
    output = tmp_path / "killed"
    command = [sys.executable, "-m", "tests.embed_process", str(corpus_dir), str(output), str(tiny_checkpoint),
               ray_cluster, str(UNIT)]  # fmt: skip
    job = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while listed(output) < 2 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert job.returncode == -signal.SIGKILL, "the job finished before it could be killed"
    done = ShardFolder.open(output)
    total = done.manifest.units
    kept = done.shards
    assert 1 <= len(kept) < total
    with pytest.raises(ValueError, match="is incomplete"):
        SemanticIndex.build_from_shards(tmp_path / "idx", output)
    corrupt = kept[0].file
    (output / corrupt).write_bytes(b"PAR1 not a shard")
    stamps = {r.file: os.stat(output / r.file).st_mtime_ns for r in kept[1:]}
    leftovers = [".part-00001-000002.parquet.tmp-0123abcd", ".shards.json.tmp-89abcdef"]  # as a kill leaves them
    for name in [*leftovers, "notes.txt"]:
        (output / name).write_text("x")
    with caplog.at_level(logging.WARNING, logger="causal2vec.shards"):
        report = embed_to_shards(corpus_dir, output, model=tiny_checkpoint, dtype="float32", actors=1, unit_size=UNIT)
    assert corrupt in caplog.text and "is corrupt" in caplog.text
    assert (report.shards_written, report.shards_skipped) == (total - len(kept) + 1, len(kept) - 1)
    assert {r.file: os.stat(output / r.file).st_mtime_ns for r in kept[1:]} == stamps
    assert not [p.name for p in output.iterdir() if p.name.startswith(".")]
    assert (output / "notes.txt").read_text() == "x"  # not ours: left alone
    resumed, reference = ShardFolder.open(output), ShardFolder.open(shards[0])
    assert [(r.file, r.unit, r.count) for r in resumed.shards] == [(r.file, r.unit, r.count) for r in reference.shards]
    (docs, vectors), (reference_docs, reference_vectors) = shard_rows(output), shard_rows(shards[0])
    assert docs == reference_docs and np.abs(vectors - reference_vectors).max() < 1e-6


def listed(output: Path) -> int:
    try:
        return len(json.loads((output / SHARDS_JSON).read_text())["shards"])
    except FileNotFoundError:
        return 0


# ---------------------------------------------------------------------------------------------- indexes


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat"])
def test_an_index_from_shards_answers_like_one_built_from_the_corpus(shards, corpus_dir, model, tmp_path, factory):
    documents = corpus_documents(corpus_dir)
    built = SemanticIndex.build(tmp_path / "built", model, documents, factory=factory)
    from_shards = SemanticIndex.build_from_shards(tmp_path / "from_shards", shards[0], factory=factory)
    assert from_shards.manifest.model == model.identity and from_shards.manifest.count == len(documents)
    queries = ["football match result", "the government and the economy", "a new film"]
    vectors = model.encode_query(queries)
    nprobe = {"nprobe": 2} if factory != "Flat" else {}
    expected = built.search_vectors(vectors, 10, **nprobe)
    got = from_shards.search_vectors(vectors, 10, **nprobe)
    assert [[h.id for h in hits] for hits in got] == [[h.id for h in hits] for hits in expected]
    if factory == "Flat":
        scores = np.array([[h.score for h in hits] for hits in got])
        assert np.abs(scores - [[h.score for h in hits] for hits in expected]).max() < 1e-6
    stored = from_shards.get(["a3", "b2", "41"])
    assert [d.title for d in stored] == [d.title for d in built.get(["a3", "b2", "41"])]
    reopened = SemanticIndex.load(tmp_path / "from_shards", device="cpu")  # loads the model the shards record
    assert [h.id for h in reopened.search(queries[0], k=10, **nprobe)] == [h.id for h in expected[0]]
    for index in (built, from_shards, reopened):
        index.close()


def test_the_command_line_embeds_indexes_shards_and_refuses_a_model_option(ray_cluster, corpus_dir, tiny_checkpoint,
                                                                            tmp_path, capsys):  # fmt: skip
    """``causal2vec embed`` (joining this module's Ray), then ``index --from-shards`` and ``search``, as a user runs
    them: the hits and scores equal those of ``causal2vec index`` on the same corpus file."""
    from causal2vec.cli import main as cli

    corpus_file, shards = corpus_dir / "a.jsonl", tmp_path / "news.shards"
    common = ["--model", str(tiny_checkpoint), "--dtype", "float32"]
    assert cli(["embed", "--corpus", str(corpus_file), "--output", str(shards), *common, "--unit-size", "8",
                "--actors", "1", "-q"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    documents = len(list(read_corpus(corpus_file)))
    assert f"embedded {documents} documents in " in printed and "(0 kept from an earlier run)" in printed, printed
    assert cli(["index", "--from-shards", str(shards), "--index", str(tmp_path / "a.idx"), "-q"]) == 0
    assert f"indexed {documents} documents from {shards}" in capsys.readouterr().out
    assert cli(["index", "--corpus", str(corpus_file), "--index", str(tmp_path / "b.idx"), *common, "-q",
                "--device", "cpu"]) == 0  # fmt: skip
    hits = {}
    for name in ("a.idx", "b.idx"):
        capsys.readouterr()
        assert cli(["search", "--index", str(tmp_path / name), "football match", "-k", "5", "--json",
                    "--device", "cpu"]) == 0  # fmt: skip
        hits[name] = [(h["id"], round(h["score"], 5)) for h in json.loads(capsys.readouterr().out)["hits"]]
    assert hits["a.idx"] == hits["b.idx"] and len(hits["a.idx"]) == 5
    assert cli(["index", "--from-shards", str(shards), "--index", str(tmp_path / "c.idx"), *common]) == 2
    assert "--model does not apply to --from-shards" in capsys.readouterr().err
