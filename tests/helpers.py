"""What several test files, and the processes they start, share: stand-in models, builders of inputs, references.

The helper processes (``tests/writer_process.py``, ``tests/full_disk_process.py``) import this module, so it
imports nothing heavy at the top beyond torch and causal2vec: faiss, uvicorn, yaml and the eval stack are imported
where they are used.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from causal2vec import Causal2Vec, Causal2VecConfig, SemanticIndex
from causal2vec.encoding import QueryDocumentMethods
from causal2vec.layout import Features

ROOT = Path(__file__).resolve().parents[1]

# LLM architectures and how their tokenizers treat special tokens: "bos" adds BOS (Llama, Mistral), "none" adds
# nothing (GPT-2, Qwen2), "bos_eos" adds both (so EOS must not be appended twice).
LLM_ARCHS = {
    "llama": (LlamaConfig, LlamaForCausalLM, "bos"),
    "mistral": (MistralConfig, MistralForCausalLM, "bos"),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, "none"),
    "gpt2": (GPT2Config, GPT2LMHeadModel, "none"),
    "llama_eos": (LlamaConfig, LlamaForCausalLM, "bos_eos"),
}


def dead_pid() -> int:
    """The process id of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# ---------------------------------------------------------------------- the index's stand-in model

DIM = 16


class HashEmbedder(QueryDocumentMethods):
    """A deterministic stand-in backend: each text maps to a fixed random unit vector.

    It ignores instructions, so a query equal to a document's text finds that document with score 1.
    """

    name_or_path = None
    device = torch.device("cpu")
    dtype = torch.float32
    backend, precision = "torch", "fp32"

    def __init__(self, dim: int = DIM) -> None:
        self.embedding_dim = dim
        self.config = Causal2VecConfig()
        self.calls: list[int] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        seeds = [int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little") for t in texts]
        out = np.stack([np.random.default_rng(s).standard_normal(self.embedding_dim) for s in seeds]).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def tokenize(self, texts: list[str], prompt: str = "", *, max_length: int | None = None) -> Features:
        return Features({"rows": torch.from_numpy(self.embed(texts)) if texts else torch.empty(0, self.embedding_dim)})

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(rows))
        return rows


def docs(n: int, start: int = 0, prefix: str = "d") -> list[dict]:
    return [{"id": f"{prefix}{i}", "text": f"document number {i}", "title": f"T{i}"} for i in range(start, start + n)]


def faiss_live_ids(index: SemanticIndex) -> set[int]:
    """The ids the FAISS index would return: every stored id minus the vectors of deleted documents."""
    import faiss

    from causal2vec.search import vectors as faiss_index

    vectors = index._vectors.index
    ivf = faiss_index.ivf_of(vectors)
    if hasattr(vectors, "id_map"):
        ids = faiss_index.ids_of(vectors)
    else:
        invlists = ivf.invlists
        parts = [
            faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
            for i in range(ivf.nlist)
            if invlists.list_size(i)
        ]
        ids = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    return set(ids.tolist()) - set(index._vectors.tombstones.tolist())


def assert_consistent(index: SemanticIndex, expected_ids: set[str]) -> None:
    stored = index.store.by_id(sorted(expected_ids), index._view)
    assert set(stored) == expected_ids, "document store lost or kept the wrong ids"
    assert len(index) == len(expected_ids)
    assert faiss_live_ids(index) == {d.vid for d in stored.values()}, "FAISS and SQLite disagree"


# ---------------------------------------------------------------------- training runs

INSTRUCTION = "Given a news headline, retrieve the article"


