"""ONNX Runtime backend: a checkpoint's ``onnx/model.onnx`` run by onnxruntime instead of torch.

The exported graph is ``Causal2Vec.forward``: the four tensors of :class:`~causal2vec.layout.InputBuilder` in, raw
``(B, embedding_dim)`` embeddings out. Tokenisation, length-sorted batching, normalisation and instructions are the
torch model's own code, so both backends embed a text the same way. ``python -m export`` writes the file.

This is the only module that imports onnxruntime, and only when a model is loaded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer

from causal2vec.config import CONFIG_NAME, Causal2VecConfig
from causal2vec.encoding import QueryDocumentMethods, normalize_embeddings
from causal2vec.layout import Features, InputBuilder
from causal2vec.runtime import require, verify_checksum

logger = logging.getLogger(__name__)

ONNX_DIR = "onnx"
ONNX_FILE = f"{ONNX_DIR}/model.onnx"
INPUT_NAMES = ("encoder_input_ids", "encoder_attention_mask", "llm_input_ids", "llm_attention_mask")
OUTPUT_NAME = "embeddings"


def require_onnxruntime() -> Any:
    """Import onnxruntime, or fail with the command that installs it."""
    return require("onnxruntime", "onnx")


def execution_providers(device: str) -> list[Any]:
    """The onnxruntime providers for ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises:
        ValueError: For another device, or CUDA without onnxruntime-gpu.
    """
    ort = require_onnxruntime()
    kind, _, index = device.partition(":")
    if kind == "cpu" and not index:
        return ["CPUExecutionProvider"]
    if kind != "cuda" or (index and not index.isdigit()):
        raise ValueError(f"device {device!r} is not supported by the ONNX backend; use 'cpu', 'cuda' or 'cuda:N'")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise ValueError(
            f"device {device!r} needs onnxruntime's CUDA provider, which this onnxruntime lacks "
            f"(it has {ort.get_available_providers()}): pip install 'causal2vec[onnx-gpu]'"
        )
    return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]


class OnnxCausal2Vec(QueryDocumentMethods):
    """A Causal2Vec checkpoint served by onnxruntime: ``encode``, ``encode_query``, ``encode_document``.

    Load one with :meth:`from_pretrained` from a checkpoint folder that holds ``onnx/model.onnx``.
    """

    def __init__(
        self, session: Any, config: Causal2VecConfig, encoder_tokenizer: Any, llm_tokenizer: Any, embedding_dim: int
    ) -> None:
        """Wrap an onnxruntime session of an exported model with the tokenizers and config it was exported with."""
        self.session = session
        self.config = config
        self.inputs = InputBuilder(encoder_tokenizer, llm_tokenizer, config)
        self.embedding_dim = embedding_dim
        self.name_or_path: str | None = None

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str = "cpu") -> OnnxCausal2Vec:
        """Load ``path/onnx/model.onnx`` with the checkpoint's config and tokenizers.

        Raises:
            FileNotFoundError: If the folder has no ONNX export; the message says how to make one.
        """
        folder = Path(path).expanduser()
        onnx_path = folder / ONNX_FILE
        if not onnx_path.is_file():
            raise FileNotFoundError(
                f"{folder} has no ONNX export ({ONNX_FILE}); make one with: python -m export --model {folder} "
                f"--output {folder}"
            )
        ort = require_onnxruntime()
        config = Causal2VecConfig.load(folder / CONFIG_NAME)
        for name, expected in config.checksums.items():  # what this backend reads besides the graph
            if name.startswith(("encoder/", "llm/")) and not name.endswith(".safetensors"):
                verify_checksum(folder / name, expected, "checkpoint file")
        session = ort.InferenceSession(str(onnx_path), providers=execution_providers(device))
        names = tuple(i.name for i in session.get_inputs())
        if sorted(names) != sorted(INPUT_NAMES):
            raise ValueError(f"{onnx_path} takes inputs {list(names)}, not the Causal2Vec inputs {list(INPUT_NAMES)}")
        hidden = AutoConfig.from_pretrained(folder / "llm").hidden_size  # GPT-2's n_embd too
        dim = 2 * hidden if config.output_pooling == "contextual_eos" else hidden
        model = cls(
            session,
            config,
            AutoTokenizer.from_pretrained(folder / "encoder"),
            AutoTokenizer.from_pretrained(folder / "llm"),
            dim,
        )
        model.name_or_path = str(folder.resolve())
        logger.info("loaded ONNX model %s on %s", onnx_path, session.get_providers()[0])
        return model

    @property
    def device(self) -> torch.device:
        """Where the features go before :meth:`forward`: host memory, which onnxruntime reads its feeds from."""
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """The graph computes and returns float32."""
        return torch.float32

    def tokenize(self, texts: list[str], prompt: str = "", *, max_length: int | None = None) -> Features:
        """Tokenise texts exactly as the torch model does; see ``Causal2Vec.tokenize``."""
        return self.inputs(texts, prompt, max_length)

    def forward(self, **features: torch.Tensor) -> torch.Tensor:
        """Run one tokenised batch: ``(B, embedding_dim)`` float32 raw embeddings."""
        feeds = {name: np.ascontiguousarray(features[name].numpy()) for name in INPUT_NAMES}
        (embeddings,) = self.session.run([OUTPUT_NAME], feeds)
        return torch.from_numpy(embeddings)

    def normalize(self, embeddings: torch.Tensor) -> torch.Tensor:
        """L2-normalise as the config says, exactly as the torch model does."""
        return normalize_embeddings(embeddings, self.config)
