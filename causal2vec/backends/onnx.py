"""ONNX Runtime backend: a checkpoint's ``onnx/model.onnx`` run by onnxruntime instead of torch.

The exported graph is ``Causal2Vec.forward``: the four tensors of :class:`~causal2vec.layout.InputBuilder` in, raw
``(B, embedding_dim)`` embeddings out. Tokenisation, length-sorted batching, normalisation and instructions are the
torch model's own code, so both backends embed a text the same way. ``python -m export`` writes the file.

This is the only module that imports onnxruntime, and only when a model is loaded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer

from causal2vec.config import CONFIG_NAME, Causal2VecConfig
from causal2vec.encoding import QueryDocumentMethods, normalize_embeddings
from causal2vec.files import member_path, read_json_object, verify_checksum
from causal2vec.identity import Precision
from causal2vec.layout import Features, InputBuilder
from causal2vec.runtime import require

logger = logging.getLogger(__name__)

ONNX_DIR = "onnx"
ONNX_FILE = f"{ONNX_DIR}/model.onnx"
MANIFEST_FILE = f"{ONNX_DIR}/manifest.json"  # written by python -m export; absent from in-checkpoint exports
PRECISION_KEY = "causal2vec.precision"  # the graph's own metadata: fp32, fp16 or int8
EXPORT_PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")  # what python -m export writes
MANIFEST_FORMAT = 1
INPUT_NAMES = ("encoder_input_ids", "encoder_attention_mask", "llm_input_ids", "llm_attention_mask")
OUTPUT_NAME = "embeddings"


def require_onnxruntime() -> Any:
    """Import onnxruntime, or fail with the command that installs it."""
    return require("onnxruntime", "onnx")


def execution_providers(device: str, *, strict: bool = False) -> list[Any]:
    """The onnxruntime providers for ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    CUDA without onnxruntime's CUDA provider falls back to the CPU with one warning, or raises under ``strict``
    (a session that then cannot start CUDA, for want of a GPU, is checked where it is made).

    Raises:
        ValueError: For another device, or for CUDA that cannot run here under ``strict``.
    """
    ort = require_onnxruntime()
    kind, _, index = device.partition(":")
    if kind == "cpu" and not index:
        return ["CPUExecutionProvider"]
    if kind != "cuda" or (index and not index.isdigit()):
        raise ValueError(f"device {device!r} is not supported by the ONNX backend; use 'cpu', 'cuda' or 'cuda:N'")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        cpu_instead(
            device,
            f"onnxruntime's CUDA provider, which this onnxruntime lacks (it has {ort.get_available_providers()}): "
            f"pip install 'causal2vec[onnx-gpu]'",
            strict,
        )
        return ["CPUExecutionProvider"]
    return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]


def cpu_instead(device: str, missing: str, strict: bool) -> None:
    """Warn once that ``device`` runs on the CPU for want of ``missing``, or raise under ``strict``.

    Raises:
        ValueError: Under ``strict``, naming the device and what it lacks.
    """
    if strict:
        raise ValueError(f"device {device!r} needs {missing}")
    logger.warning("device %r needs %s; running on the CPU instead", device, missing)


class OnnxCausal2Vec(QueryDocumentMethods):
    """A Causal2Vec model served by onnxruntime: ``encode``, ``encode_query``, ``encode_document``.

    Load one with :meth:`from_pretrained` from an export folder (``python -m export``) or a checkpoint that holds
    ``onnx/model.onnx``. On CUDA each batch is bound with onnxruntime's IO binding: the token tensors are copied to
    the GPU once, the embeddings come back once, and nothing else crosses the bus.
    """

    backend = "onnx"
    precision: Precision

    def __init__(
        self,
        session: Any,
        config: Causal2VecConfig,
        encoder_tokenizer: Any,
        llm_tokenizer: Any,
        embedding_dim: int,
        *,
        precision: Precision = "fp32",
    ) -> None:
        """Wrap an onnxruntime session of an exported model with the tokenizers and config it was exported with."""
        self.session = session
        self.config = config
        self.inputs = InputBuilder(encoder_tokenizer, llm_tokenizer, config)
        self.embedding_dim = embedding_dim
        self.precision = precision
        self.name_or_path: str | None = None
        self.provider = session.get_providers()[0]
        self._cuda_id = None
        if self.provider == "CUDAExecutionProvider":
            self._cuda_id = int(session.get_provider_options()["CUDAExecutionProvider"].get("device_id", 0))

    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str = "cpu", strict: bool = False) -> OnnxCausal2Vec:
        """Load ``path/onnx/model.onnx`` with the folder's config, tokenizers and manifest.

        Args:
            path: An export folder, or a checkpoint folder with ``onnx/model.onnx``.
            device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
            strict: Raise instead of falling back to the CPU when CUDA cannot run here.

        Raises:
            FileNotFoundError: If the folder has no ONNX export (the message says how to make one), or a file the
                config lists is missing.
            ValueError: If a file is corrupt, or the graph does not match the folder's config and manifest
                (dimension, input names, precision): the message names both.
        """
        folder = Path(path).expanduser()
        onnx_path = folder / ONNX_FILE
        if not onnx_path.is_file():
            raise FileNotFoundError(
                f"{folder} has no ONNX export ({ONNX_FILE}); make one with: python -m export --model {folder} "
                f"--output {folder}-onnx"
            )
        config = Causal2VecConfig.load(folder / CONFIG_NAME)
        for name, expected in config.checksums.items():  # what this backend reads besides the torch weights
            if name.startswith(ONNX_DIR) or (name.startswith(("encoder/", "llm/")) and "safetensors" not in name):
                verify_checksum(member_path(folder, name, "export file"), expected, "export file")
        manifest = ExportManifest.read(folder) or ExportManifest.of_checkpoint(folder, config)
        session = _session(onnx_path, execution_providers(device, strict=strict), device, strict)
        _check_graph(session, onnx_path, manifest)
        model = cls(
            session,
            config,
            AutoTokenizer.from_pretrained(folder / "encoder"),
            AutoTokenizer.from_pretrained(folder / "llm"),
            manifest.embedding_dim,
            precision=manifest.precision,
        )
        model.name_or_path = str(folder.resolve())
        logger.info("loaded ONNX model %s (%s) on %s", onnx_path, model.precision, model.provider)
        return model

    @property
    def device(self) -> torch.device:
        """Where the features go before :meth:`forward`: host memory, which onnxruntime reads its feeds from."""
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """The graph returns float32 (whatever it computes in)."""
        return torch.float32

    def tokenize(self, texts: list[str], prompt: str = "", *, max_length: int | None = None) -> Features:
        """Tokenise texts exactly as the torch model does; see ``Causal2Vec.tokenize``."""
        return self.inputs(texts, prompt, max_length)

    def forward(self, **features: torch.Tensor) -> torch.Tensor:
        """Run one tokenised batch: ``(B, embedding_dim)`` float32 raw embeddings."""
        feeds = {name: np.ascontiguousarray(features[name].numpy()) for name in INPUT_NAMES}
        if self._cuda_id is None:
            (embeddings,) = self.session.run([OUTPUT_NAME], feeds)
            return torch.from_numpy(embeddings)
        ort = require_onnxruntime()
        binding = self.session.io_binding()
        for name, array in feeds.items():  # one copy to the GPU per input
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, "cuda", self._cuda_id))
        binding.bind_output(OUTPUT_NAME, "cuda", self._cuda_id)  # stays on the GPU until read below
        self.session.run_with_iobinding(binding)
        return torch.from_numpy(binding.copy_outputs_to_cpu()[0])  # one copy back

    def normalize(self, embeddings: torch.Tensor) -> torch.Tensor:
        """L2-normalise as the config says, exactly as the torch model does."""
        return normalize_embeddings(embeddings, self.config)


def is_onnx_only(path: str | Path) -> bool:
    """Whether ``path`` is an export folder without torch weights (so only :class:`OnnxCausal2Vec` loads it)."""
    try:
        manifest = ExportManifest.read(Path(path).expanduser())
    except (ValueError, OSError):
        return False  # the loader names the broken manifest
    return manifest is not None and manifest.torch_weights is False


@dataclass(frozen=True)
class ExportManifest:
    """``onnx/manifest.json``: what ``python -m export`` wrote and checked, and what the loader needs of it.

    Attributes:
        embedding_dim: The width of the graph's output.
        inputs: The graph's input names (:data:`INPUT_NAMES`).
        precision: ``fp32``, ``fp16`` or ``int8`` (also stamped in the graph's metadata).
        torch_weights: Whether the folder also holds the torch weights (then it is a checkpoint too); ``None``
            in manifests that did not record it.
        source: The model it was exported from: ``{"model": name, "fingerprint": of its files}``.
        opset: The ONNX opset.
        onnxruntime: The onnxruntime version that checked it.
        checked_on: The execution provider the parity check ran on (``None``: not checked).
        parity: The parity figures against torch (``None``: not checked).
        fused: The transformer fusions applied (``--optimize``).
        quantized: What int8 quantisation did (``--int8``).
        output: The graph's output name.
        external_data: Whether the weights are in ``model.onnx.data``.
        format: The manifest's format version.
    """

    embedding_dim: int
    inputs: tuple[str, ...]
    precision: Precision
    torch_weights: bool | None = None
    source: dict[str, Any] = field(default_factory=dict)
    opset: int | None = None
    onnxruntime: str | None = None
    checked_on: str | None = None
    parity: dict[str, Any] | None = None
    fused: Any = None
    quantized: Any = None
    output: str = OUTPUT_NAME
    external_data: bool = False
    format: int = MANIFEST_FORMAT

    @classmethod
    def read(cls, folder: Path) -> ExportManifest | None:
        """The export's manifest, or ``None`` for a graph added to a checkpoint without one.

        Raises:
            ValueError: If the manifest is not readable JSON with the keys the loader needs.
        """
        path = folder / MANIFEST_FILE
        if not path.is_file():
            return None
        data = read_json_object(path, "export manifest")
        missing = [k for k in ("embedding_dim", "inputs", "precision") if k not in data]
        if missing:
            raise ValueError(f"{path} lacks {missing}; re-export the model with python -m export")
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known} | {"inputs": tuple(data["inputs"])})
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path} is not a valid export manifest: {err}") from err

    @classmethod
    def of_checkpoint(cls, folder: Path, config: Causal2VecConfig) -> ExportManifest:
        """What a graph added to a checkpoint without a manifest is: float32, its width from the LLM's config."""
        hidden = AutoConfig.from_pretrained(folder / "llm").hidden_size  # GPT-2's n_embd too
        return cls(2 * hidden if config.output_pooling == "contextual_eos" else hidden, INPUT_NAMES, "fp32")

    def __post_init__(self) -> None:
        if self.precision not in EXPORT_PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not an export's; it is one of {list(EXPORT_PRECISIONS)}")

    def write(self, folder: Path) -> None:
        """Write ``folder/onnx/manifest.json``."""
        data = dataclasses.asdict(self) | {"inputs": list(self.inputs)}
        (folder / MANIFEST_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _session(onnx_path: Path, providers: list[Any], device: str, strict: bool) -> Any:
    """An onnxruntime session of the graph on ``providers``; on CUDA that cannot start, the CPU (or, strict, an error).

    Raises:
        ValueError: If onnxruntime cannot load the graph, or (``strict``) cannot run it on CUDA.
    """
    ort = require_onnxruntime()
    if len(providers) > 1:  # CUDA: a missing GPU fails the session, or leaves it on the CPU
        try:
            session = ort.InferenceSession(str(onnx_path), providers=providers)
            failure = "" if session.get_providers()[0] == "CUDAExecutionProvider" else "it did not start"
        except Exception as err:  # onnxruntime's errors derive from Exception only
            session, failure = None, str(err).splitlines()[0]
        if failure:  # a session that fell back is kept; one that failed is made again on the CPU below
            cpu_instead(device, f"a GPU that onnxruntime's CUDA provider can start ({failure})", strict)
        if session is not None:
            return session
    try:
        return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as err:
        raise ValueError(f"{onnx_path} cannot be loaded by onnxruntime: {str(err).splitlines()[0]}") from err


def _check_graph(session: Any, path: Path, manifest: ExportManifest) -> None:
    """Check the graph's inputs, output width and precision (its own metadata) against the manifest.

    Raises:
        ValueError: Naming what the graph has and what the folder's config and manifest say.
    """
    names = sorted(i.name for i in session.get_inputs())
    if names != sorted(manifest.inputs) or names != sorted(INPUT_NAMES):
        raise ValueError(f"{path} takes inputs {names}, but the export says {sorted(manifest.inputs)} "
                         f"(Causal2Vec inputs: {sorted(INPUT_NAMES)})")  # fmt: skip
    (output,) = [o for o in session.get_outputs() if o.name == OUTPUT_NAME] or [None]
    if output is None:
        raise ValueError(f"{path} has no {OUTPUT_NAME!r} output; it has {[o.name for o in session.get_outputs()]}")
    width = output.shape[-1]
    if isinstance(width, int) and width != manifest.embedding_dim:
        raise ValueError(f"{path} returns {width}-dimensional embeddings, but the export's config and manifest say "
                         f"{manifest.embedding_dim}")  # fmt: skip
    stamped = session.get_modelmeta().custom_metadata_map.get(PRECISION_KEY)  # written into the graph by the export
    if stamped is not None and stamped != manifest.precision:
        raise ValueError(f"{path} was exported as {stamped}, but its manifest says {manifest.precision}")
