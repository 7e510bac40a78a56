"""ONNX export (``python -m export``) and the onnxruntime backend, checked against the torch model."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil

import numpy as np
import pytest
import torch

from causal2vec import Causal2Vec, SemanticIndex
from causal2vec.backends.onnx import OnnxCausal2Vec, execution_providers, require_onnxruntime
from causal2vec.config import CONFIG_NAME
from export import folder as folder_module
from export.cli import main
from export.folder import ExportOptions, ParityError, export_folder, fingerprint
from export.onnx_export import PARITY_TEXTS, check_parity
from tests.helpers import bbc_reference

ARCHS = ["llama", "qwen2", "gpt2"]


@pytest.fixture(scope="module", autouse=True)
def trace_once(trace_cache):
    """Each distinct (model, opset, external data) is traced once; the other exports copy its graph (TraceCache)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(folder_module, "trace_onnx", trace_cache)
        yield


@pytest.fixture(scope="module", params=ARCHS)
def exported(request, build_tiny, tmp_path_factory) -> tuple[Causal2Vec, OnnxCausal2Vec]:
    """A tiny model of each LLM architecture, saved, exported to a folder of its own, and its checkpoint deleted
    (the export must serve alone); the torch model is loaded before the deletion."""
    root = tmp_path_factory.mktemp(f"onnx-{request.param}")
    build_tiny(request.param).save_pretrained(root / "ckpt")
    model = Causal2Vec.from_pretrained(root / "ckpt")
    export_folder(Causal2Vec.from_pretrained(root / "ckpt"), root / "export", source=str(root / "ckpt"))
    shutil.rmtree(root / "ckpt")
    return model, OnnxCausal2Vec.from_pretrained(root / "export")


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


def test_export_command_writes_a_self_contained_folder_with_its_manifest(tiny_checkpoint, tiny_onnx):
    out, printed, tmp_path = tiny_onnx.folder, tiny_onnx.printed, tiny_onnx.folder.parent
    assert f"wrote {out} (fp32, opset 23" in printed and "min cosine 0.99999" in printed, printed
    assert "(CPUExecutionProvider) vs torch float32" in printed
    assert not list(out.rglob("*.safetensors")), "no torch weights unless --keep-torch"
    assert {p.relative_to(out).as_posix() for p in out.iterdir()} == {CONFIG_NAME, "encoder", "llm", "onnx"}
    assert not list(tmp_path.glob(".*")), "no staging folders left"
    manifest = json.loads((out / "onnx" / "manifest.json").read_text())
    assert manifest["precision"] == "fp32" and manifest["opset"] == 23 == _written_opset(out / "onnx" / "model.onnx")
    ops = {n.op_type for n in pytest.importorskip("onnx").load(str(out / "onnx" / "model.onnx")).graph.node}
    assert {"Attention", "RotaryEmbedding", "RMSNormalization"} <= ops, "opset 23's fused ops, which the CPU runs"
    assert manifest["onnxruntime"] == require_onnxruntime().__version__
    assert manifest["checked_on"] == "CPUExecutionProvider" and manifest["parity"]["min_cosine"] > 0.9999
    assert manifest["source"]["fingerprint"] == fingerprint(Causal2Vec.from_pretrained(tiny_checkpoint))
    assert manifest["embedding_dim"] == Causal2Vec.from_pretrained(tiny_checkpoint).embedding_dim
    config = json.loads((out / CONFIG_NAME).read_text())
    assert "onnx/model.onnx" in config["checksums"] and "llm/tokenizer.json" in config["checksums"]
    reference = Causal2Vec.from_pretrained(tiny_checkpoint).encode(["Shares fell sharply."])
    got = OnnxCausal2Vec.from_pretrained(out).encode(["Shares fell sharply."])
    np.testing.assert_allclose(got, reference, atol=2e-5)
    message = r"is an ONNX export without torch weights .* causal2vec.OnnxCausal2Vec.from_pretrained"
    with pytest.raises(FileNotFoundError, match=message):
        Causal2Vec.from_pretrained(out)


