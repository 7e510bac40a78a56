"""The HTTP service: OpenAI-compatible ``/v1/embeddings``, ``/search``, ``/health``, ``/info`` and ``/metrics``.

Built on FastAPI (Starlette) and served by uvicorn (``causal2vec serve``). Every error has OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, with a message that names the field. Embedding requests go
through a :class:`~causal2vec.serve.batcher.Batcher`, which batches concurrent requests on the model's one thread.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np

from causal2vec.dimensions import check_dimension, truncate
from causal2vec.encoding import EmbeddingBackend
from causal2vec.runtime import require
from causal2vec.search.corpus import check_text
from causal2vec.serve.batcher import Batcher, Loaded, ShuttingDown

require("fastapi")  # or a ModuleNotFoundError naming pip install 'causal2vec[serve]'
require("prometheus_client")
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse, Response  # noqa: E402
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr  # noqa: E402
from starlette.exceptions import HTTPException  # noqa: E402
from starlette.routing import Match  # noqa: E402
from starlette.types import ASGIApp, Message, Receive, Scope, Send  # noqa: E402

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeSettings:
    """What ``causal2vec serve`` was asked for; see its ``--help`` for each field."""

    max_batch_size: int = 32
    max_batch_tokens: int = 16384
    max_wait_ms: float = 5.0
    max_inputs: int = 2048
    max_chars: int = 32768
    timeout: float = 30.0
    api_key: str | None = None
    snippet: int = 160
    max_length: int | None = None
    max_body_bytes: int = 2_000_000  # text-embeddings-inference's payload limit
    read_timeout: float = 30.0  # seconds a client may take to send a request's headers and body (run_server)


class ApiError(Exception):
    """An error answered in OpenAI's shape with ``status``."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


class EmbeddingRequest(BaseModel):
    """The body of ``POST /v1/embeddings`` (OpenAI's fields, plus ``input_type``)."""

    model_config = ConfigDict(extra="ignore")

    input: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]  # texts, or LLM token ids
    model: StrictStr | None = None
    encoding_format: Literal["float", "base64"] = "float"
    input_type: Literal["query", "document"] = "document"
    dimensions: StrictInt | None = None  # "1152", 1152.0 and true are refused, not coerced
    user: StrictStr | None = None


class SearchRequest(BaseModel):
    """The body of ``POST /search``."""

    model_config = ConfigDict(extra="forbid")

    query: StrictStr | list[StrictStr]
    k: Annotated[StrictInt, Field(ge=1, le=1000)] = 10


