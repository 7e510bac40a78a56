"""The output dimensions a model can honestly give, and truncation to one of them.

A ``contextual_eos`` embedding is ``[h_C ; h_EOS]``: its first half is the LLM's state at the Contextual token, a
vector that ranks well by itself (for the trained default, 0.9202 against 0.9333 MRR@10 on the BBC validation
headlines, and 0.5333 against 0.5472 on the Python documentation's selection part; ``bench/halves.py``). Cutting
anywhere else leaves a part of a vector the model was never trained to rank with, so only the whole vector and, for
``contextual_eos`` pooling, its first half are offered (``encode(truncate_dim=...)``, ``dimensions`` on
``POST /v1/embeddings``). A truncated vector is L2-normalised again when the whole one was.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from causal2vec.encoding import EmbeddingBackend


def output_dimensions(model: EmbeddingBackend) -> tuple[int, ...]:
    """The dimensions ``model`` can give: its whole embedding, and ``h_C`` alone for ``contextual_eos`` pooling."""
    whole = int(model.embedding_dim)
    return (whole, whole // 2) if model.config.output_pooling == "contextual_eos" else (whole,)


def check_dimension(model: EmbeddingBackend, dim: int, name: str = "truncate_dim") -> int:
    """``dim`` if ``model`` can give it.

    Raises:
        ValueError: Naming ``name``, the value and the dimensions allowed.
    """
    allowed = output_dimensions(model)
    if isinstance(dim, bool) or not isinstance(dim, int) or dim not in allowed:
        halves = " (the whole vector, or h_C alone: its first half)" if len(allowed) > 1 else ""
        raise ValueError(f"{name}={dim!r} is not a dimension this model gives; choose one of {list(allowed)}{halves}")
    return dim


def truncate(embeddings: np.ndarray, dim: int, *, normalize: bool) -> np.ndarray:
    """The first ``dim`` coordinates of each row (of a 1-D or 2-D array), L2-normalised again under ``normalize``."""
    if embeddings.shape[-1] == dim:
        return embeddings
    cut = embeddings[..., :dim]
    if normalize:
        norms = np.linalg.norm(cut, axis=-1, keepdims=True)
        cut = cut / np.maximum(norms, 1e-12)
    return np.ascontiguousarray(cut, dtype=np.float32)
