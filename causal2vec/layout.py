"""Tokenisation and input layout: texts to the four tensors that ``Causal2Vec.forward`` reads.

The LLM reads ``[BOS] [C] instruction text [EOS]`` (or ``[C] [BOS] …`` with ``contextual_position="first"``), where
BOS is the tokenizer's own, or the sink token the config names when the tokenizer adds none.
Both sequences are right-padded, so C sits at the same column in every row and the EOS state is gathered at
``attention_mask.sum(1) - 1``: the layout is static, which keeps the forward pass traceable for ONNX export.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from causal2vec.config import Causal2VecConfig

_PROBE = "hello world"


@dataclass(frozen=True)
class SpecialTemplate:
    """The special tokens a tokenizer wraps around a single sequence: ``prefix + ids + suffix``."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase) -> SpecialTemplate:
        """Read the template off the tokenizer by encoding a probe text with and without special tokens."""
        bare = tokenizer(_PROBE, add_special_tokens=False)["input_ids"]
        full = tokenizer(_PROBE, add_special_tokens=True)["input_ids"]
        for start in range(len(full) - len(bare) + 1):
            if full[start : start + len(bare)] == bare:
                return cls(tuple(full[:start]), tuple(full[start + len(bare) :]))
        raise ValueError(
            f"cannot find where {type(tokenizer).__name__} places the text among its special tokens: "
            f"{full} does not contain {bare}"
        )


