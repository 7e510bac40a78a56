"""``causal2vec serve`` against clients that send too much, too slowly, the wrong type, or nothing that matches."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from causal2vec import Causal2Vec, SemanticIndex
from causal2vec.cli import main
from causal2vec.serve import ServeSettings, create_app
from tests.helpers import TEXTS, Server, request, wait_ready


@pytest.fixture(scope="module")
def index_copy(tmp_path_factory, tiny_checkpoint) -> Path:
    path = tmp_path_factory.mktemp("limits") / "news.idx"
    model = Causal2Vec.from_pretrained(tiny_checkpoint, dtype="float32")
    SemanticIndex.build(path, model, [{"id": f"d{i}", "text": t} for i, t in enumerate(TEXTS)]).close()
    return path


@pytest.fixture(scope="module")
def server(tiny_checkpoint, index_copy):
    def load():
        loaded = Causal2Vec.from_pretrained(tiny_checkpoint, dtype="float32")
        return loaded, SemanticIndex.load(index_copy, loaded)

    settings = ServeSettings(max_body_bytes=100_000, api_key="sekret")
    running = Server(create_app(load, settings), read_timeout=1.5)
    wait_ready(running.url)
    yield running
    running.stop()


def exchange(port: int, data: bytes, *, wait: float = 10.0) -> bytes:
    """Send raw bytes on a new connection and read until the server closes it (or ``wait`` passes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        return answer


def parts(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body or b"{}")


AUTH = b"Authorization: Bearer sekret\r\n"


def test_a_body_over_the_limit_is_refused_before_it_is_read(server):
    started = time.monotonic()
    header = (b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Type: application/json\r\n"
              b"Content-Length: 1000000000\r\nConnection: close\r\n\r\n")  # fmt: skip
    status, body = parts(exchange(server.port, header + b'{"input": "' + b"a" * 1000))  # 1 GB announced, 1 KB sent
    assert status == 413 and "larger than --max-body-bytes 100000 bytes" in body["error"]["message"], body
    assert time.monotonic() - started < 5, "the server waited for the body"
    chunked = (b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Content-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")  # fmt: skip
    chunk = b"a" * 60_000
    piece = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    status, body = parts(exchange(server.port, chunked + piece * 2 + b"0\r\n\r\n"))  # no length: counted as read
    assert status == 413 and set(body) == {"error"}, body
    assert request(f"{server.url}/v1/embeddings", {"input": "x" * 1000}, key="sekret")[0] == 200


def test_unauthenticated_paths_do_not_grow_the_metrics(server):
    for _ in range(300):
        assert request(f"{server.url}/{uuid.uuid4().hex * 4}")[0] == 401
    assert request(f"{server.url}/info")[0] == 401
    _, page = request(f"{server.url}/metrics", key="sekret")
    routes = set(re.findall(r'causal2vec_requests_total\{route="([^"]*)"', page))
    assert routes <= {"/info", "/metrics", "/health", "/v1/embeddings", "/search", "unmatched"}, routes
    assert "unmatched" in routes and "/info" in routes
    assert len(page) < 20_000, "one series per path"


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None])
def test_a_body_that_is_not_sent_as_json_is_named(server, content_type):
    body = json.dumps({"query": "markets"}).encode()
    header = b"POST /search HTTP/1.1\r\nHost: x\r\n" + AUTH + b"Connection: close\r\n"
    if content_type:
        header += f"Content-Type: {content_type}\r\n".encode()
    status, answer = parts(exchange(server.port, header + b"Content-Length: %d\r\n\r\n" % len(body) + body))
    assert status == 415 and "'Content-Type: application/json'" in answer["error"]["message"], answer
    assert (content_type or "no Content-Type") in answer["error"]["message"]


