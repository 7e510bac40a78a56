"""Checkpoints that carry a LoRA adapter on the LLM."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors import safe_open

from causal2vec import Causal2Vec
from causal2vec.config import CONFIG_NAME

peft = pytest.importorskip("peft", reason="LoRA adapters need peft (the 'train' extra)")


@pytest.fixture(scope="module")
def adapted(build_tiny) -> Causal2Vec:
    model = build_tiny("llama")
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)
    model.llm = peft.get_peft_model(model.llm, lora)
    return model.eval()


def test_adapter_round_trip(tmp_path, adapted, tiny_model, texts):
    adapted.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "llm_adapter" / "adapter_model.safetensors").is_file()
    with safe_open(tmp_path / "ckpt" / "llm" / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert not [k for k in keys if "lora" in k or "base_layer" in k], "the base folder must hold the clean LLM"
    expected = adapted.encode(texts)
    assert np.abs(expected - tiny_model.encode(texts)).max() > 1e-4, "the adapter should change the embeddings"
    np.testing.assert_array_equal(Causal2Vec.from_pretrained(tmp_path / "ckpt").encode(texts), expected)
    # A removed adapter would silently change the embeddings: its recorded files are missed by name.
    shutil.rmtree(tmp_path / "ckpt" / "llm_adapter")
    with pytest.raises(FileNotFoundError, match=r"checkpoint file .*llm_adapter/\S+ is missing"):
        Causal2Vec.from_pretrained(tmp_path / "ckpt")
    # Removed on purpose (its checksums dropped too), the folder is the plain base model again.
    config_path = tmp_path / "ckpt" / CONFIG_NAME
    config = json.loads(config_path.read_text())
    config["checksums"] = {k: v for k, v in config["checksums"].items() if not k.startswith("llm_adapter/")}
    config_path.write_text(json.dumps(config))
    np.testing.assert_array_equal(Causal2Vec.from_pretrained(tmp_path / "ckpt").encode(texts), tiny_model.encode(texts))


def test_adapter_files_are_checksummed(tmp_path, adapted):
    adapted.save_pretrained(tmp_path / "ckpt")
    recorded = json.loads((tmp_path / "ckpt" / CONFIG_NAME).read_text())["checksums"]
    assert {"llm_adapter/adapter_model.safetensors", "llm_adapter/adapter_config.json"} <= set(recorded)
    path = tmp_path / "ckpt" / "llm_adapter" / "adapter_model.safetensors"
    data = bytearray(path.read_bytes())
    data[-8:] = bytes(255 - b for b in data[-8:])  # same size, different bytes
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"checkpoint file .*llm_adapter/adapter_model\.safetensors is corrupt"):
        Causal2Vec.from_pretrained(tmp_path / "ckpt")


def test_corrupt_adapter_of_an_old_checkpoint_is_named(tmp_path, adapted):
    """Without checksums (older checkpoints) peft's loader still names the adapter it cannot read."""
    adapted.save_pretrained(tmp_path / "ckpt")
    config_path = tmp_path / "ckpt" / CONFIG_NAME
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "checksums": {}}))
    (tmp_path / "ckpt" / "llm_adapter" / "adapter_config.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"corrupt LoRA adapter .*llm_adapter"):
        Causal2Vec.from_pretrained(tmp_path / "ckpt")
