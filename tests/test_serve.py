"""``causal2vec serve``: a real uvicorn server on 127.0.0.1 with the tiny model, called by real HTTP clients."""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from causal2vec import Causal2Vec, SemanticIndex  # noqa: E402
from causal2vec.serve import ServeSettings, create_app  # noqa: E402
from tests.helpers import ROOT, TEXTS, Server, request, wait_ready  # noqa: E402


@pytest.fixture(scope="module")
def model(tiny_checkpoint) -> Causal2Vec:
    return Causal2Vec.from_pretrained(tiny_checkpoint, dtype="float32")


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, model) -> Path:
    path = tmp_path_factory.mktemp("serve") / "news.idx"
    docs = [{"id": f"d{i}", "text": text, "title": f"Doc {i}", "metadata": {"n": i}} for i, text in enumerate(TEXTS)]
    SemanticIndex.build(path, model, docs).close()
    return path


@pytest.fixture(scope="module")
def server(tiny_checkpoint, index_dir):
    def load():
        loaded = Causal2Vec.from_pretrained(tiny_checkpoint, dtype="float32")
        return loaded, SemanticIndex.load(index_dir, loaded)

    running = Server(create_app(load, ServeSettings(max_inputs=16, max_chars=2000, max_wait_ms=20)))
    wait_ready(running.url)
    yield running
    running.stop()


def test_the_openai_client_gets_the_vectors_of_encode(server, model):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    expected = model.encode(TEXTS)
    # Left to itself the client asks for base64 and decodes it; "float" asks for JSON numbers.
    for options in ({}, {"encoding_format": "float"}):
        response = client.embeddings.create(model="tiny-served", input=TEXTS, **options)
        got = np.array([item.embedding for item in response.data])
        assert [item.index for item in response.data] == list(range(len(TEXTS)))
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert response.model == "tiny-served"
    features = model.tokenize(TEXTS)
    tokens = int(features["encoder_attention_mask"].sum() + features["llm_attention_mask"].sum())
    assert response.usage.prompt_tokens == response.usage.total_tokens == tokens
    query = client.embeddings.create(model="m", input=TEXTS[0], extra_body={"input_type": "query"})
    np.testing.assert_allclose(query.data[0].embedding, model.encode_query([TEXTS[0]])[0], atol=1e-5)
    assert not np.allclose(model.encode_query([TEXTS[0]])[0], expected[0], atol=1e-3), "the query instruction applies"
    status, raw = request(f"{server.url}/v1/embeddings", {"input": TEXTS[1], "encoding_format": "base64"})
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert status == 200 and np.allclose(decoded, expected[1], atol=1e-5)


def test_openai_conventions_models_token_ids_dimensions_and_user(server, model):
    """GET /v1/models as clients probe it; token ids in the LLM tokenizer's vocabulary; the dimensions the model can
    give (whole, or h_C alone), the others refused with the list; ``user`` accepted."""
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    (served,) = client.models.list().data
    assert served.id == str(model.identity.name) and served.owned_by == "causal2vec" and served.created > 0
    assert client.models.retrieve(served.id).id == served.id
    status, body = request(f"{server.url}/v1/models/another-model")
    assert status == 404 and body["error"]["type"] == "not_found_error" and "another-model" in body["error"]["message"]
    ids = [model.llm_tokenizer(text, add_special_tokens=False)["input_ids"] for text in TEXTS[:3]]
    assert model.llm_tokenizer.batch_decode(ids) == TEXTS[:3]  # byte-level BPE: the ids spell the texts exactly
    expected = model.encode(TEXTS[:3])
    by_ids = client.embeddings.create(model="m", input=ids, user="user-7")
    np.testing.assert_allclose([d.embedding for d in by_ids.data], expected, atol=1e-5)
    status, one = request(f"{server.url}/v1/embeddings", {"input": ids[0], "encoding_format": "float"})
    assert status == 200 and np.allclose(one["data"][0]["embedding"], expected[0], atol=1e-5)
    vocabulary = len(model.llm_tokenizer)
    status, body = request(f"{server.url}/v1/embeddings", {"input": [ids[0], [3, vocabulary]]})
    assert status == 400 and body["error"]["param"] == "input"
    assert f"input[1][1]={vocabulary} is not a token id of this model's LLM tokenizer" in body["error"]["message"]
    half = model.embedding_dim // 2
    cut = client.embeddings.create(model="m", input=TEXTS[:3], dimensions=half, encoding_format="float")
    h_c = expected[:, :half] / np.linalg.norm(expected[:, :half], axis=1, keepdims=True)
    np.testing.assert_allclose([d.embedding for d in cut.data], h_c, atol=1e-5)
    full = client.embeddings.create(model="m", input=TEXTS[:1], dimensions=model.embedding_dim)
    np.testing.assert_allclose(full.data[0].embedding, expected[0], atol=1e-5)
    status, body = request(f"{server.url}/v1/embeddings", {"input": "x", "dimensions": half + 1})
    assert status == 400 and body["error"]["param"] == "dimensions"
    assert f"choose one of [{model.embedding_dim}, {half}]" in body["error"]["message"]