class Metrics:
    """Prometheus metrics of one app, in their own registry (so several apps in one process stay apart)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("causal2vec_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=self.registry)  # fmt: skip
        self.batch_size = Histogram("causal2vec_batch_size", "Texts per model batch", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))  # fmt: skip
        self.queue_seconds = Histogram("causal2vec_queue_seconds", "Time a request piece waited for its batch",
                                       registry=self.registry)  # fmt: skip
        self.encode_seconds = Histogram("causal2vec_encode_seconds", "Time to embed one batch", registry=self.registry)

    def observe(self, texts: int, waits: list[float], seconds: float) -> None:
        """Record one batch (called on the model thread)."""
        self.batch_size.observe(texts)
        for wait in waits:
            self.queue_seconds.observe(wait)
        self.encode_seconds.observe(seconds)


def _error(status: int, message: str, param: str | None = None, kind: str = "invalid_request_error") -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return JSONResponse(body, status_code=status)


def _validation_message(errors: list[dict[str, Any]]) -> tuple[str, str]:
    """``(field, message)`` for pydantic's errors on a flat request body: the most specific error wins.

    Locations look like ``("body", "input", "list[str]", 1)``: the first name is the field, later names are the
    members of a union (``str | list[str]``), and numbers index into a list (reported as ``input[1]``).
    """
    error = max(errors, key=lambda e: len(e.get("loc", ())))
    parts = [p for p in error.get("loc", ()) if p != "body"]
    names = [p for p in parts if isinstance(p, str)]
    field = (names[0] if names else "body") + "".join(f"[{p}]" for p in parts if isinstance(p, int))
    got = error.get("input")
    shown = "" if got is None or isinstance(got, dict) or error.get("type") == "missing" else f" (got {got!r:.60})"
    if len(names) > 1 and not any(isinstance(p, int) for p in parts):  # no member of the union matched
        return field, f"{field} must be a string or a list of strings{shown}"
    return field, f"{field}: {error['msg']}{shown}"


def create_app(load: Callable[[], Loaded], settings: ServeSettings = ServeSettings()) -> FastAPI:
    """The FastAPI app; ``load`` returns ``(model, index or None)`` and runs on the model thread at start-up.

    The app answers ``/health`` at once and reports ready once the model is loaded. A body over
    ``settings.max_body_bytes`` is refused (413) before it is read, so no client can make the server hold more.
    """
    metrics = Metrics()
    batcher = Batcher(load, max_batch_size=settings.max_batch_size, max_batch_tokens=settings.max_batch_tokens,
                      max_wait_ms=settings.max_wait_ms, max_length=settings.max_length,
                      observe=metrics.observe)  # fmt: skip

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        # uvicorn has stopped accepting and finished the open requests; the queue is drained before exit.
        await asyncio.to_thread(batcher.close)

    app = FastAPI(title="causal2vec", lifespan=lifespan)
    app.state.batcher, app.state.metrics, app.state.settings = batcher, metrics, settings
    _add_error_handlers(app)
    app.add_middleware(Gate, routes=app, settings=settings, metrics=metrics)
    service = _Service(batcher, settings)
    _add_status_routes(app, service, metrics)
    _add_models_routes(app, service)
    _add_model_routes(app, service)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error in OpenAI's shape: the app's own, pydantic's, Starlette's (404, 405, unparsable bodies), bugs."""

    @app.exception_handler(Exception)  # run by Starlette's outermost middleware, which then re-raises to the log
    async def server_error(_: Request, err: Exception) -> JSONResponse:
        message = f"internal error ({type(err).__name__}); the server's log has the details"
        return _error(500, message, kind="server_error")

    @app.exception_handler(ApiError)
    async def api_error(_: Request, err: ApiError) -> JSONResponse:
        return _error(err.status, err.message, err.param, err.kind)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        if first.get("type") == "json_invalid":
            return _error(400, f"the body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}")
        field, message = _validation_message(err.errors())
        return _error(422, message, field)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        route = f"{request.method} {request.url.path}"
        if err.status_code == 404:
            return _error(404, f"no route {route}; see GET /docs for the routes", kind="not_found_error")
        if err.status_code == 405:
            headers = dict(err.headers or {})  # Starlette's "Allow", which HTTP asks a 405 to carry
            response = _error(405, f"{route} is not allowed; {request.url.path} takes {headers.get('Allow')}")
            response.headers.update(headers)
            return response
        if err.status_code == 400:  # FastAPI's "error parsing the body", raised from the parser's own error
            return _error(400, f"the body cannot be parsed: {_parse_failure(err.__cause__)}")
        return _error(err.status_code, str(err.detail))


def _parse_failure(cause: BaseException | None) -> str:
    """What stopped ``json.loads`` on a body, in a user's words."""
    if isinstance(cause, UnicodeDecodeError):
        return f"it is not valid UTF-8 (byte {cause.start})"
    if isinstance(cause, RecursionError):
        return "its JSON nests too deeply"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "a number in it has too many digits"
    return f"{type(cause).__name__}: {cause}" if cause is not None else "send UTF-8 JSON"


