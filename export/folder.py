"""Self-contained ONNX exports: a folder that serves a Causal2Vec model without its torch weights.

::

    DIR/
      causal2vec_config.json   the model's config, with the checksum of every file below
      encoder/, llm/           the two tokenizers (and, with keep_torch, the weights: DIR is then also a checkpoint)
      onnx/model.onnx          the whole forward pass: token ids and masks in, raw float32 embeddings out
      onnx/model.onnx.data     the weights, when the graph passes 2 GB (or when asked)
      onnx/manifest.json       source fingerprint, precision, opset, onnxruntime version, parity, fusions

:func:`export_folder` builds it aside and renames it into place, and only once the graph has matched torch: a
graph that breaks parity is refused with the figures and nothing is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from causal2vec import Causal2Vec
from causal2vec.backends.onnx import (
    INPUT_NAMES,
    MANIFEST_FILE,
    ONNX_FILE,
    PRECISION_KEY,
    ExportManifest,
    OnnxCausal2Vec,
    require_onnxruntime,
)
from causal2vec.checkpoint import write_checkpoint_files
from causal2vec.config import CONFIG_NAME
from causal2vec.files import entry_names, file_checksum, read_json_object, remove_stale_siblings, replace_dir
from causal2vec.identity import Precision
from export import transforms
from export.onnx_export import DEFAULT_OPSET, FP16_OPSET, Parity, check_opset, check_parity, trace_onnx

logger = logging.getLogger(__name__)

# What each precision must keep of torch's float32 embeddings (cosine per text, relative max error).
PARITY_LIMITS: dict[str, tuple[float, float]] = {"fp32": (0.9999, 1e-3), "fp16": (0.999, 2e-2), "int8": (0.98, 1.0)}


class ParityError(ValueError):
    """An export whose graph does not reproduce torch closely enough; nothing was written."""

    def __init__(self, message: str, parity: Parity) -> None:
        super().__init__(message)
        self.parity = parity


@dataclass(frozen=True)
class ExportOptions:
    """What :func:`export_folder` writes.

    Attributes:
        opset: The ONNX opset (see :func:`export.onnx_export.supported_opsets`); ``None`` for the default of the
            precision: :data:`~export.onnx_export.FP16_OPSET` for fp16, :data:`~export.onnx_export.DEFAULT_OPSET`
            otherwise.
        fp16: A float16 graph for GPUs (float32 inputs and outputs).
        optimize: Apply onnxruntime's transformer fusions first.
        int8: An int8 graph for CPUs (see :func:`export.transforms.quantize_int8`).
        keep_torch: Also write the torch weights, so the folder is a checkpoint too.
        external_data: Weights in ``model.onnx.data``: ``None`` when the graph passes 2 GB, or forced on / off.
    """

    opset: int | None = None
    fp16: bool = False
    optimize: bool = False
    int8: bool = False
    keep_torch: bool = False
    external_data: bool | None = None

    def __post_init__(self) -> None:
        if self.fp16 and self.int8:
            raise ValueError("fp16 and int8 exclude each other: fp16 is for GPUs, int8 for CPUs; choose one")
        if self.opset is None:
            object.__setattr__(self, "opset", FP16_OPSET if self.fp16 else DEFAULT_OPSET)  # frozen: set once, here
        check_opset(self.opset)

    @property
    def precision(self) -> Precision:
        """``fp16``, ``int8`` or ``fp32``."""
        return "fp16" if self.fp16 else "int8" if self.int8 else "fp32"


@dataclass
class ExportReport:
    """What :func:`export_folder` wrote and how it checked it.

    Attributes:
        folder: The export folder.
        manifest: The manifest written into it.
        parity: The comparison with torch, or ``None`` when no provider here could run the graph.
    """

    folder: Path
    manifest: ExportManifest
    parity: Parity | None


def check_output(output: Path, source: Path | None) -> None:
    """Refuse an output folder inside the source checkpoint, or one that holds anything an export does not write.

    An earlier export may be replaced: its config lists every file it wrote (with their checksums), so a file or
    folder a user added to it is found and the folder is refused rather than replaced with it.

    Raises:
        ValueError: Naming the folder, what is in the way, and what to do instead.
    """
    output = output.expanduser().absolute()
    _check_no_broken_link(output)
    if source is not None and source.is_dir() and output.resolve().is_relative_to(source.resolve()):
        raise ValueError(
            f"--output {output} is inside the source model {source}; write the export to a folder of its own "
            f"(add --keep-torch to carry the torch weights along)"
        )
    if output.is_file():
        raise ValueError(f"--output {output} is a file; name a new folder")
    if not output.is_dir() or not any(output.iterdir()):
        return
    if not (output / MANIFEST_FILE).is_file():
        raise ValueError(
            f"--output {output} exists and is not an ONNX export (it has no {MANIFEST_FILE}); name a new folder"
        )
    foreign = _not_written_by_export(output)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ValueError(
            f"--output {output} is an earlier export that also holds what an export does not write ({shown}); "
            f"replacing it would delete them. Move them out, or name a new folder"
        )


def _check_no_broken_link(output: Path) -> None:
    """Refuse an output whose path runs through a symlink that points nowhere (``mkdir`` would fail on it)."""
    for path in (output, *output.parents):
        if path.is_symlink() and not path.exists():
            raise ValueError(
                f"--output {output}: {path} is a broken symlink (to {path.readlink()}); remove it or name another "
                f"folder"
            )


def _not_written_by_export(folder: Path) -> list[str]:
    """What a folder holds beyond the files its export config records (and their folders), as relative names."""
    try:
        written = set(read_json_object(folder / CONFIG_NAME, "Causal2Vec config file").get("checksums") or {})
    except (OSError, ValueError):
        written = set()  # an unreadable config records nothing: every file counts as the user's
    known = {CONFIG_NAME, *written, *(parent.as_posix() for name in written for parent in Path(name).parents)}
    return sorted(name for name in entry_names(folder) if name not in known)


def fingerprint(model: Causal2Vec) -> str:
    """A short SHA-256 of the source model: of its files' checksums, or of its weights when it has none."""
    digest = hashlib.sha256()
    if model.config.checksums:
        digest.update(json.dumps(model.config.checksums, sort_keys=True).encode())
    else:
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def export_folder(
    model: Causal2Vec, output: Path, options: ExportOptions = ExportOptions(), *, source: str | None = None
) -> ExportReport:
    """Export ``model`` to the self-contained folder ``output``, check it against torch, then put it in place.

    Args:
        model: The model; it is moved to the CPU in float32 and its LoRA adapters are merged (in place).
        output: The export folder: new, empty, or an earlier export (replaced only once this one is complete).
        options: Precision, opset, optimisation, external data, whether to keep the torch weights.
        source: The name the model was loaded by, for the manifest.

    Raises:
        ParityError: If the graph does not reproduce torch within :data:`PARITY_LIMITS` (nothing is written).
        ValueError: For an output folder that is not an export (see :func:`check_output`).
    """
    ort = require_onnxruntime()
    output = output.expanduser().absolute()
    check_output(output, None)
    model = model.to(device="cpu", dtype=torch.float32).eval()
    remove_stale_siblings(output)  # what a killed export left beside it
    with replace_dir(output) as staging:
        graph = staging / ONNX_FILE
        fused, quantized = _write_graph(model, graph, staging / ".work", options)
        if options.keep_torch:
            write_checkpoint_files(model, staging)
        else:
            for part, tokenizer in (("encoder", model.encoder_tokenizer), ("llm", model.llm_tokenizer)):
                tokenizer.save_pretrained(staging / part)
        provider, parity = _check(model, graph, options.precision, ort)
        manifest = ExportManifest(
            embedding_dim=model.embedding_dim,
            inputs=INPUT_NAMES,
            precision=options.precision,
            torch_weights=options.keep_torch,
            source={"model": source or model.name_or_path, "fingerprint": fingerprint(model)},
            opset=options.opset,
            onnxruntime=ort.__version__,
            checked_on=provider,
            parity=None if parity is None else dataclasses.asdict(parity),
            fused=fused,
            quantized=quantized,
            external_data=(graph.parent / f"{graph.name}.data").is_file(),
        )
        manifest.write(staging)
        files = sorted(p for p in staging.rglob("*") if p.is_file() and p.name != CONFIG_NAME)
        checksums = {p.relative_to(staging).as_posix(): file_checksum(p) for p in files}
        dataclasses.replace(model.config, checksums=checksums).save(staging / CONFIG_NAME)
    logger.info("exported %s (%s, opset %d)", output, options.precision, options.opset)
    return ExportReport(output, manifest, parity)


