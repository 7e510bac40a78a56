"""The model against a slow hand-written forward pass, the causal property, and batch invariance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from causal2vec import Causal2Vec, Causal2VecConfig
from tests.helpers import LLM_ARCHS


def reference_embedding(model: Causal2Vec, text: str, prompt: str = "") -> np.ndarray:
    """One text through encoder → pool → MLP → [BOS/sink, C, tokens, EOS] → LLM → [h_C ; h_EOS], written by hand."""
    cfg = model.config
    etok, ltok = model.encoder_tokenizer, model.llm_tokenizer
    with torch.no_grad():
        # Encoder: [CLS] text [SEP], truncated to the encoder budget.
        enc_text = (prompt + text) if cfg.encoder_sees_instruction else text
        body = etok(enc_text, add_special_tokens=False)["input_ids"][: cfg.encoder_max_length - 2]
        enc_ids = torch.tensor([[etok.cls_token_id, *body, etok.sep_token_id]])
        states = model.encoder(input_ids=enc_ids).last_hidden_state[0]  # (Te, d_enc), no padding at all
        pooled = states[0] if cfg.encoder_pooling == "cls" else states.mean(0)
        net = model.projector.net
        if cfg.projector == "mlp":
            hidden = pooled @ net[0].weight.T + net[0].bias
            hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))  # exact GELU
            c = hidden @ net[2].weight.T + net[2].bias
        else:
            c = pooled @ net[0].weight.T + net[0].bias
        # LLM: a sink first (the tokenizer's BOS, or its bos_token inserted when it adds none), C, the prompt and
        # text tokens, EOS (once). Every tiny tokenizer here has a bos_token.
        adds_bos = ltok("x")["input_ids"][0] == ltok.bos_token_id
        bos = [ltok.bos_token_id] if adds_bos or cfg.sink_token is not None else []
        prompt_ids = ltok(prompt, add_special_tokens=False)["input_ids"] if prompt else []
        budget = cfg.llm_max_length - len(bos) - 2 - len(prompt_ids)
        text_ids = ltok(text, add_special_tokens=False)["input_ids"][:budget]
        table = model.llm.get_input_embeddings().weight
        rows = [table[i] for i in bos]
        c_index = len(rows) if cfg.contextual_position == "after_bos" else 0
        rows.insert(c_index, c)
        # EOS exactly once, also for tokenizers that add it themselves (text_ids were taken without specials).
        rows += [table[i] for i in [*prompt_ids, *text_ids, ltok.eos_token_id]]
        h = model.llm(inputs_embeds=torch.stack(rows)[None]).last_hidden_state[0]  # (T, D), no mask
        if cfg.output_pooling == "eos":
            e = h[-1]
        elif cfg.output_pooling == "mean":
            e = h.mean(0)
        else:
            e = torch.cat([h[c_index], h[-1]])
        if cfg.normalization == "per_half" and cfg.output_pooling == "contextual_eos":
            half = e.shape[0] // 2
            share = cfg.contextual_share
            e = torch.cat([F.normalize(e[:half], dim=0) * math.sqrt(share),
                           F.normalize(e[half:], dim=0) * math.sqrt(1 - share)])  # fmt: skip
        else:
            e = F.normalize(e, dim=0)
    return e.numpy()


def assert_close(actual: np.ndarray, expected: np.ndarray, atol: float, what: str) -> None:
    diff = float(np.abs(actual - expected).max())
    assert diff <= atol, f"{what}: max |difference| = {diff:.3g} > {atol}"


@pytest.mark.parametrize("arch", list(LLM_ARCHS))
def test_encode_matches_reference_for_each_architecture(build_tiny, texts, arch):
    model = build_tiny(arch)
    batch = model.encode(texts, batch_size=4)
    assert batch.shape == (len(texts), model.embedding_dim) == (len(texts), 128)
    for i, text in enumerate(texts):
        assert_close(batch[i], reference_embedding(model, text), 1e-5, f"{arch} text {i}")


@pytest.mark.parametrize(
    "switches",
    [
        {"encoder_pooling": "cls"},
        {"projector": "linear"},
        {"contextual_position": "first"},
        {"output_pooling": "eos"},
        {"output_pooling": "mean"},
        {"normalization": "per_half"},
        {"normalization": "per_half", "contextual_share": 0.8},
        {"encoder_sees_instruction": True},
    ],
    ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()),
)
def test_every_switch_matches_reference(build_tiny, texts, switches):
    model = build_tiny("llama", **switches)
    prompt = model.config.format_instruction("Find the article")
    batch = model.encode(texts, instruction="Find the article", batch_size=3)
    for i, text in enumerate(texts):
        assert_close(batch[i], reference_embedding(model, text, prompt), 1e-5, f"{switches} text {i}")
    expected_dim = 128 if model.config.output_pooling == "contextual_eos" else 64
    assert model.embedding_dim == expected_dim == batch.shape[1]


def test_contextual_share_weighs_the_cosine_of_each_half(build_tiny, texts):
    """Per-half normalisation: cos(a, b) = share·cos(h_C) + (1 - share)·cos(h_EOS), from the raw halves."""
    model = build_tiny("llama", normalization="per_half", contextual_share=0.8)
    raw = model.encode(texts[:2], normalize=False)
    half = raw.shape[1] // 2

    def cosine(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    expected = 0.8 * cosine(raw[0, :half], raw[1, :half]) + 0.2 * cosine(raw[0, half:], raw[1, half:])
    unit = model.encode(texts[:2])
    assert np.linalg.norm(unit, axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)
    assert float(unit[0] @ unit[1]) == pytest.approx(expected, abs=1e-5)


def test_contextual_token_goes_after_bos_or_first(build_tiny):
    after = build_tiny("llama").tokenize(["hello"])["llm_input_ids"][0].tolist()
    first = build_tiny("llama", contextual_position="first").tokenize(["hello"])["llm_input_ids"][0].tolist()
    bos = build_tiny("llama").llm_tokenizer.bos_token_id
    assert after[0] == bos and first[1] == bos and first[0] != bos


@pytest.mark.parametrize("arch", ["qwen2", "gpt2"])
def test_a_sink_token_goes_before_c_when_the_tokenizer_adds_no_bos(build_tiny, arch):
    model = build_tiny(arch)
    tok = model.llm_tokenizer
    assert tok("hello")["input_ids"][0] != tok.bos_token_id, "this tokenizer should add no BOS of its own"
    ids = model.tokenize(["hello"])["llm_input_ids"][0].tolist()
    assert ids[0] == tok.bos_token_id and model.inputs.contextual_index == 1
    assert model.config.sink_token == tok.bos_token, "the resolved sink token is recorded in the config"
    first = build_tiny(arch, contextual_position="first")
    assert first.inputs.contextual_index == 0 and first.tokenize(["hello"])["llm_input_ids"][0, 1] == tok.bos_token_id
    # A tokenizer that adds its own BOS gets nothing more.
    llama = build_tiny("llama")
    assert llama.config.sink_token is None and llama.tokenize(["hello"])["llm_input_ids"][0].tolist().count(
        llama.llm_tokenizer.bos_token_id) == 1  # fmt: skip


def test_a_format_1_checkpoint_keeps_its_layout_without_a_sink(build_tiny, tmp_path):
    import json

    model = build_tiny("qwen2")
    model.save_pretrained(tmp_path / "ckpt")
    path = tmp_path / "ckpt" / "causal2vec_config.json"
    data = json.loads(path.read_text())
    del data["sink_token"]
    data["format_version"] = 1
    config = Causal2VecConfig.from_dict(data)
    assert config.sink_token is None
    old = Causal2Vec(model.encoder, model.llm, model.projector, model.encoder_tokenizer, model.llm_tokenizer, config)
    ids = old.tokenize(["hello"])["llm_input_ids"][0].tolist()
    assert old.inputs.contextual_index == 0 and ids[0] == old.inputs.llm_pad_id  # C's slot comes first, as before
    assert len(ids) == len(model.tokenize(["hello"])["llm_input_ids"][0]) - 1


def test_a_sink_token_that_is_not_in_the_vocabulary_is_refused(build_tiny):
    with pytest.raises(ValueError, match="sink_token='<nope>' is not a token of the LLM tokenizer"):
        build_tiny("gpt2", sink_token="<nope>")


def test_eos_is_appended_exactly_once(build_tiny):
    for arch in ("llama", "gpt2", "llama_eos"):
        model = build_tiny(arch)
        ids = model.tokenize(["hello world"])["llm_input_ids"][0].tolist()
        eos = model.llm_tokenizer.eos_token_id
        assert ids[-1] == eos and ids[-2] != eos, f"{arch}: {ids}"


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_h_c_ignores_llm_text_and_h_eos_does_not(build_tiny, arch):
    """Under the causal mask h_C depends on BOS and C only: change the LLM's text, keep the encoder input."""
    model = build_tiny(arch, normalize=False)
    d = model.embedding_dim // 2
    # encoder_sees_instruction=False: the instruction reaches the LLM only, so the encoder input is identical.
    plain = model.encode(["The bank raised rates."], normalize=False)
    instructed = model.encode(["The bank raised rates."], instruction="Classify the topic", normalize=False)
    # Equal up to float rounding (the sequence lengths differ, so the kernels block the sums differently).
    assert_close(plain[:, :d], instructed[:, :d], 1e-5, "h_C with and without an instruction")
    assert np.abs(plain[:, d:] - instructed[:, d:]).max() > 1e-3
    # Same directly through forward(): one encoder input, two different LLM texts.
    f1, f2 = model.tokenize(["alpha beta gamma"]), model.tokenize(["a completely different and longer text"])
    f2["encoder_input_ids"], f2["encoder_attention_mask"] = f1["encoder_input_ids"], f1["encoder_attention_mask"]
    with torch.no_grad():
        e1, e2 = model(**f1), model(**f2)
    torch.testing.assert_close(e1[:, :d], e2[:, :d], atol=1e-5, rtol=0)
    assert (e1[:, d:] - e2[:, d:]).abs().max() > 1e-3


