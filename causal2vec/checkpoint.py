"""Checkpoint folders: atomic, non-destructive saving; checksummed, validated loading; hub ids.

A checkpoint folder::

    causal2vec_config.json        the Causal2VecConfig, with format_version and the checksums of the data files
    encoder/                      a Hugging Face model folder (config, model.safetensors, tokenizer)
    llm/                          the LLM's base model (no LM head) and tokenizer, a Hugging Face folder
    llm_adapter/                  optional: a LoRA adapter on the LLM, in peft's format
    projector.safetensors         the projector's weights
    README.md                     model card
    modules.json, config_sentence_transformers.json   so that sentence-transformers can load the folder

The data files (everything under ``encoder/``, ``llm/`` and ``llm_adapter/``, and the projector) are
checksummed. The config, the model card and the two sentence-transformers files are not: they are metadata,
and ``SentenceTransformer.save`` rewrites the latter after the module has written its files.

The embedded ``"default"`` is built as a checkpoint folder in the cache by :mod:`causal2vec.assets`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer

from causal2vec.adapters import (
    ADAPTER_DIR,
    ENCODER_ADAPTER_DIR,
    base_state_dict,
    has_adapter,
    load_adapter,
    save_adapter,
)
from causal2vec.card import read_card_data, write_card
from causal2vec.config import CONFIG_NAME, Causal2VecConfig
from causal2vec.files import (
    entry_names,
    file_checksum,
    member_path,
    remove_stale_siblings,
    replace_dir,
    verify_checksum,
)
from causal2vec.projector import Projector, check_projector_shapes

if TYPE_CHECKING:
    from causal2vec.model import Causal2Vec

logger = logging.getLogger(__name__)

PROJECTOR_NAME = "projector.safetensors"
PART_DIRS = ("encoder", "llm", ADAPTER_DIR, ENCODER_ADAPTER_DIR)  # Hugging Face / peft folders inside a checkpoint
ST_MODULE_CLASS = "causal2vec.st_module.Causal2VecModule"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")  # torch.save / pickle weight files
REQUIRED_FILES = (CONFIG_NAME, "encoder/config.json", "llm/config.json", PROJECTOR_NAME)


def write_checkpoint_files(model: Causal2Vec, folder: Path) -> None:
    """Write every checkpoint file into an existing ``folder`` (not atomic; see :func:`save_checkpoint`).

    The config goes last, carrying the checksums of the data files written before it.
    """
    _write_parts(model, folder)
    write_card(model, model_card(model), folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": ST_MODULE_CLASS}]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    st_config = {
        "model_type": "SentenceTransformer",
        "prompts": {"query": model.config.format_instruction(model.config.query_instruction), "document": ""},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    }
    (folder / "config_sentence_transformers.json").write_text(json.dumps(st_config, indent=2) + "\n", encoding="utf-8")
    dataclasses.replace(model.config, checksums=data_checksums(folder)).save(folder / CONFIG_NAME)


def _write_parts(model: Causal2Vec, folder: Path) -> None:
    """Write the encoder, the LLM (and its adapter) with their tokenizers, and the projector."""
    _write_part(model.encoder, folder / "encoder", folder / ENCODER_ADAPTER_DIR)
    model.encoder_tokenizer.save_pretrained(folder / "encoder")
    _write_part(model.llm, folder / "llm", folder / ADAPTER_DIR)
    model.llm_tokenizer.save_pretrained(folder / "llm")
    state = {k: v.detach().contiguous().cpu() for k, v in model.projector.state_dict().items()}
    save_file(state, folder / PROJECTOR_NAME, metadata={"kind": model.projector.kind, "format": "pt"})


def _write_part(part: Any, folder: Path, adapter_folder: Path) -> None:
    """A Hugging Face model; with a LoRA adapter, the clean base in ``folder`` and the adapter beside it."""
    if has_adapter(part):
        part.get_base_model().save_pretrained(folder, state_dict=base_state_dict(part))
        save_adapter(part, adapter_folder)
    else:
        part.save_pretrained(folder)


def data_checksums(folder: Path) -> dict[str, str]:
    """The checksum of each data file of a checkpoint folder, keyed by its relative POSIX path."""
    files = [folder / PROJECTOR_NAME, *(p for part in PART_DIRS for p in (folder / part).rglob("*") if p.is_file())]
    return {p.relative_to(folder).as_posix(): file_checksum(p) for p in sorted(files) if p.is_file()}


def check_save_target(path: Path, overwrite: bool) -> None:
    """Refuse to save over anything but a checkpoint or an empty folder, unless ``overwrite`` is set.

    Raises:
        FileExistsError: If ``path`` is a file, or a folder with files that is not a Causal2Vec checkpoint;
            the message names it and how to proceed.
    """
    if overwrite or not (path.exists() or path.is_symlink()):
        return
    if path.is_dir():
        if (path / CONFIG_NAME).is_file() or not any(path.iterdir()):
            return
        raise FileExistsError(
            f"{path} is a folder that is not a Causal2Vec checkpoint (it has no {CONFIG_NAME}); saving would "
            f"delete its files. Save to a new or empty folder, or pass overwrite=True to replace it"
        )
    raise FileExistsError(
        f"{path} is a file; a checkpoint is a folder and saving would replace the file. Save to a new or empty "
        f"folder, or pass overwrite=True to replace it"
    )


def save_checkpoint(model: Causal2Vec, path: Path, *, overwrite: bool = False) -> None:
    """Save ``model`` to ``path`` atomically: built in a hidden sibling folder, then renamed into place.

    An existing checkpoint at ``path`` is moved aside first and restored if the final rename fails, so a crash
    leaves either the old checkpoint or the new one, never a partial folder. Anything else at ``path`` is
    refused unless ``overwrite`` is set (see :func:`check_save_target`).
    """
    path = Path(path).absolute()
    check_save_target(path, overwrite)
    remove_stale_siblings(path)
    with replace_dir(path) as tmp:
        write_checkpoint_files(model, tmp)
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
    """Raise ``FileNotFoundError`` naming the first file a checkpoint folder lacks.

    An ONNX export without torch weights is named as such, with the class that loads it.
    """
    from causal2vec.backends.onnx import MANIFEST_FILE

    for name in REQUIRED_FILES:
        if not member_path(folder, name, "checkpoint file").is_file():
            if (folder / MANIFEST_FILE).is_file():
                raise FileNotFoundError(
                    f"{folder} is an ONNX export without torch weights (it has no {name}); load it with "
                    f"causal2vec.OnnxCausal2Vec.from_pretrained({str(folder)!r}), or export with --keep-torch"
                )
            raise FileNotFoundError(f"not a complete Causal2Vec checkpoint: missing {folder / name}")


def load_checkpoint(cls: type[Causal2Vec], folder: Path, dtype: torch.dtype) -> Causal2Vec:
    """Load a local checkpoint folder; see ``Causal2Vec.from_pretrained``.

    Every file named in the config's checksums is verified before anything is parsed, and the loaded weights
    must be finite.

    Raises:
        FileNotFoundError: If a required or checksummed file is missing, naming it.
        ValueError: If a file is corrupt or the weights hold NaN or infinity, naming the file or tensor.
    """
    check_checkpoint(folder)
    config = Causal2VecConfig.load(folder / CONFIG_NAME)
    verify_files(folder, config)
    for part in PART_DIRS:
        check_safetensors(folder / part)
    encoder, encoder_tokenizer = _load_part(folder / "encoder", dtype)
    llm, llm_tokenizer = _load_part(folder / "llm", dtype)
    projector = _load_projector(folder / PROJECTOR_NAME, config, encoder.config.hidden_size, llm)
    model = cls(encoder, llm, projector.to(dtype), encoder_tokenizer, llm_tokenizer, config)
    model.card_data = read_card_data(folder)
    if (folder / ADAPTER_DIR).is_dir():
        model.llm = load_adapter(model.llm, folder / ADAPTER_DIR)
    if (folder / ENCODER_ADAPTER_DIR).is_dir():
        model.encoder = load_adapter(model.encoder, folder / ENCODER_ADAPTER_DIR)
    check_finite(model, folder)
    return model.eval()


def verify_files(folder: Path, config: Causal2VecConfig) -> None:
    """Compare each data file with the checksum the config records (none recorded: logged, not checked).

    Raises:
        FileNotFoundError: If a recorded file is missing, naming it.
        ValueError: If a file's content differs from what was saved, naming it.
    """
    for name in sorted({*config.checksums, *_data_names(folder)}):  # all of them, before any is opened
        member_path(folder, name, "checkpoint file")
    if not config.checksums:
        logger.info("%s records no checksums (saved by an older causal2vec); its files are not verified", folder)
        return
    for name, expected in sorted(config.checksums.items()):
        verify_checksum(folder / name, expected, "checkpoint file")


def _data_names(folder: Path) -> list[str]:
    """The relative names of what the loaders will open: the projector and every entry under the part folders."""
    return [PROJECTOR_NAME, *(name for part in PART_DIRS for name in entry_names(folder / part, folder))]


def check_finite(model: Causal2Vec, folder: Path) -> None:
    """Refuse weights holding NaN or infinity, naming the tensor and the part of the checkpoint it came from.

    A sum is one fast pass that stays finite for finite weights (unless it overflows); only a non-finite sum
    triggers the exact element-wise check.
    """
    for name, tensor in model.named_parameters():
        if not torch.isfinite(tensor.sum()) and not torch.isfinite(tensor).all():
            raise ValueError(
                f"checkpoint {folder} holds non-finite weights: tensor {name!r} (from {_part_of(name)}) contains "
                f"NaN or infinity, so every embedding would be NaN; load a checkpoint saved before training diverged"
            )


def _part_of(parameter: str) -> str:
    """The checkpoint file or folder a parameter of a loaded model was read from."""
    if "lora_" in parameter:
        return f"{ENCODER_ADAPTER_DIR if parameter.startswith('encoder') else ADAPTER_DIR}/"
    return {"encoder": "encoder/", "llm": "llm/", "projector": PROJECTOR_NAME}.get(parameter.split(".")[0], "?")


def check_safetensors(folder: Path) -> None:
    """Refuse a model or adapter folder whose weights are pickles (``pytorch_model.bin``, ``adapter_model.bin`` …).

    Loading a pickle can run code, so only safetensors are read, whatever a checkpoint carries.

    Raises:
        ValueError: Naming the pickle files and what to do instead.
    """
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ValueError(
            f"{folder} holds its weights as pickles ({', '.join(pickles)}), which can run code when loaded; "
            f"causal2vec reads safetensors only. Re-save the weights with safe_serialization=True"
        )


def _load_part(folder: Path, dtype: torch.dtype) -> tuple[Any, Any]:
    try:
        model = AutoModel.from_pretrained(folder, dtype=dtype, use_safetensors=True)
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
    """The body of a checkpoint folder's card (:func:`causal2vec.card.write_card` puts the hub's metadata above)."""
    cfg = model.config
    switches = "\n".join(
        f"| `{k}` | `{v!r}` |"
        for k, v in cfg.to_dict().items()
        if k not in ("extra", "notes", "query_instruction", "checksums")
    )
    licence = model.card_data.get("license")
    named = f" ({model.card_data['license_name']})" if model.card_data.get("license_name") else ""
    return f"""# Causal2Vec embedding model

A decoder-only LLM used as a text embedding model the Causal2Vec way: the encoder compresses the text into one
Contextual token, the projector maps it into the LLM's input space, it is prepended to the LLM's input, and the
embedding is built from the LLM's last hidden states (`{cfg.output_pooling}` pooling, {model.embedding_dim} dimensions).

- Encoder: `{cfg.encoder_name}`
- LLM: `{cfg.llm_name}`
- Default query instruction: "{cfg.query_instruction}"
{f"- Licence: `{licence}`{named}" if licence else "- Licence: not recorded; see the encoder's and the LLM's"}
{f"- Notes: {cfg.notes}" if cfg.notes else ""}

```python
from causal2vec import Causal2Vec
model = Causal2Vec.from_pretrained("path/to/this/folder")
queries = model.encode_query(["how do solar panels work"])
documents = model.encode_document(["Solar panels turn sunlight into electricity."])
print(model.similarity(queries, documents))
```

It also loads in sentence-transformers, with no code from this folder run:
`from causal2vec.st_module import load_sentence_transformer; st = load_sentence_transformer("path/to/this/folder")`.

| switch | value |
|---|---|
{switches}
"""
