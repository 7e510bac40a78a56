"""`causal2vec index`, `search` and `delete`: in-process through main(), and a writer killed mid-append."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from causal2vec.cli import main
from causal2vec.search.corpus import read_corpus
from causal2vec.search.index import SemanticIndex


@pytest.fixture
def corpus_file(tmp_path, corpus):
    path = tmp_path / "news.jsonl"
    with open(path, "w") as f:
        for i, text in enumerate(corpus[:40]):
            title, body = text.split("\n", 1)
            f.write(json.dumps({"id": f"n{i}", "title": title, "text": body, "metadata": {"n": i}}) + "\n")
    return path


def index_args(corpus_file, index, checkpoint, *extra):
    return ["index", "--corpus", str(corpus_file), "--index", str(index), "--model", str(checkpoint), "-q",
            "--dtype", "float32", "--device", "cpu", *extra]  # fmt: skip


def test_index_then_search(tmp_path, corpus_file, tiny_checkpoint, tiny_model, capsys):
    index = tmp_path / "news.idx"
    assert main(index_args(corpus_file, index, tiny_checkpoint, "--batch-size", "8", "--chunk-size", "16")) == 0
    assert "indexed 40 documents" in capsys.readouterr().out

    query = "the economy grew faster than expected"
    assert main(["search", "--index", str(index), query, "-k", "3", "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    docs = list(read_corpus(corpus_file))
    doc_emb = tiny_model.encode_document([d.embedding_text() for d in docs])
    scores = doc_emb @ tiny_model.encode_query(query)
    best = np.argsort(-scores)[:3]
    assert result["query"] == query
    assert [h["id"] for h in result["hits"]] == [docs[j].id for j in best]
    np.testing.assert_allclose([h["score"] for h in result["hits"]], scores[best], atol=1e-5)
    assert result["hits"][0]["title"] == docs[best[0]].title
    assert result["hits"][0]["metadata"] == {"n": int(docs[best[0]].id[1:])}

    queries = tmp_path / "queries.txt"
    queries.write_text("interest rates\n\nfootball\nfilm awards\n")
    assert main(["search", "--index", str(index), "--queries", str(queries), "-k", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("query: ") == 3 and "query: football" in out and " 1. " in out


def test_append_delete_and_duplicates(tmp_path, corpus_file, tiny_checkpoint, capsys):
    index = tmp_path / "news.idx"
    assert main(index_args(corpus_file, index, tiny_checkpoint)) == 0
    more = tmp_path / "more.tsv"
    more.write_text("id\ttitle\ttext\nx1\tExtra\tA brand new article about tennis.\nx2\t\tAnother one on rates.\n")
    assert main(["index", "--append", "--corpus", str(more), "--index", str(index), "-q", "--device", "cpu"]) == 0
    assert "appended 2 documents" in capsys.readouterr().out
    assert len(SemanticIndex.load(index)) == 42

    assert main(["index", "--append", "--corpus", str(more), "--index", str(index), "-q", "--device", "cpu"]) == 2
    assert "2 document ids are already in the index: 'x1', 'x2'" in capsys.readouterr().err
    assert len(SemanticIndex.load(index)) == 42, "a failed append changed the index"
    args = ["index", "--append", "--corpus", str(more), "--index", str(index), "-q", "--device", "cpu"]
    assert main([*args, "--on-duplicate", "replace"]) == 0
    assert len(SemanticIndex.load(index)) == 42

    assert main(["delete", "--index", str(index), "x1", "n0"]) == 0
    assert "deleted 2 documents" in capsys.readouterr().out
    assert SemanticIndex.load(index).get(["x1", "n0", "n1"])[:2] == [None, None]
    assert main(["delete", "--index", str(index), "missing"]) == 2
    assert "1 ids are not in the index: 'missing'" in capsys.readouterr().err


def test_search_errors_exit_2(tmp_path, corpus_file, tiny_checkpoint, capsys):
    index = tmp_path / "news.idx"
    assert main(index_args(corpus_file, index, tiny_checkpoint)) == 0
    capsys.readouterr()
    cases = [
        (["search", "--index", str(tmp_path / "none"), "q"], "does not exist"),
        (["search", "--index", str(index)], "no query"),
        (["search", "--index", str(index), "ok", " "], "query 2 is empty"),
        (["search", "--index", str(index), "q", "--nprobe", "8", "--device", "cpu"], "nprobe applies to IVF"),
        (["search", "--index", str(index), "q", "-k", "0", "--device", "cpu"], "argument -k: '0' is not a positive"),
        (["search", "--index", str(index), "q", "--max-length", "64"], "the token budget is chosen when an index is"),
        (index_args(corpus_file, index, tiny_checkpoint), "already exists"),
        (index_args(corpus_file, tmp_path / "x", tiny_checkpoint, "--factory", "PQ7x3"), "cannot build factory"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv


def test_gpu_flag_without_faiss_gpu(tmp_path, corpus_file, tiny_checkpoint, capsys):
    import faiss

    if hasattr(faiss, "StandardGpuResources"):
        pytest.skip("faiss has GPU support here")
    index = tmp_path / "news.idx"
    assert main(index_args(corpus_file, index, tiny_checkpoint)) == 0
    assert main(["search", "--index", str(index), "q", "--gpu"]) == 2
    assert "pip install 'causal2vec[search-gpu]'" in capsys.readouterr().err


def test_a_killed_append_leaves_the_old_index_readable(tmp_path, corpus_file, tiny_checkpoint, corpus):
    index = tmp_path / "news.idx"
    assert main(index_args(corpus_file, index, tiny_checkpoint)) == 0
    big = tmp_path / "big.txt"
    big.write_text("\n".join(f"{corpus[i % len(corpus)][:400]} {i}" for i in range(20_000)) + "\n")

    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    argv = [sys.executable, "-m", "causal2vec", "index", "--append", "--corpus", str(big), "--index", str(index),
            "--chunk-size", "32", "--batch-size", "32", "-q", "--device", "cpu"]  # fmt: skip
    writer = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    staged, deadline = 0, time.monotonic() + 240
    while staged < 64 and writer.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        with sqlite3.connect(f"file:{index / 'documents.sqlite'}?mode=ro", uri=True) as db:
            staged = db.execute("SELECT COUNT(*) FROM documents WHERE added > 1").fetchone()[0]
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert writer.returncode == -signal.SIGKILL, f"the writer ended before it was killed: {writer.stderr.read()}"
    assert staged >= 64, "the writer never staged documents"

    survivor = SemanticIndex.load(index, device="cpu")
    assert (len(survivor), survivor.manifest.count, survivor.manifest.generation) == (40, 40, 1)
    assert len(survivor.search("rates", k=100)) == 40
    survivor.close()

    small = tmp_path / "small.txt"
    small.write_text("one more document\nand another\n")
    assert main(["index", "--append", "--corpus", str(small), "--index", str(index), "-q", "--device", "cpu"]) == 0
    after = SemanticIndex.load(index)
    assert len(after) == 42 and after.manifest.generation == 2
    assert sorted(p.name for p in index.iterdir() if not p.name.startswith("documents.sqlite")) == [
        ".lock", "manifest.json", "vectors.2.faiss",
    ]  # fmt: skip
