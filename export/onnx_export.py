"""Trace ``Causal2Vec.forward`` into an ONNX file and compare onnxruntime with torch (see ``export.folder``)."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from causal2vec import Causal2Vec
from causal2vec.adapters import has_adapter
from causal2vec.backends.onnx import INPUT_NAMES, OUTPUT_NAME, OnnxCausal2Vec
from causal2vec.encoding import encode_texts
from causal2vec.projector import CALIBRATION_TEXTS

logger = logging.getLogger(__name__)

# Two texts of different lengths, so the traced batch and sequence sizes are not specialised to 1.
_TRACE_TEXTS = ["Markets rallied after the rate decision.", "A longer sentence about football, politics and film."]
PARITY_TEXTS = (
    *CALIBRATION_TEXTS,
    "",
    "A long text that runs past the token budget. " * 200,
)
# CPU graphs (float32, int8) default to opset 23, whose Attention, RotaryEmbedding and RMSNormalization ops
# onnxruntime's CPU provider runs as fused kernels: no (B, heads, T, T) mask arithmetic between them. The float16
# graph for GPUs stays at 18 until the CUDA provider's cover of those ops has been checked on a GPU.
DEFAULT_OPSET = 23
FP16_OPSET = 18


def supported_opsets() -> range:
    """The ONNX opsets the installed exporter writes as asked.

    torch's dynamo exporter starts from torchlib's opset (18): it writes opset 23's own attention, rotary and RMS
    norm ops from 23 on, and onnxscript's version converter does the rest. A lower opset is silently written as
    18, and one past the converter's newest is left with an invalid graph (both checked with torch 2.13 and
    onnxscript 0.7), so only this range is safe.
    """
    from onnxscript.version_converter._version_converter import SUPPORTED_MAX_ONNX_OPSET
    from torch.onnx._internal.exporter._constants import TORCHLIB_OPSET

    return range(TORCHLIB_OPSET, SUPPORTED_MAX_ONNX_OPSET + 1)


def check_opset(opset: int, name: str = "opset") -> None:
    """Refuse an opset that the installed exporter would not write as asked; ``name`` is how errors call it.

    Raises:
        ValueError: For an opset outside :func:`supported_opsets`; the message names the allowed range.
    """
    allowed = supported_opsets()
    if isinstance(opset, bool) or not isinstance(opset, int) or opset not in allowed:
        raise ValueError(
            f"{name} {opset!r} is not supported: the installed exporter (torch {torch.__version__}) writes ONNX "
            f"opsets {allowed.start} to {allowed.stop - 1} (default {DEFAULT_OPSET})"
        )


def trace_onnx(model: Causal2Vec, path: Path, opset: int = DEFAULT_OPSET, *, external_data: bool | None = None) -> Path:
    """Trace ``model.forward`` in float32 on the CPU into the ONNX file ``path``; returns ``path``.

    LoRA adapters are merged into the LLM first (in place), so the graph has no adapter branches. The batch and
    both sequence axes stay dynamic.

    Args:
        model: The model to trace.
        path: The file to write (its folder is created).
        opset: The ONNX opset.
        external_data: Write the weights to ``path.name + '.data'``: ``None`` when the graph passes 2 GB.

    Raises:
        ValueError: For an opset the installed exporter cannot write (see :func:`supported_opsets`).
    """
    check_opset(opset)
    model = model.to(device="cpu", dtype=torch.float32).eval()
    if has_adapter(model.llm):
        logger.info("merging the LoRA adapter into the LLM for export")
        model.llm = model.llm.merge_and_unload()
    features = model.tokenize(_TRACE_TEXTS)
    batch = torch.export.Dim("batch")
    encoder_tokens, llm_tokens = torch.export.Dim("encoder_tokens"), torch.export.Dim("llm_tokens")
    dynamic_shapes = {
        name: {0: batch, 1: encoder_tokens if name.startswith("encoder") else llm_tokens} for name in INPUT_NAMES
    }
    start = time.perf_counter()
    # The registry's "torchvision is not installed" notes do not matter: no vision ops are exported.
    registry = "torch.onnx._internal.exporter._registration"
    with _quiet_logger(registry), warnings.catch_warnings(), torch.inference_mode():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message="# The axis name", category=UserWarning)  # names are cosmetic
        program = torch.onnx.export(
            model,
            (),
            kwargs={name: features[name] for name in INPUT_NAMES},
            dynamic_shapes=dynamic_shapes,
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(path, external_data=external_data)
    logger.info("traced %s in %.1f s", path, time.perf_counter() - start)
    return path


@contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Let only errors through the named logger while the block runs."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


@dataclass(frozen=True)
class Parity:
    """How closely onnxruntime reproduces torch on the same texts (raw, unnormalised embeddings).

    Attributes:
        max_abs: The largest absolute difference of any coordinate.
        max_rel: ``max_abs`` over the largest absolute torch coordinate.
        min_cosine: The lowest cosine similarity between a torch and an ONNX embedding of the same text.
        texts: How many embeddings each backend made (every text, with and without the instruction).
        truncated: How many of them torch truncated to the token budgets (``PARITY_TEXTS`` holds one long text on
            purpose, so that truncation is compared too).
    """

    max_abs: float
    max_rel: float
    min_cosine: float
    texts: int = 0
    truncated: int = 0

    def ok(self, max_rel: float = 1e-3, min_cosine: float = 0.9999) -> bool:
        """Whether the export is faithful: tiny relative error and near-identical directions."""
        return self.max_rel <= max_rel and self.min_cosine >= min_cosine


@dataclass
class _Tally:
    """An ``on_truncated`` callback that adds up the truncated texts of every call."""

    count: int = 0

    def __call__(self, count: int, total: int) -> None:
        self.count += count


def check_parity(model: Causal2Vec, exported: OnnxCausal2Vec, texts: tuple[str, ...] = PARITY_TEXTS) -> Parity:
    """Embed ``texts`` (with and without the query instruction) with both backends and compare.

    ``model`` is put in eval mode. Truncation is counted, not logged: the long parity text is expected to exceed
    the budgets.
    """
    model.eval()
    tallies = {"torch": _Tally(), "onnx": _Tally()}
    outputs: dict[str, list[np.ndarray]] = {"torch": [], "onnx": []}
    for instruction in (None, model.config.query_instruction):
        for name, backend in (("torch", model), ("onnx", exported)):
            embeddings = encode_texts(
                backend, list(texts), instruction=instruction, normalize=False, batch_size=8, on_truncated=tallies[name]
            )
            outputs[name].append(embeddings)
    ref, got = np.concatenate(outputs["torch"]), np.concatenate(outputs["onnx"])
    diff = float(np.abs(ref - got).max())
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    if tallies["onnx"].count != tallies["torch"].count:
        logger.warning("torch truncated %d texts, onnxruntime %d", tallies["torch"].count, tallies["onnx"].count)
    return Parity(
        max_abs=diff,
        max_rel=diff / float(np.abs(ref).max()),
        min_cosine=float(cos.min()),
        texts=len(ref),
        truncated=tallies["torch"].count,
    )
