"""mteb's encoder protocol for every backend: ``mteb.evaluate(model, tasks)`` runs a Causal2Vec model as it is.

:class:`~causal2vec.encoding.QueryDocumentMethods` hands ``encode`` calls that carry mteb's ``task_metadata`` to
:func:`encode_for_mteb`, and builds ``mteb_model_meta`` with :func:`model_meta`; ``python -m eval`` runs the same
code. Queries, and the texts of tasks without queries and documents (clustering, classification, STS), get the
task's instruction; documents get none. The instruction is the first found of: ``instructions[task name]``, the
task's own mteb prompt, ``instructions[task type]`` (the shipped ``mteb_instructions.json`` unless the model's
``mteb_instructions`` says otherwise).

This is the only library module that imports mteb, and only when a model is evaluated.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import numpy as np

from causal2vec.files import read_json_object
from causal2vec.runtime import require
from causal2vec.search.corpus import Document

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata
    from mteb.models.model_meta import ModelMeta
    from mteb.types import PromptType

    from causal2vec.encoding import QueryDocumentMethods

logger = logging.getLogger(__name__)

INSTRUCTIONS_PATH = Path(__file__).with_name("mteb_instructions.json")
FRAMEWORKS = {"torch": ["PyTorch"], "onnx": ["ONNX"]}  # mteb's names for the frameworks a backend runs on


def load_instructions(path: Path = INSTRUCTIONS_PATH) -> dict[str, str]:
    """The query instructions by task name and task type (keys starting with ``_`` are comments).

    Raises:
        FileNotFoundError: If there is no such file.
        ValueError: If the file is not a JSON object of strings.
    """
    data = read_json_object(path, "instructions file")
    if not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"instructions file {path} must be a JSON object mapping task names to strings")
    return {k: v for k, v in data.items() if not k.startswith("_")}


@functools.cache
def shipped_instructions() -> dict[str, str]:
    """The instructions shipped with the library (read once)."""
    return load_instructions()


def instruction_for(
    instructions: dict[str, str], task_metadata: TaskMetadata, prompt_type: PromptType | None
) -> str | None:
    """The instruction for one side of a task (``None`` for documents)."""
    mteb_types = require("mteb.types", "eval")
    if prompt_type == mteb_types.PromptType.document:
        return None
    if task_metadata.name in instructions:
        return instructions[task_metadata.name]
    prompt = task_metadata.prompt
    if isinstance(prompt, dict):
        prompt = prompt.get(mteb_types.PromptType.query.value)
    return prompt or instructions.get(task_metadata.type)


def batch_texts(batch: dict[str, Any]) -> list[str]:
    """The texts of one mteb batch; documents with a title are embedded as the index embeds them (title, newline)."""
    if "body" in batch and "title" in batch:
        return [Document(text=b, title=t).embedding_text() for b, t in zip(batch["body"], batch["title"], strict=True)]
    return list(batch["text"])


def encode_for_mteb(
    model: QueryDocumentMethods,
    inputs: Any,
    *,
    task_metadata: TaskMetadata,
    prompt_type: PromptType | None = None,
    instructions: dict[str, str] | None = None,
    **kwargs: Any,
) -> np.ndarray:
    """Embed every text mteb's loader yields, L2-normalised, as ``(n, embedding_dim)`` float32.

    ``instructions`` default to the model's ``mteb_instructions``, else the shipped ones; mteb's other arguments
    (``hf_split``, ``hf_subset`` …) do not change how a text is embedded.
    """
    texts = [text for batch in inputs for text in batch_texts(batch)]
    if instructions is None:
        instructions = shipped_instructions() if model.mteb_instructions is None else model.mteb_instructions
    instruction = instruction_for(instructions, task_metadata, prompt_type)
    logger.debug("%s %s: %d texts, instruction %r", task_metadata.name, prompt_type, len(texts), instruction)
    return model.encode(
        texts,
        instruction=instruction,
        batch_size=kwargs.get("batch_size", 32),
        normalize=True,
        show_progress_bar=kwargs.get("show_progress_bar"),
    )


def model_meta(
    model: QueryDocumentMethods,
    *,
    name: str | None = None,
    revision: str | None = None,
    experiment_kwargs: dict[str, Any] | None = None,
) -> ModelMeta:
    """The mteb ModelMeta of ``model``: name, revision, dimension, token budget, licence, framework.

    Args:
        model: Any backend.
        name: The name results are filed under (default: the model's ``name_or_path``).
        revision: The revision (default: the first 12 hex digits of its config fingerprint).
        experiment_kwargs: Settings mteb files results apart by (default: the backend and precision).
    """
    meta_module = require("mteb.models.model_meta", "eval")
    identity = model.identity
    parameters = list(model.parameters()) if hasattr(model, "parameters") else []  # torch models only
    return meta_module.ModelMeta(
        loader=None,
        name=name or identity.name or "causal2vec/unsaved",
        revision=revision or (identity.config_sha256 or "")[:12] or None,
        release_date=None,
        languages=None,
        n_parameters=sum(p.numel() for p in parameters) or None,
        memory_usage_mb=round(sum(p.numel() * p.element_size() for p in parameters) / 2**20, 1) or None,
        max_tokens=max(model.config.encoder_max_length, model.config.llm_max_length),
        embed_dim=model.embedding_dim,
        license=_licence(model, meta_module),
        open_weights=True,
        public_training_code=None,
        public_training_data=None,
        framework=FRAMEWORKS.get(identity.backend, []),
        similarity_fn_name=meta_module.ScoringFunction.COSINE,
        use_instructions=True,
        training_datasets=None,
        experiment_kwargs=experiment_kwargs or {"backend": identity.backend, "precision": identity.precision},
    )



def _licence(model: QueryDocumentMethods, meta_module: Any) -> str | None:
    """The card's licence when mteb knows its name (the trained default's ``other`` it does not), else ``None``."""
    licence = getattr(model, "card_data", {}).get("license")  # torch checkpoints carry their card's metadata
    return licence if licence in get_args(meta_module.Licenses) else None