def _write_graph(
    model: Causal2Vec, graph: Path, work: Path, options: ExportOptions
) -> tuple[dict[str, int] | None, dict[str, int] | None]:
    """Write the graph of ``model`` to ``graph``: traced, optimised and converted as asked, stamped with its precision.

    Returns what onnxruntime fused and what was quantised (``None`` where not asked). The intermediate graphs go
    to ``work``, inside the staging folder, so a kill leaves a single leftover folder.
    """
    current = trace_onnx(model, work / "fp32" / "model.onnx", options.opset, external_data=options.external_data)
    fused = quantized = None
    if options.optimize:
        fused = transforms.optimize(current, work / "optimized" / "model.onnx", external_data=options.external_data)
        current = work / "optimized" / "model.onnx"
    graph.parent.mkdir(parents=True, exist_ok=True)
    if options.fp16:
        transforms.to_fp16(current, graph, external_data=options.external_data)
    elif options.int8:
        quantized = transforms.quantize_int8(current, graph)
    else:
        for file in current.parent.iterdir():  # the graph and its external data, if any
            shutil.move(str(file), graph.parent / file.name)
    shutil.rmtree(work)
    transforms.stamp(graph, {PRECISION_KEY: options.precision})
    return fused, quantized


def _check(model: Causal2Vec, graph: Path, precision: Precision, ort: Any) -> tuple[str | None, Parity | None]:
    """Run the graph on the best provider that can and compare with torch; ``(None, None)`` if none runs fp16.

    Raises:
        ParityError: If the graph runs and misses :data:`PARITY_LIMITS` for its precision.
        ValueError: If no provider can run a float32 or int8 graph.
    """
    providers = ["CPUExecutionProvider"]
    if precision != "int8" and "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available():
        providers.insert(0, "CUDAExecutionProvider")
    for provider in providers:
        try:
            session = ort.InferenceSession(str(graph), providers=[provider])
            exported = OnnxCausal2Vec(session, model.config, model.encoder_tokenizer, model.llm_tokenizer,
                                      model.embedding_dim)  # fmt: skip
            parity = check_parity(model, exported)
        except Exception as err:  # onnxruntime's errors derive from Exception only; the next provider may run it
            logger.warning("%s cannot run the %s graph: %s", provider, precision, str(err).splitlines()[0])
            continue
        min_cosine, max_rel = PARITY_LIMITS[precision]
        if not parity.ok(max_rel=max_rel, min_cosine=min_cosine):
            raise ParityError(
                f"the {precision} graph does not match torch on {provider}: min cosine {parity.min_cosine:.6f} "
                f"(needs >= {min_cosine}), max relative error {parity.max_rel:.2e} (needs <= {max_rel:.0e}); "
                f"it was not written",
                parity,
            )
        return provider, parity
    if precision != "fp16":  # the CPU runs float32 and int8 graphs: failing here is the graph's fault
        raise ValueError(
            f"onnxruntime {ort.__version__} cannot run the {precision} graph (see the warnings above); nothing "
            f"was written. Opset {DEFAULT_OPSET} is the one checked here for CPUs"
        )
    return None, None
