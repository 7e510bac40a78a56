"""The accuracy cost of an export: its retrieval score next to its float32 source's, through mteb (``eval``).

``python -m export --int8`` reports it: dynamic int8 quantisation keeps parity by cosine, but what a user needs to
know is what it costs in retrieval. The figures go to ``onnx/scores.json`` in the export folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from pathlib import Path

from causal2vec.config import CONFIG_NAME, Causal2VecConfig
from causal2vec.files import file_checksum, write_atomic

logger = logging.getLogger(__name__)

TASK = "BBCNewsRetrieval"
SCORES_FILE = "onnx/scores.json"


def task_scores(
    folders: dict[str, str | Path], backend: str, task: str = TASK, output: Path | None = None
) -> dict[str, float]:
    """The main score (× 100) of each model on ``task``, through the evaluation package (mteb), in float32 on CPU.

    Args:
        folders: Row label -> a model ``eval`` resolves ('default', a checkpoint or an ONNX export folder).
        backend: ``"torch"`` or ``"onnx"``.
        task: A task ``python -m eval --tasks`` names.
        output: Where mteb keeps its results (a temporary folder when ``None``, so nothing stale is reused).
    """
    from causal2vec.mteb_encoder import INSTRUCTIONS_PATH, load_instructions
    from eval.models import resolve_model
    from eval.run import evaluate_models
    from eval.tasks import resolve_tasks

    sources = [dataclasses.replace(resolve_model(str(f)), label=label) for label, f in folders.items()]
    with tempfile.TemporaryDirectory(prefix="causal2vec-score-") as tmp:
        summary = evaluate_models(
            sources, resolve_tasks([task]), output or Path(tmp), batch_size=32, device="cpu", dtype="float32",
            backend=backend, instructions=load_instructions(INSTRUCTIONS_PATH), overwrite=False,
        )  # fmt: skip
    return {label: 100 * summary.scores[task][label] for label in folders}


def score_export(source: str, folder: Path, precision: str, task: str = TASK) -> dict[str, float | str]:
    """Score the export ``folder`` (onnxruntime, CPU) and its ``source`` (torch float32) on ``task``; record both.

    The figures are written to ``folder/onnx/scores.json`` and added to the folder's checksums.

    Returns:
        ``{"task", "metric", "float32", precision, "cost"}``, scores × 100, cost = float32 - precision.
    """
    scores = {"float32": task_scores({"float32": source}, "torch", task)["float32"]}
    scores[precision] = task_scores({precision: folder}, "onnx", task)[precision]
    report: dict[str, float | str] = {"task": task, "metric": "main score x 100 (nDCG@10 for retrieval)", **scores}
    report["cost"] = scores["float32"] - scores[precision]
    # The scores file first, then the config that lists its checksum: an interruption leaves a loadable folder.
    path = folder / SCORES_FILE
    write_atomic(path, lambda f: f.write(json.dumps(report, indent=2) + "\n"))
    config = Causal2VecConfig.load(folder / CONFIG_NAME)
    config = dataclasses.replace(config, checksums={**(config.checksums or {}), SCORES_FILE: file_checksum(path)})
    write_atomic(folder / CONFIG_NAME, lambda f: f.write(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n"))
    logger.info("%s on %s: float32 %.2f, %s %.2f", folder, task, scores["float32"], precision, scores[precision])
    return report