def test_search_returns_the_hits_of_the_index(server, model, index_dir):
    queries = ["interest rates and banks", "football"]
    status, body = request(f"{server.url}/search", {"query": queries, "k": 3})
    assert status == 200
    with SemanticIndex.load(index_dir, model) as index:
        expected = index.search(queries, k=3)
        top = index.search("budget", k=1)[0].id
    for result, query, hits in zip(body["results"], queries, expected, strict=True):
        assert result["query"] == query
        assert [h["id"] for h in result["hits"]] == [h.id for h in hits]
        assert [h["score"] for h in result["hits"]] == pytest.approx([h.score for h in hits], abs=1e-5)
        assert result["hits"][0]["title"] == hits[0].title and result["hits"][0]["metadata"] == hits[0].metadata
    assert request(f"{server.url}/search", {"query": "budget", "k": 1})[1]["results"][0]["hits"][0]["id"] == top


def test_health_and_info(server, model):
    assert request(f"{server.url}/health") == (200, {"status": "ready"})
    status, info = request(f"{server.url}/info")
    assert status == 200
    assert info["dimension"] == model.embedding_dim and info["backend"] == "torch" and info["precision"] == "fp32"
    assert info["device"] == "cpu" and info["index_size"] == len(TEXTS)


def _batch_count(url: str) -> tuple[float, float]:
    """(batches, batches of exactly one text) from /metrics."""
    text = urllib.request.urlopen(f"{url}/metrics").read().decode()
    total = float(re.search(r"^causal2vec_batch_size_count (\S+)$", text, re.M).group(1))
    ones = float(re.search(r'^causal2vec_batch_size_bucket\{le="1.0"\} (\S+)$', text, re.M).group(1))
    return total, ones


def test_concurrent_requests_are_batched_and_each_gets_its_own_rows(server, model):
    rng = np.random.default_rng(0)
    words = " ".join(TEXTS).split()
    requests = [
        [" ".join(rng.choice(words, rng.integers(1, 40))) for _ in range(rng.integers(1, 6))] for _ in range(64)
    ]
    before = _batch_count(server.url)

    def call(texts: list[str]) -> tuple[int, Any]:
        return request(f"{server.url}/v1/embeddings", {"input": texts})

    with ThreadPoolExecutor(64) as pool:
        answers = list(pool.map(call, requests))
    for texts, (status, body) in zip(requests, answers, strict=True):
        assert status == 200, body
        got = np.array([item["embedding"] for item in body["data"]])
        np.testing.assert_allclose(got, model.encode(texts), atol=1e-5)
    total, ones = (a - b for a, b in zip(_batch_count(server.url), before, strict=True))
    assert total < 64, f"{total} batches for 64 concurrent requests: nothing was batched"
    assert total - ones > 0
    metrics = urllib.request.urlopen(f"{server.url}/metrics").read().decode()
    assert 'causal2vec_requests_total{route="/v1/embeddings",status="200"}' in metrics
    assert "causal2vec_queue_seconds_count" in metrics and "causal2vec_encode_seconds_count" in metrics


