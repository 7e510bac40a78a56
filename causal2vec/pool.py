"""Embedding on several devices from one process: one worker process per device, results in the input order.

The approach of sentence-transformers 6's multi-process pool: the model is put in shared memory and handed to
``spawn``-started worker processes (:mod:`torch.multiprocessing`), which take chunks of texts from one queue, so
a faster device takes more of them. Here the parent sorts the texts by length and cuts the sorted list into
chunks of whole batches, so every batch holds the texts a single-process ``encode()`` would put in it; the workers
return float32 embeddings and the parent restores the input order (and quantises, once, over the whole call).

CPU workers (``["cpu", "cpu"]``) share the parent's weights without copying them and split its threads
between them. As with any ``spawn``-based pool, a script that starts one must guard its entry point with
``if __name__ == "__main__":``.
"""

from __future__ import annotations

import logging
import math
import pickle
import queue
import threading
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.multiprocessing as mp
from tqdm.auto import tqdm

from causal2vec.encoding import check_texts, encode_texts, report_truncation
from causal2vec.runtime import check_device, check_int, show_progress

if TYPE_CHECKING:
    from causal2vec.encoding import EmbeddingBackend

logger = logging.getLogger(__name__)

_POLL_S = 1.0  # how often a waiting parent checks that its workers are alive
_CHUNKS_PER_WORKER = 4  # chunks queued per worker and call: enough to balance devices of unequal speed
_STOP = None  # the task that ends a worker


