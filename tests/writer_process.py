"""A writer of a semantic index in its own process, paused while it holds the writer lock.

``python -m tests.writer_process MODE INDEX READY GATE [N]`` runs one writer: ``build``, ``overwrite``, ``append``,
``delete`` or ``compact``. Once it is in flight (lock held, changes staged) it creates the file READY and waits until
the file GATE exists, then finishes. It prints ``OK <count>``, ``BUSY <message>`` or ``INTERRUPTED`` and exits 0, 3
or 130.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from causal2vec.search import IndexBusyError, SemanticIndex
from tests.helpers import HashEmbedder, docs


def wait_at_gate(ready: Path, gate: Path) -> None:
    ready.touch()
    deadline = time.monotonic() + 120
    while not gate.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{gate} never appeared")
        time.sleep(0.02)


class GatedEmbedder(HashEmbedder):
    """Stops at the gate on its first forward pass: the writer holds the lock and has staged a chunk."""

    def __init__(self, ready: Path, gate: Path) -> None:
        super().__init__()
        self.ready, self.gate = ready, gate

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        if not self.ready.exists():
            wait_at_gate(self.ready, self.gate)
        return super().forward(rows)


def run(mode: str, path: Path, ready: Path, gate: Path, n: int) -> int:
    model = GatedEmbedder(ready, gate)
    if mode in ("build", "overwrite"):
        index = SemanticIndex.build(path, model, docs(n, prefix="new"), overwrite=mode == "overwrite", chunk_size=8)
        return index.manifest.count
    index = SemanticIndex.load(path, model=model)
    if mode == "append":
        index.add(docs(n, prefix="more"), chunk_size=8)
    elif mode == "delete":
        index.delete([f"d{i}" for i in range(n)])
        wait_at_gate(ready, gate)
    elif mode == "compact":
        index.delete([f"d{i}" for i in range(n)])
        index.compact()
        wait_at_gate(ready, gate)
    index.save()
    return index.manifest.count


def main() -> int:
    mode, path, ready, gate = sys.argv[1], *map(Path, sys.argv[2:5])
    try:
        count = run(mode, path, ready, gate, int(sys.argv[5]) if len(sys.argv) > 5 else 20)
    except IndexBusyError as err:
        print(f"BUSY {err}", flush=True)
        return 3
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
        return 130
    print(f"OK {count}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
