"""Checkpoints: bit-exact round trip, atomic and non-destructive saves, checksums, clear errors on bad files."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import xxhash

from causal2vec import Causal2Vec, Causal2VecConfig
from causal2vec import checkpoint as checkpoint_module
from causal2vec.config import CONFIG_NAME, FORMAT_VERSION
from causal2vec.projector import Projector


def copy_checkpoint(source: Path, target: Path, *, drop_checksums: bool = False) -> Path:
    """A copy of a checkpoint; ``drop_checksums`` makes it look like one saved before checksums were recorded."""
    shutil.copytree(source, target)
    if drop_checksums:
        config = json.loads((target / CONFIG_NAME).read_text())
        del config["checksums"]
        (target / CONFIG_NAME).write_text(json.dumps(config))
    return target


def overwrite_bytes(path: Path, count: int = 256) -> None:
    """Replace the last ``count`` bytes of a file with random bytes: same size, different content."""
    data = bytearray(path.read_bytes())
    count = min(count, len(data))
    rng = np.random.default_rng(0)
    new = rng.integers(0, 256, count, dtype=np.uint8).tobytes()
    if new == bytes(data[-count:]):
        new = bytes(b ^ 0xFF for b in new)
    data[-count:] = new
    path.write_bytes(bytes(data))


def test_round_trip_is_bit_exact(tiny_model, tiny_checkpoint, texts):
    loaded = Causal2Vec.from_pretrained(tiny_checkpoint)
    original, restored = tiny_model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for key in original:
        assert torch.equal(original[key], restored[key]), f"{key} changed in the round trip"
    assert dataclasses.replace(loaded.config, checksums={}) == tiny_model.config
    np.testing.assert_array_equal(loaded.encode(texts), tiny_model.encode(texts))


def test_checkpoint_layout(tiny_checkpoint):
    names = {p.relative_to(tiny_checkpoint).as_posix() for p in tiny_checkpoint.rglob("*")}
    for required in ("causal2vec_config.json", "encoder/config.json", "encoder/model.safetensors",
                     "llm/config.json", "llm/model.safetensors", "llm/tokenizer.json", "projector.safetensors",
                     "README.md", "modules.json"):  # fmt: skip
        assert required in names, f"{required} missing from {sorted(names)}"
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl"))], "weights must be safetensors only"
    config = json.loads((tiny_checkpoint / "causal2vec_config.json").read_text())
    assert config["format_version"] == FORMAT_VERSION == 2
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


def test_missing_checksummed_file_is_named(tmp_path, tiny_checkpoint):
    target = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    (target / "llm" / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"checkpoint file .*llm/tokenizer\.json is missing"):
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
def test_corrupt_file_of_an_old_checkpoint_is_named(tmp_path, tiny_checkpoint, bad_file, content, message):
    """Without checksums (older checkpoints) the parsers still name a file they cannot read."""
    target = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt", drop_checksums=True)
    (target / bad_file).write_bytes(content)
    with pytest.raises(ValueError, match=message):
        Causal2Vec.from_pretrained(target)


def test_checksums_cover_the_data_files(tiny_checkpoint):
    recorded = json.loads((tiny_checkpoint / CONFIG_NAME).read_text())["checksums"]
    data_files = {
        p.relative_to(tiny_checkpoint).as_posix()
        for p in tiny_checkpoint.rglob("*")
        if p.is_file() and p.name not in (CONFIG_NAME, "README.md", "modules.json", "config_sentence_transformers.json")
    }
    assert set(recorded) == data_files
    expected = {"projector.safetensors", "llm/model.safetensors", "llm/tokenizer.json", "encoder/tokenizer.json"}
    assert expected <= data_files
    for name, value in recorded.items():
        assert value == "xxh3_128:" + xxhash.xxh3_128((tiny_checkpoint / name).read_bytes()).hexdigest(), name


@pytest.mark.parametrize(
    "bad_file",
    ["projector.safetensors", "llm/model.safetensors", "encoder/model.safetensors", "llm/tokenizer.json",
     "encoder/tokenizer.json", "llm/config.json"],
)  # fmt: skip
def test_overwritten_bytes_are_detected_and_named(tmp_path, tiny_checkpoint, bad_file):
    target = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    size = (target / bad_file).stat().st_size
    overwrite_bytes(target / bad_file)
    assert (target / bad_file).stat().st_size == size
    with pytest.raises(ValueError, match=f"checkpoint file .*{bad_file} is corrupt"):
        Causal2Vec.from_pretrained(target)


def test_nan_bytes_in_the_projector_of_an_old_checkpoint_are_refused(tmp_path, tiny_checkpoint):
    """The observed fault: random bytes in the projector's data used to load and give NaN embeddings."""
    target = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt", drop_checksums=True)
    path = target / "projector.safetensors"
    data = bytearray(path.read_bytes())
    data[-64:] = b"\xff" * 64  # 0xFFFFFFFF is a float32 NaN
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"tensor 'projector\.net\.\d\.\w+' \(from projector\.safetensors\)"):
        Causal2Vec.from_pretrained(target)


