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
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from causal2vec.runtime import require
from causal2vec.serve.batcher import Batcher, Loaded, ShuttingDown

require("fastapi")  # or a ModuleNotFoundError naming pip install 'causal2vec[serve]'
require("prometheus_client")
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse, Response  # noqa: E402
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, StrictStr  # noqa: E402

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


class ApiError(Exception):
    """An error answered in OpenAI's shape with ``status``."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


class EmbeddingRequest(BaseModel):
    """The body of ``POST /v1/embeddings`` (OpenAI's fields, plus ``input_type``)."""

    model_config = ConfigDict(extra="ignore")

    input: StrictStr | list[StrictStr]
    model: StrictStr | None = None
    encoding_format: Literal["float", "base64"] = "float"
    input_type: Literal["query", "document"] = "document"
    dimensions: int | None = None
    user: StrictStr | None = None


class SearchRequest(BaseModel):
    """The body of ``POST /search``."""

    model_config = ConfigDict(extra="forbid")

    query: StrictStr | list[StrictStr]
    k: Annotated[int, Field(ge=1, le=1000)] = 10


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

    The app answers ``/health`` at once and reports ready once the model is loaded.
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

    @app.middleware("http")
    async def access(request: Request, call_next: Callable[[Request], Any]) -> Response:
        path = request.url.path
        if settings.api_key is not None and path != "/health":
            header = request.headers.get("authorization", "")
            given = header[7:] if header[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(given.encode(), settings.api_key.encode()):  # constant time
                response: Response = _error(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                            kind="authentication_error")  # fmt: skip
                metrics.requests.labels(path, "401").inc()
                return response
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.requests.labels(getattr(route, "path", "unmatched"), str(response.status_code)).inc()
        return response

    def loaded() -> Any:
        if batcher.error is not None:
            raise ApiError(503, f"the model failed to load: {batcher.error}", kind="server_error")
        if not batcher.ready.is_set():
            raise ApiError(503, "the model is still loading; retry when GET /health reports ready", kind="server_error")
        return batcher.model

    async def wait(futures: list[Any]) -> list[Any]:
        try:
            return await asyncio.wait_for(asyncio.gather(*(asyncio.wrap_future(f) for f in futures)), settings.timeout)
        except TimeoutError:
            for future in futures:
                future.cancel()
            message = f"the request waited more than --timeout {settings.timeout:g} s"
            raise ApiError(503, message, kind="server_error") from None

    async def embed(texts: list[str], instruction: str | None) -> list[Any]:
        try:
            futures = batcher.submit(texts, instruction)
        except ShuttingDown as err:
            raise ApiError(503, str(err), kind="server_error") from err
        return await wait(futures)

    async def on_model_thread(function: Callable[[Any, Any], Any]) -> Any:
        """Run ``function(model, index)`` in turn with the batches (the index's SQLite connection lives there)."""
        try:
            future = batcher.call(function)
        except ShuttingDown as err:
            raise ApiError(503, str(err), kind="server_error") from err
        return (await wait([future]))[0]

    def check_texts(texts: list[str], field: str) -> None:
        if not texts:
            raise ApiError(400, f"{field} is an empty list; give at least one text", field)
        if len(texts) > settings.max_inputs:
            raise ApiError(413, f"{field} has {len(texts)} texts; at most {settings.max_inputs} (--max-inputs)", field)
        for i, text in enumerate(texts):
            where = field if len(texts) == 1 else f"{field}[{i}]"
            if not text.strip():
                raise ApiError(400, f"{where} is empty; every text needs some content", where)
            if len(text) > settings.max_chars:
                raise ApiError(413, f"{where} has {len(text)} characters; at most {settings.max_chars} (--max-chars)",
                               where)  # fmt: skip

    @app.get("/health")
    async def health() -> JSONResponse:
        if batcher.error is not None:
            return JSONResponse({"status": "failed", "error": str(batcher.error)}, status_code=503)
        if not batcher.ready.is_set():
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/info")
    async def info() -> dict[str, Any]:
        model = loaded()
        precision = getattr(model, "precision", None) or str(model.dtype).removeprefix("torch.")
        size = None
        if batcher.index is not None:
            size = await on_model_thread(lambda _, index: len(index))
        return {
            "model": model.name_or_path,
            "dimension": model.embedding_dim,
            "backend": "onnx" if hasattr(model, "session") else "torch",
            "precision": precision,
            "device": str(model.device),
            "index_size": size,
            "max_batch_size": settings.max_batch_size,
            "max_batch_tokens": settings.max_batch_tokens,
        }

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest) -> dict[str, Any]:
        model = loaded()
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        check_texts(texts, "input")
        if body.dimensions is not None and body.dimensions != model.embedding_dim:
            raise ApiError(400, f"dimensions={body.dimensions}: this model embeds in {model.embedding_dim} dimensions "
                                f"only; leave dimensions out", "dimensions")  # fmt: skip
        instruction = model.config.query_instruction if body.input_type == "query" else None
        results = await embed(texts, instruction)
        data, tokens = [], 0
        for vectors, counts in results:
            tokens += sum(counts)
            for row in vectors:
                if body.encoding_format == "base64":  # OpenAI's: little-endian float32 bytes
                    value: Any = base64.b64encode(row.astype("<f4").tobytes()).decode()
                else:
                    value = row.tolist()
                data.append({"object": "embedding", "index": len(data), "embedding": value})
        return {"object": "list", "data": data, "model": body.model or model.name_or_path,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}  # fmt: skip

    @app.post("/search")
    async def search(body: SearchRequest) -> dict[str, Any]:
        loaded()
        if batcher.index is None:
            raise ApiError(404, "this server has no index; start it with --index DIR to search", kind="not_found_error")
        queries = [body.query] if isinstance(body.query, str) else list(body.query)
        check_texts(queries, "query")
        hits = await on_model_thread(lambda _, index: index.search(queries, k=body.k))
        return {"results": [{"query": q, "hits": [h.to_dict(snippet=settings.snippet) for h in row]}
                            for q, row in zip(queries, hits, strict=True)]}  # fmt: skip

    return app


def run_server(
    load: Callable[[], Loaded], settings: ServeSettings, *, host: str, port: int, log_level: str = "info"
) -> None:
    """Serve :func:`create_app` with uvicorn until SIGTERM or Ctrl-C; returns once the queue is drained.

    uvicorn stops accepting, finishes the open requests, then the app's shutdown drains the batcher. uvicorn then
    raises the signal again under the handler it found; for SIGTERM that is a no-op installed here, so a stop that
    lost nothing returns normally (exit 0, as service managers expect).
    """
    uvicorn = require("uvicorn")
    signal.signal(signal.SIGTERM, lambda *_: None)
    uvicorn.run(create_app(load, settings), host=host, port=port, log_level=log_level)
