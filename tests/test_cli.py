"""The causal2vec console command, in-process through main() and end to end as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from causal2vec import Causal2Vec
from causal2vec.cli import main
from causal2vec.runtime import auto_dtype, default_device

LINES = ["The central bank cut rates.", "", "A striker scored twice in the final.", "Shares rose in early trading."]
TEXTS = [line for line in LINES if line]  # the corpus reader skips blank lines, in encode as in index
F32 = ["--dtype", "float32"]  # the tests compare with the float32 fixture; the default dtype is auto


def test_encode_lines_to_npy(tmp_path, tiny_checkpoint, tiny_model, capsys):
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(LINES) + "\n")
    out = tmp_path / "emb.npy"
    argv = ["encode", str(src), "-o", str(out), "--model", str(tiny_checkpoint), "--batch-size", "2", "-q", *F32]
    assert main(argv) == 0
    got = np.load(out)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), tiny_model.embedding_dim)
    np.testing.assert_allclose(got, tiny_model.encode_document(TEXTS), atol=1e-5, rtol=0)
    assert "wrote 3 embeddings" in capsys.readouterr().out


def test_encode_precision_writes_quantize_embeddings_of_the_floats(tmp_path, tiny_checkpoint, tiny_model, capsys):
    from sentence_transformers import quantize_embeddings

    src = tmp_path / "texts.txt"
    src.write_text("\n".join(LINES) + "\n")
    floats = tiny_model.encode_document(TEXTS)
    for precision, suffix in (("binary", "npy"), ("ubinary", "jsonl"), ("int8", "npy")):
        out = tmp_path / f"{precision}.{suffix}"
        argv = ["encode", str(src), "-o", str(out), "--model", str(tiny_checkpoint), "--precision", precision, "-q"]
        assert main([*argv, *F32]) == 0
        got = np.load(out) if suffix == "npy" else np.array([json.loads(r)["embedding"] for r in out.open()])
        np.testing.assert_array_equal(got, quantize_embeddings(floats, precision))
        assert f"as {precision}, {got.shape[1]} values each" in capsys.readouterr().out


def test_encode_on_two_cpu_workers_equals_one_process(tmp_path, tiny_checkpoint, tiny_model, capsys):
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(LINES) + "\n")
    out = tmp_path / "emb.npy"
    argv = ["encode", str(src), "-o", str(out), "--model", str(tiny_checkpoint), "--batch-size", "1", "-q", *F32]
    assert main([*argv, "--devices", "cpu,cpu"]) == 0
    np.testing.assert_allclose(np.load(out), tiny_model.encode_document(TEXTS), atol=1e-6, rtol=0)
    assert main([*argv, "--devices", "cpu,cpu", "--device", "cpu"]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert main([*argv, "--devices", "cpu,gpu:0"]) == 2
    assert "--devices: device 'gpu:0'" in capsys.readouterr().err


def test_encode_jsonl_queries_to_jsonl(tmp_path, tiny_checkpoint, tiny_model):
    src = tmp_path / "queries.jsonl"
    records = [{"id": f"q{i}", "text": t} for i, t in enumerate(LINES)]
    src.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    out = tmp_path / "emb.jsonl"
    assert main(["encode", str(src), "-o", str(out), "--model", str(tiny_checkpoint), "--query", "-q", *F32]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["q0", "q1", "q2", "q3"]
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), tiny_model.encode_query(LINES), atol=1e-5)


def test_encode_reads_tsv_and_titles_like_index(tmp_path, tiny_checkpoint, tiny_model):
    src = tmp_path / "docs.tsv"
    src.write_text("id\ttitle\ttext\na1\tRates\tThe central bank cut rates.\nb2\t\tShares rose.\n")
    out = tmp_path / "emb.jsonl"
    assert main(["encode", str(src), "-o", str(out), "--model", str(tiny_checkpoint), "-q", *F32]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a1", "b2"]
    expected = tiny_model.encode_document(["Rates\nThe central bank cut rates.", "Shares rose."])
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), expected, atol=1e-5)


def test_custom_instruction_and_dtype(tmp_path, tiny_checkpoint, tiny_model):
    src = tmp_path / "t.txt"
    src.write_text("interest rates\n")
    out = tmp_path / "e.npy"
    args = ["encode", str(src), "-o", str(out), "--model", str(tiny_checkpoint), "--query", "-q"]
    assert main([*args, "--instruction", "Find news", "--dtype", "bfloat16"]) == 0
    expected = tiny_model.encode_query(["interest rates"], instruction="Find news")
    assert float((np.load(out) * expected).sum()) > 0.99


def test_encode_defaults_to_the_shared_device_and_dtype_policy(tmp_path, tiny_checkpoint):
    src = tmp_path / "t.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "e.npy"
    assert main(["encode", str(src), "-o", str(out), "--model", str(tiny_checkpoint), "-q"]) == 0
    device = default_device()
    reference = Causal2Vec.from_pretrained(str(tiny_checkpoint), device=device, dtype=auto_dtype("auto", device))
    np.testing.assert_allclose(np.load(out), reference.encode_document(TEXTS), atol=1e-6, rtol=0)


def test_encode_max_length_is_a_per_call_budget(tmp_path, tiny_checkpoint, tiny_model, corpus):
    src = tmp_path / "long.txt"
    long_texts = [corpus[0].replace("\n", " ")[:600], corpus[1].replace("\n", " ")[:600]]
    src.write_text("\n".join(long_texts) + "\n")
    out = tmp_path / "e.npy"
    argv = ["encode", str(src), "-o", str(out), "--model", str(tiny_checkpoint), "-q", *F32, "--max-length", "12"]
    assert main(argv) == 0
    got, full = np.load(out), tiny_model.encode_document(long_texts)
    np.testing.assert_allclose(got, tiny_model.encode_document(long_texts, max_length=12), atol=1e-5, rtol=0)
    assert np.abs(got - full).max() > 1e-3, "--max-length 12 gave the embeddings of the full texts"
    assert tiny_model.config.llm_max_length == 128, "the budget leaked into a config"


def test_bad_input_file_exits_2_with_the_line(tmp_path, tiny_checkpoint, capsys):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": "fine"}\n{"title": "no text"}\n')
    assert main(["encode", str(src), "-o", str(tmp_path / "e.npy"), "--model", str(tiny_checkpoint)]) == 2
    assert "bad.jsonl:2: each record needs a string 'text' field" in capsys.readouterr().err
    assert not (tmp_path / "e.npy").exists()


def test_missing_model_exits_2(tmp_path, capsys):
    src = tmp_path / "t.txt"
    src.write_text("x\n")
    assert main(["encode", str(src), "-o", str(tmp_path / "e.npy"), "--model", str(tmp_path / "missing")]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err


def encode_argv(tmp_path: Path, checkpoint: Path, output: str, *extra: str) -> list[str]:
    src = tmp_path / "t.txt"
    src.write_text("\n".join(TEXTS) + "\n")
    return ["encode", str(src), "-o", str(tmp_path / output), "--model", str(checkpoint), "-q", *F32, *extra]


@pytest.mark.parametrize(
    ("output", "extra", "message"),
    [
        ("emb.csv", [], "unknown output suffix '.csv'; use .npy (a float32 (n, dim) array) or .jsonl"),
        ("emb", [], "unknown output suffix '(none)'; use .npy"),
        ("emb.npy", ["--format", "jsonl"], "--format jsonl does not match -o"),
    ],
)
def test_unknown_output_suffix_is_refused(tmp_path, tiny_checkpoint, capsys, output, extra, message):
    assert main(encode_argv(tmp_path, tiny_checkpoint, output, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / output).exists()


def test_output_that_is_a_folder_is_refused(tmp_path, tiny_checkpoint, capsys):
    (tmp_path / "emb.npy").mkdir()
    assert main(encode_argv(tmp_path, tiny_checkpoint, "emb.npy")) == 2
    assert f"-o {tmp_path / 'emb.npy'} is a folder; give a file name" in capsys.readouterr().err
    assert (tmp_path / "emb.npy").is_dir() and not any((tmp_path / "emb.npy").iterdir())


@pytest.mark.parametrize(
    ("argv", "flag", "value"),
    [
        (["search", "--index", "news.idx", "q", "--snippet", "-5"], "--snippet", "-5"),
        (["search", "--index", "news.idx", "q", "-k", "0"], "-k", "0"),
        (["search", "--index", "news.idx", "q", "--nprobe", "1.5"], "--nprobe", "1.5"),
        (["encode", "t.txt", "-o", "e.npy", "--batch-size", "0"], "--batch-size", "0"),
        (["encode", "t.txt", "-o", "e.npy", "--max-length", "-1"], "--max-length", "-1"),
        (["index", "--corpus", "c.txt", "--index", "x.idx", "--chunk-size", "two"], "--chunk-size", "two"),
    ],
)
def test_counts_must_be_positive_integers(capsys, argv, flag, value):
    assert main(argv) == 2
    assert f"argument {flag}: {value!r} is not a positive integer" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch has a usable CUDA GPU")
def test_cuda_device_without_cuda_is_a_clear_error(tmp_path, tiny_checkpoint, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("one document\n")
    for argv in (
        encode_argv(tmp_path, tiny_checkpoint, "e.npy", "--device", "cuda"),
        ["index", "--corpus", str(corpus), "--index", str(tmp_path / "x.idx"), "--device", "cuda:0"],
        ["search", "--index", str(tmp_path / "x.idx"), "rates", "--device", "cuda"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "--device: device 'cuda" in err and "is not available" in err and "use 'cpu'" in err, err
    assert not (tmp_path / "e.npy").exists() and not (tmp_path / "x.idx").exists()


def test_ctrl_c_while_writing_leaves_the_output_unchanged(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    out = tmp_path / "emb.npy"
    out.write_bytes(b"the previous embeddings")

    def interrupted_save(f, array, *args, **kwargs):
        f.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", interrupted_save)
    assert main(encode_argv(tmp_path, tiny_checkpoint, "emb.npy")) == 130
    assert capsys.readouterr().err == f"causal2vec encode: interrupted; {out} is unchanged\n"
    assert out.read_bytes() == b"the previous embeddings"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.npy", "t.txt"], "a temporary file was left"


@pytest.mark.parametrize(
    "bug", [TypeError("internal"), KeyError("internal"), ModuleNotFoundError("No module named 'causal2vec.gone'")]
)
def test_a_bug_keeps_its_traceback(tmp_path, tiny_checkpoint, monkeypatch, bug):
    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr("causal2vec.cli.read_corpus", broken)
    with pytest.raises(type(bug)):
        main(encode_argv(tmp_path, tiny_checkpoint, "e.npy"))


def test_a_missing_optional_package_names_its_install(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    def missing(*args, **kwargs):
        raise ModuleNotFoundError("this needs faiss, which is not installed; run: pip install 'causal2vec[search]'")

    monkeypatch.setattr("causal2vec.cli.read_corpus", missing)
    assert main(encode_argv(tmp_path, tiny_checkpoint, "e.npy")) == 2
    assert "run: pip install 'causal2vec[search]'" in capsys.readouterr().err


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
        [str(script), "encode", "-", "-o", str(out), "--model", str(tiny_checkpoint), "--document", "-q", *F32],
        input="\n".join(LINES) + "\n", capture_output=True, text=True, timeout=300,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(np.load(out), tiny_model.encode_document(TEXTS), atol=1e-5, rtol=0)
