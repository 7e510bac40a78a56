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
    from tests.test_index import HashEmbedder, docs

    cpu = SemanticIndex.build(tmp_path / "cpu", HashEmbedder(), docs(2000), factory=factory)
    gpu = SemanticIndex.build(tmp_path / "gpu", HashEmbedder(), docs(2000), factory=factory, gpu=True)
    queries = [f"T{i}\ndocument number {i}" for i in range(0, 2000, 97)]
    params = {"nprobe": 16} if factory.startswith("IVF") else {}
    expected, got = cpu.search(queries, k=5, **params), gpu.search(queries, k=5, **params)
    assert [[h.id for h in row] for row in got] == [[h.id for h in row] for row in expected]
    gpu.delete(["d0"])
    gpu.save()  # written from a CPU copy
    assert len(SemanticIndex.load(tmp_path / "gpu")) == 1999
