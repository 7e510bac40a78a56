"""Checkpoints: bit-exact round trip, atomic saves, clear errors on missing or corrupt files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from causal2vec import Causal2Vec, Causal2VecConfig
from causal2vec import checkpoint as checkpoint_module
from causal2vec.projector import Projector


def test_round_trip_is_bit_exact(tiny_model, tiny_checkpoint, texts):
    loaded = Causal2Vec.from_pretrained(tiny_checkpoint)
    original, restored = tiny_model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for key in original:
        assert torch.equal(original[key], restored[key]), f"{key} changed in the round trip"
    assert loaded.config == tiny_model.config
    np.testing.assert_array_equal(loaded.encode(texts), tiny_model.encode(texts))


def test_checkpoint_layout(tiny_checkpoint):
    names = {p.relative_to(tiny_checkpoint).as_posix() for p in tiny_checkpoint.rglob("*")}
    for required in ("causal2vec_config.json", "encoder/config.json", "encoder/model.safetensors",
                     "llm/config.json", "llm/model.safetensors", "llm/tokenizer.json", "projector.safetensors",
                     "README.md", "modules.json"):  # fmt: skip
        assert required in names, f"{required} missing from {sorted(names)}"
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl"))], "weights must be safetensors only"
    config = json.loads((tiny_checkpoint / "causal2vec_config.json").read_text())
    assert config["format_version"] == 1
    assert json.loads((tiny_checkpoint / "llm" / "config.json").read_text())["architectures"] == ["LlamaModel"]
    assert "Causal2Vec" in (tiny_checkpoint / "README.md").read_text()


def test_saving_over_an_existing_checkpoint_replaces_it(tmp_path, build_tiny, tiny_checkpoint, texts):
    target = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, target)
    other = build_tiny("gpt2")
    other.save_pretrained(target)
    np.testing.assert_array_equal(Causal2Vec.from_pretrained(target).encode(texts), other.encode(texts))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"], "temporary folders were left behind"


def test_a_crash_while_saving_leaves_the_old_checkpoint(tmp_path, tiny_model, tiny_checkpoint, monkeypatch, texts):
    target = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, target)
    before = Causal2Vec.from_pretrained(target).encode(texts)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module, "save_file", crash)  # dies after encoder/ and llm/ are written
    with pytest.raises(OSError, match="disk full"):
        tiny_model.save_pretrained(target)
    with pytest.raises(OSError, match="disk full"):
        tiny_model.save_pretrained(tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"], "a partial checkpoint was left behind"
    np.testing.assert_array_equal(Causal2Vec.from_pretrained(target).encode(texts), before)


@pytest.mark.parametrize(
    "missing", ["causal2vec_config.json", "projector.safetensors", "encoder/config.json", "llm/config.json"]
)
def test_missing_file_is_named(tmp_path, tiny_checkpoint, missing):
    target = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, target)
    (target / missing).unlink()
    with pytest.raises(FileNotFoundError, match=f"missing .*{missing}"):
        Causal2Vec.from_pretrained(target)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        Causal2Vec.from_pretrained(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("bad_file", "content", "message"),
    [
        ("causal2vec_config.json", b"{not json", "corrupt Causal2Vec config file .*causal2vec_config.json"),
        ("causal2vec_config.json", b'{"encoder_pooling": "max"}', "encoder_pooling='max' is not allowed"),
        ("causal2vec_config.json", b'{"colour": "red"}', "unknown keys \\['colour'\\]"),
        ("projector.safetensors", b"\x00\x01garbage", "corrupt projector file .*projector.safetensors"),
        ("llm/model.safetensors", b"\x00\x01garbage", "corrupt checkpoint part .*llm"),
        ("encoder/config.json", b"{not json", "corrupt checkpoint part .*encoder"),
    ],
)
def test_corrupt_file_is_named(tmp_path, tiny_checkpoint, bad_file, content, message):
    target = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, target)
    (target / bad_file).write_bytes(content)
    with pytest.raises(ValueError, match=message):
        Causal2Vec.from_pretrained(target)


def test_projector_of_the_wrong_size_is_rejected(tmp_path, tiny_checkpoint):
    from safetensors.torch import save_file

    target = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, target)
    save_file(Projector(48, 64).state_dict(), target / "projector.safetensors")
    with pytest.raises(ValueError, match="maps 48 -> 64, but the encoder has hidden size 32 and the LLM 64"):
        Causal2Vec.from_pretrained(target)


def test_projector_dims_checked_at_construction(tiny_model):
    with pytest.raises(ValueError, match=r"projector maps 32 -> 80.*must map 32 -> 64"):
        Causal2Vec(tiny_model.encoder, tiny_model.llm, Projector(32, 80), tiny_model.encoder_tokenizer,
                   tiny_model.llm_tokenizer, Causal2VecConfig())  # fmt: skip


def test_old_config_without_new_keys_loads_with_defaults(tmp_path, tiny_checkpoint, caplog):
    target = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, target)
    path = target / "causal2vec_config.json"
    config = json.loads(path.read_text())
    del config["normalization"], config["notes"]
    path.write_text(json.dumps(config))
    with caplog.at_level("INFO", logger="causal2vec"):
        loaded = Causal2Vec.from_pretrained(target)
    assert loaded.config.normalization == "whole"
    assert "missing, using their defaults" in caplog.text


def test_newer_format_is_refused(tmp_path, tiny_checkpoint):
    target = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, target)
    path = target / "causal2vec_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "format_version": 99}))
    with pytest.raises(ValueError, match="format_version=99 is newer"):
        Causal2Vec.from_pretrained(target)


def test_a_file_is_not_a_checkpoint(tmp_path):
    path = Path(tmp_path / "file.txt")
    path.write_text("hello")
    with pytest.raises(NotADirectoryError, match="is a file"):
        Causal2Vec.from_pretrained(path)


def test_load_in_bfloat16(tiny_checkpoint, tiny_model, texts):
    loaded = Causal2Vec.from_pretrained(tiny_checkpoint, dtype="bfloat16")
    assert loaded.dtype == torch.bfloat16 and loaded.llm.dtype == torch.bfloat16
    cosine = (loaded.encode(texts) * tiny_model.encode(texts)).sum(1)
    assert cosine.min() > 0.99
