"""Which model made a vector: the backend names, the precision vocabulary and :class:`ModelIdentity`.

Every :class:`~causal2vec.encoding.EmbeddingBackend` exposes an identity; an index manifest stores the identity of
the model that embedded its documents, ``/info`` and ``python -m eval`` report it, and
:func:`causal2vec.backends.load_backend` loads a model again from it. Two vectors compare only if their identities
agree on the config fingerprint, the backend and the precision.

One vocabulary names precisions everywhere: ``fp32``, ``bf16``, ``fp16`` and ``int8`` (an ONNX export's
quantised graph). Torch dtype names (``float32``, ``bfloat16``, ``float16``), which ``--dtype`` takes, map onto it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch

from causal2vec.runtime import DTYPES, resolve_dtype

if TYPE_CHECKING:
    from causal2vec.config import Causal2VecConfig

BackendName = Literal["torch", "onnx"]  # the built-in backends; causal2vec.backends registers more
BACKEND_NAMES: tuple[str, ...] = get_args(BackendName)
Precision = Literal["fp32", "bf16", "fp16", "int8"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
_PRECISION_OF_DTYPE = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def precision_of(value: str | torch.dtype) -> Precision:
    """The precision a dtype or precision name stands for: ``"bfloat16"``, ``torch.bfloat16`` and ``"bf16"`` → ``bf16``.

    Raises:
        ValueError: Naming the value and the names allowed.
    """
    if isinstance(value, str) and value in PRECISIONS:
        return value  # type: ignore[return-value]  # checked just above
    try:
        return _PRECISION_OF_DTYPE[resolve_dtype(value)]  # type: ignore[return-value]  # the map's values
    except ValueError:
        raise ValueError(
            f"precision {value!r} is not one of {list(PRECISIONS)} (or the torch dtypes {list(DTYPES)})"
        ) from None


def torch_dtype(precision: str | torch.dtype) -> torch.dtype:
    """The torch dtype of a precision (``fp32`` → ``torch.float32``).

    Raises:
        ValueError: For ``int8`` (an ONNX graph's precision; torch weights are never int8) or an unknown name.
    """
    if precision_of(precision) == "int8":
        raise ValueError("precision 'int8' is an ONNX export's; the torch backend runs in fp32, bf16 or fp16")
    return resolve_dtype({"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(precision, precision))


def config_fingerprint(config: Causal2VecConfig) -> str:
    """A SHA-256 of a model's config: its design and budgets, without the checksums (which name files)."""
    data = {k: v for k, v in config.to_dict().items() if k != "checksums"}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class ModelIdentity:
    """What shaped a model's vectors, and how it loads again.

    Attributes:
        name: How the model loads: ``"default"``, a folder, a hub id; ``None`` for a model that was never saved.
        config_sha256: :func:`config_fingerprint` of its config (``None`` when unknown).
        backend: The backend that ran it: ``torch``, ``onnx`` or a registered one.
        precision: What it computed in (``None`` in old indexes that did not record it).
        max_length: The token budget it embedded with; ``None`` for the model's own.
    """

    name: str | None
    config_sha256: str | None
    backend: str = "torch"
    precision: Precision | None = None
    max_length: int | None = None

    def __post_init__(self) -> None:
        if self.precision is not None:
            object.__setattr__(self, "precision", precision_of(self.precision))  # one vocabulary, whatever came in
        budget = self.max_length
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
            raise ValueError(f"ModelIdentity.max_length={budget!r} must be a positive integer or None")

    def with_budget(self, max_length: int | None) -> ModelIdentity:
        """The same identity with the token budget ``max_length``."""
        return dataclasses.replace(self, max_length=max_length)

    def describe(self) -> str:
        """``"the torch backend in bf16"``: how error messages name a backend and precision."""
        return f"the {self.backend} backend in {self.precision or 'an unrecorded precision'}"

    def to_dict(self) -> dict[str, Any]:
        """The identity as JSON-ready data."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: object, where: str) -> ModelIdentity:
        """Read :meth:`to_dict`'s data back.

        Raises:
            ValueError: If ``data`` is not such an object, naming ``where`` it came from and what is wrong.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or not {"name", "config_sha256"} <= data.keys() or data.keys() - fields:
            raise ValueError(f"{where}: the model identity {data!r} must be an object with the keys {sorted(fields)}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from err
