"""The model card's hub metadata, what it carries across save and load, and the upload to the hub (offline, up to
the upload call)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from huggingface_hub import HfApi, ModelCard

from causal2vec import Causal2Vec, assets


def test_a_saved_checkpoint_has_the_hubs_metadata(tiny_checkpoint):
    data = ModelCard.load(tiny_checkpoint / "README.md").data
    model = Causal2Vec.from_pretrained(tiny_checkpoint)
    assert data.library_name == "causal2vec" and data.pipeline_tag == "sentence-similarity"
    assert data.base_model == [model.config.encoder_name, model.config.llm_name]
    assert {"causal2vec", "sentence-transformers", "sentence-similarity"} <= set(data.tags)
    assert data.license is None and "Licence: not recorded" in (tiny_checkpoint / "README.md").read_text()


def test_licence_and_datasets_survive_save_and_load(tiny_checkpoint, tmp_path):
    model = Causal2Vec.from_pretrained(tiny_checkpoint)
    model.card_data = {"license": "mit", "datasets": ["my/pairs"], "colour": "ignored"}
    model.save_pretrained(tmp_path / "a")
    again = Causal2Vec.from_pretrained(tmp_path / "a")
    assert again.card_data == {"license": "mit", "datasets": ["my/pairs"]}
    again.save_pretrained(tmp_path / "b")
    data = ModelCard.load(tmp_path / "b" / "README.md").data
    assert (data.license, data.datasets) == ("mit", ["my/pairs"])


def test_an_unreadable_card_is_ignored_not_fatal(tiny_checkpoint, tmp_path, caplog):
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    (folder / "README.md").write_text("---\nlicense: [unclosed\n---\nbody\n", encoding="utf-8")
    assert Causal2Vec.from_pretrained(folder).card_data == {}
    assert "cannot be read" in caplog.text


def test_push_to_hub_creates_the_repo_and_uploads_a_loadable_checkpoint(tiny_checkpoint, tmp_path, monkeypatch):
    calls: dict[str, object] = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create"] = (repo_id, kwargs)

    def upload_folder(self, *, repo_id, folder_path, commit_message, revision, repo_type):
        shutil.copytree(folder_path, tmp_path / "uploaded")  # what would go over the wire
        calls["upload"] = (repo_id, commit_message, revision, repo_type)
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    model = Causal2Vec.from_pretrained(tiny_checkpoint)
    url = model.push_to_hub("me/tiny", private=True)
    assert url == "https://huggingface.co/me/tiny/commit/abc"
    assert calls["create"] == ("me/tiny", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert calls["upload"] == ("me/tiny", "Upload Causal2Vec model", None, "model")
    uploaded = Causal2Vec.from_pretrained(tmp_path / "uploaded")
    np.testing.assert_allclose(uploaded.encode(["a text"]), model.encode(["a text"]), atol=1e-6)


@pytest.mark.slow
def test_the_trained_default_says_it_is_for_non_commercial_research():
    card = ModelCard.load(assets.default_checkpoint(Causal2Vec) / "README.md")
    assert card.data.license == "other" and "non-commercial" in card.data.license_name
    assert card.data.base_model == [assets.MINILM_NAME, assets.SMOLLM2_NAME] and card.data.datasets
    assert "Licence: `other` (bbc-news-non-commercial-research-only)" in card.text
    untrained = ModelCard.load(assets.untrained_checkpoint(Causal2Vec) / "README.md")
    assert untrained.data.license == "apache-2.0"
