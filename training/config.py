"""The training configuration: every hyperparameter of a run in one YAML file, validated before any model loads.

A file has the sections below; every key is optional and takes the default written here. An unknown key is an
error naming it and its closest valid key, and so is a key given twice in one mapping (with both lines); a bad
value is an error naming the allowed values, and every number has a range (:class:`Range`, declared on its field
with :func:`ranged`) that is checked with the key named, NaN and infinity refused::

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
import math
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from causal2vec.config import Causal2VecConfig, ProjectorKind

EncoderMode = Literal["frozen", "full", "lora"]
LlmMode = Literal["frozen", "lora"]
LossKind = Literal["mnrl", "cached_mnrl"]
ProjectorInit = Literal["isometric"]
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SEED_MAX = 2**32 - 1  # numpy's seeds are 32-bit


@dataclass(frozen=True)
class Range:
    """The values a numeric field allows: an interval (either end open or closed, or absent), plus named extras.

    NaN and infinity are never allowed; ``null`` is allowed when the field's type is optional, with ``null``
    saying what it means.
    """

    at_least: float | None = None
    above: float | None = None
    at_most: float | None = None
    below: float | None = None
    extra: dict[int, str] = field(default_factory=dict)  # special values and what they mean, e.g. {-1: "..."}
    null: str | None = None  # what null means, for an optional field

    def allows(self, value: float) -> bool:
        """Whether ``value`` (not None) is inside the range or one of its extras."""
        if value in self.extra:
            return True
        if not math.isfinite(value):
            return False
        return not (
            (self.at_least is not None and value < self.at_least)
            or (self.above is not None and value <= self.above)
            or (self.at_most is not None and value > self.at_most)
            or (self.below is not None and value >= self.below)
        )

    def describe(self, kind: type) -> str:
        """The range in words, e.g. ``a finite number in [0, 1)`` or ``an integer >= 1, or -1 (...)``."""
        low = _end(self.at_least, "[", ">=") or _end(self.above, "(", ">")
        high = _end(self.at_most, "]", "<=") or _end(self.below, ")", "<")
        bounds = f"in {low[0]}, {high[0]}" if low and high else (low or high or ("", "of any size"))[1]
        text = f"{'an integer' if kind is int else 'a finite number'} {bounds}"
        text += "".join(f", or {value} ({meaning})" for value, meaning in self.extra.items())
        return text + (f" (or null: {self.null})" if self.null else "")


def _end(bound: float | None, bracket: str, comparison: str) -> tuple[str, str] | None:
    """One end of a range as an interval bracket (``[0`` or ``1)``) and as a comparison (``>= 0``)."""
    if bound is None:
        return None
    number = str(int(bound)) if float(bound).is_integer() else str(bound)
    return (f"{bracket}{number}" if bracket in "[(" else f"{number}{bracket}"), f"{comparison} {number}"


def ranged(default: Any, **limits: Any) -> Any:
    """A dataclass field with ``default`` whose value must lie in ``Range(**limits)`` (checked by ``check``)."""
    return field(default=default, metadata={"range": Range(**limits)})


@dataclass
class ModelSection:
    """Where the model comes from: a checkpoint to continue from, or an encoder and an LLM to assemble."""

    base: str | None = "default"  # "default", a checkpoint folder or a hub id; null to assemble from encoder + llm
    encoder: str | None = None  # a Hugging Face encoder (folder or hub id), with llm, for a fresh assembly
    llm: str | None = None  # a decoder-only LLM (folder or hub id), with encoder
    config: dict[str, Any] = field(default_factory=dict)  # Causal2VecConfig fields of a fresh assembly
    seed: int = ranged(0, at_least=0, at_most=SEED_MAX)  # seed of a fresh projector
    projector: ProjectorKind | None = None  # a fresh projector of this kind, "mlp" or "linear" (null: the base's)
    projector_init: ProjectorInit | None = None  # "isometric": restart the projector as an exact isometry (null: keep)
    contextual_norm: float | None = ranged(None, above=0, null="keep")  # rescale the projector to this mean |C|
    # Token budgets while training; the saved model keeps the model's (the LLM's: output.llm_max_length, if set).
    encoder_max_length: int | None = ranged(None, at_least=4, null="the model's")
    llm_max_length: int | None = ranged(None, at_least=4, null="the model's")


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

    r: int = ranged(16, at_least=1)  # the adapters' rank
    alpha: int = ranged(32, above=0)  # the adapters' scale is alpha / r
    dropout: float = ranged(0.05, at_least=0, below=1)
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
    # Keep at most this many pairs (a seeded sample): how a mixture sets its ratios.
    max_pairs: int | None = ranged(None, at_least=1, null="all")


@dataclass
class DataSection:
    """The training data."""

    sources: list[Source] = field(default_factory=list)
    skip_bad: bool = False  # skip malformed JSONL lines (counted) instead of failing
    negatives: int = ranged(1, at_least=0)  # hard negatives per pair used by the loss (0: in-batch negatives only)


@dataclass
class LossSection:
    """The contrastive loss: InfoNCE over in-batch (and hard) negatives."""

    kind: LossKind = "mnrl"  # MultipleNegativesRankingLoss, or its cached (GradCache) form for large batches
    temperature: float = ranged(0.05, above=0, at_most=1)  # tau; the loss's scale is 1/tau
    mini_batch_size: int = ranged(32, at_least=1)  # cached_mnrl: texts per forward/backward chunk
    gather_across_devices: bool = True  # in-batch negatives from every rank


@dataclass
class OptimSection:
    """Optimisation."""

    batch_size: int = ranged(32, at_least=1)  # pairs per device per step
    epochs: float = ranged(1.0, above=0)  # passes over the data, when max_steps is -1
    max_steps: int = ranged(-1, at_least=1, extra={-1: "train for optim.epochs"})  # > 0 overrides epochs
    learning_rate: float = ranged(2.0e-4, above=0)  # LoRA and fully trained encoder
    lr_projector: float | None = ranged(1.0e-3, above=0, null="learning_rate")
    lr_encoder: float | None = ranged(None, above=0, null="learning_rate")
    warmup_ratio: float = ranged(0.1, at_least=0, below=1)  # a share of the steps (transformers reads 1 as 1 step)
    weight_decay: float = ranged(0.0, at_least=0)
    bf16: bool = True  # bf16 autocast (CPU with AVX-512 BF16 or AMX, and GPUs)
    seed: int = ranged(0, at_least=0, at_most=SEED_MAX)


@dataclass
class OutputSection:
    """Checkpoints and the final model."""

    dir: str = "runs/train"
    save_steps: int = ranged(200, at_least=1)  # a checkpoint every N steps (and at the end)
    save_total_limit: int | None = ranged(3, at_least=1, null="keep every checkpoint")  # the newest ones are kept
    logging_steps: int = ranged(10, at_least=1)
    merge: bool = False  # merge LoRA into the saved weights (else kept as an adapter)
    llm_max_length: int | None = ranged(None, at_least=4, null="the base's")  # the LLM budget saved with final/


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
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader) or {}  # a SafeLoader
        except DuplicateKeyError as err:
            raise ValueError(f"{path}:{err}") from err
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
        check_ranges(self, "", where)
        m = self.model
        if m.base is None and not (m.encoder and m.llm):
            raise ValueError(f"{where}: model needs base (a checkpoint or 'default'), or both encoder and llm")
        if m.base is not None and (m.encoder or m.llm or m.config):
            raise ValueError(f"{where}: model.base={m.base!r} continues a checkpoint; encoder, llm and config "
                             f"apply to a fresh assembly only (set base: null)")  # fmt: skip
        if m.base is None:
            _check_assembly_config(m.config, where)
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


def check_ranges(section: Any, prefix: str, where: str) -> None:
    """Check every numeric field of a config section (and of the sections inside it) against its ``Range``.

    Raises:
        ValueError: Naming the dotted key (``optim.warmup_ratio``), the value and the range allowed.
    """
    hints = get_type_hints(type(section))
    for f in dataclasses.fields(section):
        value, key = getattr(section, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            check_ranges(value, f"{key}.", where)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    check_ranges(item, f"{key}[{i}].", where)
        elif "range" in f.metadata and value is not None and not f.metadata["range"].allows(value):
            kind = int if int in (hints[f.name], *get_args(hints[f.name])) else float
            raise ValueError(f"{where}: {key}={value!r} must be {f.metadata['range'].describe(kind)}")


def _check_assembly_config(values: dict[str, Any], where: str) -> None:
    """Build the fresh assembly's ``Causal2VecConfig`` now, so a bad value fails before any model loads."""
    _check_keys(values, Causal2VecConfig, f"{where}: model.config")
    try:
        Causal2VecConfig(**values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: model.config: {err}") from err


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A key that appears twice in one YAML mapping (YAML requires unique keys; PyYAML keeps the last silently)."""

    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(problem=f"{line}: duplicate key {key!r} (first on line {first}); give each key once")

    def __str__(self) -> str:
        return str(self.problem)


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key that repeats within one mapping (merge keys ``<<`` may be overridden)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """Build a mapping after checking that its own keys are unique; lines are 1-based."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise DuplicateKeyError(key, line, seen[key])
                seen[key] = line
            except TypeError:  # an unhashable key: PyYAML's own error names it
                continue
        return super().construct_mapping(node, deep=deep)


def build(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a YAML mapping, recursively, checking keys and value types.

    Raises:
        ValueError: For an unknown key (with the closest valid one) or a value of the wrong type or not allowed.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping of keys for {cls.__name__}, got {type(data).__name__}")
    hints = get_type_hints(cls)
    _check_keys(data, cls, where)
    return cls(**{key: _value(hints[key], value, f"{where}: {key}") for key, value in data.items()})


def _check_keys(data: dict[str, Any], cls: type, where: str) -> None:
    """Refuse a key that is not a field of dataclass ``cls``, naming the closest field.

    Raises:
        ValueError: Naming the key, the closest valid one, and every valid key.
    """
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{where}: unknown key {key!r}{hint} (valid keys: {names})")


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
