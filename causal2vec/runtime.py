"""Small helpers every part of the library shares: dtypes and devices, progress bars, optional imports, checks.

Nothing here knows about models or indexes; it is the one place for the idioms that would otherwise repeat:

- :func:`resolve_dtype`, :func:`default_device`, :func:`auto_dtype`, :func:`check_device`: dtype and device policy;
- :func:`show_progress`, :func:`quiet_transformers_bars`: progress bars follow the ``causal2vec`` log level;
- :func:`require`, :func:`package_dir`: import an optional dependency, or name the exact ``pip install``;
- :func:`check_int`: an integer argument within its range, or an error naming both.

Durable files (atomic writes, checksums, JSON metadata) live in :mod:`causal2vec.files`.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}

# The extra that brings each optional dependency (pip install 'causal2vec[<extra>]').
EXTRAS = {
    "faiss": "search",
    "onnxruntime": "onnx",
    "onnx": "onnx",
    "peft": "train",
    "sentence_transformers": "st",
    "mteb": "eval",
    "datasets": "train",
    "fastapi": "serve",
    "uvicorn": "serve",
    "prometheus_client": "serve",
    "ray": "ray",
    "pyarrow": "ray",
}


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """Map ``"float32"``/``"bfloat16"``/``"float16"`` (or the torch dtypes, or ``fp32``/``bf16``/``fp16``) to a dtype.

    Raises:
        ValueError: Naming the value and the allowed ones.
    """
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and _DTYPE_ALIASES.get(dtype, dtype) in DTYPES:
        return DTYPES[_DTYPE_ALIASES.get(dtype, dtype)]
    raise ValueError(f"dtype {dtype!r} is not supported; choose one of {list(DTYPES)}")


def default_device() -> str:
    """``"cuda"`` when a CUDA GPU is visible, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str | torch.device) -> torch.device:
    """Parse a device and check that this torch can use it.

    Raises:
        ValueError: For a string torch cannot parse, or a CUDA device on a torch without CUDA or without a GPU,
            naming the device and what this machine offers.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a device; use 'cpu', 'cuda' or 'cuda:N'") from err
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            reason = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"device {str(device)!r} is not available: {reason}; use 'cpu'")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} does not exist: {torch.cuda.device_count()} CUDA GPU(s) visible")
    return parsed


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


def show_progress(requested: bool | None) -> bool:
    """Progress bars follow the log level unless asked for explicitly: shown at INFO and below."""
    if requested is not None:
        return requested
    return logging.getLogger("causal2vec").getEffectiveLevel() <= logging.INFO


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


def require(module: str, extra: str | None = None) -> Any:
    """Import an optional dependency, or fail with the exact command that installs it.

    Args:
        module: The module to import, e.g. ``"faiss"``.
        extra: The causal2vec extra that brings it; defaults to the one :data:`EXTRAS` lists.

    Raises:
        ModuleNotFoundError: Naming the module and ``pip install 'causal2vec[<extra>]'``.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is not None and err.name.split(".")[0] != module.split(".")[0]:
            raise  # the module is there but one of its own imports is missing: show that
        extra = extra or EXTRAS.get(module.split(".")[0])
        install = f"pip install 'causal2vec[{extra}]'" if extra else f"pip install {module.split('.')[0]}"
        raise ModuleNotFoundError(f"this needs {module.split('.')[0]}, which is not installed; run: {install}") from err


def package_dir(module: str, install: str) -> Path:
    """The folder of an installed package, found without importing it (some asset packages import heavy extras).

    Raises:
        ModuleNotFoundError: Naming the package and ``install``, the command that installs it.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"the offline asset package {module!r} is not installed; run: {install}")
    return Path(spec.origin).parent


def check_int(name: str, value: object, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` when it is an ``int`` (not a ``bool``) from ``minimum`` to ``maximum`` (``None``: unbounded).

    Args:
        name: How the message calls the value (``"batch_size"``).
        value: The value to check.
        minimum: The smallest allowed value.
        maximum: The largest allowed value.

    Raises:
        ValueError: Naming the value and the allowed range, e.g. ``batch_size=0 must be a positive integer``.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        raise ValueError(f"{name}={value!r} must be {_int_range(minimum, maximum)}")
    return value


def _int_range(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f"an integer from {minimum} to {maximum}"
    if minimum == 1:
        return "a positive integer"
    if minimum is not None:
        return f"an integer >= {minimum}"
    return "an integer" if maximum is None else f"an integer <= {maximum}"
