"""The Causal2Vec model: encoder → pooled vector → projector → Contextual token C → LLM → ``[h_C ; h_EOS]``."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Unpack, overload

import numpy as np
import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
)

from causal2vec import assets
from causal2vec.checkpoint import load_checkpoint, resolve_folder, save_checkpoint
from causal2vec.config import Causal2VecConfig, ProjectorKind
from causal2vec.encoding import EncodeOptions, QueryDocumentMethods, Texts, normalize_embeddings
from causal2vec.identity import Precision, precision_of
from causal2vec.layout import Features, InputBuilder, resolve_sink_token
from causal2vec.pool import EncodePool
from causal2vec.projector import CALIBRATION_TEXTS, Projector, seeded_projector
from causal2vec.runtime import check_device, quiet_transformers_bars, resolve_dtype

logger = logging.getLogger(__name__)


def _check_llm(llm: PreTrainedModel) -> PreTrainedModel:
    """Return the base (no LM head) model of a decoder-only LLM, or raise if it is not one."""
    model_type = llm.config.model_type
    # Types that also have a masked-LM head (BERT, RoBERTa, BART …) are bidirectional encoders, not LLMs.
    bidirectional = model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES or getattr(llm.config, "is_encoder_decoder", False)
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or bidirectional:
        raise ValueError(
            f"the LLM must be a decoder-only causal LM; got model_type={model_type!r} ({type(llm).__name__})"
        )
    return llm.base_model


class Causal2Vec(nn.Module, QueryDocumentMethods):
    """A decoder-only LLM turned into a text embedding model with a Contextual token.

    Build one with :meth:`from_pretrained` (a checkpoint, a hub id, or ``"default"``) or :meth:`from_components`
    (any Hugging Face encoder and decoder-only LLM, with a fresh projector). Embed with :meth:`encode`,
    :meth:`encode_query` and :meth:`encode_document`; save with :meth:`save_pretrained`.
    """

    backend = "torch"

    def __init__(
        self,
        encoder: PreTrainedModel,
        llm: PreTrainedModel,
        projector: Projector,
        encoder_tokenizer: PreTrainedTokenizerBase,
        llm_tokenizer: PreTrainedTokenizerBase,
        config: Causal2VecConfig | None = None,
    ) -> None:
        super().__init__()
        self.config = config or Causal2VecConfig()
        self.encoder = encoder
        self.llm = _check_llm(llm)
        d_enc, d_llm = self.encoder.config.hidden_size, self.llm.get_input_embeddings().embedding_dim
        if (projector.in_features, projector.out_features) != (d_enc, d_llm):
            raise ValueError(
                f"projector maps {projector.in_features} -> {projector.out_features}, but the encoder has hidden "
                f"size {d_enc} and the LLM {d_llm}; it must map {d_enc} -> {d_llm}"
            )
        if projector.kind != self.config.projector:
            raise ValueError(
                f"projector kind {projector.kind!r} differs from config.projector={self.config.projector!r}"
            )
        self.projector = projector
        self.encoder_tokenizer = encoder_tokenizer
        self.llm_tokenizer = llm_tokenizer
        self.inputs = InputBuilder(encoder_tokenizer, llm_tokenizer, self.config)
        # Where from_pretrained loaded it ("default", a resolved folder, or a hub id); None for fresh assemblies.
        self.name_or_path: str | None = None
        self.card_data: dict[str, Any] = {}  # licence and datasets, kept in the card (see causal2vec.card)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_components(
        cls,
        encoder: str | PreTrainedModel,
        llm: str | PreTrainedModel,
        *,
        encoder_tokenizer: PreTrainedTokenizerBase | None = None,
        llm_tokenizer: PreTrainedTokenizerBase | None = None,
        config: Causal2VecConfig | None = None,
        seed: int = 0,
        dtype: torch.dtype | str = torch.float32,
        **hub_kwargs: Any,
    ) -> Causal2Vec:
        """Assemble a fresh Causal2Vec from a Hugging Face encoder and a decoder-only LLM.

        The projector is initialised from ``seed`` and scaled so that ``|C|`` matches the mean norm of the LLM's
        token embeddings on a few calibration sentences. The LLM's LM head is dropped.

        Args:
            encoder: A BERT-style encoder: a folder, a hub id, or a loaded model (then pass ``encoder_tokenizer``).
            llm: A decoder-only LLM: a folder, a hub id, or a loaded model (then pass ``llm_tokenizer``).
            encoder_tokenizer: The encoder's tokenizer, when ``encoder`` is a model.
            llm_tokenizer: The LLM's tokenizer, when ``llm`` is a model.
            config: Design switches; defaults to :class:`Causal2VecConfig`.
            seed: Seed of the projector's initialisation.
            dtype: Weight dtype of the loaded components.
            **hub_kwargs: Passed to ``from_pretrained`` of the components (``revision``, ``token`` …).

        Returns:
            The assembled model, in eval mode.
        """
        config = config or Causal2VecConfig()
        torch_dtype = resolve_dtype(dtype)
        with quiet_transformers_bars():
            encoder_model, encoder_tokenizer = _load_component(encoder, encoder_tokenizer, torch_dtype, hub_kwargs)
            llm_model, llm_tokenizer = _load_component(llm, llm_tokenizer, torch_dtype, hub_kwargs)
        _record_sources(config, encoder, llm, llm_tokenizer)
        projector = _fresh_projector(encoder_model, llm_model, config.projector, seed).to(torch_dtype)
        model = cls(encoder_model, llm_model, projector, encoder_tokenizer, llm_tokenizer, config).eval()
        model.calibrate_projector()
        return model

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str = torch.float32,
        **hub_kwargs: Any,
    ) -> Causal2Vec:
        """Load a saved checkpoint, a hub id (when online), or ``"default"`` (the embedded default, offline).

        ``"default"`` is assembled once into a checkpoint folder in the cache (see :mod:`causal2vec.assets`) and
        then loaded like any checkpoint; ``name_or_path`` stays ``"default"``. Every data file is checked against
        the checksum recorded when it was saved, and the weights must be finite.

        Args:
            name_or_path: ``"default"``, a checkpoint folder written by :meth:`save_pretrained`, or a hub id.
            device: Where to put the model (``"cpu"``, ``"cuda"``, ``"cuda:1"`` …); defaults to CPU.
            dtype: ``float32`` (default), ``bfloat16`` or ``float16``.
            **hub_kwargs: ``revision``, ``token`` … for hub downloads.

        Raises:
            FileNotFoundError: If a checkpoint file is missing; the message names it.
            ValueError: If a checkpoint file is corrupt or inconsistent, or a weight is not finite; the message
                names the file or tensor.
        """
        target = check_device(device) if device is not None else None
        with quiet_transformers_bars():
            folder, name = _resolve_checkpoint(cls, str(name_or_path), hub_kwargs)
            model = load_checkpoint(cls, folder, resolve_dtype(dtype))
        model.name_or_path = name
        return model.to(target) if target is not None else model

    def save_pretrained(self, path: str | Path, *, overwrite: bool = False) -> None:
        """Save the model as a checkpoint folder, atomically (written aside, then renamed into place).

        The folder holds ``causal2vec_config.json`` (with a checksum of every data file), ``encoder/`` and
        ``llm/`` (ordinary Hugging Face folders with their tokenizers), ``projector.safetensors``, a README model
        card, and the files that let sentence-transformers load it (``st_module.load_sentence_transformer``).

        Args:
            path: The checkpoint folder: new, empty, or an existing checkpoint (replaced).
            overwrite: Also replace a file or a folder that is not a checkpoint; otherwise they are refused.

        Raises:
            FileExistsError: If ``path`` is a file or a non-empty folder that is not a checkpoint, and
                ``overwrite`` is not set.
        """
        with quiet_transformers_bars():
            save_checkpoint(self, Path(path), overwrite=overwrite)

    def push_to_hub(
        self, repo_id: str, *, private: bool | None = None, token: str | None = None,
        commit_message: str = "Upload Causal2Vec model", revision: str | None = None,
    ) -> str:  # fmt: skip
        """Save the model as a checkpoint and upload it to the Hugging Face Hub repository ``repo_id``.

        The repository is created if needed (``private`` as asked); ``token`` defaults to the logged-in one.
        ``Causal2Vec.from_pretrained(repo_id)`` then loads it anywhere.

        Returns:
            The URL of the upload's commit.
        """
        from causal2vec.card import push_to_hub

        return push_to_hub(self, repo_id, private=private, token=token, commit_message=commit_message,
                           revision=revision)  # fmt: skip

    @torch.no_grad()
    def calibrate_projector(self, texts: tuple[str, ...] = CALIBRATION_TEXTS, *, target: float | None = None) -> float:
        """Scale the projector so the mean ``|C|`` over ``texts`` equals ``target``.

        Args:
            texts: The texts whose Contextual tokens are measured.
            target: The mean norm to reach (default: the mean norm of the LLM's token embeddings). A norm far
                above the LLM's own states (thousands for SmolLM2) makes C dominate the residual stream at its
                position, so ``h_C`` starts as a near-linear image of the encoder's vector: a warm start for
                training.

        Returns:
            The factor applied.

        Raises:
            ValueError: If ``target`` is not a positive finite number.
        """
        if target is None:
            norms = self.llm.get_input_embeddings().weight.double().norm(dim=-1)
            target = norms[norms > 0].mean().item()
        elif not (isinstance(target, (int, float)) and 0 < target < float("inf")):
            raise ValueError(f"target={target!r} must be a positive finite norm")
        features = self.inputs(list(texts))
        features = {k: v.to(self.device) for k, v in features.items()}
        # In float64, rounded to 8 digits: a float32 sum's last bits vary with the thread count, and a fresh
        # assembly must give the same weights on every machine (the cached default is compared to one). The casts
        # there and back are exact.
        dtypes = next(self.encoder.parameters()).dtype, next(self.projector.parameters()).dtype
        self.encoder.double(), self.projector.double()
        try:
            c = self.contextual_token(features["encoder_input_ids"], features["encoder_attention_mask"])
        finally:
            self.encoder.to(dtypes[0]), self.projector.to(dtypes[1])
        factor = float(f"{target / c.norm(dim=-1).mean().clamp(min=1e-12).item():.8g}")
        self.projector.rescale_output(factor)
        logger.debug("projector scaled by %.4f so that mean |C| = %.4f", factor, target)
        return factor

    def replace_projector(self, kind: ProjectorKind, *, seed: int = 0) -> None:
        """Put a fresh projector of ``kind`` in place (seeded, calibrated like a fresh assembly's) and record it.

        Raises:
            ValueError: If ``kind`` is not a projector kind.
        """
        self.update_config(projector=kind)  # validates kind
        projector = seeded_projector(self.projector.in_features, self.projector.out_features, kind, seed)
        self.projector = projector.to(device=self.device, dtype=next(self.projector.parameters()).dtype)
        self.calibrate_projector()

    def update_config(self, **changes: Any) -> None:
        """Replace config fields (validated as the config's own) and rebuild the input layout from them.

        Raises:
            ValueError: For a value the config does not allow.
        """
        self.config = dataclasses.replace(self.config, **changes)
        self.inputs = InputBuilder(self.encoder_tokenizer, self.llm_tokenizer, self.config)

    def set_token_budgets(self, *, encoder_max_length: int | None = None, llm_max_length: int | None = None) -> None:
        """Change the encoder's and the LLM's token budgets (``None`` keeps one); saved with the model.

        The LLM budget can be far below the encoder's: the Contextual token carries the whole text (up to the
        encoder's budget) into the LLM, which then reads only the start of the text.

        Raises:
            ValueError: If a budget is not an integer >= 4.
        """
        changes = {"encoder_max_length": encoder_max_length, "llm_max_length": llm_max_length}
        self.update_config(**{k: v for k, v in changes.items() if v is not None})

    # ------------------------------------------------------------------ forward

    @property
    def device(self) -> torch.device:
        """The device of the weights."""
        return self.projector.net[0].weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the weights."""
        return self.projector.net[0].weight.dtype

    @property
    def precision(self) -> Precision:
        """The weights' dtype in the precision vocabulary: ``fp32``, ``bf16`` or ``fp16``."""
        return precision_of(self.dtype)

    @property
    def embedding_dim(self) -> int:
        """The size of the embeddings: ``2·d_llm`` for ``contextual_eos`` pooling, else ``d_llm``."""
        d_llm = self.projector.out_features
        return 2 * d_llm if self.config.output_pooling == "contextual_eos" else d_llm

    def contextual_token(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Encode and pool the encoder input, then project it: ``(B, Te)`` ids → ``(B, d_llm)`` vectors C."""
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, Te, d_enc)
        if self.config.encoder_pooling == "cls":
            pooled = states[:, 0]
        else:
            weights = attention_mask.unsqueeze(-1).to(states.dtype)  # (B, Te, 1)
            pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1)
        return self.projector(pooled)  # (B, d_llm)

    def llm_states(self, llm_input_ids: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Run the LLM on its token embeddings with C in its slot: ``(B, T)`` → last hidden states ``(B, T, D)``.

        Rows are right-padded and attention is causal, so no real position ever attends to a pad: no padding mask
        is needed, the states at real positions are the same, and attention can use its fused causal kernels.
        """
        embeds = self.llm.get_input_embeddings()(llm_input_ids)  # (B, T, D)
        k = self.inputs.contextual_index
        embeds = torch.cat([embeds[:, :k], c.to(embeds.dtype).unsqueeze(1), embeds[:, k + 1 :]], dim=1)
        # The LLM's default positions, given one row per text: an ONNX graph at opset 23 then carries rotary caches
        # of the batch's size, which onnxruntime's RotaryEmbedding needs (it refuses a batch of 1 broadcast).
        batch, length = llm_input_ids.shape
        positions = torch.arange(length, device=embeds.device).expand(batch, length)
        out = self.llm(inputs_embeds=embeds, position_ids=positions, use_cache=False)
        return out.last_hidden_state

    def forward(
        self,
        encoder_input_ids: torch.Tensor,
        encoder_attention_mask: torch.Tensor,
        llm_input_ids: torch.Tensor,
        llm_attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Embed a tokenised batch (see :class:`~causal2vec.layout.InputBuilder`), without normalisation.

        Control flow depends only on the config, never on the data, so the pass can be traced for ONNX.

        Returns:
            ``(B, embedding_dim)`` embeddings in the model's dtype.
        """
        c = self.contextual_token(encoder_input_ids, encoder_attention_mask)  # (B, D)
        hidden = self.llm_states(llm_input_ids, c)  # (B, T, D)
        pooling = self.config.output_pooling
        if pooling == "mean":
            weights = llm_attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * weights).sum(1) / weights.sum(1)
        last = (llm_attention_mask.sum(1) - 1).view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])  # (B, 1, D)
        h_eos = hidden.gather(1, last).squeeze(1)  # (B, D)
        if pooling == "eos":
            return h_eos
        h_c = hidden[:, self.inputs.contextual_index]  # (B, D)
        return torch.cat([h_c, h_eos], dim=-1)

    def normalize(self, embeddings: torch.Tensor) -> torch.Tensor:
        """L2-normalise embeddings as ``config.normalization`` says (whole vector, or each half)."""
        return normalize_embeddings(embeddings, self.config)

    def tokenize(self, texts: list[str], prompt: str = "", *, max_length: int | None = None) -> Features:
        """Tokenise texts into the inputs of :meth:`forward`.

        Args:
            texts: The texts.
            prompt: The formatted instruction prefix (``""`` for none).
            max_length: Cap both token budgets at this many tokens (``None``: the config's budgets).

        Returns:
            The four tensors :meth:`forward` reads, with ``.truncated``, the number of texts cut to the budgets.
        """
        return self.inputs(texts, prompt, max_length)

    # ------------------------------------------------------------------ encode

    @overload
    def encode(self, texts: str, **kwargs: Any) -> np.ndarray: ...
    @overload
    def encode(self, texts: list[str] | tuple[str, ...], **kwargs: Any) -> np.ndarray: ...

    def encode(
        self,
        texts: Texts,
        *,
        device: str | torch.device | list[str | torch.device] | None = None,
        dtype: torch.dtype | str | None = None,
        pool: EncodePool | None = None,
        **options: Unpack[EncodeOptions],
    ) -> np.ndarray | torch.Tensor:
        """Embed texts: ``(n, embedding_dim)`` float32 embeddings, or ``(embedding_dim,)`` for a single string.

        Texts are sorted by length into batches, encoded under ``torch.inference_mode`` and returned in the input
        order. An empty string embeds the bare layout ``[BOS] [C] [EOS]``; whitespace is kept as the tokenizers read
        it. Texts longer than the token budgets are truncated, with one warning per call.

        Args:
            texts: One string or a list of strings.
            device: Move the model to this device first; the move persists, as with ``model.to(device)``. A list
                (``["cuda:0", "cuda:1"]``, ``["cpu", "cpu"]``) embeds in one worker process per device instead,
                through an :class:`~causal2vec.pool.EncodePool` started and closed for this call.
            dtype: Cast the model to ``float32``, ``bfloat16`` or ``float16`` first; the cast persists.
            pool: An open :class:`~causal2vec.pool.EncodePool` to embed in (start-up paid once for many calls).
            **options: ``instruction``, ``batch_size``, ``normalize``, ``convert_to_tensor``, ``show_progress_bar``,
                ``max_length``, and ``precision`` (``float32``, ``int8``, ``uint8``, ``binary``, ``ubinary``) with
                ``ranges`` / ``calibration_embeddings``: see :class:`~causal2vec.encoding.EncodeOptions`.

        Raises:
            TypeError: If ``texts`` or one of its items is not a string, or for an unknown option.
            ValueError: If ``device`` is not available here, or ``dtype``, ``precision`` or ``batch_size`` is not
                allowed, or ``device``/``dtype`` is given with a ``pool`` (its workers hold their own copies).
        """
        if pool is not None and (device is not None or dtype is not None):
            raise ValueError("device= and dtype= do not apply with pool=: the pool's workers hold their own copies")
        if isinstance(device, list | tuple):
            with self._encoding_on(None, dtype), EncodePool(self, device) as temporary:
                return super().encode(texts, pool=temporary, **options)
        with self._encoding_on(device, dtype):
            return super().encode(texts, pool=pool, **options)

    @contextmanager
    def _encoding_on(self, device: str | torch.device | None, dtype: torch.dtype | str | None) -> Iterator[None]:
        """Move and cast the model first (for good, as ``model.to`` would), then run in eval mode, restoring train."""
        if device is not None or dtype is not None:
            target = check_device(device) if device is not None else None
            self.to(device=target, dtype=resolve_dtype(dtype) if dtype is not None else None)
        training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(training)


def _record_sources(
    config: Causal2VecConfig, encoder: str | PreTrainedModel, llm: str | PreTrainedModel, llm_tokenizer: Any
) -> None:
    """Record in a fresh assembly's config the hub ids it was built from and the sink token it uses."""
    if isinstance(encoder, str) and config.encoder_name is None:
        config.encoder_name = encoder
    if isinstance(llm, str) and config.llm_name is None:
        config.llm_name = llm
    config.sink_token = resolve_sink_token(llm_tokenizer, config.sink_token)  # record the choice


def _fresh_projector(encoder: PreTrainedModel, llm: PreTrainedModel, kind: ProjectorKind, seed: int) -> Projector:
    """A projector from the encoder's width to the LLM's embedding width, initialised from ``seed``."""
    d_enc, d_llm = encoder.config.hidden_size, llm.get_input_embeddings().embedding_dim
    return seeded_projector(d_enc, d_llm, kind, seed)


def _resolve_checkpoint(cls: type[Causal2Vec], source: str, hub_kwargs: dict[str, Any]) -> tuple[Path, str]:
    """The local folder to load for ``source`` and the name the model keeps (``"default"``, a path, a hub id).

    A named checkpoint is built by ``cls`` on first use.
    """
    if source in assets.NAMED_CHECKPOINTS:
        return assets.named_checkpoint(cls, source), source
    folder = resolve_folder(source, **hub_kwargs)
    return folder, str(folder.resolve()) if Path(source).expanduser().exists() else source


def _load_component(
    source: str | PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    dtype: torch.dtype,
    hub_kwargs: dict[str, Any],
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a Hugging Face model and its tokenizer from a folder or hub id, or take a loaded model."""
    if isinstance(source, PreTrainedModel):
        if tokenizer is None:
            raise TypeError(f"a loaded {type(source).__name__} needs its tokenizer passed alongside it")
        return source.to(dtype), tokenizer
    if not isinstance(source, str | Path):
        raise TypeError(f"expected a folder, a hub id or a PreTrainedModel; got {type(source).__name__}")
    config = AutoConfig.from_pretrained(str(source), **hub_kwargs)
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in config.architectures or ()):
        # A causal-LM folder: load it as saved and keep its base model, dropping the LM head.
        model = AutoModelForCausalLM.from_pretrained(str(source), dtype=dtype, **hub_kwargs).base_model
    else:
        model = AutoModel.from_pretrained(str(source), dtype=dtype, **hub_kwargs)
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(source), **hub_kwargs)
    return model, tokenizer