def test_h_c_depends_on_encoder_input(tiny_model):
    d = tiny_model.embedding_dim // 2
    a, b = tiny_model.encode(["Shares fell sharply.", "The striker scored twice."])
    assert np.abs(a[:d] - b[:d]).max() > 1e-3


@pytest.mark.parametrize("arch", list(LLM_ARCHS))
def test_batch_invariance(build_tiny, texts, arch):
    model = build_tiny(arch)
    together = model.encode(texts, batch_size=len(texts))
    for i, text in enumerate(texts):
        alone = model.encode(text)
        assert alone.shape == (model.embedding_dim,)
        assert_close(together[i], alone, 1e-5, f"{arch}: text {i} alone vs in a padded batch")


def test_order_is_restored_whatever_the_batch_size(tiny_model, texts):
    reference = tiny_model.encode(texts, batch_size=1)
    for batch_size in (2, 5, 64):
        assert_close(tiny_model.encode(texts, batch_size=batch_size), reference, 1e-5, f"batch_size={batch_size}")


def test_output_types_and_normalisation(tiny_model, texts):
    emb = tiny_model.encode(texts)
    assert isinstance(emb, np.ndarray) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    raw = tiny_model.encode(texts, normalize=False, convert_to_tensor=True)
    assert isinstance(raw, torch.Tensor) and raw.dtype == torch.float32
    assert_close(F.normalize(raw, dim=-1).numpy(), emb, 1e-5, "normalize=False then normalising by hand")
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(len(texts)))


