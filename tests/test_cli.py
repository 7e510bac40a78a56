"""The causal2vec console command, in-process through main() and end to end as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from causal2vec.cli import main

LINES = ["The central bank cut rates.", "", "A striker scored twice in the final.", "Shares rose in early trading."]


def test_encode_lines_to_npy(tmp_path, tiny_checkpoint, tiny_model, capsys):
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(LINES) + "\n")
    out = tmp_path / "emb.npy"
    assert main(["encode", str(src), "-o", str(out), "--model", str(tiny_checkpoint), "--batch-size", "2", "-q"]) == 0
    got = np.load(out)
    assert got.dtype == np.float32 and got.shape == (len(LINES), tiny_model.embedding_dim)
    np.testing.assert_allclose(got, tiny_model.encode_document(LINES), atol=1e-5, rtol=0)
    assert "wrote 4 embeddings" in capsys.readouterr().out


def test_encode_jsonl_queries_to_jsonl(tmp_path, tiny_checkpoint, tiny_model):
    src = tmp_path / "queries.jsonl"
    records = [{"id": f"q{i}", "text": t} for i, t in enumerate(LINES)]
    src.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    out = tmp_path / "emb.jsonl"
    assert main(["encode", str(src), "-o", str(out), "--model", str(tiny_checkpoint), "--query", "-q"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["q0", "q1", "q2", "q3"]
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), tiny_model.encode_query(LINES), atol=1e-5)


def test_custom_instruction_and_dtype(tmp_path, tiny_checkpoint, tiny_model):
    src = tmp_path / "t.txt"
    src.write_text("interest rates\n")
    out = tmp_path / "e.npy"
    args = ["encode", str(src), "-o", str(out), "--model", str(tiny_checkpoint), "--query", "-q"]
    assert main([*args, "--instruction", "Find news", "--dtype", "bfloat16"]) == 0
    expected = tiny_model.encode_query(["interest rates"], instruction="Find news")
    assert float((np.load(out) * expected).sum()) > 0.99


def test_bad_input_file_exits_2_with_the_line(tmp_path, tiny_checkpoint, capsys):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": "fine"}\n{"title": "no text"}\n')
    assert main(["encode", str(src), "-o", str(tmp_path / "e.npy"), "--model", str(tiny_checkpoint)]) == 2
    assert "bad.jsonl:2: each JSONL record needs a string 'text' field" in capsys.readouterr().err
    assert not (tmp_path / "e.npy").exists()


def test_missing_model_exits_2(tmp_path, capsys):
    src = tmp_path / "t.txt"
    src.write_text("x\n")
    assert main(["encode", str(src), "-o", str(tmp_path / "e.npy"), "--model", str(tmp_path / "missing")]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err


def test_help_lists_the_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["encode", "--help"])
    assert exc.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--model", "--batch-size", "--query", "--document", "--device", "--dtype", "--format"):
        assert flag in help_text


def test_console_script_reads_stdin(tmp_path, tiny_checkpoint, tiny_model):
    script = Path(sys.executable).parent / "causal2vec"
    out = tmp_path / "emb.npy"
    result = subprocess.run(
        [str(script), "encode", "-", "-o", str(out), "--model", str(tiny_checkpoint), "--document", "-q"],
        input="\n".join(LINES) + "\n", capture_output=True, text=True, timeout=300,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(out), tiny_model.encode_document(LINES), atol=1e-5, rtol=0)
