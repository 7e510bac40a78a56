"""The batch loop behind ``Causal2Vec.encode``: validation, length-sorted batches, order restored."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from causal2vec.config import Causal2VecConfig
    from causal2vec.model import Causal2Vec
    from causal2vec.onnx_backend import OnnxCausal2Vec

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

Texts = str | list[str] | tuple[str, ...]


class QueryDocumentMethods:
    """``encode_query``, ``encode_document`` and ``similarity`` for any class with ``config`` and ``encode``.

    Shared by the torch model and the ONNX Runtime backend, so both apply instructions the same way.
    """

    config: Causal2VecConfig

    def encode(self, texts: Texts, *, instruction: str | None = None, **kwargs: Any) -> np.ndarray | torch.Tensor:
        """Embed texts; see ``Causal2Vec.encode``."""
        raise NotImplementedError

    def encode_query(self, texts: Texts, *, instruction: str | None = None, **kwargs: Any) -> np.ndarray | torch.Tensor:
        """Embed queries with an instruction: ``instruction``, else ``config.query_instruction``.

        Takes the same keyword arguments as :meth:`encode`.
        """
        instruction = self.config.query_instruction if instruction is None else instruction
        return self.encode(texts, instruction=instruction, **kwargs)

    def encode_document(self, texts: Texts, **kwargs: Any) -> np.ndarray | torch.Tensor:
        """Embed documents, without an instruction. Takes the same keyword arguments as :meth:`encode`."""
        return self.encode(texts, instruction=None, **kwargs)

    def similarity(self, a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Cosine similarity matrix ``(len(a), len(b))`` between two sets of embeddings."""
        a, b = torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b))
        a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
        return F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T


def normalize_embeddings(embeddings: torch.Tensor, config: Causal2VecConfig) -> torch.Tensor:
    """L2-normalise embeddings as ``config.normalization`` says (whole vector, or each half)."""
    if config.normalization == "per_half" and config.output_pooling == "contextual_eos":
        h_c, h_eos = embeddings.chunk(2, dim=-1)
        return torch.cat([F.normalize(h_c, dim=-1), F.normalize(h_eos, dim=-1)], dim=-1) / math.sqrt(2.0)
    return F.normalize(embeddings, dim=-1)


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """Map ``"float32"``/``"bfloat16"``/``"float16"`` (or the torch dtypes, or ``fp32``/``bf16``/``fp16``) to a dtype.

    Raises:
        ValueError: Naming the value and the allowed ones.
    """
    aliases = {
        "fp32": "float32",
        "bf16": "bfloat16",
        "fp16": "float16",
        "half": "float16",
        "float": "float32",
    }
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and aliases.get(dtype, dtype) in DTYPES:
        return DTYPES[aliases.get(dtype, dtype)]
    raise ValueError(f"dtype {dtype!r} is not supported; choose one of {list(DTYPES)}")


def check_texts(texts: object) -> tuple[list[str], bool]:
    """Validate the input of ``encode``.

    Returns:
        The texts as a list, and whether a single string was given.

    Raises:
        TypeError: If ``texts`` is not a string or a sequence of strings; names the first bad index and its type.
    """
    if isinstance(texts, str):
        return [texts], True
    if not isinstance(texts, Sequence) and not isinstance(texts, np.ndarray):
        raise TypeError(f"texts must be a str or a list of str; got {type(texts).__name__}")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__} ({text!r:.40}); every item must be a str")
    return texts, False


def show_progress(requested: bool | None) -> bool:
    """Progress bars follow the log level unless asked for explicitly: shown at INFO and below."""
    if requested is not None:
        return requested
    return logging.getLogger("causal2vec").getEffectiveLevel() <= logging.INFO


