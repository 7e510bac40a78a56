"""The real embedded default (all-MiniLM-L6-v2 + SmolLM2-135M-Instruct), offline."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from causal2vec import Causal2Vec, assets

SENTENCES = [
    "The central bank raised interest rates to curb inflation.",
    "Manchester United won the match with a late goal.",
    "The new smartphone has a faster processor and a better camera.",
    "Parliament passed the education bill after a long debate.",
    "",
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_model() -> Causal2Vec:
    return Causal2Vec.from_pretrained("default")


def test_default_encodes_real_sentences(default_model):
    emb = default_model.encode(SENTENCES)
    assert emb.shape == (len(SENTENCES), 1152)
    assert np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert default_model.config.encoder_name == "sentence-transformers/all-MiniLM-L6-v2"
    assert default_model.config.llm_name == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert default_model.llm.config.num_hidden_layers == 30 and default_model.encoder.config.hidden_size == 384


def test_two_loads_give_identical_embeddings(default_model):
    again = Causal2Vec.from_pretrained("default")
    np.testing.assert_array_equal(again.encode(SENTENCES), default_model.encode(SENTENCES))


def test_default_layout_matches_smollm2(default_model):
    # SmolLM2's tokenizer adds no BOS and no EOS: the layout is [C] text <|im_end|>.
    ids = default_model.tokenize(["hello world"])["llm_input_ids"][0].tolist()
    eos = default_model.llm_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert default_model.inputs.contextual_index == 0 and ids[-1] == eos and ids.count(eos) == 2  # C slot + EOS


def test_default_batch_invariance(default_model):
    together = default_model.encode(SENTENCES, batch_size=len(SENTENCES))
    alone = np.stack([default_model.encode(s) for s in SENTENCES])
    assert np.abs(together - alone).max() < 1e-5


def test_dequantised_llm_is_cached(default_model, monkeypatch):
    """The GGUF is dequantised once; later loads read the cached safetensors folder."""
    path = assets.smollm2_path()
    assert (path / "model.safetensors").is_file() and (path / "causal2vec_source.json").is_file()

    def no_dequantise(*args, **kwargs):
        raise AssertionError("dequantised again although the cache is valid")

    monkeypatch.setattr(assets, "_dequantise", no_dequantise)
    assert assets.smollm2_path() == path


def test_dequantised_llm_matches_the_gguf(default_model):
    """The cached folder holds exactly what transformers dequantises from the GGUF."""
    import torch
    from transformers import AutoModelForCausalLM

    gguf = assets.smollm2_gguf_path()
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).model
    ours = default_model.llm.state_dict()
    for key, value in reference.state_dict().items():
        assert torch.equal(ours[key], value), key


def test_bbc_corpus_is_read_offline():
    articles = assets.bbc_news_articles()
    assert len(articles) == 2225
    assert {a.topic for a in articles} == {"business", "entertainment", "politics", "sports", "tech"}
    assert all(a.title and a.body for a in articles)


def test_library_import_does_not_pull_optional_stacks():
    code = (
        "import sys, causal2vec, causal2vec.cli, causal2vec.checkpoint, causal2vec.assets, causal2vec.bbc\n"
        "import causal2vec.onnx_backend\n"
        "heavy = {'faiss', 'onnxruntime', 'onnx', 'onnxscript', 'peft', 'mteb', 'datasets', 'sentence_transformers',\n"
        "         'training', 'eval', 'export'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
