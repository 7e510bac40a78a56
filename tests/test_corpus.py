"""Streaming corpus readers: JSONL, TSV, plain lines, and their errors."""

from __future__ import annotations

import pytest

from causal2vec.search.corpus import Document, as_document, chunked, count_lines, read_corpus


def test_jsonl_fields_and_extra_keys(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"id": 7, "title": "T", "text": "body", "url": "u", "metadata": {"lang": "en"}}\n\n{"text": "no id"}\n'
    )
    assert list(read_corpus(path)) == [
        Document(text="body", id="7", title="T", metadata={"url": "u", "lang": "en"}),
        Document(text="no id"),
    ]


def test_jsonl_reads_beir_underscore_id(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"_id": "d1", "title": "", "text": "body"}\n{"id": "d2", "_id": "other", "text": "x"}\n')
    assert list(read_corpus(path)) == [
        Document(text="body", id="d1", title=""),
        Document(text="x", id="d2", metadata={"_id": "other"}),
    ]


def test_tsv_with_and_without_header(tmp_path):
    headed = tmp_path / "h.tsv"
    headed.write_text("id\ttitle\ttext\tsource\na\tHead\tBody one\twire\n")
    assert list(read_corpus(headed)) == [Document(text="Body one", id="a", title="Head", metadata={"source": "wire"})]
    bare = tmp_path / "b.tsv"
    bare.write_text("p1\tfirst passage\nsecond passage\n")
    assert list(read_corpus(bare)) == [Document(text="first passage", id="p1"), Document(text="second passage")]
    wide = tmp_path / "w.tsv"
    wide.write_text("a\tb\tc\n")
    with pytest.raises(ValueError, match=r"w\.tsv:1: 3 columns; without a header"):
        list(read_corpus(wide))
    ragged = tmp_path / "r.tsv"
    ragged.write_text("id\ttext\nx\n")
    with pytest.raises(ValueError, match=r"r\.tsv:2: 1 columns, but the header names 2"):
        list(read_corpus(ragged))


def test_plain_lines_skip_blanks(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("one\n\n  \ntwo\r\n")
    assert [d.text for d in read_corpus(path)] == ["one", "two"]
    assert count_lines(path) == 4


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "ok"}\n{broken\n', r"c\.jsonl:2: not valid JSON"),
        ('{"title": "no text"}\n', r"c\.jsonl:1: each record needs a string 'text' field"),
        ('["a list"]\n', r"c\.jsonl:1: each line must be a JSON object, not list"),
        ('{"text": "t", "id": [1]}\n', r"c\.jsonl:1: 'id' must be a string or an integer, not list"),
        ('{"text": "t", "metadata": 3}\n', r"c\.jsonl:1: 'metadata' must be a JSON object, not int"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path, content, message):
    path = tmp_path / "c.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        list(read_corpus(path))


def test_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"corpus file .*missing\.jsonl does not exist"):
        list(read_corpus(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="corpus format 'csv' is not supported"):
        list(read_corpus(tmp_path / "x", "csv"))
    with pytest.raises(TypeError, match=r"documents\[3\] is int"):
        as_document(5, "documents[3]")
    with pytest.raises(ValueError, match="chunk size 0"):
        list(chunked([1], 0))
    assert list(chunked(range(5), 2)) == [[0, 1], [2, 3], [4]]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": "bad \\ud800 surrogate"}', r"c\.jsonl:3: 'text' holds a lone surrogate '\\ud800' at character 5"),
        ('{"text": "t", "title": "\\udfff"}', r"c\.jsonl:3: 'title' holds a lone surrogate '\\udfff' at character 1"),
        ('{"text": "t", "id": "x\\udc80"}', r"c\.jsonl:3: 'id' holds a lone surrogate '\\udc80' at character 2"),
        ('{"text": "t", "source": "\\ud83d"}', r"c\.jsonl:3: 'metadata' holds a lone surrogate '\\ud83d'"),
    ],
)
def test_a_lone_surrogate_in_jsonl_is_named_by_line_and_field(tmp_path, line, message):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "fine"}\n\n' + line + "\n")
    with pytest.raises(ValueError, match=message):
        list(read_corpus(path))
    path.write_text('{"text": "a pair is fine: \\ud83d\\ude00"}\n')
    assert [d.text for d in read_corpus(path)] == ["a pair is fine: \U0001f600"]


@pytest.mark.parametrize("suffix", [".txt", ".tsv", ".jsonl"])
def test_bytes_that_are_not_utf8_are_named_by_line(tmp_path, suffix):
    path = tmp_path / f"c{suffix}"
    first = b'{"text": "fine"}\n' if suffix == ".jsonl" else b"fine\n"
    # An encoded surrogate (U+D800 as UTF-8 would encode it) on line 2, preceded by a multi-byte character.
    path.write_bytes(first + b"\xc3\xa9 bad \xed\xa0\x80 line\n")
    with pytest.raises(ValueError, match=rf"c\{suffix}:2: not valid UTF-8 \(byte 0xed at character 7\); save the"):
        list(read_corpus(path))


def test_documents_given_in_code_are_checked_too():
    with pytest.raises(ValueError, match=r"documents\[3\]: the text holds a lone surrogate '\\ud800'"):
        as_document("bad \ud800", "documents[3]")
    with pytest.raises(ValueError, match=r"documents\[4\]: 'title' holds a lone surrogate"):
        as_document(Document(text="t", title="\udc00"), "documents[4]")
    assert as_document({"text": "t"}, "documents[5]").source == "documents[5]"
