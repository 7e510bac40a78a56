"""Run models on tasks through ``mteb.evaluate`` and summarise the main scores in one table.

Results are filed in mteb's own format under ``OUTPUT/results/<model>/<revision>/…/<Task>.json`` (the layout of
``mteb.ResultCache``), so existing results for the same weights are reused unless ``overwrite`` is set. The summary
goes to ``OUTPUT/summary.md`` (a Markdown table: tasks × models, main scores × 100) and ``OUTPUT/summary.json``.
"""

from __future__ import annotations

import gc
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mteb
from mteb.abstasks.abstask import AbsTask

from causal2vec.identity import BackendName
from causal2vec.runtime import show_progress
from eval.models import ModelSource, load_encoder

logger = logging.getLogger(__name__)


@dataclass
class Summary:
    """Main scores by task and model label, and why a task has none.

    Attributes:
        models: Model labels, in column order.
        tasks: ``(name, type, main score name)`` per task, in row order.
        scores: ``scores[task][model]``: the main score (0–1), averaged over splits and subsets.
        missing: ``missing[task]``: why the task did not run (for example, that it needs the network).
    """

    models: list[str]
    tasks: list[tuple[str, str, str]] = field(default_factory=list)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def markdown(self) -> str:
        """The table: one row per task, one column per model, main scores × 100.

        The last row averages the tasks that every model completed.
        """
        lines = [
            "| Task | Type | Metric | " + " | ".join(self.models) + " |",
            "|---|---|---|" + "---:|" * len(self.models),
        ]
        for name, task_type, metric in self.tasks:
            cells = [self._cell(name, model) for model in self.models]
            lines.append(f"| {name} | {task_type} | {metric} | " + " | ".join(cells) + " |")
        complete = [n for n, _, _ in self.tasks if all(m in self.scores.get(n, {}) for m in self.models)]
        if complete:
            averages = [100 * sum(self.scores[n][m] for n in complete) / len(complete) for m in self.models]
            label = f"Average ({len(complete)} task{'' if len(complete) == 1 else 's'})"
            lines.append(f"| {label} | | | " + " | ".join(f"{a:.2f}" for a in averages) + " |")
        return "\n".join(lines) + "\n"

    def _cell(self, task: str, model: str) -> str:
        if model in self.scores.get(task, {}):
            return f"{100 * self.scores[task][model]:.2f}"
        return self.missing.get(task, "not run")

    def to_json(self) -> dict[str, Any]:
        """The summary as plain JSON data."""
        return {
            "models": self.models,
            "tasks": [{"name": n, "type": t, "main_score": m} for n, t, m in self.tasks],
            "scores": self.scores,
            "missing": self.missing,
        }


def evaluate_models(
    sources: list[ModelSource],
    tasks: list[AbsTask],
    output: Path,
    *,
    batch_size: int = 32,
    device: str = "cpu",
    dtype: str = "float32",
    backend: BackendName = "torch",
    instructions: dict[str, str] | None = None,
    overwrite: bool = False,
) -> Summary:
    """Evaluate each model on each task, one model in memory at a time, and write the results and the summary.

    A task whose data cannot be downloaded is recorded as needing the network, and the others still run.
    """
    cache = mteb.ResultCache(cache_path=output)
    summary = Summary(models=[s.label for s in sources])
    summary.tasks = [(t.metadata.name, t.metadata.type, t.metadata.main_score) for t in tasks]
    for source in sources:
        logger.info("loading model %s", source.label)
        encoder = load_encoder(source, instructions=instructions or {}, device=device, dtype=dtype, backend=backend)
        for task in tasks:
            name = task.metadata.name
            if name in summary.missing:
                continue
            try:
                result = _evaluate_one(encoder, task, cache, batch_size, overwrite)
            except _network_errors() as err:
                summary.missing[name] = "needs network"
                logger.error(
                    "task %s needs the network: its dataset %s is not cached here and could not be downloaded (%s: "
                    "%s); the other tasks still run",
                    name,
                    task.metadata.dataset.get("path"),
                    type(err).__name__,
                    str(err).splitlines()[0] if str(err) else "",
                )
                continue
            summary.scores.setdefault(name, {})[source.label] = float(result.get_score())
            logger.info("%s on %s: %s = %.4f", source.label, name, task.metadata.main_score, result.get_score())
        del encoder
        gc.collect()
    for task in tasks:
        if task.data_loaded:
            task.unload_data()
    write_summary(summary, output)
    return summary


def _evaluate_one(encoder: Any, task: AbsTask, cache: mteb.ResultCache, batch_size: int, overwrite: bool) -> Any:
    """One model on one task; the task's data is loaded once and kept for the next model."""
    if not task.data_loaded and (overwrite or not _cached(cache, encoder, task)):
        task.load_data()
    progress = show_progress(None)
    model_result = mteb.evaluate(
        encoder,
        task,
        cache=cache,
        encode_kwargs={"batch_size": batch_size, "show_progress_bar": progress},
        overwrite_strategy="always" if overwrite else "only-missing",
        show_progress_bar=progress,
        co2_tracker=False,
    )
    return model_result.task_results[0]


def _cached(cache: mteb.ResultCache, encoder: Any, task: AbsTask) -> bool:
    return cache.get_task_result_path(task.metadata.name, encoder.mteb_model_meta).is_file()


def _network_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean a dataset could not be fetched: no network, offline mode, or the hub unreachable."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    errors += [LocalEntryNotFoundError, OfflineModeIsEnabled]
    try:
        import requests

        errors += [requests.exceptions.ConnectionError, requests.exceptions.Timeout]
    except ImportError:
        pass
    try:
        import httpx

        errors.append(httpx.TransportError)
    except ImportError:
        pass
    return tuple(errors)


def write_summary(summary: Summary, output: Path) -> None:
    """Write ``summary.md`` and ``summary.json`` into ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    (output / "summary.md").write_text(summary.markdown(), encoding="utf-8")
    (output / "summary.json").write_text(json.dumps(summary.to_json(), indent=2) + "\n", encoding="utf-8")
