"""The Causal2Vec configuration: one switch per design choice the paper leaves open, saved next to the weights."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

from causal2vec.files import read_json_object
from causal2vec.runtime import check_int

logger = logging.getLogger(__name__)

CONFIG_NAME = "causal2vec_config.json"
FORMAT_VERSION = 2  # 2: the sink token before C (sink_token); version 1 files load with sink_token=None

EncoderPooling = Literal["mean", "cls"]
ProjectorKind = Literal["mlp", "linear"]
ContextualPosition = Literal["after_bos", "first"]
OutputPooling = Literal["contextual_eos", "eos", "mean"]
Normalization = Literal["whole", "per_half"]


@dataclass
class Causal2VecConfig:
    """Every open design choice of a Causal2Vec model, with the defaults the package ships.

    Saved as :data:`CONFIG_NAME` in a checkpoint. Keys missing from an older file take the defaults below (and are
    logged); unknown keys or values are rejected.
    """

    format_version: int = FORMAT_VERSION
    # How the encoder's token states become one vector c_bert: masked mean over tokens, or the first ([CLS]) token.
    encoder_pooling: EncoderPooling = "mean"
    # Projector from d_enc to d_llm: Linear-GELU-Linear ("mlp", the paper) or a single Linear ("linear").
    projector: ProjectorKind = "mlp"
    # Where the Contextual token C goes: right after the BOS or sink token ("after_bos": it stays the attention sink
    # at position 0, so C's state depends on C), or before it ("first", an ablation: C takes the sink position).
    contextual_position: ContextualPosition = "after_bos"
    # The token placed first when the LLM tokenizer adds no BOS of its own. LLMs use position 0 as an attention sink
    # whose last state barely depends on its input, so C must not sit there. "auto": the tokenizer's bos_token
    # (else its eos_token); a token string: that token; None: nothing (the layout of format_version 1 checkpoints).
    # A fresh assembly records the resolved token here (None when the tokenizer adds its own BOS).
    sink_token: str | None = "auto"
    # Whether the encoder reads "instruction + text" (True) or the text alone (False). The LLM always sees both.
    encoder_sees_instruction: bool = False
    # Output pooling: [h_C ; h_EOS] (the paper), h_EOS alone (last token), or the mean of all LLM states.
    output_pooling: OutputPooling = "contextual_eos"
    # Whether encode() L2-normalises by default (each call can override it).
    normalize: bool = True
    # "whole": L2-normalise the concatenated vector. "per_half": normalise h_C and h_EOS separately and scale them
    # by sqrt(contextual_share) and sqrt(1 - contextual_share), so the cosine of two embeddings is
    # contextual_share·cos(h_C) + (1 - contextual_share)·cos(h_EOS) whatever the scale of the LLM's hidden states.
    normalization: Normalization = "whole"
    contextual_share: float = 0.5
    # Token budgets. Longer texts are truncated (one warning per encode() call); the budgets include special tokens,
    # and the LLM budget also includes C, BOS, EOS and the instruction.
    encoder_max_length: int = 512
    llm_max_length: int = 512
    # The default query instruction (encode_query), and how an instruction is turned into the text prefix.
    query_instruction: str = "Given a web search query, retrieve relevant passages that answer the query"
    instruction_template: str = "Instruct: {instruction}\nQuery: "
    # Provenance, for the model card and for index manifests: where the encoder and LLM came from.
    encoder_name: str | None = None
    llm_name: str | None = None
    # Free-form notes (e.g. "untrained projector"), written into the model card.
    notes: str = ""
    # Extra metadata a trainer may attach (datasets, hyper-parameters). Not interpreted by the model.
    extra: dict[str, Any] = field(default_factory=dict)
    # Content hash ("xxh3_128:<hex>") of each data file of the checkpoint (weights and tokenizer files), keyed by
    # its path relative to the checkpoint folder. Written last by save_pretrained, verified by from_pretrained;
    # empty for a model not loaded from a folder and for checkpoints saved before checksums were recorded.
    checksums: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field against its allowed values.

        Raises:
            ValueError: Naming the field, the value received and the values allowed.
        """
        hints = get_type_hints(type(self))
        for f in dataclasses.fields(self):
            allowed = get_args(hints[f.name])
            value = getattr(self, f.name)
            if allowed and all(isinstance(a, str) for a in allowed) and value not in allowed:
                raise ValueError(f"Causal2VecConfig.{f.name}={value!r} is not allowed; choose one of {list(allowed)}")
        for name in ("encoder_max_length", "llm_max_length"):
            check_int(f"Causal2VecConfig.{name}", getattr(self, name), minimum=4)
        if not isinstance(self.checksums, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.checksums.items()
        ):
            raise ValueError(f"Causal2VecConfig.checksums={self.checksums!r} must map file paths to checksum strings")
        share = self.contextual_share
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 <= share <= 1.0:
            raise ValueError(f"Causal2VecConfig.contextual_share={share!r} must be a number from 0 to 1")
        if self.sink_token is not None and (not isinstance(self.sink_token, str) or not self.sink_token):
            raise ValueError(
                f"Causal2VecConfig.sink_token={self.sink_token!r} must be 'auto', a token of the LLM tokenizer, or None"
            )
        if "{instruction}" not in self.instruction_template:
            raise ValueError(
                f"Causal2VecConfig.instruction_template={self.instruction_template!r} must contain '{{instruction}}'"
            )
        if self.format_version > FORMAT_VERSION:
            raise ValueError(
                f"checkpoint format_version={self.format_version} is newer than this causal2vec supports "
                f"({FORMAT_VERSION}); upgrade causal2vec"
            )

    def token_budgets(self, max_length: int | None = None) -> tuple[int, int]:
        """The encoder and LLM token budgets: the config's, capped at ``max_length`` when given.

        Raises:
            ValueError: If ``max_length`` is not an integer of at least 4.
        """
        if max_length is None:
            return self.encoder_max_length, self.llm_max_length
        check_int("max_length", max_length, minimum=4)
        return min(self.encoder_max_length, max_length), min(self.llm_max_length, max_length)

    def format_instruction(self, instruction: str | None) -> str:
        """Turn an instruction into the prefix placed before the text ("" for no instruction)."""
        if not instruction:
            return ""
        return self.instruction_template.format(instruction=instruction)

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> Causal2VecConfig:
        """Build a config from a dict, filling missing keys with defaults.

        Args:
            data: The saved fields.
            source: Where the dict came from, for messages.

        Raises:
            ValueError: On unknown keys or disallowed values.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        if data.get("format_version", FORMAT_VERSION) < 2 and "sink_token" not in data:
            data = {**data, "sink_token": None}  # version 1 put no sink before C: keep its layout
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown keys {unknown}; known keys are {sorted(known)}")
        missing = sorted(known - set(data))
        if missing:
            logger.info("%s: keys %s missing, using their defaults", source, missing)
        return cls(**data)

    def save(self, path: str | Path) -> None:
        """Write the config as indented JSON to ``path``."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Causal2VecConfig:
        """Read a config file.

        Raises:
            FileNotFoundError: If the file is missing.
            ValueError: If it is not a JSON object or holds bad values; the message names the file.
        """
        return cls.from_dict(read_json_object(Path(path), "Causal2Vec config file"), source=str(path))