@pytest.mark.parametrize(
    ("parameter", "value", "source"),
    [("projector.net.0.weight", float("nan"), "projector.safetensors"),
     ("llm.layers.1.mlp.up_proj.weight", float("inf"), "llm/"),
     ("encoder.embeddings.word_embeddings.weight", float("-inf"), "encoder/")],
)  # fmt: skip
def test_non_finite_weights_with_valid_checksums_are_refused(tmp_path, build_tiny, parameter, value, source):
    model = build_tiny("llama")
    with torch.no_grad():
        model.get_parameter(parameter)[0, :3] = value
    model.save_pretrained(tmp_path / "ckpt")  # the checksums are those of the broken weights: they match
    with pytest.raises(ValueError, match=f"non-finite weights: tensor '{parameter}' \\(from {source}\\)"):
        Causal2Vec.from_pretrained(tmp_path / "ckpt")


def test_old_checkpoint_without_checksums_loads_with_a_log_line(tmp_path, tiny_checkpoint, tiny_model, texts, caplog):
    target = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt", drop_checksums=True)
    with caplog.at_level("INFO", logger="causal2vec"):
        loaded = Causal2Vec.from_pretrained(target)
    assert "records no checksums" in caplog.text and "not verified" in caplog.text
    assert loaded.config.checksums == {}
    np.testing.assert_array_equal(loaded.encode(texts), tiny_model.encode(texts))


def test_saving_into_a_folder_that_is_not_a_checkpoint_is_refused(tmp_path, tiny_model, texts):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(
        FileExistsError, match=f"{target} is a folder that is not a Causal2Vec checkpoint.*overwrite=True"
    ):
        tiny_model.save_pretrained(target)
    assert [p.name for p in target.iterdir()] == ["notes.txt"] and (target / "notes.txt").read_text() == "keep me"
    tiny_model.save_pretrained(target, overwrite=True)
    assert not (target / "notes.txt").exists()
    np.testing.assert_array_equal(Causal2Vec.from_pretrained(target).encode(texts), tiny_model.encode(texts))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"], "temporary folders were left behind"


def test_saving_onto_a_file_is_refused(tmp_path, tiny_model, texts):
    target = tmp_path / "model.bin"
    target.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=f"{target} is a file.*overwrite=True"):
        tiny_model.save_pretrained(target)
    assert target.read_bytes() == b"precious"
    tiny_model.save_pretrained(target, overwrite=True)
    assert target.is_dir()
    np.testing.assert_array_equal(Causal2Vec.from_pretrained(target).encode(texts), tiny_model.encode(texts))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"], "the replaced file was left behind"


def test_saving_into_an_empty_folder_works(tmp_path, tiny_model, texts):
    (tmp_path / "empty").mkdir()
    tiny_model.save_pretrained(tmp_path / "empty")
    np.testing.assert_array_equal(
        Causal2Vec.from_pretrained(tmp_path / "empty").encode(texts), tiny_model.encode(texts)
    )


def test_projector_of_the_wrong_size_is_rejected(tmp_path, tiny_checkpoint):
    from safetensors.torch import save_file

    target = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt", drop_checksums=True)
    save_file(Projector(48, 64).state_dict(), target / "projector.safetensors")
    with pytest.raises(ValueError, match="maps 48 -> 64, but the encoder has hidden size 32 and the LLM 64"):
        Causal2Vec.from_pretrained(target)


def test_projector_dims_checked_at_construction(tiny_model):
    with pytest.raises(ValueError, match=r"projector maps 32 -> 80.*must map 32 -> 64"):
        Causal2Vec(tiny_model.encoder, tiny_model.llm, Projector(32, 80), tiny_model.encoder_tokenizer,
                   tiny_model.llm_tokenizer, Causal2VecConfig())  # fmt: skip


def test_old_config_without_new_keys_loads_with_defaults(tmp_path, tiny_checkpoint, caplog):
    target = copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    path = target / CONFIG_NAME
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
    path = target / CONFIG_NAME
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