def test_query_and_document_instructions(tiny_model):
    text = "interest rates"
    doc, plain = tiny_model.encode_document(text), tiny_model.encode(text)
    np.testing.assert_array_equal(doc, plain)
    query = tiny_model.encode_query(text)
    explicit = tiny_model.encode(text, instruction=tiny_model.config.query_instruction)
    np.testing.assert_array_equal(query, explicit)
    assert np.abs(query - doc).max() > 1e-4
    other = tiny_model.encode_query(text, instruction="Retrieve news about economics")
    assert np.abs(other - query).max() > 1e-4


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_precision_stays_close_to_float32(build_tiny, texts, dtype):
    model = build_tiny("llama")
    fp32 = model.encode(texts)
    low = model.encode(texts, dtype=dtype)
    assert model.dtype == getattr(torch, dtype) and low.dtype == np.float32
    cosine = (fp32 * low).sum(1)
    assert cosine.min() > 0.99, f"{dtype} cosine to float32: {cosine}"


def test_projector_is_scaled_to_the_token_embeddings(tiny_model, texts):
    features = tiny_model.tokenize(texts)
    with torch.no_grad():
        c = tiny_model.contextual_token(features["encoder_input_ids"], features["encoder_attention_mask"])
    table = tiny_model.llm.get_input_embeddings().weight
    ratio = c.norm(dim=-1).mean() / table.norm(dim=-1).mean()
    assert 0.5 < ratio < 2.0, f"|C| / |token embedding| = {ratio:.3f}"


