"""An index on a nearly full disk: an append that fails for want of space, then a delete once a little is freed.

``python -m tests.full_disk_process FOLDER SPARE_KB`` expects FOLDER to be an empty, small file system of its own (a
tmpfs of a few hundred KB). It builds an index there, fills all but about 150 KB, holds SPARE_KB of that in a
file, appends until the disk is full, frees the spare file and deletes one document; the append and the delete run
in processes of their own, as two commands would. It prints one line per step: ``APPEND <errno> <message>`` (or
``APPEND OK <count>``), ``AFTER <files in the index folder>``, ``DELETE OK <count>`` (or ``DELETE <errno>
<message>``) and ``LEFT <files in the index folder>``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from causal2vec.search import SemanticIndex
from tests.helpers import HashEmbedder, docs


def free_bytes(folder: Path) -> int:
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def step(name: str, action) -> None:
    try:
        result = action()
    except OSError as err:
        print(f"{name} {err.errno} {err}", flush=True)
        return
    print(f"{name} OK {result}", flush=True)


def append(path: Path) -> int:
    big = [{"id": f"b{i}", "text": f"{i} " + "words of a long document " * 16} for i in range(600)]
    with SemanticIndex.load(path, model=HashEmbedder()) as index:
        index.add(big, chunk_size=50)
        index.save()
        return len(index)


def delete(path: Path) -> int:
    with SemanticIndex.load(path, model=HashEmbedder()) as index:
        index.delete(["d1"])
        index.save()
        return len(index)


def main() -> int:
    if sys.argv[1] in ("APPEND", "DELETE"):  # a child: one step
        step(sys.argv[1], lambda: {"APPEND": append, "DELETE": delete}[sys.argv[1]](Path(sys.argv[2])))
        return 0
    root, spare_kb = Path(sys.argv[1]), int(sys.argv[2])
    path = root / "idx"
    SemanticIndex.build(path, HashEmbedder(), docs(20)).close()
    (root / "filler").write_bytes(b"\0" * (free_bytes(root) - 150 * 1024))
    (root / "spare").write_bytes(b"\0" * spare_kb * 1024)
    child = [sys.executable, "-m", "tests.full_disk_process"]
    subprocess.run([*child, "APPEND", str(path)], check=True)
    print("AFTER", " ".join(sorted(p.name for p in path.iterdir())), flush=True)
    (root / "spare").unlink()
    subprocess.run([*child, "DELETE", str(path)], check=True)
    print("LEFT", " ".join(sorted(p.name for p in path.iterdir())), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
