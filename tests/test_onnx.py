"""ONNX export (``python -m export``) and the onnxruntime backend, checked against the torch model."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from causal2vec import Causal2Vec
from causal2vec.config import CONFIG_NAME
from causal2vec.onnx_backend import OnnxCausal2Vec, execution_providers, require_onnxruntime
from export.cli import main
from export.onnx_export import PARITY_TEXTS, check_parity, export_onnx

ARCHS = ["llama", "qwen2", "gpt2"]


@pytest.fixture(scope="module", params=ARCHS)
def exported(request, build_tiny, tmp_path_factory) -> tuple[Causal2Vec, OnnxCausal2Vec]:
    """A tiny model of each LLM architecture, saved and exported; the torch model reloaded from the same folder."""
    folder = tmp_path_factory.mktemp(f"onnx-{request.param}") / "ckpt"
    build_tiny(request.param).save_pretrained(folder)
    model = Causal2Vec.from_pretrained(folder)
    export_onnx(model, folder)
    return Causal2Vec.from_pretrained(folder), OnnxCausal2Vec.from_pretrained(folder)


def test_onnx_embeddings_match_torch(exported, texts):
    model, onnx_model = exported
    for kwargs in ({}, {"normalize": False}, {"batch_size": 3}):
        expected = model.encode(texts, **kwargs)
        got = onnx_model.encode(texts, **kwargs)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-4, err_msg=str(kwargs))
    np.testing.assert_allclose(onnx_model.encode_query(texts), model.encode_query(texts), atol=2e-5)
    np.testing.assert_allclose(onnx_model.encode_document(texts[:2]), model.encode_document(texts[:2]), atol=2e-5)


def test_onnx_is_batch_invariant_and_returns_1d_for_one_string(exported, texts):
    _, onnx_model = exported
    batch = onnx_model.encode(texts, batch_size=len(texts))
    single = onnx_model.encode(texts[3])
    assert single.shape == (onnx_model.embedding_dim,)
    np.testing.assert_allclose(single, batch[3], atol=1e-5)


def test_parity_report_is_tight_and_counts_truncation_instead_of_logging_it(exported, caplog):
    model, onnx_model = exported
    with caplog.at_level(logging.WARNING):
        parity = check_parity(model, onnx_model)
    assert parity.ok(), parity
    assert parity.max_rel < 1e-4
    long_text = PARITY_TEXTS[-1]
    assert len(model.llm_tokenizer(long_text)["input_ids"]) > model.config.llm_max_length
    assert parity.texts == 2 * len(PARITY_TEXTS) and parity.truncated >= 2, parity
    assert [r.getMessage() for r in caplog.records if r.name.startswith("causal2vec")] == []


def test_export_command_writes_a_loadable_checkpoint_and_reports_parity(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "exported"
    assert main(["--model", str(tiny_checkpoint), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'onnx' / 'model.onnx'}" in printed and "min cosine 0.99999" in printed
    assert (out / CONFIG_NAME).is_file() and not list(out.glob(".onnx*"))
    assert _written_opset(out / "onnx" / "model.onnx") == 18
    reference = Causal2Vec.from_pretrained(tiny_checkpoint).encode(["Shares fell sharply."])
    got = OnnxCausal2Vec.from_pretrained(out).encode(["Shares fell sharply."])
    np.testing.assert_allclose(got, reference, atol=2e-5)


def _written_opset(path) -> int:
    """The default-domain opset recorded in an ONNX file (read with onnx, not with our code)."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(path), load_external_data=False)
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


def test_export_writes_the_opset_asked_for_and_refuses_those_it_cannot_write(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "exported"
    # Below 18 the exporter used to write opset 18 anyway; past 25 its version converter leaves an invalid graph.
    for opset in ("1", "17", "26"):
        assert main(["--model", str(tiny_checkpoint), "--output", str(out), "--opset", opset]) == 2
        err = capsys.readouterr().err
        assert f"--opset {opset} is not supported" in err and "writes ONNX opsets 18 to 25" in err, err
    assert not out.exists(), "a refused opset writes nothing"
    assert main(["--model", str(tiny_checkpoint), "--output", str(out), "--opset", "20"]) == 0
    assert _written_opset(out / "onnx" / "model.onnx") == 20


def test_export_in_place_replaces_an_earlier_export(tiny_checkpoint, tmp_path, capsys):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model.onnx").write_bytes(b"stale")
    assert main(["--model", str(folder), "--output", str(folder)]) == 0
    assert (folder / "onnx" / "model.onnx").stat().st_size > 1000
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []


def test_export_refuses_to_overwrite_a_folder_that_is_not_a_checkpoint(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    assert main(["--model", str(tiny_checkpoint), "--output", str(tmp_path)]) == 2
    assert "exists and is not a Causal2Vec checkpoint" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_loading_without_an_export_says_how_to_make_one(tiny_checkpoint):
    message = r"has no ONNX export \(onnx/model.onnx\); make one with: python -m export"
    with pytest.raises(FileNotFoundError, match=message):
        OnnxCausal2Vec.from_pretrained(tiny_checkpoint)


def test_execution_providers_name_bad_devices():
    assert execution_providers("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match=r"device 'tpu' is not supported by the ONNX backend"):
        execution_providers("tpu")
    if "CUDAExecutionProvider" in require_onnxruntime().get_available_providers():
        assert execution_providers("cuda:1")[0] == ("CUDAExecutionProvider", {"device_id": 1})
    else:
        with pytest.raises(ValueError, match=r"pip install 'causal2vec\[onnx-gpu\]'"):
            execution_providers("cuda")


def test_onnx_load_verifies_the_tokenizer_files(exported, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(exported[1].name_or_path, copy)
    tokenizer = copy / "llm" / "tokenizer.json"
    data = bytearray(tokenizer.read_bytes())
    data[-10] ^= 0xFF  # same size, other bytes
    tokenizer.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"checkpoint file {tokenizer} is corrupt"):
        OnnxCausal2Vec.from_pretrained(copy)