BAD = [
    ({"raw": b'{"input": ["unclosed"'}, 400, "not valid JSON", None),
    ({"body": {"input": 5}}, 422, "input", "input"),
    ({"body": {"input": ["fine", 7]}}, 422, "input", "input[1]"),
    ({"body": {"model": "m"}}, 422, "input: Field required", "input"),
    ({"body": {"input": []}}, 400, "input is an empty list", "input"),
    ({"body": {"input": ""}}, 400, "input is empty", "input"),
    ({"body": {"input": ["ok", "  "]}}, 400, "input[1] is empty", "input[1]"),
    ({"body": {"input": ["x"] * 17}}, 413, "input has 17 texts; at most 16 (--max-inputs)", "input"),
    ({"body": {"input": ["ok", "y" * 2001]}}, 413, "input[1] has 2001 characters; at most 2000", "input[1]"),
    ({"body": {"input": "ok", "encoding_format": "int8"}}, 422, "encoding_format", "encoding_format"),
    ({"body": {"input": "ok", "input_type": "passage"}}, 422, "input_type", "input_type"),
    ({"body": {"input": "ok", "dimensions": 3}}, 400, "dimensions=3", "dimensions"),
    ({"raw": b'{"input": "\\ud800"}'}, 400, "input: it holds a lone surrogate '\\ud800' at character 1", "input"),
    ({"raw": b'{"input": ["ok", "a\\udc00"]}'}, 400, "input[1]: it holds a lone surrogate", "input[1]"),
    ({"raw": b'{"input": "ok", "model": "\\ud800"}'}, 400, "model: it holds a lone surrogate", "model"),
    ({"raw": b'{"input": "\xff\xfe ok"}'}, 400, "cannot be parsed: it is not valid UTF-8", None),
    ({"raw": b"[" * 5000 + b"]" * 5000}, 400, "cannot be parsed: its JSON nests too deeply", None),
    ({"raw": b'{"input": "ok", "dimensions": 1' + b"0" * 5000 + b"}"}, 400, "too many digits", None),
    ({"body": {"input": "ok", "dimensions": "128"}}, 422, "dimensions: Input should be a valid integer", "dimensions"),
    ({"body": {"input": "ok", "dimensions": 128.0}}, 422, "dimensions: Input should be a valid integer", "dimensions"),
    ({"body": {"input": "ok", "dimensions": True}}, 422, "dimensions: Input should be a valid integer", "dimensions"),
]


def test_bad_requests_get_openai_errors_and_disturb_no_one(server, model):
    good = [[f"{text} ({i})"] for i, text in enumerate(TEXTS * 4)]

    def send(case: Any) -> tuple[int, Any]:
        if isinstance(case, list):
            return request(f"{server.url}/v1/embeddings", {"input": case})
        return request(f"{server.url}/v1/embeddings", case[0].get("body"), raw=case[0].get("raw"))

    mixed = [item for pair in zip(good, BAD * 2, strict=False) for item in pair] + good[len(BAD) * 2 :]
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(send, mixed))
    for case, (status, body) in zip(mixed, answers, strict=True):
        if isinstance(case, list):
            assert status == 200 and np.allclose(body["data"][0]["embedding"], model.encode(case)[0], atol=1e-5)
            continue
        _, want_status, message, param = case
        assert status == want_status, (case, body)
        assert set(body) == {"error"} and message in body["error"]["message"], body
        assert body["error"]["param"] == param and body["error"]["type"] == "invalid_request_error"
    status, body = request(f"{server.url}/search", {"query": "x", "k": 0})
    assert status == 422 and body["error"]["param"] == "k"
    status, body = request(f"{server.url}/search", {"query": [], "k": 2})
    assert status == 400 and body["error"]["param"] == "query"