def write_config(folder: Path, base: Path, pairs: Path, **sections: dict) -> Path:
    """A tiny run's YAML in ``folder/run.yaml`` (LoRA on the LLM, 4 steps of 16 pairs), with ``sections`` merged."""
    import yaml

    data = {
        "model": {"base": str(base)},
        "train": {"projector": True, "encoder": "frozen", "llm": "lora"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "data": {"sources": [{"name": "bbc", "path": str(pairs)}]},
        "optim": {"batch_size": 16, "max_steps": 4, "learning_rate": 1e-3, "lr_projector": 1e-2, "bf16": False},
        "output": {"dir": str(folder / "run"), "save_steps": 2, "logging_steps": 1},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    path = folder / "run.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


# ---------------------------------------------------------------------- retrieval references


def ndcg_at_10(query_emb: np.ndarray, doc_emb: np.ndarray, relevant: list[int]) -> float:
    """Mean nDCG@10 with one relevant document per query, by brute-force cosine ranking."""
    scores = query_emb @ doc_emb.T
    gains = []
    for i, target in enumerate(relevant):
        rank = int((scores[i] > scores[i, target]).sum()) + 1
        gains.append(1 / np.log2(rank + 1) if rank <= 10 else 0.0)
    return float(np.mean(gains))


def mrr_at_10(query_emb: np.ndarray, doc_emb: np.ndarray) -> float:
    """MRR@10 when query i's one relevant document is document i, by brute-force ranking (bench/halves.py's)."""
    scores = query_emb @ doc_emb.T
    ranks = [int((scores[i] > scores[i, i]).sum()) + 1 for i in range(len(scores))]  # ties go to the relevant one
    return float(np.mean([1 / rank if rank <= 10 else 0.0 for rank in ranks]))


def bbc_reference(model: Any) -> float:
    """BBCNewsRetrieval's nDCG@10: test headlines (with the instruction) against test bodies."""
    from causal2vec.data.bbc import bbc_news_split
    from causal2vec.mteb_encoder import load_instructions

    test = bbc_news_split("test")
    q = model.encode([a.title for a in test], instruction=load_instructions()["BBCNewsRetrieval"])
    d = model.encode([a.body for a in test])
    return ndcg_at_10(q, d, list(range(len(test))))


# ---------------------------------------------------------------------- ONNX exports


class TraceCache:
    """``export.folder.trace_onnx`` that traces each (model, opset, external data) once and copies the graph after.

    Tracing dominates an export of the tiny models (seconds each), and most export tests are about the folder, the
    options or the checks around the graph, not the trace: they get the graph a real trace of the same model
    wrote. A model is the same when its config (checksums of its files included) is; one holding a LoRA adapter
    is always traced, since tracing merges it in place.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.traced: dict[str, Path] = {}

    def __call__(self, model: Causal2Vec, path: Path, opset: int | None = None, *, external_data=None) -> Path:
        from causal2vec.adapters import has_adapter
        from export.onnx_export import DEFAULT_OPSET, trace_onnx

        opset = DEFAULT_OPSET if opset is None else opset
        if has_adapter(model.llm) or has_adapter(model.encoder) or not model.config.checksums:
            return trace_onnx(model, path, opset, external_data=external_data)
        key = json.dumps([model.config.to_dict(), opset, external_data, path.name], sort_keys=True, default=str)
        if key not in self.traced:
            trace_onnx(model, path, opset, external_data=external_data)
            self.traced[key] = self.folder / f"trace-{len(self.traced)}"
            shutil.copytree(path.parent, self.traced[key])
        path.parent.mkdir(parents=True, exist_ok=True)
        for file in self.traced[key].iterdir():  # the graph and its external data, if any
            shutil.copy2(file, path.parent / file.name)
        return path


# ---------------------------------------------------------------------- the HTTP server

TEXTS = [
    "Shares fell sharply after the bank raised interest rates.",
    "The match ended in a draw after extra time.",
    "A new phone with a folding screen went on sale.",
    "Parliament debated the budget late into the night.",
    "The film won three awards at the festival.",
]


class Server:
    """A uvicorn server in a background thread, on a free port of 127.0.0.1, run as ``causal2vec serve`` runs it."""

    def __init__(self, app: Any, read_timeout: float = 30.0) -> None:
        import uvicorn

        from causal2vec.serve.server import serve

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        run = serve(self.server, app.state.batcher, read_timeout)
        self.thread = threading.Thread(target=asyncio.run, args=(run,), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def request(url: str, body: Any = None, *, raw: bytes | None = None, key: str | None = None) -> tuple[int, Any]:
    """POST JSON (or ``raw`` bytes) when given a body, else GET; returns the status and the decoded JSON."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    http_request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(http_request, timeout=60) as response:
            text = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as err:
        text, status = err.read().decode(), err.code
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + 60
    while request(f"{url}/health")[0] != 200:
        assert time.monotonic() < deadline, "the model did not load"
        time.sleep(0.05)

def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors around 50 cluster centres in a 12-d subspace: structured like real embeddings."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(99).standard_normal((12, dim))
    centres = np.random.default_rng(98).standard_normal((50, 12)) * 3
    x = (centres[rng.integers(0, 50, n)] + rng.standard_normal((n, 12))) @ basis
    x += 0.1 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