class Features(dict[str, torch.Tensor]):
    """A tokenised batch: the four ``(B, T)`` int64 tensors ``Causal2Vec.forward`` reads, keyed by argument name.

    Like transformers' ``BatchEncoding``, it is a dict (so ``model(**features)`` works) that carries more:
    ``truncated``, how many of its texts were cut to the token budgets.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], truncated: int = 0) -> None:
        super().__init__(tensors)
        self.truncated = truncated


def _pad_right(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad rows of ids into ``(input_ids, attention_mask)``, both ``(B, T)`` int64."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


class InputBuilder:
    """Builds the encoder and LLM inputs for a batch of texts, the way the config lays them out."""

    def __init__(
        self,
        encoder_tokenizer: PreTrainedTokenizerBase,
        llm_tokenizer: PreTrainedTokenizerBase,
        config: Causal2VecConfig,
    ) -> None:
        self.encoder_tokenizer = encoder_tokenizer
        self.llm_tokenizer = llm_tokenizer
        self.config = config
        self.encoder_template = SpecialTemplate.of(encoder_tokenizer)
        llm_template = SpecialTemplate.of(llm_tokenizer)
        eos = llm_tokenizer.eos_token_id
        if eos is None:
            raise ValueError(f"the LLM tokenizer {type(llm_tokenizer).__name__} has no eos_token; set one")
        # EOS is appended explicitly unless the tokenizer adds it itself.
        self.llm_tail = llm_template.suffix if eos in llm_template.suffix else (*llm_template.suffix, eos)
        sink = resolve_sink_token(llm_tokenizer, config.sink_token)
        self.llm_head = llm_template.prefix or (() if sink is None else (_token_id(llm_tokenizer, sink),))
        self.contextual_index = len(self.llm_head) if config.contextual_position == "after_bos" else 0
        self.encoder_pad_id = _pad_id(encoder_tokenizer)
        # The LLM pads (and fills C's slot) with EOS: it is always in the embedding table, unlike some pad tokens.
        self.llm_pad_id = int(eos)

    def _ids(self, tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]

    def llm_row(self, text_ids: list[int], prompt_ids: list[int], max_length: int) -> tuple[list[int], bool]:
        """One LLM row ``[BOS] [C] prompt text [EOS]`` (C as a pad-id placeholder) and whether it was cut."""
        fixed = len(self.llm_head) + 1 + len(prompt_ids) + len(self.llm_tail)
        budget = max_length - fixed
        if budget < 0:
            raise ValueError(
                f"the instruction takes {len(prompt_ids)} LLM tokens, more than llm_max_length={max_length} leaves "
                f"after the {fixed - len(prompt_ids)} special positions"
            )
        head = [*self.llm_head]
        head.insert(self.contextual_index, self.llm_pad_id)
        return [*head, *prompt_ids, *text_ids[:budget], *self.llm_tail], len(text_ids) > budget

    def encoder_row(self, text_ids: list[int], prompt_ids: list[int], max_length: int) -> tuple[list[int], bool]:
        """One encoder row ``prefix [prompt] text suffix`` and whether it was cut."""
        t = self.encoder_template
        budget = max_length - len(t.prefix) - len(t.suffix) - len(prompt_ids)
        if budget < 0:
            raise ValueError(
                f"the instruction takes {len(prompt_ids)} encoder tokens, more than encoder_max_length={max_length} "
                f"allows"
            )
        return [*t.prefix, *prompt_ids, *text_ids[:budget], *t.suffix], len(text_ids) > budget

    def __call__(self, texts: list[str], prompt: str = "", max_length: int | None = None) -> Features:
        """Tokenise a batch.

        Args:
            texts: The texts.
            prompt: The instruction prefix, already formatted (``""`` for none).
            max_length: Cap both token budgets at this many tokens (``None``: the config's budgets).

        Returns:
            The features (``encoder_input_ids``, ``encoder_attention_mask``, ``llm_input_ids``,
            ``llm_attention_mask``, each ``(B, T)`` int64), with the number of truncated texts: those cut by the
            encoder's budget, or by the LLM's when it is not below the encoder's.
        """
        encoder_budget, llm_budget = self.config.token_budgets(max_length)
        llm_prompt = self._ids(self.llm_tokenizer, [prompt])[0] if prompt else []
        enc_prompt = []
        if prompt and self.config.encoder_sees_instruction:
            enc_prompt = self._ids(self.encoder_tokenizer, [prompt])[0]
        llm_rows = [self.llm_row(ids, llm_prompt, llm_budget) for ids in self._ids(self.llm_tokenizer, texts)]
        enc_rows = [
            self.encoder_row(ids, enc_prompt, encoder_budget) for ids in self._ids(self.encoder_tokenizer, texts)
        ]
        # A text is reported as truncated when part of it reaches neither part of the model. An LLM budget below
        # the encoder's is a choice (C carries the rest of the text), so then only the encoder's cut counts.
        llm_cut_counts = llm_budget >= encoder_budget
        truncated = sum((llm_cut_counts and a[1]) or b[1] for a, b in zip(llm_rows, enc_rows, strict=True))
        enc_ids, enc_mask = _pad_right([r for r, _ in enc_rows], self.encoder_pad_id)
        llm_ids, llm_mask = _pad_right([r for r, _ in llm_rows], self.llm_pad_id)
        tensors = {
            "encoder_input_ids": enc_ids,
            "encoder_attention_mask": enc_mask,
            "llm_input_ids": llm_ids,
            "llm_attention_mask": llm_mask,
        }
        return Features(tensors, truncated)


def resolve_sink_token(tokenizer: PreTrainedTokenizerBase, sink_token: str | None) -> str | None:
    """The token to insert before C: ``None`` when the tokenizer adds its own BOS or none is configured.

    ``"auto"`` resolves to the tokenizer's ``bos_token``, else its ``eos_token``.
    """
    if sink_token is None or SpecialTemplate.of(tokenizer).prefix:
        return None
    if sink_token != "auto":
        return sink_token
    resolved = tokenizer.bos_token or tokenizer.eos_token
    if resolved is None:
        raise ValueError(
            f"the LLM tokenizer {type(tokenizer).__name__} adds no BOS and has neither a bos_token nor an eos_token; "
            f"set Causal2VecConfig.sink_token to one of its tokens"
        )
    return str(resolved)


def _token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int:
    """The id of a single token of the tokenizer's vocabulary.

    Raises:
        ValueError: If ``token`` is not one token of the vocabulary.
    """
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or (token_id == tokenizer.unk_token_id and token != tokenizer.unk_token):
        raise ValueError(f"sink_token={token!r} is not a token of the LLM tokenizer {type(tokenizer).__name__}")
    return int(token_id)


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The encoder's padding id: the pad token, else EOS, else 0 (padded positions are never attended)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0