class EncodePool:
    """Worker processes, one per device, that embed texts for a model: a context manager.

    >>> with EncodePool(model, ["cuda:0", "cuda:1"]) as pool:  # doctest: +SKIP
    ...     embeddings = model.encode(texts, pool=pool)  # or pool.encode(texts)

    Start-up (a Python process per device, importing torch and receiving the model) is paid once per pool. The
    workers hold the model as it was when the pool started; CPU workers share its weights with the parent, so a
    change made in place (training) reaches them, while a cast or a move of the parent's model does not.
    ``model.encode(texts, device=[...])`` starts and closes a pool for a single call.
    """

    def __init__(self, model: EmbeddingBackend, devices: Sequence[str | torch.device]) -> None:
        """Start one worker per device and wait until each holds the model.

        Args:
            model: The model to embed with (a torch model; it must pickle into the workers).
            devices: One device per worker, e.g. ``["cuda:0", "cuda:1"]`` or ``["cpu", "cpu"]``.

        Raises:
            ValueError: For an empty list or a device this machine does not have.
            TypeError: If the model cannot be sent to worker processes.
            RuntimeError: If a worker fails to start or to load the model; the worker's error is chained.
        """
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"EncodePool runs torch models (Causal2Vec); got a {type(model).__name__}")
        self.devices = _check_devices(devices)
        self.model = model
        self._lock = threading.Lock()
        self._calls = 0
        self._closed = False
        context = mp.get_context("spawn")
        self._tasks: Any = context.Queue()
        self._results: Any = context.Queue()
        self._processes: list[Any] = []
        try:
            with _shared_on_cpu(model):
                for index, device in enumerate(self.devices):
                    self._processes.append(self._start_worker(context, index, device))
                self._wait_until_ready()
        except BaseException:
            self.close()
            raise
        logger.info("encode pool started: %d workers on %s", len(self.devices), ", ".join(self.devices))

    def _start_worker(self, context: Any, index: int, device: str) -> Any:
        """Start worker ``index`` on ``device`` (CPU workers share the parent's threads equally)."""
        cpu_workers = sum(d == "cpu" for d in self.devices)
        threads = max(1, torch.get_num_threads() // cpu_workers) if device == "cpu" else None
        args = (index, device, threads, self.model, self._tasks, self._results)
        process = context.Process(target=_worker_main, args=args, daemon=True, name=f"causal2vec-encode-{index}")
        try:
            process.start()
        except (TypeError, pickle.PicklingError) as err:
            raise TypeError(
                f"a {type(self.model).__name__} cannot be sent to worker processes ({err}); EncodePool runs "
                f"torch models (Causal2Vec)"
            ) from err
        return process

    def _wait_until_ready(self) -> None:
        """Wait for each worker's "loaded" message; a worker's loading error is raised here."""
        for _ in self.devices:
            kind, index, error = self._next_result()
            if kind == "failed":
                raise RuntimeError(f"the encode worker on {self.devices[index]} failed to load the model") from error

    def encode(self, texts: Any, **options: Any) -> np.ndarray | torch.Tensor:
        """``model.encode(texts, pool=self, **options)``: embed in the workers (see :class:`EncodeOptions`)."""
        return self.model.encode(texts, pool=self, **options)

    def encode_floats(
        self,
        texts: object,
        *,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        max_length: int | None = None,
        **options: Any,
    ) -> np.ndarray:
        """Float32 embeddings of ``texts`` computed by the workers, in the input order (``encode_texts``'s result).

        Args:
            texts: One string or a list of strings.
            batch_size: Texts per forward pass; chunks are whole batches of the length-sorted texts.
            show_progress_bar: A bar over the chunks; ``None`` shows one when logging is at INFO or below.
            max_length: Cap both token budgets for this call.
            **options: ``instruction`` and ``normalize``, as for :func:`~causal2vec.encoding.encode_texts`.

        Raises:
            RuntimeError: If the pool is closed or a worker died; a worker's own error is re-raised as it was.
        """
        texts, single = check_texts(texts)
        check_int("batch_size", batch_size, minimum=1)
        options = {**options, "batch_size": batch_size, "max_length": max_length, "show_progress_bar": False}
        order = np.argsort([-len(t) for t in texts], kind="stable")  # as encode_texts sorts
        chunk = batch_size * max(1, math.ceil(len(texts) / batch_size / (_CHUNKS_PER_WORKER * len(self.devices))))
        chunks = [order[start : start + chunk] for start in range(0, len(texts), chunk)]
        with self._lock:
            pieces, truncated = self._run([[texts[i] for i in rows] for rows in chunks], options, show_progress_bar)
        report_truncation(self.model, truncated, len(texts), max_length, None)
        out = np.empty((len(texts), self.model.embedding_dim), dtype=np.float32)
        for rows, piece in zip(chunks, pieces, strict=True):
            out[rows] = piece
        return out[0] if single else out

    def _run(self, chunks: list[list[str]], options: dict[str, Any], progress: bool | None) -> tuple[list, int]:
        """Queue the chunks, collect one result per chunk, and raise the first worker error after all are in."""
        if self._closed:
            raise RuntimeError("this EncodePool is closed; start a new one")
        self._calls += 1
        call = self._calls
        for index, texts in enumerate(chunks):
            self._tasks.put((call, index, texts, options))
        pieces: list[Any] = [None] * len(chunks)
        truncated = 0
        disable = not show_progress(progress) or len(chunks) < 2
        with tqdm(total=len(chunks), desc="Chunks", disable=disable) as bar:
            while any(piece is None for piece in pieces):
                kind, (result_call, index, count), payload = self._next_result()
                if kind == "chunk" and result_call == call:  # results of an interrupted earlier call are dropped
                    pieces[index], truncated = payload, truncated + count
                    bar.update()
        for piece in pieces:
            if isinstance(piece, BaseException):
                raise piece
        return pieces, truncated

    def _next_result(self) -> Any:
        """The next message from a worker, checking while waiting that none has died."""
        while True:
            try:
                return self._results.get(timeout=_POLL_S)
            except queue.Empty:
                pass
            dead = [(d, p) for d, p in zip(self.devices, self._processes, strict=False) if not p.is_alive()]
            if dead:
                self._closed = True
                details = ", ".join(f"{d} (pid {p.pid}, exit code {p.exitcode})" for d, p in dead)
                raise RuntimeError(f"encode worker(s) died: {details}; close this EncodePool and start a new one")

    def close(self, timeout: float = 30.0) -> None:
        """Stop the workers (those still busy after ``timeout`` seconds are terminated); calling it again is a no-op."""
        self._closed = True
        if self._tasks is None:
            return
        processes, self._processes = self._processes, []
        for _ in processes:
            self._tasks.put(_STOP)
        for process in processes:
            process.join(timeout)
            if process.is_alive():
                process.terminate()
                process.join()
        self._tasks.cancel_join_thread()
        self._tasks.close()
        self._results.close()
        self._tasks = self._results = None

    def __enter__(self) -> EncodePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _check_devices(devices: Sequence[str | torch.device]) -> list[str]:
    """The devices as strings, each available here.

    Raises:
        ValueError: For an empty list or an unavailable device, naming it.
    """
    if isinstance(devices, str | torch.device) or not devices:
        raise ValueError(
            f"devices must be a non-empty list, e.g. ['cuda:0', 'cuda:1'] or ['cpu', 'cpu']; got {devices!r}"
        )
    return [str(check_device(device)) for device in devices]


@contextmanager
def _shared_on_cpu(model: Any) -> Iterator[None]:
    """Put the model's weights in shared CPU memory while workers receive it, then move it back where it was."""
    device = model.device
    model.to("cpu").share_memory()
    try:
        yield
    finally:
        model.to(device)


def _worker_main(index: int, device: str, threads: int | None, model: Any, tasks: Any, results: Any) -> None:
    """A worker process: load the model on ``device``, then embed chunks until told to stop."""
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        if torch.device(device).type == "cuda" and torch.device(device).index is not None:
            torch.cuda.set_device(device)  # so that kernels and caches of this worker live on its own GPU
        model = model.to(device).eval()
    except Exception as err:
        results.put(("failed", index, _picklable(err, device)))
        return
    results.put(("loaded", index, None))
    while (task := tasks.get()) is not _STOP:
        call, chunk, texts, options = task
        try:
            embeddings, truncated = _embed_chunk(model, texts, options)
            results.put(("chunk", (call, chunk, truncated), embeddings))
        except Exception as err:
            results.put(("chunk", (call, chunk, 0), _picklable(err, device)))


def _embed_chunk(model: Any, texts: list[str], options: dict[str, Any]) -> tuple[np.ndarray, int]:
    """Float32 embeddings of one chunk, and how many of its texts were truncated."""
    counts: list[int] = []
    embeddings = encode_texts(model, texts, on_truncated=lambda n, _total: counts.append(n), **options)
    return embeddings, sum(counts)


def _picklable(err: Exception, device: str) -> BaseException:
    """``err`` with a note naming the worker, or a RuntimeError with its traceback when it does not pickle."""
    err.add_note(f"raised in the encode worker on {device}")
    try:
        pickle.loads(pickle.dumps(err))
    except Exception:
        return RuntimeError(f"the encode worker on {device} failed:\n{''.join(traceback.format_exception(err))}")
    return err
