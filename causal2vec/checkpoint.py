"""Checkpoint folders: atomic saving, validated loading, hub ids and the ``"default"`` name.

A checkpoint folder::

    causal2vec_config.json        the Causal2VecConfig, with format_version
    encoder/                      a Hugging Face model folder (config, model.safetensors, tokenizer)
    llm/                          the LLM's base model (no LM head) and tokenizer, a Hugging Face folder
    llm_adapter/                  optional: a LoRA adapter on the LLM, in peft's format
    projector.safetensors         the projector's weights
    README.md                     model card
    modules.json, config_sentence_transformers.json   so that sentence-transformers can load the folder
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer

from causal2vec.adapters import ADAPTER_DIR, base_state_dict, has_adapter, load_adapter, save_adapter
from causal2vec.config import CONFIG_NAME, Causal2VecConfig
from causal2vec.projector import Projector, check_projector_shapes

if TYPE_CHECKING:
    from causal2vec.model import Causal2Vec

logger = logging.getLogger(__name__)

PROJECTOR_NAME = "projector.safetensors"
ST_MODULE_CLASS = "causal2vec.st_module.Causal2VecModule"
REQUIRED_FILES = (CONFIG_NAME, "encoder/config.json", "llm/config.json", PROJECTOR_NAME)


def write_checkpoint_files(model: Causal2Vec, folder: Path) -> None:
    """Write every checkpoint file into an existing ``folder`` (not atomic; see :func:`save_checkpoint`)."""
    model.config.save(folder / CONFIG_NAME)
    model.encoder.save_pretrained(folder / "encoder")
    model.encoder_tokenizer.save_pretrained(folder / "encoder")
    if has_adapter(model.llm):  # the clean base in llm/, the adapter beside it
        model.llm.get_base_model().save_pretrained(folder / "llm", state_dict=base_state_dict(model.llm))
        save_adapter(model.llm, folder / ADAPTER_DIR)
    else:
        model.llm.save_pretrained(folder / "llm")
    model.llm_tokenizer.save_pretrained(folder / "llm")
    state = {k: v.detach().contiguous().cpu() for k, v in model.projector.state_dict().items()}
    save_file(state, folder / PROJECTOR_NAME, metadata={"kind": model.projector.kind, "format": "pt"})
    (folder / "README.md").write_text(model_card(model), encoding="utf-8")
    modules = [{"idx": 0, "name": "0", "path": "", "type": ST_MODULE_CLASS}]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    st_config = {
        "model_type": "SentenceTransformer",
        "prompts": {"query": model.config.format_instruction(model.config.query_instruction), "document": ""},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    }
    (folder / "config_sentence_transformers.json").write_text(json.dumps(st_config, indent=2) + "\n", encoding="utf-8")


def save_checkpoint(model: Causal2Vec, path: Path) -> None:
    """Save ``model`` to ``path`` atomically: write a sibling temporary folder, then rename it into place.

    An existing checkpoint at ``path`` is moved aside first and restored if the final rename fails, so a crash
    leaves either the old checkpoint or the new one, never a partial folder.
    """
    path = path.absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write_checkpoint_files(model, tmp)
        if path.exists():
            path.rename(old)
        try:
            tmp.rename(path)
        except OSError:
            if old.exists():
                old.rename(path)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    logger.info("saved Causal2Vec checkpoint to %s", path)


def resolve_folder(name_or_path: str, **hub_kwargs: Any) -> Path:
    """A local checkpoint folder for a path or a hub id (downloaded when online).

    Raises:
        FileNotFoundError: If it is neither an existing folder nor a downloadable hub repository.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"{path} is a file; a Causal2Vec checkpoint is a folder")
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(snapshot_download(repo_id=name_or_path, **hub_kwargs))
    except (HFValidationError, OSError) as err:
        raise FileNotFoundError(
            f"{name_or_path!r} is not a checkpoint folder, and downloading it as a hub id failed ({err}). "
            f"Pass a folder written by save_pretrained(), a hub id while online, or 'default'."
        ) from err