@torch.inference_mode()
def encode_texts(
    model: Causal2Vec | OnnxCausal2Vec,
    texts: object,
    instruction: str | None,
    batch_size: int,
    normalize: bool | None,
    convert_to_tensor: bool,
    show_progress_bar: bool | None,
) -> np.ndarray | torch.Tensor:
    """Embed ``texts`` with ``model`` (torch or ONNX Runtime) in length-sorted batches; see ``Causal2Vec.encode``.

    The instruction is formatted, and ``normalize=None`` resolved, from ``model.config`` here, so that every
    backend applies them alike.
    """
    prompt = model.config.format_instruction(instruction)
    normalize = model.config.normalize if normalize is None else normalize
    texts, single = check_texts(texts)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
    model.eval()
    order = np.argsort([-len(t) for t in texts], kind="stable")
    chunks, truncated = [], 0
    batches = [[texts[i] for i in order[start : start + batch_size]] for start in range(0, len(texts), batch_size)]
    on_accelerator = model.device.type != "cpu"
    tokenized = _tokenize(model, batches, prompt, prefetch=on_accelerator)
    disable = not show_progress(show_progress_bar) or len(batches) < 2
    for features, cut in tqdm(tokenized, total=len(batches), desc="Batches", disable=disable):
        truncated += cut
        embeddings = model(**{k: v.to(model.device, non_blocking=on_accelerator) for k, v in features.items()}).float()
        if normalize:
            embeddings = model.normalize(embeddings)
        chunks.append(embeddings.cpu())
    if truncated:
        cfg = model.config
        logger.warning(
            "%d of %d texts were truncated to encoder_max_length=%d / llm_max_length=%d tokens",
            truncated, len(texts), cfg.encoder_max_length, cfg.llm_max_length,
        )  # fmt: skip
    out = torch.empty((len(texts), model.embedding_dim), dtype=torch.float32)
    if chunks:
        out[torch.from_numpy(order)] = torch.cat(chunks)
    if single:
        out = out[0]
    return out if convert_to_tensor else out.numpy()


def _tokenize(
    model: Causal2Vec | OnnxCausal2Vec, batches: list[list[str]], prompt: str, prefetch: bool
) -> Iterator[tuple[dict[str, torch.Tensor], int]]:
    """Tokenise batch after batch, ahead of the model when ``prefetch`` is set.

    With ``prefetch``, a worker thread tokenises the next batch while the accelerator runs the current one (the
    tokenizers release the GIL). On a CPU both would compete for the same cores, so it is off there.
    """
    if not prefetch:
        for batch in batches:
            yield model.inputs(batch, prompt)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="causal2vec-tokenize") as pool:
        pending: Future | None = None
        for batch in batches:
            upcoming = pool.submit(_pinned_inputs, model, batch, prompt)
            if pending is not None:
                yield pending.result()
            pending = upcoming
        if pending is not None:
            yield pending.result()


def _pinned_inputs(model: Causal2Vec, batch: list[str], prompt: str) -> tuple[dict[str, torch.Tensor], int]:
    """Tokenise into page-locked memory, so the copy to the accelerator can overlap with compute."""
    features, cut = model.inputs(batch, prompt)
    if model.device.type == "cuda":
        features = {k: v.pin_memory() for k, v in features.items()}
    return features, cut


def default_device() -> str:
    """``"cuda"`` when a CUDA GPU is visible, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX); elsewhere bf16 is slower than fp32."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def auto_dtype(dtype: str, device: str | torch.device) -> str:
    """Resolve ``"auto"``: bfloat16 on CUDA and on CPUs with native bfloat16, float32 elsewhere; others pass through."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if torch.device(device).type == "cuda" or cpu_has_bf16() else "float32"


@contextmanager
def quiet_transformers_bars() -> Iterator[None]:
    """Hide transformers' per-call "Loading weights" / "Writing model shards" bars unless causal2vec logs at INFO.

    causal2vec's own bars follow the same rule.
    """
    from transformers.utils import logging as hf_logging

    if show_progress(None) or not hf_logging.is_progress_bar_enabled():
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()