def test_keep_torch_writes_a_folder_both_backends_load(tiny_checkpoint, tmp_path):
    out = tmp_path / "both"
    assert main(["--model", str(tiny_checkpoint), "--output", str(out), "--keep-torch"]) == 0
    texts = ["Shares fell sharply.", "The match ended in a draw after extra time."]
    torch_model, onnx_model = Causal2Vec.from_pretrained(out), OnnxCausal2Vec.from_pretrained(out)
    np.testing.assert_allclose(onnx_model.encode(texts), torch_model.encode(texts), atol=2e-5)
    reference = Causal2Vec.from_pretrained(tiny_checkpoint).encode(texts)
    np.testing.assert_allclose(torch_model.encode(texts), reference, atol=1e-6)


def test_forced_external_data_loads_and_matches(tiny_checkpoint, tmp_path):
    out = tmp_path / "external"
    assert main(["--model", str(tiny_checkpoint), "--output", str(out), "--external-data"]) == 0
    graph, data = out / "onnx" / "model.onnx", out / "onnx" / "model.onnx.data"
    onnx = pytest.importorskip("onnx")
    stored = onnx.load(str(graph), load_external_data=False).graph.initializer
    external = [t for t in stored if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external and data.stat().st_size >= sum(np.prod(t.dims) * 4 for t in external), "weights in the data file"
    assert json.loads((out / "onnx" / "manifest.json").read_text())["external_data"] is True
    texts = ["Shares fell sharply.", "A second text, somewhat longer than the first one."]
    reference = Causal2Vec.from_pretrained(tiny_checkpoint).encode(texts)
    np.testing.assert_allclose(OnnxCausal2Vec.from_pretrained(out).encode(texts), reference, atol=2e-5)
    data.write_bytes(data.read_bytes()[:-8] + bytes(8))  # corrupt the weights, same size
    with pytest.raises(ValueError, match=rf"export file {data} is corrupt"):
        OnnxCausal2Vec.from_pretrained(out)
    data.unlink()
    with pytest.raises(FileNotFoundError, match=str(data)):
        OnnxCausal2Vec.from_pretrained(out)


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


def test_export_replaces_an_earlier_export_and_refuses_other_folders(tiny_checkpoint, tiny_onnx, tmp_path, capsys):
    out = tmp_path / "exported"
    shutil.copytree(tiny_onnx.folder, out)  # an earlier export
    first = (out / "onnx" / "manifest.json").read_text()
    assert main(["--model", str(tiny_checkpoint), "--output", str(out), "--opset", "20"]) == 0
    assert json.loads((out / "onnx" / "manifest.json").read_text())["opset"] == 20 != json.loads(first)["opset"]
    (out / "notes.txt").write_text("notes of the user")  # an earlier export holding the user's files is refused
    (out / "mydata").mkdir()
    (out / "mydata" / "a.txt").write_text("x")
    (out / "onnx" / "mine.onnx").write_text("y")
    assert main(["--model", str(tiny_checkpoint), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--output {out} is an earlier export that also holds what an export does not write" in err
    assert "mydata, mydata/a.txt, notes.txt, onnx/mine.onnx" in err
    assert (out / "notes.txt").read_text() == "notes of the user" and (out / "mydata" / "a.txt").read_text() == "x"
    assert json.loads((out / "onnx" / "manifest.json").read_text())["opset"] == 20, "the earlier export changed"
    other = tmp_path / "notes"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    inside = tiny_checkpoint / "onnx-export"
    for output, message in (
        (other, "exists and is not an ONNX export"),
        (inside, "is inside the source model"),
        (tiny_checkpoint, "is inside the source model"),
    ):
        assert main(["--model", str(tiny_checkpoint), "--output", str(output)]) == 2
        assert message in capsys.readouterr().err
    assert (other / "notes.txt").read_text() == "keep me" and not inside.exists()
    assert main(["--model", str(other), "--output", str(tmp_path / "x")]) == 2
    assert f"--model {other} is not a Causal2Vec checkpoint" in capsys.readouterr().err


def test_a_broken_symlink_on_the_output_path_is_named(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "ln").mkdir()
    (tmp_path / "ln" / "link").symlink_to(tmp_path / "gone")
    for output in (tmp_path / "ln" / "link" / "sub", tmp_path / "ln" / "link"):
        assert main(["--model", str(tiny_checkpoint), "--output", str(output)]) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / 'ln' / 'link'} is a broken symlink (to {tmp_path / 'gone'})" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_an_export_works_inside_one_hidden_folder_and_sweeps_a_killed_ones(tiny_checkpoint, tmp_path, monkeypatch):
    from export import folder as folder_module
    from tests.helpers import dead_pid

    stale = tmp_path / f".new1.tmp-0123abcd-{dead_pid()}"  # what a SIGKILL during an export leaves
    (stale / ".work" / "fp32").mkdir(parents=True)
    (stale / ".work" / "fp32" / "model.onnx").write_bytes(b"0" * 4096)
    seen = []
    trace = folder_module.trace_onnx
    monkeypatch.setattr(folder_module, "trace_onnx", lambda *a, **k: (seen.append(sorted(os.listdir(tmp_path))),
                                                                      trace(*a, **k))[1])  # fmt: skip
    assert main(["--model", str(tiny_checkpoint), "--output", str(tmp_path / "new1")]) == 0
    assert len(seen[0]) == 1 and seen[0][0].startswith(".new1.tmp-"), f"the export wrote beside its folder: {seen}"
    assert os.listdir(tmp_path) == ["new1"], "a killed export's leftovers stayed"
    assert not (tmp_path / "new1" / ".work").exists()


def test_an_export_that_breaks_parity_is_refused_with_the_figures(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    from export import folder

    monkeypatch.setitem(folder.PARITY_LIMITS, "fp32", (1.1, 0.0))  # no graph can meet these
    out = tmp_path / "refused"
    assert main(["--model", str(tiny_checkpoint), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert re.search(r"the fp32 graph does not match torch on CPUExecutionProvider: min cosine \d\.\d{6} \(needs "
                     r">= 1\.1\), max relative error .* \(needs <= 0e\+00\)", err), err  # fmt: skip
    assert "it was not written" in err and not out.exists() and not list(tmp_path.glob(".*"))
    with pytest.raises(ParityError) as caught:
        export_folder(Causal2Vec.from_pretrained(tiny_checkpoint), out, ExportOptions())
    assert caught.value.parity.min_cosine > 0.9999


def test_optimize_fp16_and_int8_exports_keep_parity_and_say_what_they_are(tiny_checkpoint, tmp_path, capsys):
    texts = ["Shares fell sharply.", "The match ended in a draw after extra time, " * 3]
    reference = Causal2Vec.from_pretrained(tiny_checkpoint).encode(texts)
    for flag, precision, min_cosine in (("--optimize", "fp32", 0.9999), ("--int8", "int8", 0.98)):
        out = tmp_path / flag.strip("-")
        assert main(["--model", str(tiny_checkpoint), "--output", str(out), flag]) == 0
        printed = capsys.readouterr().out
        manifest = json.loads((out / "onnx" / "manifest.json").read_text())
        assert manifest["precision"] == precision and manifest["checked_on"] == "CPUExecutionProvider"
        if flag == "--optimize":
            assert isinstance(manifest["fused"], dict) and "fused by onnxruntime's transformer optimizer" in printed
            assert "RotaryEmbedding" not in manifest["fused"], "written by the exporter at opset 23, not fused"
        exported = OnnxCausal2Vec.from_pretrained(out)  # verifies every checksum, scores.json's included
        got = exported.encode(texts)
        assert ((got * reference).sum(1) >= min_cosine).all(), (got * reference).sum(1)
        if flag == "--int8":  # scored by default: mteb's figures against brute-force nDCG@10 of each model
            scores = json.loads((out / "onnx" / "scores.json").read_text())
            assert scores["float32"] == pytest.approx(
                100 * bbc_reference(Causal2Vec.from_pretrained(tiny_checkpoint)), abs=1e-2
            )
            assert scores["int8"] == pytest.approx(100 * bbc_reference(exported), abs=1e-2)
            assert f"cost {scores['float32'] - scores['int8']:+.2f} points" in printed, printed
            # Block-wise: each LLM layer's down, key and value projections and each encoder layer's two MLP layers,
            # query and key; dynamic: the other linear layers of both transformers' layers. Counted on the torch
            # modules, then in the graph.
            model = Causal2Vec.from_pretrained(tiny_checkpoint)
            linears = [name for part in (model.encoder, model.llm) for name, module in part.named_modules()
                       if isinstance(module, torch.nn.Linear) and re.search(r"\.\d+\.", name)]  # fmt: skip
            kinds = r"mlp\.down_proj|self_attn\.[kv]_proj|intermediate\.dense|output\.dense|attention\.self\.query"
            kinds += r"|attention\.self\.key"
            blockwise = [name for name in linears if re.search(rf"\.\d+\.({kinds})$", name)]
            assert len(blockwise) == 3 * model.llm.config.num_hidden_layers + 4 * model.encoder.config.num_hidden_layers
            expected = {"blockwise": len(blockwise), "dynamic": len(linears) - len(blockwise)}
            assert manifest["quantized"] == expected and "int8 matrix products: " in printed, printed
            graph = pytest.importorskip("onnx").load(str(out / "onnx" / "model.onnx"))
            ops = [n.op_type for n in graph.graph.node]
            assert ops.count("MatMulNBits") == expected["blockwise"], ops
            assert ops.count("DynamicQuantizeMatMul") + ops.count("MatMulInteger") == expected["dynamic"], ops
        else:
            assert not (out / "onnx" / "scores.json").exists()
    out = tmp_path / "fp16"
    assert main(["--model", str(tiny_checkpoint), "--output", str(out), "--fp16"]) == 0
    printed = capsys.readouterr().out
    manifest = json.loads((out / "onnx" / "manifest.json").read_text())
    assert manifest["precision"] == "fp16"
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(out / "onnx" / "model.onnx"))
    assert {i.type.tensor_type.elem_type for i in graph.graph.output} == {onnx.TensorProto.FLOAT}
    kinds = {init.data_type for init in graph.graph.initializer if len(init.dims) == 2}
    assert onnx.TensorProto.FLOAT16 in kinds and onnx.TensorProto.FLOAT not in kinds, kinds  # weight matrices
    if manifest["checked_on"] is None:  # this onnxruntime has no float16 kernels on the CPU
        assert "parity not checked: no onnxruntime provider here can run the fp16 graph" in printed
    else:
        assert manifest["parity"]["min_cosine"] >= 0.999


def test_a_graph_that_does_not_match_its_folder_is_named(exported, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(exported[1].name_or_path, copy)
    manifest_path = copy / "onnx" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    config = json.loads((copy / CONFIG_NAME).read_text())
    config["checksums"].pop("onnx/manifest.json")  # edit the manifest as a user might, without re-checksumming
    (copy / CONFIG_NAME).write_text(json.dumps(config))
    dim = manifest["embedding_dim"]
    for change, message in (
        ({"embedding_dim": dim + 1}, rf"returns {dim}-dimensional embeddings, but the export's config and "
                                     rf"manifest say {dim + 1}"),
        ({"precision": "fp16"}, r"was exported as fp32, but its manifest says fp16"),
        ({"inputs": ["input_ids"]}, r"takes inputs \['encoder_attention_mask', .*but the export says \['input_ids'\]"),
    ):  # fmt: skip
        manifest_path.write_text(json.dumps(manifest | change))
        with pytest.raises(ValueError, match=message):
            OnnxCausal2Vec.from_pretrained(copy)
    (copy / "onnx" / "model.onnx").unlink()
    with pytest.raises(FileNotFoundError, match=r"has no ONNX export \(onnx/model.onnx\)"):
        OnnxCausal2Vec.from_pretrained(copy)


def test_cuda_without_its_provider_falls_back_to_the_cpu_with_one_warning_or_raises_when_strict(exported, caplog):
    if "CUDAExecutionProvider" in require_onnxruntime().get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider; tests/test_gpu.py covers it")
    folder = exported[1].name_or_path
    with caplog.at_level(logging.WARNING, logger="causal2vec"):
        model = OnnxCausal2Vec.from_pretrained(folder, device="cuda")
    warnings = [r.getMessage() for r in caplog.records if "running on the CPU instead" in r.getMessage()]
    assert len(warnings) == 1 and "pip install 'causal2vec[onnx-gpu]'" in warnings[0], warnings
    assert model.provider == "CPUExecutionProvider"
    np.testing.assert_allclose(model.encode(["a text"]), exported[1].encode(["a text"]), atol=1e-6)
    with pytest.raises(ValueError, match=r"device 'cuda' needs onnxruntime's CUDA provider"):
        OnnxCausal2Vec.from_pretrained(folder, device="cuda", strict=True)


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
            execution_providers("cuda", strict=True)


def test_onnx_load_verifies_the_tokenizer_files(exported, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(exported[1].name_or_path, copy)
    tokenizer = copy / "llm" / "tokenizer.json"
    data = bytearray(tokenizer.read_bytes())
    data[-10] ^= 0xFF  # same size, other bytes
    tokenizer.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"export file {tokenizer} is corrupt"):
        OnnxCausal2Vec.from_pretrained(copy)


@pytest.fixture(scope="module")
def onnx_folder(tiny_onnx):
    """The tiny checkpoint's self-contained float32 export."""
    return tiny_onnx.folder


def test_index_and_search_on_onnx_give_the_torch_top_k_and_record_the_backend(
    onnx_folder, tiny_checkpoint, corpus, tmp_path, capsys
):
    from causal2vec.cli import main as cli

    corpus_file = tmp_path / "news.jsonl"
    corpus_file.write_text("".join(json.dumps({"id": f"n{i}", "text": t}) + "\n" for i, t in enumerate(corpus[:40])))
    common = ["-q", "--device", "cpu", "--corpus", str(corpus_file)]
    assert cli(["index", *common, "--index", str(tmp_path / "torch.idx"), "--model", str(tiny_checkpoint),
                "--dtype", "float32"]) == 0  # fmt: skip
    assert cli(["index", *common, "--index", str(tmp_path / "onnx.idx"), "--model", str(onnx_folder)]) == 0
    capsys.readouterr()
    identity = SemanticIndex.load(tmp_path / "onnx.idx").manifest.model
    assert (identity.backend, identity.precision) == ("onnx", "fp32")
    assert SemanticIndex.load(tmp_path / "torch.idx").manifest.model.backend == "torch"
    queries = ["interest rates and inflation", "the cup final", "a new film wins awards"]
    hits = {}
    for name, extra in (("torch.idx", []), ("onnx.idx", []), ("torch.idx", ["--model", str(onnx_folder)])):
        assert cli(["search", "--index", str(tmp_path / name), *queries, "-k", "5", "--json", "--device", "cpu",
                    *extra]) == 0  # fmt: skip
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        hits[(name, bool(extra))] = [[h["id"] for h in line["hits"]] for line in lines]
    reference = hits[("torch.idx", False)]
    assert hits[("onnx.idx", False)] == reference  # an index built and searched on ONNX
    assert hits[("torch.idx", True)] == reference  # a torch-built index searched with its ONNX export
    # Appending with another backend or precision is refused unless forced; the index keeps its 40 documents.
    extra = tmp_path / "more.jsonl"
    extra.write_text(json.dumps({"id": "x1", "text": "An extra article about markets."}) + "\n")
    append = ["index", "-q", "--device", "cpu", "--corpus", str(extra), "--index", str(tmp_path / "torch.idx"),
              "--append", "--model", str(onnx_folder)]  # fmt: skip
    assert cli(append) != 0
    assert "was embedded by the torch backend in fp32, and this model is onnx in fp32" in capsys.readouterr().err
    assert len(SemanticIndex.load(tmp_path / "torch.idx")) == 40
    assert cli([*append, "--force"]) == 0
    assert len(SemanticIndex.load(tmp_path / "torch.idx")) == 41


def test_encode_on_onnx_matches_torch_and_refuses_a_torch_dtype(onnx_folder, tiny_checkpoint, tmp_path, capsys):
    from causal2vec.cli import main as cli

    texts = tmp_path / "texts.txt"
    texts.write_text("Shares fell sharply.\nThe match ended in a draw.\n")
    assert cli(["encode", str(texts), "-o", str(tmp_path / "onnx.npy"), "--model", str(onnx_folder), "-q",
                "--device", "cpu"]) == 0  # fmt: skip
    assert cli(["encode", str(texts), "-o", str(tmp_path / "torch.npy"), "--model", str(tiny_checkpoint), "-q",
                "--device", "cpu", "--dtype", "float32"]) == 0  # fmt: skip
    np.testing.assert_allclose(np.load(tmp_path / "onnx.npy"), np.load(tmp_path / "torch.npy"), atol=2e-5)
    assert cli(["encode", str(texts), "-o", str(tmp_path / "x.npy"), "--model", str(onnx_folder), "-q",
                "--dtype", "bfloat16"]) == 2  # fmt: skip
    assert "--dtype bfloat16 applies to the torch backend" in capsys.readouterr().err


@pytest.mark.slow
def test_the_real_default_exports_and_matches_torch(tmp_path):
    from causal2vec.data.bbc import bbc_news_split

    model = Causal2Vec.from_pretrained("default", dtype="float32")
    report = export_folder(Causal2Vec.from_pretrained("default", dtype="float32"), tmp_path / "default-onnx")
    assert report.parity.max_rel < 1e-4 and report.parity.min_cosine > 0.99999, report.parity
    texts = [f"{a.title}\n{a.body}" for a in bbc_news_split("validation")[:12]]
    expected = model.encode(texts, normalize=False)
    got = OnnxCausal2Vec.from_pretrained(tmp_path / "default-onnx").encode(texts, normalize=False)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def test_an_export_only_folder_runs_on_onnx_whatever_an_index_recorded(onnx_folder):
    from causal2vec.backends import load_backend
    from causal2vec.identity import ModelIdentity

    model = load_backend(ModelIdentity(str(onnx_folder), None, "torch", "bf16"), device="cpu")
    assert isinstance(model, OnnxCausal2Vec)
    assert (model.identity.backend, model.identity.precision) == ("onnx", "fp32")


def test_onnx_encode_quantises_like_quantize_embeddings_and_refuses_a_pool(onnx_folder, corpus):
    from sentence_transformers import quantize_embeddings

    from causal2vec.pool import EncodePool

    onnx_model = OnnxCausal2Vec.from_pretrained(onnx_folder)
    texts = [text[:300] for text in corpus[:10]]
    floats = onnx_model.encode(texts)
    for precision in ("int8", "uint8", "binary", "ubinary"):
        got = onnx_model.encode(texts, precision=precision, calibration_embeddings=floats)
        np.testing.assert_array_equal(got, quantize_embeddings(floats, precision, calibration_embeddings=floats))
    with pytest.raises(TypeError, match="EncodePool runs torch models"):
        EncodePool(onnx_model, ["cpu", "cpu"])
