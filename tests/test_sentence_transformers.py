"""A checkpoint folder loads in sentence-transformers and gives the embeddings of encode()."""

from __future__ import annotations

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from causal2vec import Causal2Vec
from causal2vec.st_module import Causal2VecModule, load_sentence_transformer


@pytest.fixture(scope="module")
def st_model(tiny_checkpoint) -> SentenceTransformer:
    return load_sentence_transformer(tiny_checkpoint, device="cpu")


def test_documents_match_encode(st_model, tiny_model, texts):
    ours = tiny_model.encode_document(texts, batch_size=4)
    theirs = st_model.encode_document(texts, batch_size=4)
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=0)


def test_queries_match_encode_query(st_model, tiny_model, texts):
    ours = tiny_model.encode_query(texts)
    theirs = st_model.encode_query(texts)
    np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=0)
    assert np.abs(theirs - st_model.encode_document(texts)).max() > 1e-4, "the query prompt was not applied"


def test_dimension_and_similarity(st_model, tiny_model):
    # [h_C ; h_EOS] of the tiny LLM (hidden size 64, read from its saved config): 128 dimensions.
    assert st_model.get_embedding_dimension() == 2 * tiny_model.llm.config.hidden_size == 128
    sentences = ["a cat sat on the mat", "a dog", "Shares fell sharply in early trading."]
    ours = tiny_model.encode(sentences, normalize=False).astype(np.float64)
    expected = (ours @ ours.T) / np.outer(np.linalg.norm(ours, axis=1), np.linalg.norm(ours, axis=1))
    emb = st_model.encode(sentences)
    assert emb.shape == (3, 128)
    np.testing.assert_allclose(st_model.similarity(emb, emb).numpy(), expected, atol=1e-5, rtol=0)
    assert np.abs(expected - np.eye(3)).max() > 1e-3, "distinct sentences should not all be orthogonal or equal"


def test_refused_without_trust_remote_code(tiny_checkpoint):
    with pytest.raises(ValueError, match="trust_remote_code"):
        SentenceTransformer(str(tiny_checkpoint), device="cpu")


def test_trust_remote_code_gives_the_same_model(st_model, tiny_checkpoint, texts):
    trusted = SentenceTransformer(str(tiny_checkpoint), trust_remote_code=True, device="cpu")
    np.testing.assert_array_equal(trusted.encode(texts), st_model.encode(texts))


def test_a_folders_own_code_does_not_run(tmp_path, tiny_checkpoint):
    """A downloaded folder whose modules.json names a module of its own: refused, and its code never runs."""
    import json
    import shutil

    folder = shutil.copytree(tiny_checkpoint, tmp_path / "evil")
    marker = tmp_path / "ran"
    (folder / "evilmod.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nclass Evil: pass\n")
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 1, "name": "1", "path": "", "type": "evilmod.Evil"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match=r"(?s)evilmod\.Evil.*trust_remote_code=True"):
        load_sentence_transformer(folder, device="cpu")
    assert not marker.exists(), "the folder's code ran"


def test_sentence_transformers_save_round_trip(tmp_path, st_model, tiny_model, texts):
    st_model.save(str(tmp_path / "st"))
    reloaded = Causal2Vec.from_pretrained(tmp_path / "st")
    np.testing.assert_array_equal(reloaded.encode(texts), tiny_model.encode(texts))


def test_module_built_in_python(tiny_model, texts):
    st = SentenceTransformer(modules=[Causal2VecModule(tiny_model)], device="cpu")
    np.testing.assert_allclose(st.encode(texts), tiny_model.encode(texts), atol=1e-5, rtol=0)


def test_max_seq_length_is_what_the_model_reads_and_caps_it_when_set(tiny_checkpoint, texts):
    from causal2vec.st_module import load_sentence_transformer

    st = load_sentence_transformer(str(tiny_checkpoint))
    config = st[0].model.config
    assert st.max_seq_length == max(config.encoder_max_length, config.llm_max_length)
    st.max_seq_length = 16
    config = st[0].model.config  # the model's config after the change
    assert (config.encoder_max_length, config.llm_max_length) == (16, 16) and st.max_seq_length == 16
    capped = Causal2Vec.from_pretrained(tiny_checkpoint)
    capped.set_token_budgets(encoder_max_length=16, llm_max_length=16)
    np.testing.assert_allclose(st.encode(texts), capped.encode(texts), atol=1e-5)
    assert st.similarity_fn_name == capped.similarity_fn_name == "cosine"