def test_a_request_past_the_timeout_gets_503_and_the_server_goes_on(tiny_checkpoint):
    gate = threading.Event()

    def load():
        loaded = Causal2Vec.from_pretrained(tiny_checkpoint, dtype="float32")
        real = loaded.encode
        loaded.encode = lambda *a, **k: (gate.wait(10), real(*a, **k))[1]  # the model is busy until the gate opens
        return loaded, None

    running = Server(create_app(load, ServeSettings(timeout=0.5)))
    try:
        wait_ready(running.url)
        started = time.monotonic()
        status, body = request(f"{running.url}/v1/embeddings", {"input": "late"})
        assert status == 503 and "--timeout 0.5 s" in body["error"]["message"], body
        assert time.monotonic() - started < 5
        gate.set()
        status, body = request(f"{running.url}/v1/embeddings", {"input": "on time"})
        assert status == 200 and len(body["data"]) == 1
    finally:
        gate.set()
        running.stop()


def test_health_reports_ready_only_once_the_model_is_loaded(tiny_checkpoint):
    gate = threading.Event()

    def load():
        gate.wait(30)
        return Causal2Vec.from_pretrained(tiny_checkpoint, dtype="float32"), None

    running = Server(create_app(load))
    try:
        assert request(f"{running.url}/health") == (503, {"status": "loading"})
        status, body = request(f"{running.url}/v1/embeddings", {"input": "early"})
        assert status == 503 and "still loading" in body["error"]["message"]
        gate.set()
        wait_ready(running.url)
        assert request(f"{running.url}/v1/embeddings", {"input": "now"})[0] == 200
        status, body = request(f"{running.url}/search", {"query": "x"})
        assert status == 404 and "--index" in body["error"]["message"]
    finally:
        gate.set()
        running.stop()


def test_an_api_key_is_required_on_every_route_but_health(tiny_checkpoint):
    running = Server(
        create_app(lambda: (Causal2Vec.from_pretrained(tiny_checkpoint), None), ServeSettings(api_key="s3cret"))
    )
    try:
        wait_ready(running.url)  # /health needs no key
        for key in (None, "wrong", "s3cre", "S3CRET"):
            status, body = request(f"{running.url}/v1/embeddings", {"input": "x"}, key=key)
            assert status == 401 and body["error"]["type"] == "authentication_error", (key, body)
            assert request(f"{running.url}/info", key=key)[0] == 401
        assert request(f"{running.url}/v1/embeddings", {"input": "x"}, key="s3cret")[0] == 200
        assert request(f"{running.url}/info", key="s3cret")[0] == 200
        client = openai.OpenAI(base_url=f"{running.url}/v1", api_key="s3cret", max_retries=0)
        assert len(client.embeddings.create(model="m", input="x").data) == 1
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{running.url}/v1", api_key="nope", max_retries=0).embeddings.create(
                model="m", input="x"
            )
    finally:
        running.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_finishes_every_accepted_request_and_exits_0(tiny_checkpoint, model):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "causal2vec", "serve", "--model", str(tiny_checkpoint), "--dtype", "float32",
               "--device", "cpu", "--port", str(port), "--max-wait-ms", "300", "--log-level", "warning"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if request(f"{url}/health")[0] == 200:
                    break
            except urllib.error.URLError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        requests = [[f"{text} #{i}"] for i, text in enumerate(TEXTS * 3)]
        with ThreadPoolExecutor(len(requests)) as pool:
            futures = [pool.submit(request, f"{url}/v1/embeddings", {"input": texts}) for texts in requests]
            time.sleep(0.15)  # every request is accepted and queued: the batch waits up to 300 ms for more
            process.send_signal(signal.SIGTERM)
            answers = [f.result() for f in futures]
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    for texts, (status, body) in zip(requests, answers, strict=True):
        assert status == 200, body
        np.testing.assert_allclose(body["data"][0]["embedding"], model.encode(texts)[0], atol=1e-5)


def test_serve_command_refuses_bad_options(capsys):
    from causal2vec.cli import main

    assert main(["serve"]) == 2
    assert "give --model" in capsys.readouterr().err
    assert main(["serve", "--model", "default", "--timeout", "0"]) == 2
    assert "--timeout" in capsys.readouterr().err
