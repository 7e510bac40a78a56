"""The training configuration: every hyperparameter of a run in one YAML file, validated before any model loads.

A file has the sections below; every key is optional and takes the default written here. An unknown key is an
error naming it and its closest valid key; a bad value is an error naming the allowed values::

    model:      {base: default}                       # or {encoder: ..., llm: ..., config: {...}}
    train:      {projector: true, encoder: frozen, llm: lora}
    lora:       {r: 16, alpha: 32, dropout: 0.05, targets: [q_proj, ...]}
    data:       {sources: [{name: bbc, path: data/bbc.jsonl}], skip_bad: false}
    loss:       {kind: mnrl, temperature: 0.05}
    optim:      {batch_size: 32, learning_rate: 2.0e-4, lr_projector: 1.0e-3, warmup_ratio: 0.1, bf16: true}
    output:     {dir: runs/default, save_steps: 200, merge: true}
"""

from __future__ import annotations

import dataclasses
import difflib
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from causal2vec.config import ProjectorKind

EncoderMode = Literal["frozen", "full", "lora"]
LlmMode = Literal["frozen", "lora"]
LossKind = Literal["mnrl", "cached_mnrl"]
ProjectorInit = Literal["isometric"]
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class ModelSection:
    """Where the model comes from: a checkpoint to continue from, or an encoder and an LLM to assemble."""

    base: str | None = "default"  # "default", a checkpoint folder or a hub id; null to assemble from encoder + llm
    encoder: str | None = None  # a Hugging Face encoder (folder or hub id), with llm, for a fresh assembly
    llm: str | None = None  # a decoder-only LLM (folder or hub id), with encoder
    config: dict[str, Any] = field(default_factory=dict)  # Causal2VecConfig fields of a fresh assembly
    seed: int = 0  # seed of a fresh projector
    projector: ProjectorKind | None = None  # a fresh projector of this kind, "mlp" or "linear" (null: the base's)
    projector_init: ProjectorInit | None = None  # "isometric": restart the projector as an exact isometry (null: keep)
    contextual_norm: float | None = None  # rescale the projector to this mean |C| before training (null: keep)
    encoder_max_length: int | None = None  # encoder token budget while training (null: the model's)
    llm_max_length: int | None = None  # LLM token budget while training (null: the model's); saved: the model's


@dataclass
class TrainSection:
    """Which parts train."""

    projector: bool = True  # the projector, fully
    encoder: EncoderMode = "frozen"  # the BERT-style encoder: frozen, fully, or through LoRA
    llm: LlmMode = "lora"  # the LLM: frozen or through LoRA (never fully: 7B backbones)
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, ~30% slower


