"""Compact embeddings: float32 vectors to int8/uint8 (scalar) or binary/ubinary (one bit per dimension).

The semantics are sentence-transformers' ``quantize_embeddings`` (tests compare the two on the same floats), so that
``Causal2Vec.encode(..., precision=p)`` and ``SentenceTransformer(folder).encode(..., precision=p)`` agree. It is
written out here in numpy rather than imported: every backend's ``encode`` needs it, and sentence-transformers is an
optional extra whose one owning module (:mod:`causal2vec.st_module`) imports the model, so importing it from the
encode path would both require the extra and close an import circle.

- ``int8``/``uint8``: each dimension's ``[min, max]`` (``ranges``, shape ``(2, dim)``) is cut into 255 equal steps
  and a value becomes the index of its step, clipped to 0..255 (minus 128 for ``int8``). Ranges come from
  ``ranges``, else from ``calibration_embeddings``, else from the embeddings themselves (unstable for few vectors).
- ``binary``/``ubinary``: one bit per dimension, set where the value is positive, packed 8 to a byte
  (``(n, ceil(dim / 8))``); ``binary`` stores each byte minus 128 as int8, ``ubinary`` as uint8.
"""

from __future__ import annotations

import logging
from typing import Literal, get_args

import numpy as np

logger = logging.getLogger(__name__)

OutputPrecision = Literal["float32", "int8", "uint8", "binary", "ubinary"]
OUTPUT_PRECISIONS: tuple[str, ...] = get_args(OutputPrecision)
_FEW_FOR_RANGES = 100  # below this many embeddings, ranges computed from them are noisy (a warning says so)


def check_precision(precision: object) -> OutputPrecision:
    """Return ``precision`` when it is one of :data:`OUTPUT_PRECISIONS`.

    Raises:
        ValueError: Naming the value and the allowed ones.
    """
    if precision not in OUTPUT_PRECISIONS:
        raise ValueError(f"precision={precision!r} is not supported; choose one of {list(OUTPUT_PRECISIONS)}")
    return precision  # type: ignore[return-value]


def quantization_ranges(embeddings: np.ndarray) -> np.ndarray:
    """The per-dimension ``[min; max]`` of float embeddings ``(n, dim)``: ``(2, dim)``, for ``ranges=``.

    Compute it once from a representative sample (thousands of documents) and pass it to every later call, so
    that all the vectors of an index share one scale.

    Raises:
        ValueError: If ``embeddings`` is not a non-empty 2-D array.
    """
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise ValueError(f"ranges need float embeddings of shape (n, dim) with n >= 1; got {embeddings.shape}")
    return np.vstack((embeddings.min(axis=0), embeddings.max(axis=0)))


def quantize(
    embeddings: np.ndarray,
    precision: OutputPrecision,
    *,
    ranges: np.ndarray | None = None,
    calibration_embeddings: np.ndarray | None = None,
) -> np.ndarray:
    """Quantise float embeddings ``(n, dim)`` (or one ``(dim,)``) to ``precision``.

    Args:
        embeddings: Float embeddings.
        precision: ``float32`` (a float32 copy), ``int8``, ``uint8``, ``binary`` or ``ubinary``.
        ranges: ``(2, dim)`` per-dimension minima and maxima for ``int8``/``uint8`` (see
            :func:`quantization_ranges`).
        calibration_embeddings: Float embeddings ``(m, dim)`` to take the ranges from when ``ranges`` is not given.

    Returns:
        float32 ``(n, dim)``; int8/uint8 ``(n, dim)``; int8/uint8 ``(n, ceil(dim / 8))`` for binary/ubinary.

    Raises:
        ValueError: For an unknown precision, integer input, or int8/uint8 ranges to infer from one embedding.
    """
    precision = check_precision(precision)
    embeddings = np.asarray(embeddings)
    if embeddings.dtype.kind not in "f":
        raise ValueError(f"embeddings to quantise must be floats; got dtype {embeddings.dtype}")
    if precision == "float32":
        return embeddings.astype(np.float32)
    if precision.endswith("binary"):
        packed = np.packbits(embeddings > 0, axis=-1)  # uint8
        return (packed - 128).astype(np.int8) if precision == "binary" else packed
    if ranges is None:
        ranges = _ranges_for(embeddings, precision, calibration_embeddings)
    ranges = np.asarray(ranges).astype(np.float32, copy=False)
    starts = ranges[0]
    steps = (ranges[1] - starts) / 255
    steps = np.where(steps == 0, 1, steps)  # a constant dimension: every value falls in step 0
    levels = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
    return (levels - 128).astype(np.int8) if precision == "int8" else levels.astype(np.uint8)


def _ranges_for(embeddings: np.ndarray, precision: str, calibration: np.ndarray | None) -> np.ndarray:
    """Ranges from the calibration embeddings, else from ``embeddings`` themselves (refused for a single one)."""
    if calibration is not None:
        return quantization_ranges(calibration)
    if embeddings.ndim == 2 and len(embeddings) == 0:
        return np.zeros((2, embeddings.shape[1]), dtype=np.float32)  # nothing to quantise: any scale will do
    if embeddings.ndim == 1 or len(embeddings) == 1:
        raise ValueError(
            f"{precision} needs per-dimension ranges, which one embedding cannot give; pass ranges= (see "
            f"causal2vec.quantization.quantization_ranges) or calibration_embeddings="
        )
    if len(embeddings) < _FEW_FOR_RANGES:
        logger.warning(
            "%s ranges computed from only %d embeddings; pass ranges= or calibration_embeddings= from a "
            "representative sample for a stable scale",
            precision,
            len(embeddings),
        )
    return quantization_ranges(embeddings)


def packed_dimension(dim: int, precision: OutputPrecision) -> int:
    """The length of a quantised vector: ``ceil(dim / 8)`` bytes for the binary precisions, else ``dim``."""
    return (dim + 7) // 8 if check_precision(precision).endswith("binary") else dim
