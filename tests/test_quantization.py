"""Compact embeddings: ``encode(..., precision=...)`` gives sentence-transformers' ``quantize_embeddings`` of the
same floats, for the torch model, through a sentence-transformers load of the same folder, and in an encode pool."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sentence_transformers import quantize_embeddings

from causal2vec.quantization import OUTPUT_PRECISIONS, packed_dimension, quantization_ranges, quantize
from causal2vec.st_module import load_sentence_transformer


@pytest.fixture(scope="module")
def floats() -> np.ndarray:
    """Stand-in embeddings: 300 vectors of 70 dimensions (not a multiple of 8), one dimension constant."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 70)).astype(np.float32)
    x[:, 5] = 0.25
    return x


@pytest.mark.parametrize("precision", OUTPUT_PRECISIONS)
def test_quantize_equals_sentence_transformers(floats, precision):
    calibration, queries = floats[:200], floats[200:]
    cases = {
        "own ranges": ({}, {}),
        "calibration": ({"calibration_embeddings": calibration}, {"calibration_embeddings": calibration}),
        "ranges": ({"ranges": quantization_ranges(calibration)}, {"ranges": quantization_ranges(calibration)}),
    }
    for name, (ours_kwargs, theirs_kwargs) in cases.items():
        ours = quantize(queries, precision, **ours_kwargs)
        theirs = quantize_embeddings(queries, precision=precision, **theirs_kwargs)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, name
        assert ours.shape[1] == packed_dimension(70, precision), name
        np.testing.assert_array_equal(ours, theirs, err_msg=f"{precision}, {name}")


def test_quantize_refuses_what_it_cannot_do(floats):
    with pytest.raises(ValueError, match="precision='int4' is not supported"):
        quantize(floats, "int4")
    with pytest.raises(ValueError, match="one embedding cannot give"):
        quantize(floats[:1], "int8")
    with pytest.raises(ValueError, match="must be floats"):
        quantize(quantize(floats, "int8"), "int8")
    assert quantize(floats[:0], "uint8").shape == (0, 70) and quantize(floats[:0], "binary").shape == (0, 9)


@pytest.mark.parametrize("precision", OUTPUT_PRECISIONS)
def test_encode_precision_is_quantize_embeddings_of_the_floats(tiny_model, corpus, precision):
    texts = [text[:400] for text in corpus[:12]]
    calibration = tiny_model.encode([text[400:900] for text in corpus])
    floats = tiny_model.encode(texts, batch_size=4)
    got = tiny_model.encode(texts, batch_size=4, precision=precision, calibration_embeddings=calibration)
    expected = quantize_embeddings(floats, precision=precision, calibration_embeddings=calibration)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    query = tiny_model.encode_query(texts[0], precision=precision, ranges=quantization_ranges(calibration))
    assert query.ndim == 1 and query.dtype == expected.dtype
    tensor = tiny_model.encode(texts, batch_size=4, precision=precision, convert_to_tensor=True,
                               calibration_embeddings=calibration)  # fmt: skip
    assert isinstance(tensor, torch.Tensor) and np.array_equal(tensor.numpy(), expected)


def test_sentence_transformers_encode_agrees(tiny_model, tiny_checkpoint, corpus):
    """sentence-transformers quantises its own floats with ``quantize_embeddings`` (int8 ranges from the batch):
    the same numbers as ours, but for values that sit within float noise of a bucket edge."""
    st = load_sentence_transformer(tiny_checkpoint, device="cpu")
    texts = [text[:300] for text in corpus[:16]]
    for precision in ("binary", "ubinary", "int8", "uint8"):
        ours = tiny_model.encode_document(texts, precision=precision)
        theirs = st.encode_document(texts, precision=precision)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        differ = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
        assert differ.max() <= (0 if precision.endswith("binary") else 1), precision
        assert (differ > 0).mean() < 1e-3, precision


def test_encode_options_are_checked(tiny_model):
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['normalise'\]"):
        tiny_model.encode(["a"], normalise=True)
    with pytest.raises(ValueError, match="precision='float16' is not supported"):
        tiny_model.encode(["a"], precision="float16")
    with pytest.raises(ValueError, match="one embedding cannot give"):
        tiny_model.encode("one string", precision="int8")


def test_truncate_dim_gives_h_c_alone_or_the_whole_vector(tiny_model, corpus):
    """``truncate_dim`` takes what the model can honestly give: the whole vector, or its first half (h_C), which
    comes L2-normalised again when the whole one is; another value is refused with the list."""
    texts = [t[:200] for t in corpus[:6]]
    whole = tiny_model.encode(texts)
    half = tiny_model.embedding_dim // 2
    h_c = tiny_model.encode(texts, truncate_dim=half)
    expected = whole[:, :half] / np.linalg.norm(whole[:, :half], axis=1, keepdims=True)
    np.testing.assert_allclose(h_c, expected, atol=1e-6)
    raw = tiny_model.encode(texts, normalize=False)
    np.testing.assert_array_equal(tiny_model.encode(texts, normalize=False, truncate_dim=half), raw[:, :half])
    np.testing.assert_array_equal(tiny_model.encode(texts, truncate_dim=tiny_model.embedding_dim), whole)
    assert np.array_equal(tiny_model.encode(texts, truncate_dim=half, precision="binary"),
                          quantize_embeddings(expected, precision="binary"))  # fmt: skip
    with pytest.raises(ValueError, match=rf"truncate_dim=10 is not a dimension this model gives; choose one of "
                                         rf"\[{tiny_model.embedding_dim}, {half}\]"):  # fmt: skip
        tiny_model.encode(texts, truncate_dim=10)
