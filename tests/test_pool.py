"""Encoding on several devices from one process: ``encode(device=[...])`` and :class:`EncodePool`, run here with
CPU workers, equal ``encode()`` in the input order; worker errors and deaths reach the caller."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

from causal2vec.pool import EncodePool
from causal2vec.quantization import quantize


@pytest.fixture(scope="module")
def pool(tiny_model):
    """Two CPU workers, started once for the module (each start pays for two Python processes)."""
    with EncodePool(tiny_model, ["cpu", "cpu"]) as started:
        yield started


@pytest.fixture(scope="module")
def many_texts(corpus, texts) -> list[str]:
    """Texts of many lengths, so several chunks go to each worker, in an order unlike the length order."""
    return [*texts, *(text[: 37 * i % 900] for i, text in enumerate(corpus * 2))]


@pytest.fixture
def worker_threads():
    """The parent running with as many threads as each of two CPU workers: float sums then add up alike."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // 2))
    yield
    torch.set_num_threads(threads)


def test_two_cpu_workers_equal_encode(pool, tiny_model, many_texts):
    for kwargs in ({"batch_size": 4}, {"instruction": "Find the topic"}):
        expected = tiny_model.encode(many_texts, **kwargs)
        got = tiny_model.encode(many_texts, pool=pool, **kwargs)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0, err_msg=str(kwargs))
    np.testing.assert_allclose(pool.encode(many_texts[5]), tiny_model.encode(many_texts[5]), atol=1e-6, rtol=0)
    np.testing.assert_allclose(tiny_model.encode_query(many_texts[:9], pool=pool, batch_size=2),
                               tiny_model.encode_query(many_texts[:9], batch_size=2), atol=1e-6, rtol=0)  # fmt: skip


def test_raw_embeddings_equal_encode_with_the_workers_thread_count(pool, tiny_model, many_texts, worker_threads):
    """Unnormalised states reach |x| ~ 3, where another thread count's summation order moves the 6th decimal."""
    expected = tiny_model.encode(many_texts, batch_size=3, normalize=False)
    got = pool.encode(many_texts, batch_size=3, normalize=False)
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def test_a_pool_quantises_once_over_the_whole_call(pool, tiny_model, many_texts):
    floats = tiny_model.encode(many_texts, batch_size=4)
    got = pool.encode(many_texts, batch_size=4, precision="int8")
    expected = quantize(floats, "int8")  # ranges of all the texts, not of one worker's chunks
    assert np.abs(got.astype(np.int16) - expected.astype(np.int16)).max() <= 1
    assert (got != expected).mean() < 1e-3


def test_a_worker_error_reaches_the_caller_and_the_pool_goes_on(pool, texts, caplog):
    with pytest.raises(ValueError, match="max_length=2 must be") as raised:
        pool.encode(texts, max_length=2)
    assert any("encode worker on cpu" in note for note in raised.value.__notes__)
    assert pool.encode(texts).shape == (len(texts), pool.model.embedding_dim)
    caplog.clear()
    with caplog.at_level("WARNING"):
        pool.encode(texts, max_length=8)
    assert [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()] == [
        f"{len(texts)} of {len(texts)} texts were truncated to 8 encoder / 8 LLM tokens"
    ], "one warning, in the calling process, for the whole call"


def test_a_device_list_starts_and_closes_a_pool_for_one_call(tiny_model, texts):
    got = tiny_model.encode(texts, device=["cpu", "cpu"], batch_size=2, precision="ubinary")
    np.testing.assert_array_equal(got, quantize(tiny_model.encode(texts, batch_size=2), "ubinary"))
    assert tiny_model.device.type == "cpu"
    with pytest.raises(ValueError, match="do not apply with pool="):
        tiny_model.encode(texts, pool=object(), device="cpu")
    with pytest.raises(ValueError, match="non-empty list"):
        EncodePool(tiny_model, [])
    with pytest.raises(ValueError, match="'cuda:7'"):
        EncodePool(tiny_model, ["cpu", "cuda:7"])
    with pytest.raises(TypeError, match="runs torch models"):
        EncodePool(object(), ["cpu"])  # type: ignore[arg-type]


def test_a_dead_worker_is_named_and_a_closed_pool_refuses_work(tiny_model, texts):
    pool = EncodePool(tiny_model, ["cpu"])
    try:
        os.kill(pool._processes[0].pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match=r"encode worker\(s\) died: cpu \(pid \d+, exit code -9\)"):
            pool.encode(texts)
        with pytest.raises(RuntimeError, match="closed"):
            pool.encode(texts)
    finally:
        pool.close()
    pool.close()  # a second close does nothing
