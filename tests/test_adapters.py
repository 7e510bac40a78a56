"""Checkpoints that carry a LoRA adapter on the LLM."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from safetensors import safe_open

from causal2vec import Causal2Vec

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
    # Without its adapter the folder is the plain base model again.
    shutil.rmtree(tmp_path / "ckpt" / "llm_adapter")
    np.testing.assert_array_equal(Causal2Vec.from_pretrained(tmp_path / "ckpt").encode(texts), tiny_model.encode(texts))


def test_corrupt_adapter_is_named(tmp_path, adapted):
    adapted.save_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "llm_adapter" / "adapter_config.json").write_text("{broken")
    with pytest.raises(ValueError, match=r"corrupt LoRA adapter .*llm_adapter"):
        Causal2Vec.from_pretrained(tmp_path / "ckpt")
