"""The batch loop behind every backend's ``encode``: validation, length-sorted batches, order restored.

:class:`EmbeddingBackend` is the one contract between a model and the code that embeds with it (this loop, the
semantic index, the evaluation and export tools): the torch model, the ONNX Runtime backend and any later
backend satisfy it, and nothing else about them is assumed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, Unpack, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from causal2vec.dimensions import check_dimension, truncate
from causal2vec.identity import ModelIdentity, config_fingerprint
from causal2vec.quantization import OutputPrecision, check_precision, quantize
from causal2vec.runtime import check_int, show_progress

if TYPE_CHECKING:
    from causal2vec.config import Causal2VecConfig
    from causal2vec.layout import Features, InputBuilder
    from causal2vec.pool import EncodePool

logger = logging.getLogger(__name__)

Texts = str | list[str] | tuple[str, ...]
OnTruncated = Callable[[int, int], None]  # (texts truncated, texts encoded), once per encode call


@runtime_checkable
class EmbeddingBackend(Protocol):
    """What the batch loop and the index need from a model: tokenize, forward, dimension, device, dtype."""

    config: Causal2VecConfig  # design switches, instructions and token budgets
    name_or_path: str | None  # how the model loads again ("default", a folder, a hub id); None if it cannot

    @property
    def embedding_dim(self) -> int:
        """Length of the embeddings."""
        ...

    @property
    def device(self) -> torch.device:
        """Where the batch loop puts the features before :meth:`forward` (host memory for onnxruntime's CPU feeds)."""
        ...

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the embeddings are computed in (recorded in index manifests)."""
        ...

    def tokenize(self, texts: list[str], prompt: str = "", *, max_length: int | None = None) -> Features:
        """Tokenise texts (with the formatted instruction ``prompt``) into :meth:`forward`'s inputs."""
        ...

    @property
    def identity(self) -> ModelIdentity:
        """Which model this is: name, config fingerprint, backend, precision (recorded by indexes, shown by /info)."""
        ...

    def forward(self, **features: torch.Tensor) -> torch.Tensor:
        """Embed one tokenised batch: ``(B, embedding_dim)`` raw (not normalised) embeddings."""
        ...

    def encode(self, texts: Texts, **kwargs: Any) -> np.ndarray | torch.Tensor:
        """Embed texts (:class:`QueryDocumentMethods` gives every backend the same ``encode``)."""
        ...


class EncodeOptions(TypedDict, total=False):
    """The keyword arguments of every backend's ``encode``, ``encode_query`` and ``encode_document``."""

    instruction: str | None  # a task instruction put before each text (config.instruction_template); None: none
    batch_size: int  # texts per forward pass (32)
    normalize: bool | None  # L2-normalise (config.normalization); None follows config.normalize
    convert_to_tensor: bool  # return a CPU torch.Tensor instead of a numpy array (False)
    show_progress_bar: bool | None  # None: shown when causal2vec logs at INFO or below
    max_length: int | None  # cap both token budgets at this many tokens for this call; None: the config's
    precision: OutputPrecision  # float32 (default), int8, uint8, binary or ubinary (causal2vec.quantization)
    ranges: np.ndarray | None  # int8/uint8: (2, dim) per-dimension [min; max] (quantization_ranges)
    calibration_embeddings: np.ndarray | None  # int8/uint8 without ranges: float embeddings to take them from
    truncate_dim: int | None  # the whole vector, or h_C alone (its first half): causal2vec.dimensions


ENCODE_OPTIONS = frozenset(EncodeOptions.__annotations__)
# Applied to the float embeddings once they are computed: truncation (truncate_dim), then quantisation.
_OUTPUT_OPTIONS = ("truncate_dim", "precision", "ranges", "calibration_embeddings")


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``encode``'s options into the float pass's (for :func:`encode_texts`) and those of its output.

    Raises:
        TypeError: For a key that is not an option, naming it and the allowed ones.
    """
    unknown = sorted(set(options) - ENCODE_OPTIONS)
    if unknown:
        raise TypeError(f"encode() got unexpected keyword argument(s) {unknown}; options: {sorted(ENCODE_OPTIONS)}")
    floats = {k: v for k, v in options.items() if k not in _OUTPUT_OPTIONS}
    return floats, {k: v for k, v in options.items() if k in _OUTPUT_OPTIONS}


def quantize_output(
    embeddings: np.ndarray,
    precision: OutputPrecision = "float32",
    ranges: np.ndarray | None = None,
    calibration_embeddings: np.ndarray | None = None,
) -> np.ndarray:
    """``embeddings`` (float32, ``(n, dim)`` or ``(dim,)``) in ``precision``; float32 passes through unchanged.

    One string's vector is quantised as a batch of one, so binary packs it the same way and int8 needs ranges.
    """
    if check_precision(precision) == "float32":
        return embeddings
    single = embeddings.ndim == 1
    batch = embeddings[None] if single else embeddings
    out = quantize(batch, precision, ranges=ranges, calibration_embeddings=calibration_embeddings)
    return out[0] if single else out


class QueryDocumentMethods:
    """``encode``, ``encode_query``, ``encode_document``, ``similarity`` and ``identity`` for any backend.

    Shared by the torch model and the ONNX Runtime backend, so both batch, instruct and normalise the same way.
    A subclass names its ``backend`` and has a ``precision``.
    """

    config: Causal2VecConfig
    name_or_path: str | None
    backend: str
    precision: str
    inputs: InputBuilder

    @property
    def identity(self) -> ModelIdentity:
        """The model's :class:`~causal2vec.identity.ModelIdentity` (its own token budget: ``max_length`` None)."""
        return ModelIdentity(self.name_or_path, config_fingerprint(self.config), self.backend, self.precision)

    def encode(
        self, texts: Texts, *, pool: EncodePool | None = None, **options: Unpack[EncodeOptions]
    ) -> np.ndarray | torch.Tensor:
        """Embed texts: ``(n, dim)`` embeddings, or ``(dim,)`` for a single string (see :class:`EncodeOptions`).

        Texts are sorted by length into batches (:func:`encode_texts`) and returned in the input order; with
        ``precision`` other than ``float32`` the float embeddings are then quantised (:mod:`causal2vec.quantization`),
        after the workers' results are merged when a pool is used, so that int8 ranges span the whole call.

        Args:
            texts: One string or a list of strings.
            pool: An :class:`~causal2vec.pool.EncodePool` whose worker processes embed the texts, each on its device.
            **options: The keys of :class:`EncodeOptions`.

        Raises:
            TypeError: For an option that is not one of :class:`EncodeOptions`' keys, or a text that is not a string.
            ValueError: For a value an option does not allow.
        """
        if "task_metadata" in options:  # mteb's encoder protocol: a DataLoader of batches, and the task
            from causal2vec.mteb_encoder import encode_for_mteb

            return encode_for_mteb(self, texts, **options)  # type: ignore[arg-type]  # mteb's own keywords
        floats, output = split_options(options)
        tensor = floats.pop("convert_to_tensor", False)
        dim = output.pop("truncate_dim", None)
        backend: EmbeddingBackend = self  # type: ignore[assignment]  # every subclass is one
        if dim is not None:
            check_dimension(backend, dim)
        embeddings = encode_texts(backend, texts, **floats) if pool is None else pool.encode_floats(texts, **floats)
        if dim is not None:  # before quantising, so that int8 ranges and signs are the truncated vector's
            normalize = self.config.normalize if floats.get("normalize") is None else floats["normalize"]
            embeddings = truncate(embeddings, dim, normalize=normalize)
        embeddings = quantize_output(embeddings, **output)
        return torch.from_numpy(embeddings) if tensor else embeddings

    def encode_query(self, texts: Texts, *, instruction: str | None = None, **kwargs: Any) -> np.ndarray | torch.Tensor:
        """Embed queries with an instruction: ``instruction``, else ``config.query_instruction``.

        Takes the same keyword arguments as :meth:`encode`.
        """
        instruction = self.config.query_instruction if instruction is None else instruction
        return self.encode(texts, instruction=instruction, **kwargs)

    def encode_document(self, texts: Texts, **kwargs: Any) -> np.ndarray | torch.Tensor:
        """Embed documents, without an instruction. Takes the same keyword arguments as :meth:`encode`."""
        return self.encode(texts, instruction=None, **kwargs)

    mteb_instructions: dict[str, str] | None = None  # mteb's query instructions by task; None: the shipped ones
    similarity_fn_name = "cosine"  # what similarity() computes, as sentence-transformers names it

    @property
    def mteb_model_meta(self) -> Any:
        """Mteb's ``ModelMeta`` of this model (:func:`causal2vec.mteb_encoder.model_meta`), or the one set here."""
        given = self.__dict__.get("_mteb_model_meta")
        if given is not None:
            return given
        from causal2vec.mteb_encoder import model_meta

        return model_meta(self)

    @mteb_model_meta.setter
    def mteb_model_meta(self, meta: Any) -> None:
        self.__dict__["_mteb_model_meta"] = meta

    def similarity_pairwise(self, a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The cosine of each row of ``a`` with the same row of ``b``: ``(n,)``."""
        a, b = torch.as_tensor(np.asarray(a)).float(), torch.as_tensor(np.asarray(b)).float()
        return F.cosine_similarity(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]), dim=-1)

    @property
    def llm_vocabulary_size(self) -> int:
        """How many token ids the LLM's tokenizer has (ids ``0`` to ``size - 1``)."""
        return len(self.inputs.llm_tokenizer)

    def decode_llm_tokens(self, rows: list[list[int]]) -> list[str]:
        """The texts that rows of the LLM tokenizer's ids stand for, special tokens dropped.

        Token-id input is embedded as the text it decodes to: the encoder has a vocabulary of its own.
        """
        return self.inputs.llm_tokenizer.batch_decode(rows, skip_special_tokens=True)

    def similarity(self, a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Cosine similarity matrix ``(len(a), len(b))`` between two sets of embeddings.

        Raises:
            ValueError: If the two sets have different dimensions, naming both shapes.
        """
        a, b = torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b))
        if a.ndim == 0 or b.ndim == 0 or a.shape[-1] != b.shape[-1]:
            raise ValueError(
                f"cannot compare embeddings of shape {tuple(a.shape)} with {tuple(b.shape)}: their last dimensions "
                f"must be equal (both from the same model)"
            )
        a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
        return F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T


def normalize_embeddings(embeddings: torch.Tensor, config: Causal2VecConfig) -> torch.Tensor:
    """L2-normalise embeddings as ``config.normalization`` says.

    ``whole`` normalises the vector; ``per_half`` normalises each half and weighs them by ``config.contextual_share``.
    """
    if config.normalization == "per_half" and config.output_pooling == "contextual_eos":
        h_c, h_eos = embeddings.chunk(2, dim=-1)
        share = config.contextual_share
        return torch.cat(
            [F.normalize(h_c, dim=-1) * math.sqrt(share), F.normalize(h_eos, dim=-1) * math.sqrt(1.0 - share)], dim=-1
        )
    return F.normalize(embeddings, dim=-1)


def check_texts(texts: object) -> tuple[list[str], bool]:
    """Validate the input of ``encode``.

    Returns:
        The texts as a list, and whether a single string was given.

    Raises:
        TypeError: If ``texts`` is not a string or a sequence of strings; names the first bad index and its type.
    """
    if isinstance(texts, str):
        return [texts], True
    if isinstance(texts, bytes | bytearray):
        raise TypeError(f"texts is {type(texts).__name__}; decode it to str first, e.g. texts.decode('utf-8')")
    if not isinstance(texts, Sequence) and not isinstance(texts, np.ndarray):
        raise TypeError(f"texts must be a str or a list of str; got {type(texts).__name__}")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            hint = "; decode bytes to str first" if isinstance(text, bytes | bytearray) else ""
            raise TypeError(f"texts[{i}] is {type(text).__name__} ({text!r:.40}); every item must be a str{hint}")
    return texts, False


@torch.inference_mode()
def encode_texts(
    backend: EmbeddingBackend,
    texts: object,
    *,
    instruction: str | None = None,
    batch_size: int = 32,
    normalize: bool | None = None,
    convert_to_tensor: bool = False,
    show_progress_bar: bool | None = None,
    max_length: int | None = None,
    on_truncated: OnTruncated | None = None,
    on_batch: Callable[[int], object] | None = None,
) -> np.ndarray | torch.Tensor:
    """Embed ``texts`` with any backend in length-sorted batches; see ``Causal2Vec.encode`` for the arguments.

    The instruction and ``normalize=None`` are resolved from ``backend.config`` here, so every backend applies them
    alike. Truncated texts go to ``on_truncated(count, total)`` (else one warning), each batch's size to ``on_batch``.
    """
    prompt = backend.config.format_instruction(instruction)
    normalize = backend.config.normalize if normalize is None else normalize
    texts, single = check_texts(texts)
    check_int("batch_size", batch_size, minimum=1)
    order = np.argsort([-len(t) for t in texts], kind="stable")  # longest first: padding stays small
    batches = [[texts[i] for i in order[start : start + batch_size]] for start in range(0, len(texts), batch_size)]
    on_accelerator = backend.device.type != "cpu"
    chunks, truncated = [], 0
    tokenized = _tokenize(backend, batches, prompt, max_length, prefetch=on_accelerator)
    disable = not show_progress(show_progress_bar) or len(batches) < 2
    for features in tqdm(tokenized, total=len(batches), desc="Batches", disable=disable):
        truncated += features.truncated
        chunks.append(_forward(backend, features, normalize, non_blocking=on_accelerator))
        if on_batch is not None:
            on_batch(len(chunks[-1]))
    report_truncation(backend, truncated, len(texts), max_length, on_truncated)
    out = torch.empty((len(texts), backend.embedding_dim), dtype=torch.float32)
    if chunks:
        out[torch.from_numpy(order)] = torch.cat(chunks)
    if single:
        out = out[0]
    return out if convert_to_tensor else out.numpy()


def _forward(backend: EmbeddingBackend, features: Features, normalize: bool, non_blocking: bool) -> torch.Tensor:
    """One batch through the backend: ``(B, embedding_dim)`` float32 embeddings on the CPU."""
    inputs = {k: v.to(backend.device, non_blocking=non_blocking) for k, v in features.items()}
    embeddings = backend.forward(**inputs).float()
    if normalize:
        embeddings = normalize_embeddings(embeddings, backend.config)
    return embeddings.cpu()


def report_truncation(
    backend: EmbeddingBackend, truncated: int, total: int, max_length: int | None, on_truncated: OnTruncated | None
) -> None:
    """Tell ``on_truncated`` how many of ``total`` texts were truncated; without it, log one warning if any were."""
    if on_truncated is not None:
        on_truncated(truncated, total)
    elif truncated:
        encoder_budget, llm_budget = backend.config.token_budgets(max_length)
        logger.warning(
            "%d of %d texts were truncated to %d encoder / %d LLM tokens", truncated, total, encoder_budget, llm_budget
        )


def _tokenize(
    backend: EmbeddingBackend, batches: list[list[str]], prompt: str, max_length: int | None, prefetch: bool
) -> Iterator[Features]:
    """Tokenise batch after batch, ahead of the model when ``prefetch`` is set.

    With ``prefetch``, a worker thread tokenises the next batch while the accelerator runs the current one (the
    tokenizers release the GIL). On a CPU both would compete for the same cores, so it is off there.
    """
    if not prefetch:
        for batch in batches:
            yield backend.tokenize(batch, prompt, max_length=max_length)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="causal2vec-tokenize") as pool:
        pending: Future | None = None
        for batch in batches:
            upcoming = pool.submit(_pinned_inputs, backend, batch, prompt, max_length)
            if pending is not None:
                yield pending.result()
            pending = upcoming
        if pending is not None:
            yield pending.result()


def _pinned_inputs(backend: EmbeddingBackend, batch: list[str], prompt: str, max_length: int | None) -> Features:
    """Tokenise into page-locked memory, so the copy to the accelerator can overlap with compute."""
    features = backend.tokenize(batch, prompt, max_length=max_length)
    if backend.device.type == "cuda":
        for key, value in features.items():
            features[key] = value.pin_memory()
    return features