def check_checkpoint(folder: Path) -> None:
    """Raise ``FileNotFoundError`` naming the first file a checkpoint folder lacks."""
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise FileNotFoundError(f"not a complete Causal2Vec checkpoint: missing {folder / name}")


def load_checkpoint(cls: type[Causal2Vec], name_or_path: str, dtype: torch.dtype, **hub_kwargs: Any) -> Causal2Vec:
    """Load a checkpoint folder, a hub id, or ``"default"``; see ``Causal2Vec.from_pretrained``."""
    if name_or_path == "default":
        from causal2vec.assets import load_default

        model = load_default(cls, dtype=dtype)
        model.name_or_path = "default"
        return model
    folder = resolve_folder(name_or_path, **hub_kwargs)
    check_checkpoint(folder)
    config = Causal2VecConfig.load(folder / CONFIG_NAME)
    encoder, encoder_tokenizer = _load_part(folder / "encoder", dtype)
    llm, llm_tokenizer = _load_part(folder / "llm", dtype)
    projector = _load_projector(folder / PROJECTOR_NAME, config, encoder.config.hidden_size, llm)
    model = cls(encoder, llm, projector.to(dtype), encoder_tokenizer, llm_tokenizer, config)
    if (folder / ADAPTER_DIR).is_dir():
        model.llm = load_adapter(model.llm, folder / ADAPTER_DIR)
    local = Path(name_or_path).expanduser()
    model.name_or_path = str(local.resolve()) if local.exists() else name_or_path
    return model.eval()


def _load_part(folder: Path, dtype: torch.dtype) -> tuple[Any, Any]:
    try:
        model = AutoModel.from_pretrained(folder, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, SafetensorError, json.JSONDecodeError) as err:
        raise ValueError(f"corrupt checkpoint part {folder}: {err}") from err
    return model, tokenizer


def _load_projector(path: Path, config: Causal2VecConfig, d_enc: int, llm: Any) -> Projector:
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as err:
        raise ValueError(f"corrupt projector file {path}: {err}") from err
    d_llm = llm.get_input_embeddings().embedding_dim
    check_projector_shapes(state, d_enc, d_llm, str(path))
    projector = Projector(d_enc, d_llm, config.projector)
    try:
        projector.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} does not hold a {config.projector!r} projector: {err}") from err
    return projector


def model_card(model: Causal2Vec) -> str:
    """A short README for a checkpoint folder."""
    cfg = model.config
    switches = "\n".join(
        f"| `{k}` | `{v!r}` |" for k, v in cfg.to_dict().items() if k not in ("extra", "notes", "query_instruction")
    )
    return f"""---
library_name: causal2vec
tags: [sentence-transformers, feature-extraction, sentence-similarity, causal2vec]
---
# Causal2Vec embedding model

A decoder-only LLM used as a text embedding model the Causal2Vec way: the encoder compresses the text into one
Contextual token, the projector maps it into the LLM's input space, it is prepended to the LLM's input, and the
embedding is built from the LLM's last hidden states (`{cfg.output_pooling}` pooling, {model.embedding_dim} dimensions).

- Encoder: `{cfg.encoder_name}`
- LLM: `{cfg.llm_name}`
- Default query instruction: "{cfg.query_instruction}"
{f"- Notes: {cfg.notes}" if cfg.notes else ""}

```python
from causal2vec import Causal2Vec
model = Causal2Vec.from_pretrained("path/to/this/folder")
queries = model.encode_query(["how do solar panels work"])
documents = model.encode_document(["Solar panels turn sunlight into electricity."])
print(model.similarity(queries, documents))
```

It also loads in sentence-transformers: `SentenceTransformer("path/to/this/folder", trust_remote_code=True)`.

| switch | value |
|---|---|
{switches}
"""
