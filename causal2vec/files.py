"""Durable files: atomic writes and folder swaps, checksums, and reading the files a folder's metadata names.

Every writer of the library builds aside and renames into place, and every reader checks what it opens; the
idioms live here once:

- :func:`replace_dir`, :func:`write_atomic`, :func:`fsync_dir`: build aside, flush, then rename into place;
- :func:`remove_stale_siblings`: clear what a writer killed outright left beside its target;
- :func:`file_checksum`, :func:`verify_checksum`: a fast content hash, recorded by writers and verified by readers;
- :func:`member_path`, :func:`entry_names`: the files inside a folder, and only those;
- :func:`read_json_object`: a JSON metadata file that must hold one object.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any

logger = logging.getLogger(__name__)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (renames, new files) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def replace_dir(target: Path) -> Iterator[Path]:
    """Build a folder aside, then rename it into place; the ``with`` block writes into the folder it is given.

    The folder is built as a hidden sibling (``.name.tmp-<8 hex>-<pid>``), so it is on the same file system and the
    final rename is atomic. An existing ``target`` is renamed aside first (``.name.old-<8 hex>-<pid>``) and removed
    only after the new folder is in place; if that rename fails, it is put back. On any error, Ctrl-C included, the
    partial folder is removed and ``target`` is as it was. A process killed outright leaves these two names behind,
    and :func:`remove_stale_siblings` clears exactly them.

    Args:
        target: The folder to create or replace.
    """
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{uuid.uuid4().hex[:8]}-{os.getpid()}"
    tmp, old = target.with_name(f".{target.name}.tmp-{tag}"), target.with_name(f".{target.name}.old-{tag}")
    tmp.mkdir()
    try:
        yield tmp
        if target.exists() or target.is_symlink():
            target.rename(old)
        try:
            tmp.rename(target)
        except OSError:
            if old.exists():
                old.rename(target)
            raise
        fsync_dir(target.parent)
    finally:
        for leftover in (tmp, old):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)  # a file that stood at ``target``


def remove_stale_siblings(target: Path) -> None:
    """Clear what :func:`replace_dir` left next to ``target`` when its process was killed outright.

    Only the two names it writes count, ``.name.tmp-<8 hex>-<pid>`` and ``.name.old-<8 hex>-<pid>``, and only when
    that process is no longer alive; anything else beside the target (a user's ``.name.bak-20261201``, say) is left
    alone. A ``.old`` folder is the previous ``target``: when a kill fell between the two renames and ``target`` is
    missing, it is renamed back instead of removed.
    """
    target = Path(target).absolute()
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(tmp|old)-[0-9a-f]{{8}}-([0-9]+)")
    for stale in sorted(target.parent.glob(f".{glob.escape(target.name)}.*-*")):
        match = pattern.fullmatch(stale.name)
        if match is None or stale.is_symlink() or not stale.is_dir() or _alive(int(match[2])):
            continue
        if match[1] == "old" and not (target.exists() or target.is_symlink()):
            logger.warning("restoring %s from %s, left by a process killed while replacing it", target, stale.name)
            stale.rename(target)
        else:
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_atomic(path: Path, write: Callable[[IO[Any]], object], *, binary: bool = False) -> None:
    """Write a file aside, flush it to disk, and rename it over ``path``: readers see the old or the new file.

    Args:
        path: The file to create or replace.
        write: Writes the content into the open file it is given.
        binary: Open the file in binary mode (text mode, UTF-8, otherwise).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def member_path(folder: Path, name: str, what: str) -> Path:
    """``folder / name`` for a file a folder's own metadata names, refused unless it stays inside ``folder``.

    The name must be relative, in POSIX form, without ``..``; and the file it names, symlinks followed, must lie
    inside ``folder``. A hub snapshot's links into its repository's blob store (``<repo>/snapshots/<rev>/x`` →
    ``<repo>/blobs/<hash>``, how ``huggingface_hub`` stores downloads) count as inside. Nothing is opened.

    Raises:
        ValueError: Naming the name, the folder and the rule, so a crafted config cannot make a loader read (or
            hash, or test the existence of) a file elsewhere on the machine.
    """
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or ".." in pure.parts or "\\" in name or "\x00" in name:
        raise ValueError(f"{what} {name!r} named by {folder} is not a plain relative path inside that folder; refused")
    path = Path(folder) / name
    resolved, root = path.resolve(), Path(folder).resolve()
    roots = [root, root.parent.parent / "blobs"] if root.parent.name == "snapshots" else [root]
    if not any(resolved.is_relative_to(r) for r in roots):
        raise ValueError(f"{what} {path} resolves to {resolved}, outside {folder} (a symlink?); refused")
    return path


def entry_names(folder: Path, root: Path | None = None) -> list[str]:
    """Every file and folder under ``folder``, as POSIX names relative to ``root`` (default ``folder``).

    Links are listed, not followed (``os.walk``), so a linked folder is named itself rather than entered.
    """
    root = folder if root is None else root
    names: list[str] = []
    for top, dirs, files in os.walk(folder):
        names += [(Path(top) / name).relative_to(root).as_posix() for name in (*dirs, *files)]
    return names


CHECKSUM_ALGORITHM = "xxh3_128"  # about 8x faster than SHA-256 here (bench/checksum.py)


def file_checksum(path: Path, block: int = 1 << 20) -> str:
    """A fast content hash of a file, ``"xxh3_128:<hex>"``, read into one reused 1 MiB buffer (memory stays flat)."""
    import xxhash

    digest = xxhash.xxh3_128()
    buffer = bytearray(block)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return f"{CHECKSUM_ALGORITHM}:{digest.hexdigest()}"


def sampled_checksum(path: Path, blocks: int = 64, block: int = 1 << 16) -> str:
    """A hash of ``blocks`` evenly spaced blocks of a file and its size, first and last block included.

    It reads at most ``blocks * block`` bytes (4 MiB by default) whatever the file's size, so it can be checked on
    every load of a file too large to hash in full; a change outside the sampled blocks goes unnoticed (a full
    :func:`file_checksum` finds it).
    """
    import xxhash

    size = path.stat().st_size
    digest = xxhash.xxh3_128(str(size).encode())
    starts = {0} if size <= block else {round(i * (size - block) / max(blocks - 1, 1)) for i in range(blocks)}
    with open(path, "rb", buffering=0) as f:
        for start in sorted(starts):
            f.seek(start)
            digest.update(f.read(block))
    return f"{CHECKSUM_ALGORITHM}-sampled:{digest.hexdigest()}"


def verify_checksum(path: Path, expected: str | None, what: str) -> None:
    """Compare a file with its recorded checksum (``None``: written before checksums were recorded, not checked).

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: If its content differs from what was written, naming the file.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} is missing")
    if expected is None:
        return
    actual = file_checksum(path)
    if actual != expected:
        raise ValueError(
            f"{what} {path} is corrupt: its checksum is {actual}, but {expected} was recorded when it was written"
        )


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object a UTF-8 metadata file holds (a config, a manifest, a stamp).

    Args:
        path: The file to read.
        what: What the file is, for the messages (``"Causal2Vec config file"``).

    Raises:
        FileNotFoundError: If there is no such file, naming it.
        ValueError: If it is not valid UTF-8 JSON, or holds something other than an object, naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"corrupt {what} {path}: not valid UTF-8 JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"corrupt {what} {path}: expected a JSON object, not {type(data).__name__}")
    return data