@dataclass
class LoraSection:
    """LoRA on the LLM (and on the encoder when ``train.encoder`` is ``lora``)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    targets: list[str] = field(default_factory=lambda: list(LLAMA_TARGETS))  # LLM module names (Llama/Qwen2/Mistral)
    encoder_targets: list[str] = field(default_factory=lambda: ["query", "key", "value", "dense"])  # BERT names


@dataclass
class Source:
    """One training source: a local JSONL file of pairs (see ``training.data.pairs``) or a hub dataset."""

    name: str  # batches are drawn from one source at a time; also the key of its instruction
    path: str | None = None  # local JSONL: query, positive, optional negatives, instruction, dataset
    dataset: str | None = None  # keep only the JSONL records of this dataset (a file may hold several)
    hub: str | None = None  # a Hugging Face dataset id (or a local datasets folder), loaded with datasets
    subset: str | None = None  # of a hub dataset with several subsets (configs), e.g. "triplet"
    split: str = "train"  # of a hub dataset
    columns: dict[str, str] = field(default_factory=dict)  # hub column -> query / positive / negative_1 …
    instruction: str | None = None  # the query instruction (overrides the records'); documents get none
    max_pairs: int | None = None  # keep at most this many pairs (seeded sample): how a mixture sets its ratios


@dataclass
class DataSection:
    """The training data."""

    sources: list[Source] = field(default_factory=list)
    skip_bad: bool = False  # skip malformed JSONL lines (counted) instead of failing
    negatives: int = 1  # hard negatives per pair used by the loss (0: in-batch negatives only)


@dataclass
class LossSection:
    """The contrastive loss: InfoNCE over in-batch (and hard) negatives."""

    kind: LossKind = "mnrl"  # MultipleNegativesRankingLoss, or its cached (GradCache) form for large batches
    temperature: float = 0.05  # tau; the loss's scale is 1/tau
    mini_batch_size: int = 32  # cached_mnrl: texts per forward/backward chunk
    gather_across_devices: bool = True  # in-batch negatives from every rank


@dataclass
class OptimSection:
    """Optimisation."""

    batch_size: int = 32  # pairs per device per step
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    learning_rate: float = 2.0e-4  # LoRA and fully trained encoder
    lr_projector: float | None = 1.0e-3  # None: learning_rate
    lr_encoder: float | None = None  # None: learning_rate
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    bf16: bool = True  # bf16 autocast (CPU with AVX-512 BF16 or AMX, and GPUs)
    seed: int = 0


@dataclass
class OutputSection:
    """Checkpoints and the final model."""

    dir: str = "runs/train"
    save_steps: int = 200  # a checkpoint every N steps (and at the end)
    save_total_limit: int | None = 3
    logging_steps: int = 10
    merge: bool = False  # merge LoRA into the saved weights (else kept as an adapter)
    llm_max_length: int | None = None  # the LLM token budget saved with the final model (null: the base model's)


@dataclass
class TrainConfig:
    """A whole training run."""

    model: ModelSection = field(default_factory=ModelSection)
    train: TrainSection = field(default_factory=TrainSection)
    lora: LoraSection = field(default_factory=LoraSection)
    data: DataSection = field(default_factory=DataSection)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    output: OutputSection = field(default_factory=OutputSection)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read and validate a YAML config.

        Raises:
            FileNotFoundError: If the file is missing.
            ValueError: For invalid YAML, an unknown key (naming the closest valid one) or a bad value.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"training config {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path} is not valid YAML: {err}") from err
        config = build(cls, data, str(path))
        config.check(str(path))
        return config

    def check(self, where: str) -> None:
        """Check the values that depend on each other.

        Raises:
            ValueError: Naming the key, the value and what is allowed.
        """
        m = self.model
        if m.base is None and not (m.encoder and m.llm):
            raise ValueError(f"{where}: model needs base (a checkpoint or 'default'), or both encoder and llm")
        if m.base is not None and (m.encoder or m.llm or m.config):
            raise ValueError(f"{where}: model.base={m.base!r} continues a checkpoint; encoder, llm and config "
                             f"apply to a fresh assembly only (set base: null)")  # fmt: skip
        for key in ("encoder_max_length", "llm_max_length"):
            value = getattr(m, key)
            if value is not None and value < 4:
                raise ValueError(f"{where}: model.{key}={value} must be an integer >= 4 (or null: the model's)")
        if m.contextual_norm is not None and not m.contextual_norm > 0:
            raise ValueError(f"{where}: model.contextual_norm={m.contextual_norm} must be positive (or null: keep)")
        if not self.data.sources:
            raise ValueError(f"{where}: data.sources is empty; name at least one JSONL file or hub dataset")
        for i, source in enumerate(self.data.sources):
            if (source.path is None) == (source.hub is None):
                raise ValueError(f"{where}: data.sources[{i}] ({source.name!r}) needs exactly one of path or hub")
            if source.dataset is not None and source.path is None:
                raise ValueError(f"{where}: data.sources[{i}] ({source.name!r}): dataset filters a JSONL path only")
        names = [s.name for s in self.data.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"{where}: data.sources names repeat: {names}; each source needs its own name")
        budget = self.output.llm_max_length
        if budget is not None and budget < 4:
            raise ValueError(f"{where}: output.llm_max_length={budget} must be at least 4 (or null: the base's)")
        _positive(where, "optim.batch_size", self.optim.batch_size)
        _positive(where, "lora.r", self.lora.r)
        _positive(where, "loss.mini_batch_size", self.loss.mini_batch_size)
        if not 0 < self.loss.temperature <= 1:
            raise ValueError(f"{where}: loss.temperature={self.loss.temperature} must be in (0, 1], e.g. 0.05")
        if not 0 <= self.lora.dropout < 1:
            raise ValueError(f"{where}: lora.dropout={self.lora.dropout} must be in [0, 1)")


def build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a YAML mapping, recursively, checking keys and value types.

    Raises:
        ValueError: For an unknown key (with the closest valid one) or a value of the wrong type or not allowed.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping of keys for {cls.__name__}, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{where}: unknown key {key!r}{hint} (valid keys: {names})")
    return cls(**{key: _value(hints[key], value, f"{where}: {key}") for key, value in data.items()})


def _value(hint: Any, value: Any, where: str) -> Any:
    """Check one value against its annotation; build nested dataclasses and lists of them."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return _value(hint, value, where)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where}={value!r} is not allowed; choose one of {list(args)}")
        return value
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where} must be a list, got {value!r}")
        return [_value(args[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a mapping, got {value!r}")
        return value
    return _scalar(hint, value, where)


def _scalar(hint: type, value: Any, where: str) -> Any:
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 2e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ValueError(f"{where}={value!r} must be of type {hint.__name__}")
    return value


def _positive(where: str, key: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{where}: {key}={value} must be a positive integer")
