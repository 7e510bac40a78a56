"""A sentence-transformers input module, so a Causal2Vec checkpoint folder loads in ``SentenceTransformer``.

A checkpoint's ``modules.json`` names :class:`Causal2VecModule`; its prompts (``config_sentence_transformers.json``)
carry the query instruction, so ``st.encode_query`` and ``st.encode_document`` match ``Causal2Vec.encode_query``
and ``encode_document``. :func:`load_sentence_transformer` loads such a folder with this installed class, so no
code from the folder runs; ``SentenceTransformer(folder, trust_remote_code=True)`` also works, but that flag lets
the folder's ``modules.json`` import any module, the folder's own ``.py`` files included.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.base.modules.input_module import InputModule

from causal2vec.checkpoint import ST_MODULE_CLASS, resolve_folder, write_checkpoint_files
from causal2vec.model import Causal2Vec

# Causal2Vec.forward's argument -> the feature name in sentence-transformers (see Causal2VecModule.preprocess).
ST_NAMES = {
    "encoder_input_ids": "encoder_ids",
    "encoder_attention_mask": "encoder_mask",
    "llm_input_ids": "input_ids",
    "llm_attention_mask": "attention_mask",
}


class Causal2VecModule(InputModule):
    """The whole Causal2Vec pipeline as one sentence-transformers module (tokenise, forward, pool, normalise)."""

    save_in_root = True

    def __init__(self, model: Causal2Vec) -> None:
        super().__init__()
        self.model = model

    @property
    def tokenizer(self) -> Any:
        """The LLM tokenizer (sentence-transformers reads it for padding and length information)."""
        return self.model.llm_tokenizer

    @property
    def max_seq_length(self) -> int:
        """The tokens of a text the model reads: the encoder's budget (C carries what the LLM's shorter one cuts)."""
        return max(self.model.config.encoder_max_length, self.model.config.llm_max_length)

    @max_seq_length.setter
    def max_seq_length(self, tokens: int) -> None:
        """Read at most ``tokens`` tokens of a text: both budgets are capped there (the LLM's stays if shorter)."""
        config = self.model.config
        self.model.set_token_budgets(encoder_max_length=tokens, llm_max_length=min(tokens, config.llm_max_length))

    def get_embedding_dimension(self) -> int:
        """The size of the embeddings."""
        return self.model.embedding_dim

    def preprocess(self, inputs: Sequence[str], prompt: str | None = None, **kwargs: Any) -> dict[str, torch.Tensor]:
        """Tokenise texts; the prompt is tokenised separately, as ``Causal2Vec.encode`` does.

        Exactly one key ends in ``input_ids`` (the LLM's): sentence-transformers' trainer splits a collated batch
        into one feature dict per text column by that suffix, so the encoder's tensors go under other names.
        """
        features = self.model.tokenize(list(inputs), prompt or "")
        return {ST_NAMES[name]: tensor for name, tensor in features.items()}

    def forward(self, features: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Add ``sentence_embedding`` (normalised when the config says so) to the features."""
        embeddings = self.model(**{name: features[st_name] for name, st_name in ST_NAMES.items()})
        if self.model.config.normalize:
            embeddings = self.model.normalize(embeddings)
        features["sentence_embedding"] = embeddings
        return features

    def save(self, output_path: str, *args: Any, **kwargs: Any) -> None:
        """Write the checkpoint files into ``output_path``."""
        write_checkpoint_files(self.model, Path(output_path))

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs: Any) -> Causal2VecModule:
        """Load the checkpoint folder (or hub id) that ``modules.json`` points at."""
        hub_kwargs = {k: kwargs[k] for k in ("revision", "token") if kwargs.get(k) is not None}
        folder = resolve_folder(model_name_or_path, **hub_kwargs) / subfolder
        return cls(Causal2Vec.from_pretrained(folder))


def load_sentence_transformer(path: str | Path, **kwargs: Any) -> SentenceTransformer:
    """``SentenceTransformer(path)`` for a Causal2Vec checkpoint folder, without ``trust_remote_code=True``.

    The folder's module type is resolved to this installed :class:`Causal2VecModule` instead of being imported as
    the folder says; any other custom module a folder names is still refused unless ``trust_remote_code=True`` is
    passed, as sentence-transformers decides.

    Args:
        path: A checkpoint folder (or a hub id, when online).
        **kwargs: Passed to ``SentenceTransformer`` (``device``, ``trust_remote_code``, …).
    """
    # sentence-transformers' trainer reloads its best checkpoint through this classmethod (base/trainer.py); it is
    # the library's one way to map a modules.json type to a class already imported, so trust stays with the package.
    return SentenceTransformer._load_with_module_classes(str(path), {ST_MODULE_CLASS: Causal2VecModule}, **kwargs)