def test_llm_must_be_decoder_only(encoder_dir):
    with pytest.raises(ValueError, match="decoder-only causal LM; got model_type='bert'"):
        Causal2Vec.from_components(str(encoder_dir), str(encoder_dir))


def test_prefetched_tokenisation_yields_the_same_batches_in_order(tiny_model, texts):
    from causal2vec.encoding import _tokenize

    batches = [texts[:2], texts[2:3], texts[3:]]
    plain = list(_tokenize(tiny_model, batches, "Instruct: x\nQuery: ", None, prefetch=False))
    ahead = list(_tokenize(tiny_model, batches, "Instruct: x\nQuery: ", None, prefetch=True))
    assert len(plain) == len(ahead) == 3
    assert [f.truncated for f in plain] == [f.truncated for f in ahead] and sum(f.truncated for f in plain) > 0
    for f1, f2 in zip(plain, ahead, strict=True):
        assert f1.keys() == f2.keys()
        assert all(torch.equal(f1[k], f2[k]) for k in f1)


@pytest.mark.parametrize(
    ("kind", "d_in", "d_out", "kept"), [("mlp", 8, 32, 8), ("mlp", 24, 32, 16), ("linear", 8, 12, 8)]
)
def test_isometric_projector_init_is_an_exact_linear_isometry_of_its_subspace(kind, d_in, d_out, kept):
    from causal2vec.projector import Projector

    projector = Projector(d_in, d_out, kind).double()  # float64 weights: the isometry is exact to float64 rounding
    assert projector.init_isometric(seed=3) == kept
    x = torch.randn(6, d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = projector(x)
        # Linear, though the MLP has a GELU inside: the map of a combination is the combination of the maps.
        torch.testing.assert_close(projector(2 * x[:3] - 0.5 * x[3:]), 2 * y[:3] - 0.5 * y[3:])
    if kept == d_in:  # every direction kept: inner products (so cosines) are preserved exactly
        torch.testing.assert_close(y @ y.T, x @ x.T)
    else:  # an orthogonal projection onto `kept` directions, then an isometry: lengths shrink, never grow
        assert torch.all(y.norm(dim=-1) <= x.norm(dim=-1) + 1e-9)
        basis = torch.linalg.svd(projector.net[0].weight.double()[:kept])[2][:kept]  # the kept directions
        torch.testing.assert_close(y.norm(dim=-1), (x @ basis.T).norm(dim=-1))


def test_replace_projector_puts_a_seeded_calibrated_projector_of_the_kind_and_records_it(tiny_checkpoint, tmp_path):
    from causal2vec.projector import CALIBRATION_TEXTS

    model = Causal2Vec.from_pretrained(tiny_checkpoint)
    rng = torch.random.get_rng_state()
    model.replace_projector("linear", seed=3)
    assert torch.equal(torch.random.get_rng_state(), rng), "the global random state is left as it was"
    assert model.config.projector == "linear" and len(model.projector.net) == 1
    first = model.projector.net[0].weight.clone()
    model.replace_projector("linear", seed=3)
    torch.testing.assert_close(model.projector.net[0].weight, first)  # the seed decides the weights
    # Calibrated like a fresh assembly: mean |C| is the mean norm of the LLM's token embeddings.
    features = model.tokenize(list(CALIBRATION_TEXTS))
    norms = model.llm.get_input_embeddings().weight.norm(dim=-1)
    with torch.no_grad():
        c = model.contextual_token(features["encoder_input_ids"], features["encoder_attention_mask"])
    assert c.norm(dim=-1).mean().item() == pytest.approx(norms[norms > 0].mean().item(), rel=1e-4)
    model.save_pretrained(tmp_path / "linear")
    loaded = Causal2Vec.from_pretrained(tmp_path / "linear")
    assert loaded.config.projector == "linear"
    np.testing.assert_allclose(loaded.encode(["x y z"]), model.encode(["x y z"]), atol=1e-5)
    with pytest.raises(ValueError, match=r"projector='conv' is not allowed; choose one of \['mlp', 'linear'\]"):
        model.replace_projector("conv")
