"""A checkpoint's model card (``README.md`` with the hub's metadata) and its upload to the Hugging Face Hub.

The card's metadata is :class:`huggingface_hub.ModelCardData`: ``license``, ``base_model`` (the encoder and the
LLM), ``pipeline_tag``, ``library_name``, ``tags`` and ``datasets``. What a config cannot know (the licence a
model's training data imposes, the datasets it was trained on) is the model's ``card_data``, read back from the
card when a checkpoint loads, so a model saved again keeps it.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huggingface_hub import HfApi, ModelCard, ModelCardData

if TYPE_CHECKING:
    from causal2vec.model import Causal2Vec

logger = logging.getLogger(__name__)

CARD_NAME = "README.md"
TAGS = ["causal2vec", "sentence-transformers", "feature-extraction", "sentence-similarity", "text-embeddings"]
CARRIED = ("license", "license_name", "license_link", "datasets")  # what the card keeps that a config cannot know


def card_metadata(model: Causal2Vec) -> ModelCardData:
    """The hub metadata of ``model``: its components as ``base_model``, and its ``card_data`` (licence, datasets)."""
    config = model.config
    carried = {k: v for k, v in model.card_data.items() if k in CARRIED and v}
    return ModelCardData(
        base_model=[name for name in (config.encoder_name, config.llm_name) if name],
        pipeline_tag="sentence-similarity",
        library_name="causal2vec",
        tags=list(TAGS),
        **carried,
    )


def write_card(model: Causal2Vec, body: str, folder: Path) -> None:
    """Write ``folder/README.md``: the metadata block, then ``body``."""
    card = ModelCard(f"---\n{card_metadata(model).to_yaml()}\n---\n{body}")
    (folder / CARD_NAME).write_text(str(card), encoding="utf-8")


def read_card_data(folder: Path) -> dict[str, Any]:
    """What a checkpoint's card carries that its config does not (licence, datasets); empty without a card.

    A card whose metadata cannot be read is logged and ignored: the card describes the weights, it is not one.
    """
    path = folder / CARD_NAME
    if not path.is_file():
        return {}
    try:
        data = ModelCard.load(path).data.to_dict()
    except Exception as err:  # huggingface_hub raises several kinds for a malformed card
        logger.warning("the model card %s has metadata that cannot be read (%s); it is ignored", path, err)
        return {}
    return {k: data[k] for k in CARRIED if data.get(k)}


def push_to_hub(
    model: Causal2Vec, repo_id: str, *, private: bool | None = None, token: str | None = None,
    commit_message: str = "Upload Causal2Vec model", revision: str | None = None,
) -> str:  # fmt: skip
    """Save ``model`` as a checkpoint and upload the folder to the hub repository ``repo_id`` (created if needed).

    Returns:
        The URL of the commit.
    """
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    with tempfile.TemporaryDirectory(prefix="causal2vec-upload-") as tmp:
        folder = Path(tmp) / "model"
        model.save_pretrained(folder)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=folder, commit_message=commit_message, revision=revision, repo_type="model"
        )
    logger.info("uploaded %s to %s", model.name_or_path or "the model", repo_id)
    return str(commit.commit_url)
