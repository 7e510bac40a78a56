"""Bad and unusual input to encode(): empty lists, empty strings, wrong types, over-long texts."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from causal2vec import Causal2Vec, Causal2VecConfig


def test_empty_list_gives_zero_rows(tiny_model):
    for empty in ([], ()):
        out = tiny_model.encode(empty)
        assert out.shape == (0, tiny_model.embedding_dim) and out.dtype == np.float32
    assert tuple(tiny_model.encode([], convert_to_tensor=True).shape) == (0, tiny_model.embedding_dim)


def test_empty_and_whitespace_strings_encode(tiny_model):
    out = tiny_model.encode(["", "   ", "\n\t", "text"])
    assert out.shape == (4, tiny_model.embedding_dim)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # An empty string embeds the bare layout [BOS] [C] [EOS]: the same vector alone or among others.
    np.testing.assert_allclose(tiny_model.encode(""), out[0], atol=1e-5)
    ids = tiny_model.tokenize([""])["llm_input_ids"][0].tolist()
    assert len(ids) == 3, ids
    # Whitespace is kept as the tokenizers read it, so it is a different text from "".
    assert np.abs(out[1] - out[0]).max() > 1e-4


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["ok", None], r"texts\[1\] is NoneType"),
        (["ok", "fine", 3], r"texts\[2\] is int"),
        ([b"bytes"], r"texts\[0\] is bytes .*decode bytes to str first"),
        (b"bytes", r"texts is bytes; decode it to str first"),
        (42, "texts must be a str or a list of str; got int"),
        ({"a": 1}, "texts must be a str or a list of str; got dict"),
    ],
)
def test_non_strings_raise_type_error_naming_index_and_type(tiny_model, texts, message):
    with pytest.raises(TypeError, match=message):
        tiny_model.encode(texts)


def test_bad_batch_size_and_dtype(tiny_model):
    with pytest.raises(ValueError, match="batch_size=0 must be a positive integer"):
        tiny_model.encode(["a"], batch_size=0)
    with pytest.raises(ValueError, match="dtype 'int8' is not supported; choose one of"):
        tiny_model.encode(["a"], dtype="int8")


def test_over_long_texts_are_truncated_with_one_warning_per_call(tiny_model, caplog):
    long_texts = ["word " * 1000, "other " * 500, "short"]
    with caplog.at_level(logging.WARNING, logger="causal2vec"):
        out = tiny_model.encode(long_texts, batch_size=1)
    warnings = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "2 of 3 texts were truncated" in warnings[0].getMessage()
    features = tiny_model.tokenize(long_texts)
    assert features["llm_input_ids"].shape[1] == tiny_model.config.llm_max_length
    assert features["encoder_input_ids"].shape[1] == tiny_model.config.encoder_max_length
    assert np.isfinite(out).all()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="causal2vec"):
        tiny_model.encode(["short", "texts"])
    assert not [r for r in caplog.records if "truncated" in r.getMessage()]


def test_an_llm_budget_below_the_encoders_cuts_by_design_and_only_the_encoders_cut_is_reported(tiny_checkpoint):
    from causal2vec import Causal2Vec

    model = Causal2Vec.from_pretrained(tiny_checkpoint)
    model.set_token_budgets(encoder_max_length=64, llm_max_length=16)
    enc = [len(model.encoder_tokenizer(t)["input_ids"]) for t in ("word " * 30, "word " * 100)]
    assert enc[0] < 64 < enc[1], enc  # the first fits the encoder, the second does not; both exceed the LLM's 16
    features = model.tokenize(["word " * 30, "word " * 100])
    assert features["llm_input_ids"].shape[1] == 16 and features.truncated == 1
    # Equal budgets that the text just fits in the encoder and not in the LLM ([sink] [C] text [EOS]): counted.
    model.set_token_budgets(encoder_max_length=enc[0], llm_max_length=enc[0])
    assert len(model.llm_tokenizer("word " * 30, add_special_tokens=False)["input_ids"]) + 3 > enc[0]
    assert model.tokenize(["word " * 30]).truncated == 1


def test_truncation_keeps_the_text_start_and_the_eos(tiny_model):
    ids = tiny_model.tokenize(["word " * 1000])["llm_input_ids"][0].tolist()
    assert ids[-1] == tiny_model.llm_tokenizer.eos_token_id
    assert ids[2:5] == tiny_model.llm_tokenizer("word word word", add_special_tokens=False)["input_ids"][:3]


def test_instruction_longer_than_the_budget_is_an_error(tiny_model):
    with pytest.raises(ValueError, match=r"the instruction takes .* LLM tokens, more than llm_max_length=128"):
        tiny_model.encode(["x"], instruction="very " * 400)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("encoder_pooling", "max", "encoder_pooling='max' is not allowed; choose one of \\['mean', 'cls'\\]"),
        ("output_pooling", "cls", "output_pooling='cls' is not allowed"),
        ("llm_max_length", 2, "llm_max_length=2 must be an integer >= 4"),
        ("instruction_template", "{text}", "must contain '{instruction}'"),
        ("contextual_share", 1.5, "contextual_share=1.5 must be a number from 0 to 1"),
        ("contextual_share", "0.5", "contextual_share='0.5' must be a number from 0 to 1"),
    ],
)
def test_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        Causal2VecConfig(**{field: value})


def test_similarity_of_embeddings_from_different_models_is_refused(tiny_model):
    a, b = tiny_model.encode(["one", "two"]), np.ones((3, 8), dtype=np.float32)
    with pytest.raises(ValueError, match=r"cannot compare embeddings of shape \(2, 128\) with \(3, 8\)"):
        tiny_model.similarity(a, b)
    np.testing.assert_allclose(tiny_model.similarity(a, a).numpy(), a @ a.T, atol=1e-6)


def test_max_length_caps_both_budgets_for_one_call(tiny_model):
    text = "word " * 300
    capped = tiny_model.tokenize([text], max_length=16)
    assert capped["llm_input_ids"].shape[1] == 16 and capped["encoder_input_ids"].shape[1] == 16
    assert capped.truncated == 1 and tiny_model.config.llm_max_length == 128, "the config must not change"
    m = tiny_model  # the same weights with budgets of 16 in the config: the reference for a per-call cap of 16
    budget16 = Causal2Vec(m.encoder, m.llm, m.projector, m.encoder_tokenizer, m.llm_tokenizer,
                          Causal2VecConfig(encoder_max_length=16, llm_max_length=16))  # fmt: skip
    np.testing.assert_allclose(m.encode([text, "short"], max_length=16), budget16.encode([text, "short"]), atol=1e-6)
    assert np.abs(m.encode(text) - budget16.encode(text)).max() > 1e-3, "the cap made no difference"
    with pytest.raises(ValueError, match="max_length=2 must be an integer >= 4"):
        tiny_model.encode("x", max_length=2)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match=r"device 'cuda' is not available: .*; use 'cpu'"):
        tiny_model.encode("x", device="cuda")
