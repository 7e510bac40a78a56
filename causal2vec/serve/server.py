"""Running the app under uvicorn: graceful SIGTERM, slow clients cut off, and an exit when the model cannot load.

uvicorn times out idle keep-alive connections only: a client that opens a connection and sends its headers (or its
body) a byte at a time holds it for ever. :func:`run_server` watches uvicorn's connections beside the server and
closes those that have owed it the rest of a request for longer than ``--read-timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

from causal2vec.runtime import require
from causal2vec.serve.app import ServeSettings, create_app
from causal2vec.serve.batcher import Batcher, Loaded

logger = logging.getLogger(__name__)


def run_server(
    load: Callable[[], Loaded], settings: ServeSettings, *, host: str, port: int, log_level: str = "info"
) -> None:
    """Serve :func:`create_app` with uvicorn until SIGTERM or Ctrl-C; returns once the queue is drained.

    uvicorn stops accepting, finishes the open requests, then the app's shutdown drains the batcher. uvicorn then
    raises the signal again under the handler it found; for SIGTERM that is a no-op installed here, so a stop that
    lost nothing returns normally (exit 0, as service managers expect).

    Raises:
        Exception: The error that stopped the model from loading (the server stops at once rather than answer 503
            for ever), so the command line reports it as it would for ``index`` or ``search``.
    """
    uvicorn = require("uvicorn")
    signal.signal(signal.SIGTERM, lambda *_: None)
    app = create_app(load, settings)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level))
    asyncio.run(serve(server, app.state.batcher, settings.read_timeout))
    if app.state.batcher.error is not None:
        raise app.state.batcher.error


async def serve(server: Any, batcher: Batcher, read_timeout: float) -> None:
    """Run a ``uvicorn.Server`` of :func:`create_app`'s app with :func:`supervise` beside it."""
    watchdog = asyncio.create_task(supervise(server, batcher, read_timeout))
    try:
        await server.serve()
    finally:
        watchdog.cancel()


async def supervise(server: Any, batcher: Batcher, read_timeout: float, every: float = 0.5) -> None:
    """Close connections that owe a request for more than ``read_timeout`` s; stop the server if loading failed.

    A connection owes a request while it has none (``cycle`` is ``None``), has finished its last one, or is
    still sending a body (``more_body``); uvicorn's h11 and httptools protocols both keep that state.
    """
    owing: dict[Any, tuple[Any, float]] = {}  # connection -> (its request cycle, when it started owing)
    while True:
        await asyncio.sleep(every)
        if batcher.error is not None and not server.should_exit:
            logger.error("the model failed to load (%s); stopping the server", batcher.error)
            server.should_exit = True
        now = time.monotonic()
        for connection in list(server.server_state.connections):
            cycle = getattr(connection, "cycle", None)
            if cycle is not None and not cycle.response_complete and not cycle.more_body:
                owing.pop(connection, None)  # the request is in, and the server is answering it
                continue
            seen, since = owing.setdefault(connection, (cycle, now))
            if seen is not cycle:
                owing[connection] = (cycle, now)
            elif now - since > read_timeout:
                logger.info("closing a connection that sent no complete request in %g s", read_timeout)
                connection.transport.close()
        for gone in owing.keys() - set(server.server_state.connections):
            del owing[gone]
