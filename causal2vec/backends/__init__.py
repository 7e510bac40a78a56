"""Who runs a model: the registry of backends and :func:`load_backend`, the one policy that picks and loads one.

Between :mod:`causal2vec.search` above (which loads the model an index records) and the model below. Two backends
are built in: ``torch`` (:class:`~causal2vec.Causal2Vec`) and ``onnx`` (:class:`~causal2vec.backends.onnx.
OnnxCausal2Vec`, an export run by onnxruntime). Another plugs in with :func:`register_backend`; an index it
builds records its name, and :func:`load_backend` reopens the index with it.

The policy, in one place:

- the backend: the one asked for, else the backend that claims the folder (an export without torch weights runs
  on ONNX), else the one an index recorded, else torch;
- the device: the one asked for, else CUDA when available, else the CPU;
- the precision (``dtype``): the one asked for, else the one an index recorded, else bf16 on CUDA and on CPUs with
  native bf16 and fp32 elsewhere. An ONNX export's precision is fixed when it is exported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from causal2vec.identity import BACKEND_NAMES, ModelIdentity, Precision, precision_of, torch_dtype
from causal2vec.runtime import auto_dtype, default_device

if TYPE_CHECKING:
    from causal2vec.encoding import EmbeddingBackend

logger = logging.getLogger(__name__)

__all__ = ["Backend", "BackendChoiceError", "backend_names", "get_backend", "load_backend", "register_backend"]


class BackendChoiceError(ValueError):
    """A backend, device or dtype that cannot be chosen; the message starts with the argument's name."""


Loader = Callable[..., "EmbeddingBackend"]  # loader(name, *, device, precision, strict)


@dataclass(frozen=True)
class Backend:
    """A way to run a Causal2Vec model.

    Attributes:
        name: What indexes record and ``--backend`` takes.
        load: ``load(name, *, device, precision, strict)``: the model ``name`` (a folder, a hub id, ``"default"``)
            on ``device`` in ``precision`` (``None`` for a backend whose files fix it).
        claims: Whether a folder can only be run by this backend (``auto`` then picks it).
        precisions: The precisions ``dtype`` may ask for; empty when the files fix the precision.
    """

    name: str
    load: Loader
    claims: Callable[[str], bool] = lambda name: False
    precisions: tuple[Precision, ...] = ()


_REGISTRY: dict[str, Backend] = {}


def register_backend(backend: Backend) -> None:
    """Make ``backend`` loadable by name (by :func:`load_backend`, indexes and ``--backend``).

    Raises:
        ValueError: If another backend has that name.
    """
    if backend.name in _REGISTRY and _REGISTRY[backend.name] is not backend:
        raise ValueError(f"a backend named {backend.name!r} is already registered")
    _REGISTRY[backend.name] = backend


def unregister_backend(name: str) -> None:
    """Remove a registered backend (the built-in ones stay)."""
    if name not in BACKEND_NAMES:
        _REGISTRY.pop(name, None)


def backend_names() -> tuple[str, ...]:
    """The registered backends' names, the built-in ones first."""
    return tuple(_REGISTRY)


def get_backend(name: str) -> Backend:
    """The backend registered as ``name``.

    Raises:
        BackendChoiceError: Naming it and the registered ones.
    """
    if name not in _REGISTRY:
        raise BackendChoiceError(f"backend {name!r} is not one of {list(_REGISTRY)}")
    return _REGISTRY[name]


def load_backend(
    source: str | Path | ModelIdentity,
    *,
    backend: str = "auto",
    device: str | None = None,
    dtype: str = "auto",
    strict: bool = False,
) -> EmbeddingBackend:
    """Load a model with the backend, device and precision the module's policy picks.

    Args:
        source: ``"default"``, a checkpoint or export folder, a hub id, or the :class:`ModelIdentity` an index
            recorded (its backend and precision are then the defaults).
        backend: A registered backend's name, or ``"auto"``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``; ``None`` for CUDA when available, else the CPU.
        dtype: A precision (``fp32``, ``bf16``, ``fp16``) or torch dtype name, or ``"auto"``.
        strict: Raise instead of falling back to the CPU where a backend would (ONNX on CUDA).

    Raises:
        BackendChoiceError: For a backend, dtype or device that cannot be chosen, naming it and what is allowed.
        ValueError: If ``source`` is an identity that names no loadable model.
        FileNotFoundError: If the model's files are missing.
    """
    recorded = source if isinstance(source, ModelIdentity) else None
    name = recorded.name if recorded is not None else str(source)
    if name is None:
        raise ValueError(
            "this index does not name a loadable model (it was built with a model that was never saved); "
            "pass the model explicitly (SemanticIndex.load(path, model=...) or --model)"
        )
    chosen = _choose_backend(name, backend, recorded)
    device = device or default_device()
    precision = _choose_precision(chosen, dtype, device, recorded)
    logger.info("loading %s with the %s backend (%s on %s)", name, chosen.name, precision or "as exported", device)
    return chosen.load(name, device=device, precision=precision, strict=strict)


def _choose_backend(name: str, backend: str, recorded: ModelIdentity | None) -> Backend:
    """``backend``, else the one that claims ``name``'s folder, else the recorded one, else torch."""
    if backend != "auto":
        return get_backend(backend)
    for candidate in _REGISTRY.values():
        if candidate.claims(name):
            return candidate
    return get_backend(recorded.backend if recorded is not None else "torch")


def _choose_precision(
    backend: Backend, dtype: str, device: str, recorded: ModelIdentity | None
) -> Precision | None:
    """``dtype``, else the recorded precision (fp32 where an old index recorded none), else the device's."""
    if not backend.precisions:
        if dtype != "auto":
            raise BackendChoiceError(
                f"dtype {dtype} applies to the torch backend; an ONNX export's precision is chosen when it is "
                f"exported (python -m export --fp16 / --int8)"
                if backend.name == "onnx"
                else f"dtype {dtype} does not apply to the {backend.name} backend: its files fix the precision"
            )
        return None
    if dtype == "auto" and recorded is not None and recorded.backend == backend.name:
        precision = recorded.precision or "fp32"
    else:
        try:
            precision = precision_of(auto_dtype(dtype, device))
        except ValueError as err:
            raise BackendChoiceError(f"dtype {dtype}: {err}") from None
    if precision not in backend.precisions:
        raise BackendChoiceError(f"dtype {dtype}: the {backend.name} backend runs in {list(backend.precisions)}")
    return precision


def _load_torch(name: str, *, device: str, precision: Precision, strict: bool) -> EmbeddingBackend:
    from causal2vec.model import Causal2Vec  # imported on use: importing the backends must not load the model code

    return Causal2Vec.from_pretrained(name, device=device, dtype=torch_dtype(precision))


def _load_onnx(name: str, *, device: str, precision: None, strict: bool) -> EmbeddingBackend:
    from causal2vec.backends.onnx import OnnxCausal2Vec

    return OnnxCausal2Vec.from_pretrained(name, device=device, strict=strict)


def _onnx_only(name: str) -> bool:
    from causal2vec.backends.onnx import is_onnx_only

    return is_onnx_only(name)


register_backend(Backend("torch", _load_torch, precisions=("fp32", "bf16", "fp16")))
register_backend(Backend("onnx", _load_onnx, claims=_onnx_only))
