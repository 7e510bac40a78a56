"""CUDA code paths: skipped with a reason on machines without a GPU (CI has none)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from causal2vec import Causal2Vec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; none is visible here"),
]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_cuda_float32_matches_cpu(build_tiny, texts, arch):
    model = build_tiny(arch)
    cpu = model.encode(texts)
    gpu = model.encode(texts, device="cuda")
    assert model.device.type == "cuda"
    assert np.abs(gpu - cpu).max() < 1e-4


def test_cuda_batch_invariance(build_tiny, texts):
    model = build_tiny("llama").to("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    together = model.encode(texts, batch_size=len(texts))
    alone = np.stack([model.encode(t) for t in texts])
    assert np.abs(together - alone).max() < 1e-5


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_cuda_half_precision(build_tiny, texts, dtype):
    model = build_tiny("llama")
    reference = model.encode(texts)
    low = model.encode(texts, device="cuda", dtype=dtype)
    assert (reference * low).sum(1).min() > 0.99


def test_from_pretrained_on_cuda(tiny_checkpoint, tiny_model, texts):
    model = Causal2Vec.from_pretrained(tiny_checkpoint, device="cuda", dtype="bfloat16")
    assert model.device.type == "cuda" and model.llm.device.type == "cuda"
    emb = model.encode(texts, convert_to_tensor=True)
    assert emb.device.type == "cpu" and emb.dtype == torch.float32
    assert (emb.numpy() * tiny_model.encode(texts)).sum(1).min() > 0.99


def _faiss_gpus() -> int:
    try:
        import faiss
    except ModuleNotFoundError:
        return 0
    return faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0


@pytest.mark.skipif(_faiss_gpus() < 1, reason="needs faiss-gpu (pip install 'causal2vec[search-gpu]') and a GPU")
@pytest.mark.parametrize("factory", ["Flat", "IVF16,Flat"])
def test_faiss_gpu_index_matches_cpu(tmp_path, factory):
    from causal2vec.search.index import SemanticIndex
    from tests.helpers import HashEmbedder, docs

    cpu = SemanticIndex.build(tmp_path / "cpu", HashEmbedder(), docs(2000), factory=factory)
    gpu = SemanticIndex.build(tmp_path / "gpu", HashEmbedder(), docs(2000), factory=factory, gpu=True)
    queries = [f"T{i}\ndocument number {i}" for i in range(0, 2000, 97)]
    params = {"nprobe": 16} if factory.startswith("IVF") else {}
    expected, got = cpu.search(queries, k=5, **params), gpu.search(queries, k=5, **params)
    assert [[h.id for h in row] for row in got] == [[h.id for h in row] for row in expected]
    gpu.delete(["d0"])
    gpu.save()  # written from a CPU copy
    assert len(SemanticIndex.load(tmp_path / "gpu")) == 1999


def test_fsdp_run_saves_the_whole_model_like_a_plain_run(tmp_path, tiny_checkpoint):
    """FSDP2 through accelerate (one rank: every weight is still a sharded DTensor) gathers the final model on save."""
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    from causal2vec.data.bbc import bbc_news_split
    from tests.helpers import INSTRUCTION, write_config
    from training.data.pairs import Pair, write_pairs

    pairs_file = tmp_path / "bbc.jsonl"
    write_pairs(pairs_file, [Pair(a.title, a.body[:300], (), INSTRUCTION, "bbc") for a in bbc_news_split("train")[:96]])
    root = Path(__file__).resolve().parents[1]
    fsdp = yaml.safe_load((root / "training" / "configs" / "accelerate-fsdp.yaml").read_text())
    fsdp.update(num_processes=1, mixed_precision="no", main_process_port=29533)
    fsdp["fsdp_config"].update(
        fsdp_transformer_layer_cls_to_wrap="LlamaDecoderLayer", fsdp_activation_checkpointing=False
    )
    (tmp_path / "fsdp.yaml").write_text(yaml.safe_dump(fsdp))
    finals = {}
    for name, launcher in {
        "plain": [sys.executable],
        "fsdp": [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(tmp_path / "fsdp.yaml")],
    }.items():
        config = write_config(tmp_path / name, tiny_checkpoint, pairs_file, output={"merge": True})
        done = subprocess.run([*launcher, "-m", "training", "--config", str(config)], cwd=root, capture_output=True,
                              text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        finals[name] = Causal2Vec.from_pretrained(tmp_path / name / "run" / "final")
    texts = ["A headline about the economy", "A match report from the weekend", "New phone on sale"]
    plain, sharded = (finals[name].encode_document(texts) for name in ("plain", "fsdp"))
    untrained = Causal2Vec.from_pretrained(tiny_checkpoint).encode_document(texts)
    assert np.abs(plain - untrained).max() > 1e-3, "the plain run did not train"
    np.testing.assert_allclose(sharded, plain, atol=2e-3)


def _ort_cuda() -> bool:
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


needs_ort_cuda = pytest.mark.skipif(
    not _ort_cuda(), reason="needs onnxruntime's CUDA provider (pip install 'causal2vec[onnx-gpu]')"
)


@needs_ort_cuda
def test_fp16_export_is_checked_on_cuda_and_serves_there_with_io_binding(tiny_checkpoint, tmp_path, texts):
    import json

    from causal2vec import OnnxCausal2Vec
    from export.cli import main

    out = tmp_path / "fp16"
    assert main(["--model", str(tiny_checkpoint), "--output", str(out), "--fp16"]) == 0
    manifest = json.loads((out / "onnx" / "manifest.json").read_text())
    assert manifest["checked_on"] == "CUDAExecutionProvider" and manifest["parity"]["min_cosine"] >= 0.999
    model = OnnxCausal2Vec.from_pretrained(out, device="cuda", strict=True)
    assert model.provider == "CUDAExecutionProvider" and model.precision == "fp16"
    calls = []
    run = model.session.run_with_iobinding
    model.session.run_with_iobinding = lambda binding: calls.append(binding) or run(binding)
    got = model.encode(texts, batch_size=4)
    assert len(calls) == -(-len(texts) // 4), "every batch goes through IO binding"
    reference = Causal2Vec.from_pretrained(tiny_checkpoint).encode(texts)
    assert (got * reference).sum(1).min() > 0.999


@needs_ort_cuda
def test_onnx_on_a_missing_gpu_index_falls_back_or_raises_when_strict(tiny_checkpoint, tmp_path, caplog):
    import logging

    from causal2vec import OnnxCausal2Vec
    from export.cli import main

    out = tmp_path / "fp32"
    assert main(["--model", str(tiny_checkpoint), "--output", str(out)]) == 0
    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU
    with caplog.at_level(logging.WARNING, logger="causal2vec"):
        model = OnnxCausal2Vec.from_pretrained(out, device=missing)
    assert model.provider == "CPUExecutionProvider"
    assert len([r for r in caplog.records if "running on the CPU instead" in r.getMessage()]) == 1
    with pytest.raises(ValueError, match=rf"device '{missing}' needs a GPU"):
        OnnxCausal2Vec.from_pretrained(out, device=missing, strict=True)
