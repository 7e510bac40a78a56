"""Small helpers every part of the library shares: dtypes and devices, progress bars, optional imports, atomic writes.

Nothing here knows about models or indexes; it is the one place for the idioms that would otherwise repeat:

- :func:`resolve_dtype`, :func:`default_device`, :func:`auto_dtype`, :func:`check_device`: dtype and device policy;
- :func:`show_progress`, :func:`quiet_transformers_bars`: progress bars follow the ``causal2vec`` log level;
- :func:`require`: import an optional dependency, or name the exact ``pip install``;
- :func:`replace_dir`, :func:`write_atomic`: build aside, then rename into place;
- :func:`file_checksum`: a fast content hash of a data file, recorded by writers and verified by readers.
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Any

import torch

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}

# The extra that brings each optional dependency (pip install 'causal2vec[<extra>]').
EXTRAS = {
    "faiss": "search",
    "onnxruntime": "onnx",
    "onnx": "onnx",
    "peft": "train",
    "sentence_transformers": "st",
    "mteb": "eval",
    "datasets": "train",
    "fastapi": "serve",
    "uvicorn": "serve",
    "prometheus_client": "serve",
}


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """Map ``"float32"``/``"bfloat16"``/``"float16"`` (or the torch dtypes, or ``fp32``/``bf16``/``fp16``) to a dtype.

    Raises:
        ValueError: Naming the value and the allowed ones.
    """
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and _DTYPE_ALIASES.get(dtype, dtype) in DTYPES:
        return DTYPES[_DTYPE_ALIASES.get(dtype, dtype)]
    raise ValueError(f"dtype {dtype!r} is not supported; choose one of {list(DTYPES)}")


def default_device() -> str:
    """``"cuda"`` when a CUDA GPU is visible, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str | torch.device) -> torch.device:
    """Parse a device and check that this torch can use it.

    Raises:
        ValueError: For a string torch cannot parse, or a CUDA device on a torch without CUDA or without a GPU,
            naming the device and what this machine offers.
    """
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not a device; use 'cpu', 'cuda' or 'cuda:N'") from err
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            reason = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"device {str(device)!r} is not available: {reason}; use 'cpu'")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} does not exist: {torch.cuda.device_count()} CUDA GPU(s) visible")
    return parsed


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX); elsewhere bf16 is slower than fp32."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def auto_dtype(dtype: str, device: str | torch.device) -> str:
    """Resolve ``"auto"``: bfloat16 on CUDA and on CPUs with native bfloat16, float32 elsewhere; others pass through."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if torch.device(device).type == "cuda" or cpu_has_bf16() else "float32"


def show_progress(requested: bool | None) -> bool:
    """Progress bars follow the log level unless asked for explicitly: shown at INFO and below."""
    if requested is not None:
        return requested
    return logging.getLogger("causal2vec").getEffectiveLevel() <= logging.INFO


@contextmanager
def quiet_transformers_bars() -> Iterator[None]:
    """Hide transformers' per-call "Loading weights" / "Writing model shards" bars unless causal2vec logs at INFO.

    causal2vec's own bars follow the same rule.
    """
    from transformers.utils import logging as hf_logging

    if show_progress(None) or not hf_logging.is_progress_bar_enabled():
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()


def require(module: str, extra: str | None = None) -> Any:
    """Import an optional dependency, or fail with the exact command that installs it.

    Args:
        module: The module to import, e.g. ``"faiss"``.
        extra: The causal2vec extra that brings it; defaults to the one :data:`EXTRAS` lists.

    Raises:
        ModuleNotFoundError: Naming the module and ``pip install 'causal2vec[<extra>]'``.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is not None and err.name.split(".")[0] != module.split(".")[0]:
            raise  # the module is there but one of its own imports is missing: show that
        extra = extra or EXTRAS.get(module.split(".")[0])
        install = f"pip install 'causal2vec[{extra}]'" if extra else f"pip install {module.split('.')[0]}"
        raise ModuleNotFoundError(f"this needs {module.split('.')[0]}, which is not installed; run: {install}") from err


def package_dir(module: str, install: str) -> Path:
    """The folder of an installed package, found without importing it (some asset packages import heavy extras).

    Raises:
        ModuleNotFoundError: Naming the package and ``install``, the command that installs it.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"the offline asset package {module!r} is not installed; run: {install}")
    return Path(spec.origin).parent


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
