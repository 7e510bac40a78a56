"""`causal2vec index`, `search` and `delete`: in-process through main(), and a writer killed mid-append."""

from __future__ import annotations

import errno
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
    assert "1 id is not in the index: 'missing'" in capsys.readouterr().err


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
    staged = wait_until_staged(index, writer, 64)
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
    # The writer lock lives beside the folder (.news.idx.lock), so that an overwrite is excluded by it too.
    assert sorted(p.name for p in index.iterdir() if not p.name.startswith("documents.sqlite")) == [
        "manifest.json", "vectors.2.faiss",
    ]  # fmt: skip


def test_max_length_is_recorded_by_a_build_and_refused_by_an_append(tmp_path, corpus_file, tiny_checkpoint, capsys):
    from causal2vec import Causal2Vec

    index = tmp_path / "news.idx"
    assert main(index_args(corpus_file, index, tiny_checkpoint, "--max-length", "64")) == 0
    assert SemanticIndex.load(index).manifest.model.max_length == 64
    model = Causal2Vec.from_pretrained(str(tiny_checkpoint), device="cpu", dtype="float32")
    assert model.config.llm_max_length == 128, "the budget was saved into the checkpoint's config"
    docs = list(read_corpus(corpus_file))
    doc_emb = model.encode_document([d.embedding_text() for d in docs], max_length=64)
    query = "football results"
    scores = doc_emb @ model.encode_query(query, max_length=64)
    capsys.readouterr()
    assert main(["search", "--index", str(index), query, "-k", "5", "--json", "--device", "cpu"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    np.testing.assert_allclose([h["score"] for h in hits], np.sort(scores)[::-1][:5], atol=1e-5)

    argv = ["index", "--append", "--corpus", str(corpus_file), "--index", str(index), "-q", "--max-length", "32"]
    assert main(argv) == 2
    assert "--max-length 32: the token budget is chosen when an index is built" in capsys.readouterr().err


def interrupted_after(n: int, error: BaseException):
    """A stand-in for read_corpus that yields ``n`` documents of the real corpus and then raises ``error``."""

    def read(path, fmt="auto"):
        for i, doc in enumerate(read_corpus(path, fmt)):
            if i == n:
                raise error
            yield doc

    return read


def hidden_leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock"))


def test_ctrl_c_during_a_build_or_an_overwrite(tmp_path, corpus_file, tiny_checkpoint, monkeypatch, capsys):
    index = tmp_path / "news.idx"
    monkeypatch.setattr("causal2vec.cli.read_corpus", interrupted_after(20, KeyboardInterrupt()))
    assert main(index_args(corpus_file, index, tiny_checkpoint, "--chunk-size", "8")) == 130
    assert capsys.readouterr().err == f"causal2vec index: interrupted; {index} was not created\n"
    assert not index.exists() and hidden_leftovers(tmp_path) == []

    monkeypatch.undo()
    assert main(index_args(corpus_file, index, tiny_checkpoint)) == 0
    monkeypatch.setattr("causal2vec.cli.read_corpus", interrupted_after(20, KeyboardInterrupt()))
    assert main(index_args(corpus_file, index, tiny_checkpoint, "--overwrite", "--chunk-size", "8")) == 130
    assert capsys.readouterr().err.endswith(f"causal2vec index: interrupted; {index} is unchanged\n")
    kept = SemanticIndex.load(index)
    assert (len(kept), kept.manifest.generation) == (40, 1) and hidden_leftovers(tmp_path) == []


def test_ctrl_c_during_an_append_exits_130_and_keeps_the_index(tmp_path, corpus_file, tiny_checkpoint, corpus):
    index = tmp_path / "news.idx"
    assert main(index_args(corpus_file, index, tiny_checkpoint)) == 0
    big = tmp_path / "big.txt"
    big.write_text("\n".join(f"{corpus[i % len(corpus)][:400]} {i}" for i in range(20_000)) + "\n")
    argv = [sys.executable, "-m", "causal2vec", "index", "--append", "--corpus", str(big), "--index", str(index),
            "--chunk-size", "32", "--batch-size", "32", "-q", "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    writer = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        staged = wait_until_staged(index, writer, 64)
        writer.send_signal(signal.SIGINT)
        out, err = writer.communicate(timeout=120)
    finally:
        writer.kill()
    assert staged >= 64, f"the writer never staged documents: {err}"
    assert writer.returncode == 130, err
    assert err == f"causal2vec index: interrupted; {index} is unchanged\n", "expected one line and no traceback"
    assert out == ""

    survivor = SemanticIndex.load(index, device="cpu")
    assert (len(survivor), survivor.manifest.count, survivor.manifest.generation) == (40, 40, 1)
    assert sorted(p.name for p in index.glob("vectors.*")) == [survivor.manifest.vectors_file]
    assert hidden_leftovers(index) == [] and hidden_leftovers(tmp_path) == []
    survivor.close()


def wait_until_staged(index, writer, n: int, timeout: float = 240) -> int:
    """Poll the document store until a writer process has staged ``n`` documents beyond the committed ones."""
    staged, deadline = 0, time.monotonic() + timeout
    while staged < n and writer.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        with sqlite3.connect(f"file:{index / 'documents.sqlite'}?mode=ro", uri=True) as db:
            staged = db.execute("SELECT COUNT(*) FROM documents WHERE added > 1").fetchone()[0]
    return staged


def full_disk_write(written: list[str]):
    """A stand-in for faiss.write_index that writes part of the file, then fails as a full disk does."""

    def write_index(index, path):
        with open(path, "wb") as f:
            f.write(b"\0" * 64)
        written.append(path)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    return write_index


def test_disk_full_during_an_append_or_a_build(tmp_path, corpus_file, tiny_checkpoint, monkeypatch, capsys):
    import faiss

    index = tmp_path / "news.idx"
    assert main(index_args(corpus_file, index, tiny_checkpoint)) == 0
    more = tmp_path / "more.txt"
    more.write_text("one more document\nand another\n")
    append = ["index", "--append", "--corpus", str(more), "--index", str(index), "-q", "--device", "cpu"]
    capsys.readouterr()
    written: list[str] = []
    monkeypatch.setattr(faiss, "write_index", full_disk_write(written))
    assert main(append) == 2
    err = capsys.readouterr().err
    assert written, "the append never wrote its vector file"
    assert f"error: no space left on the device while writing {written[0]}; {index} is unchanged." in err, err
    fresh = tmp_path / "fresh.idx"
    assert main(index_args(corpus_file, fresh, tiny_checkpoint)) == 2
    assert f"; {fresh} was not created. Free some space" in capsys.readouterr().err
    assert not fresh.exists() and hidden_leftovers(tmp_path) == []

    monkeypatch.undo()
    kept = SemanticIndex.load(index)
    assert (len(kept), kept.manifest.generation) == (40, 1)
    kept.close()
    assert main(append) == 0, capsys.readouterr().err
    assert main(index_args(corpus_file, fresh, tiny_checkpoint)) == 0
    assert len(SemanticIndex.load(index)) == 42 and len(SemanticIndex.load(fresh)) == 40
    assert hidden_leftovers(index) == [] and hidden_leftovers(tmp_path) == []


def test_a_full_document_store_is_reported_as_a_full_disk(tmp_path, corpus_file, tiny_checkpoint, monkeypatch, capsys):
    index = tmp_path / "news.idx"
    assert main(index_args(corpus_file, index, tiny_checkpoint)) == 0
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL
    monkeypatch.setattr("causal2vec.cli.read_corpus", interrupted_after(3, full))
    append = ["index", "--append", "--corpus", str(corpus_file), "--index", str(index), "-q", "--device", "cpu",
              "--on-duplicate", "skip", "--chunk-size", "2"]  # fmt: skip
    capsys.readouterr()
    assert main(append) == 2
    assert f"error: no space left on the device; {index} is unchanged" in capsys.readouterr().err
    assert len(SemanticIndex.load(index)) == 40

    broken = sqlite3.OperationalError("no such table: documents")
    broken.sqlite_errorcode = sqlite3.SQLITE_ERROR
    monkeypatch.setattr("causal2vec.cli.read_corpus", interrupted_after(3, broken))
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        main(append)


def test_bad_text_in_a_corpus_exits_2_naming_the_file_and_line(tmp_path, tiny_checkpoint, capsys):
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text('{"text": "fine"}\n{"text": "bad \\ud800 surrogate"}\n')
    lines = tmp_path / "bad.txt"
    lines.write_bytes(b"fine\nbad \xed\xa0\x80 line\n")
    expected = {
        jsonl: f"{jsonl}:2: 'text' holds a lone surrogate '\\ud800' at character 5",
        lines: f"{lines}:2: not valid UTF-8 (byte 0xed at character 5)",
    }
    model = ["--model", str(tiny_checkpoint), "-q", "--device", "cpu"]
    for path, message in expected.items():
        for argv in (["encode", str(path), "-o", str(tmp_path / "e.npy")], ["index", "--corpus", str(path),
                     "--index", str(tmp_path / "bad.idx")]):  # fmt: skip
            assert main([*argv, *model]) == 2
            err = capsys.readouterr().err
            assert f"causal2vec {argv[0]}: error: {message}" in err, err
    assert not (tmp_path / "e.npy").exists() and not (tmp_path / "bad.idx").exists()


def test_bad_ids_and_id_clashes_exit_2_naming_the_line(tmp_path, corpus_file, tiny_checkpoint, capsys):
    index = tmp_path / "news.idx"
    assert main(index_args(corpus_file, index, tiny_checkpoint)) == 0
    more = tmp_path / "more.jsonl"
    append = ["index", "--append", "--corpus", str(more), "--index", str(index), "-q", "--device", "cpu"]
    cases = {
        '{"id": "ok", "text": "a"}\n{"id": "tab\\there", "text": "b"}\n':
            f"{more}:2: id 'tab\\there' holds the control character '\\t' at character 4; ids may not hold control",
        '{"id": "", "text": "a"}\n': f"{more}:1: the id '' is blank",
        '{"text": "no id"}\n{"id": "41", "text": "given the id generated for line 1"}\n':
            f"id '41' on {more}:2 clashes with the id generated for {more}:1 (documents without an id get the string "
            "of their internal number); give every document an explicit id",
    }  # fmt: skip
    capsys.readouterr()
    for content, message in cases.items():
        more.write_text(content)
        assert main(append) == 2
        err = capsys.readouterr().err
        assert f"causal2vec index: error: {message}" in err, err
    kept = SemanticIndex.load(index)
    assert (len(kept), kept.manifest.generation) == (40, 1)


def test_search_text_output_escapes_control_characters_and_json_keeps_them(tmp_path, corpus_file, tiny_checkpoint,
                                                                          capsys):  # fmt: skip
    index = tmp_path / "news.idx"
    assert main(index_args(corpus_file, index, tiny_checkpoint)) == 0
    forged = "line1\nFORGED 0.999 fake-title"
    with sqlite3.connect(index / "documents.sqlite") as db:  # an index written before ids were checked
        db.execute("UPDATE documents SET id = ?, title = ? WHERE id = 'n0'", (forged, "T\x1b[2J\u2028x"))
    query = corpus_file.read_text().splitlines()[0]
    search = ["search", "--index", str(index), json.loads(query)["text"][:200], "-k", "40", "--device", "cpu"]
    capsys.readouterr()
    assert main(search) == 0
    out = capsys.readouterr().out
    assert not any(line.startswith("FORGED") for line in out.splitlines()), out
    assert "[line1\\nFORGED 0.999 fake-title]  T\\x1b[2J\\u2028x" in out, out
    assert "\x1b" not in out and "\u2028" not in out
    assert main([*search, "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert [h["title"] for h in hits if h["id"] == forged] == ["T\x1b[2J\u2028x"]


def test_a_document_store_that_cannot_grow_says_to_free_space(tmp_path, corpus_file, tiny_checkpoint, monkeypatch,
                                                              capsys):  # fmt: skip
    from causal2vec.search.docstore import DocumentStore

    index = tmp_path / "news.idx"
    assert main(index_args(corpus_file, index, tiny_checkpoint)) == 0
    opened = DocumentStore.__init__

    def cannot_grow(self, path):  # SQLite's own limit: writes past it fail with SQLITE_FULL, as on a full disk
        opened(self, path)
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        self.db.execute(f"PRAGMA max_page_count = {pages}")

    monkeypatch.setattr(DocumentStore, "__init__", cannot_grow)
    more = tmp_path / "more.txt"
    more.write_text("".join(f"another long document, number {i}, " * 20 + "\n" for i in range(50)))
    append = ["index", "--append", "--corpus", str(more), "--index", str(index), "-q", "--device", "cpu"]
    capsys.readouterr()
    assert main(append) == 2
    err = capsys.readouterr().err
    assert (
        f"causal2vec index: error: no space left on the device while writing {index / 'documents.sqlite'}; {index} is "
        "unchanged. Free some space and run the command again"
    ) in err, err
    monkeypatch.undo()
    assert len(SemanticIndex.load(index)) == 40
    assert main(append) == 0, capsys.readouterr().err
    assert len(SemanticIndex.load(index)) == 90