def _refusal(request: Request, settings: ServeSettings) -> Response | None:
    """The answer to a request refused before any route runs: no or a wrong API key, a body too long or not JSON."""
    if settings.api_key is not None and request.url.path != "/health":
        header = request.headers.get("authorization", "")
        given = header[7:] if header[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(given.encode(), settings.api_key.encode()):  # constant time
            message = "missing or wrong API key: send 'Authorization: Bearer <key>'"
            return _error(401, message, kind="authentication_error")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > settings.max_body_bytes:
        return _too_large(settings)
    if request.method == "POST":
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            return _error(415, f"the body must be JSON sent with 'Content-Type: application/json' (got "
                               f"{media or 'no Content-Type'!r})")  # fmt: skip
    return None


class Gate:
    """What every HTTP request passes before a route runs, as one ASGI middleware.

    It answers 401 (no or a wrong API key) and 415 (a body not sent as JSON) itself, refuses a body over
    ``settings.max_body_bytes`` (413) before reading it when its Content-Length says so and as soon as the count
    passes the limit otherwise, and counts every answer by route template, so no client can add label values.
    Starlette's own limiter (FastAPI's ``max_body_size``) would answer in plain text, outside OpenAI's error shape.
    """

    def __init__(self, app: ASGIApp, *, routes: FastAPI, settings: ServeSettings, metrics: Metrics) -> None:
        self.app, self.routes, self.settings, self.metrics = app, routes, settings, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check, then pass the request on with its body counted; the answer's status goes to the metrics."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        state: dict[str, Any] = {"received": 0, "status": 500, "answered": False}

        async def limited() -> Message:
            message = await receive()
            state["received"] += len(message.get("body", b""))
            if state["received"] > self.settings.max_body_bytes and not state["answered"]:
                await _too_large(self.settings)(scope, receive, forward)
                state["answered"] = True  # the app reads a disconnect, and its own answer is dropped
            return {"type": "http.disconnect"} if state["answered"] else message

        async def forward(message: Message) -> None:
            if state["answered"]:
                return
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            await send(message)

        try:
            refusal = _refusal(request, self.settings)
            if refusal is not None:
                await refusal(scope, receive, forward)
            else:
                await self.app(scope, limited, forward)
        finally:
            self.metrics.requests.labels(_route_label(self.routes, request), str(state["status"])).inc()


def _too_large(settings: ServeSettings) -> JSONResponse:
    return _error(413, f"the request body is larger than --max-body-bytes {settings.max_body_bytes} bytes; send "
                       f"fewer or shorter texts per request")  # fmt: skip


def _route_label(app: FastAPI, request: Request) -> str:
    """The path template of the route a request matches (even with the wrong method), else ``"unmatched"``."""
    for route in app.router.routes:
        if route.matches(request.scope)[0] != Match.NONE:
            return getattr(route, "path", "unmatched")
    return "unmatched"


class _Service:
    """What the routes share: the batcher, the limits, and the helpers that turn their failures into API errors."""

    def __init__(self, batcher: Batcher, settings: ServeSettings) -> None:
        self.batcher, self.settings = batcher, settings
        self.started = int(time.time())

    def model_card(self) -> dict[str, Any]:
        """The served model in OpenAI's ``/v1/models`` shape (``created``: when this server started)."""
        name = self.loaded().identity.name or "causal2vec"
        return {"id": name, "object": "model", "created": self.started, "owned_by": "causal2vec"}

    def loaded(self) -> EmbeddingBackend:
        """The model, or a 503 while it loads or after it failed to."""
        if self.batcher.error is not None:
            raise ApiError(503, f"the model failed to load: {self.batcher.error}", kind="server_error")
        if not self.batcher.ready.is_set():
            raise ApiError(503, "the model is still loading; retry when GET /health reports ready", kind="server_error")
        return self.batcher.model

    async def wait(self, futures: list[Any]) -> list[Any]:
        """The futures' results, or a 503 after ``--timeout`` (the pieces not yet started are cancelled)."""
        try:
            gathered = asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
            return await asyncio.wait_for(gathered, self.settings.timeout)
        except TimeoutError:
            for future in futures:
                future.cancel()
            message = f"the request waited more than --timeout {self.settings.timeout:g} s"
            raise ApiError(503, message, kind="server_error") from None

    async def embed(self, texts: list[str], instruction: str | None) -> list[Any]:
        """``(vectors, token counts)`` of each piece of ``texts``, batched with other requests'."""
        try:
            futures = self.batcher.submit(texts, instruction)
        except ShuttingDown as err:
            raise ApiError(503, str(err), kind="server_error") from err
        return await self.wait(futures)

    async def on_model_thread(self, function: Callable[[Any, Any], Any]) -> Any:
        """Run ``function(model, index)`` in turn with the batches (the index's SQLite connection lives there)."""
        try:
            future = self.batcher.call(function)
        except ShuttingDown as err:
            raise ApiError(503, str(err), kind="server_error") from err
        return (await self.wait([future]))[0]

    def check_texts(self, texts: list[str], field: str) -> None:
        """Refuse an empty list, too many texts, and texts that are blank, too long or not valid Unicode."""
        limits = self.settings
        if not texts:
            raise ApiError(400, f"{field} is an empty list; give at least one text", field)
        if len(texts) > limits.max_inputs:
            raise ApiError(413, f"{field} has {len(texts)} texts; at most {limits.max_inputs} (--max-inputs)", field)
        for i, text in enumerate(texts):
            where = field if len(texts) == 1 else f"{field}[{i}]"
            if not text.strip():
                raise ApiError(400, f"{where} is empty; every text needs some content", where)
            if len(text) > limits.max_chars:
                raise ApiError(413, f"{where} has {len(text)} characters; at most {limits.max_chars} (--max-chars)",
                               where)  # fmt: skip
            check_unicode(text, where)


def check_unicode(text: str, field: str) -> None:
    """Refuse a string that UTF-8 cannot hold (a lone surrogate), as the corpus readers do.

    Raises:
        ApiError: 400 naming the field and the position of the first lone surrogate.
    """
    try:
        check_text(text, field, "it")
    except ValueError as err:
        raise ApiError(400, str(err), field) from None


def _add_status_routes(app: FastAPI, service: _Service, metrics: Metrics) -> None:
    """``/health``, ``/info`` and ``/metrics``."""
    batcher = service.batcher

    @app.get("/health")
    async def health() -> JSONResponse:
        if batcher.error is not None:
            return JSONResponse({"status": "failed", "error": str(batcher.error)}, status_code=503)
        if not batcher.ready.is_set():
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/info")
    async def info() -> dict[str, Any]:
        model = service.loaded()
        identity = model.identity
        size = None
        if batcher.index is not None:  # reloaded first, as a search would: another process may have written
            size = await service.on_model_thread(lambda _, index: (index.refresh(), len(index))[1])
        return {
            "model": identity.name,
            "dimension": model.embedding_dim,
            "backend": identity.backend,
            "precision": identity.precision,
            "config_sha256": identity.config_sha256,
            "device": str(model.device),
            "index_size": size,
            "max_batch_size": service.settings.max_batch_size,
            "max_batch_tokens": service.settings.max_batch_tokens,
        }

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _add_models_routes(app: FastAPI, service: _Service) -> None:
    """``GET /v1/models`` and ``GET /v1/models/{id}``: the served model, as OpenAI clients and gateways probe it."""

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [service.model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        card = service.model_card()
        if model_id != card["id"]:
            raise ApiError(404, f"model {model_id!r} is not served here; this server serves {card['id']!r}",
                           "model", kind="not_found_error")  # fmt: skip
        return card


def _add_model_routes(app: FastAPI, service: _Service) -> None:
    """``POST /v1/embeddings`` and ``POST /search``."""

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest) -> dict[str, Any]:
        model = service.loaded()
        texts = input_texts(body.input, model)
        service.check_texts(texts, "input")
        for field in ("model", "user"):
            if getattr(body, field) is not None:
                check_unicode(getattr(body, field), field)
        if body.dimensions is not None:
            try:
                check_dimension(model, body.dimensions, "dimensions")
            except ValueError as err:
                raise ApiError(400, str(err), "dimensions") from None
        instruction = model.config.query_instruction if body.input_type == "query" else None
        results = await service.embed(texts, instruction)
        return _embedding_response(results, body, model)

    @app.post("/search")
    async def search(body: SearchRequest) -> dict[str, Any]:
        service.loaded()
        if service.batcher.index is None:
            raise ApiError(404, "this server has no index; start it with --index DIR to search", kind="not_found_error")
        queries = [body.query] if isinstance(body.query, str) else list(body.query)
        service.check_texts(queries, "query")
        hits = await service.on_model_thread(lambda _, index: index.search(queries, k=body.k))
        snippet = service.settings.snippet
        return {"results": [{"query": q, "hits": [h.to_dict(snippet=snippet) for h in row]}
                            for q, row in zip(queries, hits, strict=True)]}  # fmt: skip


def input_texts(given: str | list[str] | list[int] | list[list[int]], model: EmbeddingBackend) -> list[str]:
    """The texts of ``input``: strings as they are, token ids (a list, or a list of lists) decoded to their text.

    Ids are read in the model's LLM tokenizer's vocabulary, as text-embeddings-inference reads ids in its own.

    Raises:
        ApiError: 400 for an id outside the vocabulary, naming where it is and the vocabulary's size.
    """
    if isinstance(given, str):
        return [given]
    if not given or isinstance(given[0], str):
        return list(given)  # type: ignore[arg-type]  # pydantic gave a list of strings
    flat = isinstance(given[0], int)
    rows: list[list[int]] = [given] if flat else given  # type: ignore[list-item,assignment]  # pydantic's types
    vocabulary = model.llm_vocabulary_size
    for i, row in enumerate(rows):
        bad = next((j for j, t in enumerate(row) if not 0 <= t < vocabulary), None)
        if bad is not None:
            where = f"input[{bad}]" if flat else f"input[{i}][{bad}]"
            raise ApiError(400, f"{where}={row[bad]} is not a token id of this model's LLM tokenizer "
                                f"(0 to {vocabulary - 1})", "input")  # fmt: skip
    return model.decode_llm_tokens(rows)


def _embedding_response(results: list[Any], body: EmbeddingRequest, model: EmbeddingBackend) -> dict[str, Any]:
    """OpenAI's embeddings list from the pieces' ``(vectors, token counts)``, in request order."""
    data, tokens = [], 0
    for vectors, counts in results:
        tokens += sum(counts)
        if body.dimensions is not None:
            vectors = truncate(np.asarray(vectors), body.dimensions, normalize=True)
        for row in vectors:
            if body.encoding_format == "base64":  # OpenAI's: little-endian float32 bytes
                value: Any = base64.b64encode(row.astype("<f4").tobytes()).decode()
            else:
                value = row.tolist()
            data.append({"object": "embedding", "index": len(data), "embedding": value})
    return {"object": "list", "data": data, "model": body.model or model.name_or_path,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}  # fmt: skip
