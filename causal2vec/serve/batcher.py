"""Dynamic batching: texts from concurrent requests are embedded together by the one thread that owns the model.

Request handlers call :meth:`Batcher.submit` and await the futures it returns; the model thread takes the queued
pieces in arrival order, up to ``max_batch_size`` texts or ``max_batch_tokens`` tokens, waiting at most
``max_wait_ms`` for more once it has the first, and embeds them with the model's own ``encode``. The model, its
tokenizers and the index (whose SQLite connection belongs to the thread that opened it) are used by that thread only,
so nothing runs concurrently with itself; :meth:`Batcher.call` runs any other work on them (a search) in turn.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from causal2vec.encoding import EmbeddingBackend
    from causal2vec.search import SemanticIndex

logger = logging.getLogger(__name__)

Loaded = tuple["EmbeddingBackend", "SemanticIndex | None"]  # the model, and the index it searches (if any)


class ShuttingDown(RuntimeError):
    """The batcher no longer accepts work (the server is stopping, or the model failed to load)."""


@dataclass
class Piece:
    """Texts of one request (at most ``max_batch_size`` of them) with one instruction, and the caller's future.

    The future's result is ``(embeddings (n, dim) float32, tokens per text)``.
    """

    texts: list[str]
    instruction: str | None
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)
    tokens: list[int] = field(default_factory=list)


@dataclass
class Call:
    """A function of ``(model, index)`` to run on the model thread between batches; the future gets its result."""

    function: Callable[[Any, Any], Any]
    future: Future = field(default_factory=Future)


_STOP = object()


class Batcher:
    """Owns the model on one thread and embeds queued pieces in dynamic batches.

    Args:
        load: Returns ``(model, index or None)``; it runs on the model thread, which then owns both.
        max_batch_size: Texts per batch at most.
        max_batch_tokens: Tokens (encoder and LLM, after truncation) per batch at most; a single piece may exceed it.
        max_wait_ms: How long a batch waits for more pieces once it has its first.
        max_length: Token budget for every text (``None``: the model's own budgets).
        observe: Called on the model thread after each batch with ``(texts, queue seconds of each piece, encode
            seconds)``, for metrics.
    """

    def __init__(
        self,
        load: Callable[[], Loaded],
        *,
        max_batch_size: int = 32,
        max_batch_tokens: int = 16384,
        max_wait_ms: float = 5.0,
        max_length: int | None = None,
        observe: Callable[[int, list[float], float], None] | None = None,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_wait = max_wait_ms / 1000
        self.max_length = max_length
        self.model: EmbeddingBackend | None = None
        self.index: SemanticIndex | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self._load = load
        self._observe = observe
        self._queue: queue.Queue[Any] = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()  # orders "closed" against submissions, so nothing lands behind the stop mark
        self._thread = threading.Thread(target=self._run, name="causal2vec-model", daemon=True)

    # ------------------------------------------------------------------ the callers' side

    def start(self) -> None:
        """Start the model thread: it loads the model, then serves the queue."""
        self._thread.start()

    def submit(self, texts: list[str], instruction: str | None) -> list[Future]:
        """Queue ``texts`` in pieces of at most ``max_batch_size``; returns one future per piece, in order.

        Raises:
            ShuttingDown: If :meth:`close` was called or the model failed to load.
        """
        pieces = [
            Piece(texts[start : start + self.max_batch_size], instruction)
            for start in range(0, len(texts), self.max_batch_size)
        ]
        self._put(*pieces)
        return [piece.future for piece in pieces]

    def call(self, function: Callable[[Any, Any], Any]) -> Future:
        """Run ``function(model, index)`` on the model thread, in turn with the batches; returns its future.

        Raises:
            ShuttingDown: If :meth:`close` was called or the model failed to load.
        """
        item = Call(function)
        self._put(item)
        return item.future

    def _put(self, *items: Piece | Call) -> None:
        with self._lock:
            if self._closed or self.error is not None:
                raise ShuttingDown(
                    "the server is shutting down" if self._closed else f"the model failed to load: {self.error}"
                )
            for item in items:
                self._queue.put(item)

    def close(self, timeout: float | None = None) -> None:
        """Accept nothing more, finish everything already queued, and stop the model thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ------------------------------------------------------------------ the model thread

    def _run(self) -> None:
        try:
            self.model, self.index = self._load()
        except BaseException as err:  # reported by /health and to every caller (run_server then stops)
            logger.error("the model failed to load: %s", err, exc_info=logger.isEnabledFor(logging.DEBUG))
            self.error = err
            self._fail_queued(err)
            return
        finally:
            self.ready.set()
        carry: Any = None
        while True:
            item = carry if carry is not None else self._queue.get()
            carry = None
            if item is _STOP:
                return
            if isinstance(item, Call):
                self._run_call(item)
                continue
            batch, carry = self._collect(item)
            if batch:
                self._embed(batch)

    def _collect(self, first: Piece) -> tuple[list[Piece], Any]:
        """The batch that starts with ``first``, and the item that did not fit (or ``None``)."""
        batch: list[Piece] = []
        rows = tokens = 0
        deadline = time.monotonic() + self.max_wait
        item: Any = first
        while True:
            if isinstance(item, Piece) and self._start(item):
                item_tokens = sum(item.tokens)
                if batch and (
                    rows + len(item.texts) > self.max_batch_size or tokens + item_tokens > self.max_batch_tokens
                ):
                    return batch, item
                batch.append(item)
                rows, tokens = rows + len(item.texts), tokens + item_tokens
            elif not isinstance(item, Piece):  # a call or the stop mark: it waits for this batch
                return batch, item
            if rows >= self.max_batch_size or tokens >= self.max_batch_tokens:
                return batch, None
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return batch, None

    def _start(self, piece: Piece) -> bool:
        """Claim a piece (False if its caller gave up) and count its tokens, which decide where the batch ends."""
        if piece.tokens:  # carried over from the last batch: already claimed and counted
            return True
        if not piece.future.set_running_or_notify_cancel():
            return False
        try:
            # Tokenising twice (here to count, in encode to embed) costs far less than a forward pass; it keeps
            # the embeddings those of the model's own encode().
            features = self.model.tokenize(piece.texts, self.model.config.format_instruction(piece.instruction),
                                           max_length=self.max_length)  # fmt: skip
            counts = features["encoder_attention_mask"].sum(1) + features["llm_attention_mask"].sum(1)
            piece.tokens = [int(n) for n in counts]
        except Exception as err:  # this caller's input only; the rest of the batch goes on
            piece.future.set_exception(err)
            return False
        return True

    def _embed(self, batch: list[Piece]) -> None:
        started = time.monotonic()
        groups: dict[str | None, list[Piece]] = {}
        for piece in batch:  # one encode per instruction: the prompt is shared by a whole forward pass
            groups.setdefault(piece.instruction, []).append(piece)
        for instruction, pieces in groups.items():
            texts = [text for piece in pieces for text in piece.texts]
            try:
                vectors = self.model.encode(texts, instruction=instruction, batch_size=len(texts),
                                            show_progress_bar=False, max_length=self.max_length)  # fmt: skip
            except Exception as err:  # fails these pieces only
                for piece in pieces:
                    piece.future.set_exception(err)
                continue
            vectors = np.asarray(vectors, dtype=np.float32)
            start = 0
            for piece in pieces:
                piece.future.set_result((vectors[start : start + len(piece.texts)], piece.tokens))
                start += len(piece.texts)
        if self._observe is not None:
            self._observe(sum(len(p.texts) for p in batch), [started - p.enqueued for p in batch],
                          time.monotonic() - started)  # fmt: skip

    def _run_call(self, item: Call) -> None:
        if not item.future.set_running_or_notify_cancel():
            return
        try:
            item.future.set_result(item.function(self.model, self.index))
        except Exception as err:
            item.future.set_exception(err)

    def _fail_queued(self, err: BaseException) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, Piece | Call) and item.future.set_running_or_notify_cancel():
                item.future.set_exception(ShuttingDown(f"the model failed to load: {err}"))