def test_unknown_routes_and_methods_answer_in_openais_shape(server):
    status, body = request(f"{server.url}/v2/nothing", key="sekret")
    assert status == 404 and body["error"]["type"] == "not_found_error"
    assert "no route GET /v2/nothing" in body["error"]["message"]
    status, body = request(f"{server.url}/v1/embeddings", key="sekret")  # a GET
    assert status == 405 and "GET /v1/embeddings is not allowed" in body["error"]["message"] and "POST" in str(body)


@pytest.mark.parametrize(
    ("body", "param", "status"),
    [({"query": "\udc00"}, "query", 400), ({"query": ["ok", "\ud800"]}, "query[1]", 400),
     ({"query": "x", "k": True}, "k", 422), ({"query": "x", "k": "5"}, "k", 422), ({"query": "x", "k": 2.0}, "k", 422)],
)  # fmt: skip
def test_search_fields_are_strict(server, body, param, status):
    raw = json.dumps(body).encode()  # json.dumps writes a lone surrogate as its escape, as a client would
    code, answer = request(f"{server.url}/search", raw=raw, key="sekret")
    assert code == status and answer["error"]["param"] == param, answer


def test_slow_clients_are_disconnected_and_others_are_served(server):
    """The server runs with --read-timeout 1.5: headers that never end, a body cut short and silence are all cut."""
    slow = []
    for partial in (b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n",
                    b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n" + AUTH +
                    b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"input\": ", b""):  # fmt: skip
        connection = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        connection.sendall(partial)
        slow.append(connection)
    started, cut = time.monotonic(), None
    while cut is None and time.monotonic() - started < 8:  # a header line every 0.3 s: busy, never complete
        time.sleep(0.3)
        try:
            slow[0].sendall(b"X-Slow: 1\r\n")
        except (BrokenPipeError, ConnectionResetError):
            cut = time.monotonic() - started
        assert request(f"{server.url}/health")[0] == 200
    assert cut is not None and 1.5 <= cut < 4, f"the slow header sender was cut after {cut} s"
    for connection in slow[1:]:
        with contextlib.suppress(ConnectionResetError):  # closed with unread data: a reset, also a close
            assert connection.recv(1024) == b"", "the server answered instead of closing"
    for connection in slow:
        connection.close()


def test_info_reports_what_another_process_wrote(server, index_copy, tiny_checkpoint):
    before = request(f"{server.url}/info", key="sekret")[1]["index_size"]
    with SemanticIndex.load(index_copy, Causal2Vec.from_pretrained(tiny_checkpoint)) as other:
        other.add([{"id": "new", "text": "A late addition about the weather."}])
        other.save()
    assert request(f"{server.url}/info", key="sekret")[1]["index_size"] == before + 1


def test_the_command_refuses_a_port_out_of_range(capsys):
    assert main(["serve", "--model", "default", "--port", "70000"]) == 2
    assert "'70000' is not a TCP port; give a whole number from 0 to 65535" in capsys.readouterr().err


def test_a_server_that_cannot_load_what_it_serves_exits_2(index_copy, tmp_path, capsys):
    started = time.monotonic()
    assert main(["serve", "--index", str(index_copy), "--max-length", "64", "--port", "0"]) == 2
    assert "--max-length 64: the token budget is chosen when an index is built" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path / "nowhere"), "--port", "0"]) == 2
    assert "is not a checkpoint folder" in capsys.readouterr().err
    assert time.monotonic() - started < 60


def test_an_unauthenticated_body_is_refused_before_it_is_read(server):
    header = (b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 64000000\r\nConnection: close\r\n\r\n")  # fmt: skip
    status, body = parts(exchange(server.port, header + b'{"input": "'))
    assert status == 401 and body["error"]["type"] == "authentication_error", body


@pytest.mark.parametrize("path", ["/health/", "//info", "/health/../info", "/%2Finfo", "/info%00", "/HEALTH"])
def test_no_path_reaches_a_route_around_the_key(server, path):
    answer = exchange(server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert answer[9:12] in (b"401", b"404", b"400"), (path, answer)
    assert request(f"{server.url}/health")[0] == 200
