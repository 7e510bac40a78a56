"""A training run's learning curve: each checkpoint scored on the selection data as it appears.

Every ``checkpoint-N`` folder of ``--run`` is scored once with :func:`bench.halves.score_model` (MRR@10 of the
whole embedding, of ``h_C`` and ``h_EOS`` alone, and of the shipped per-half cosine at ``--share``, on the BBC
validation headlines and the Python documentation's selection part), one checkpoint at a time, and the table is
rewritten after each. With ``--watch`` it polls until the run's final model exists. ``--train-pid`` samples the
training process's CPU time (user + system, from ``/proc``) every 10 s in a thread; a checkpoint's CPU-hours are the
last sample before its ``trainer_state.json`` was written (``--cpu-offset`` adds what earlier processes of a resumed
run spent). Scores are kept in ``<run>/curve.jsonl``, so
a restarted watcher scores only new checkpoints. ``--baseline`` models (e.g. ``default``) are scored the same way.

    OMP_NUM_THREADS=1 .venv/bin/python bench/curve.py --run runs/default-v2 --baseline default --watch \\
        --train-pid 1234 --output bench/results/quality-v2-curve.md
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.halves import score_model, selection_data  # noqa: E402

FINAL = "final"


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process, or None when it has ended."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


class CpuSampler:
    """Samples a process's CPU seconds every ``period`` seconds in a daemon thread, until it ends."""

    def __init__(self, pid: int, period: float = 10.0) -> None:
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.pid, self.period = pid, period
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while (cpu := cpu_seconds(self.pid)) is not None:
            self.times.append(time.time())
            self.cpu.append(cpu)
            time.sleep(self.period)

    def at(self, when: float) -> float | None:
        """The CPU seconds of the last sample taken at or before wall time ``when`` (None before the first)."""
        i = bisect.bisect_right(self.times, when)
        return self.cpu[i - 1] if i else None


def checkpoints(run: Path) -> list[tuple[int, Path]]:
    """The run's complete checkpoints (trainer_state.json written last), by step."""
    found = [(int(p.name.split("-")[1]), p) for p in run.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return sorted(found)


def train_state(folder: Path) -> dict[str, float]:
    """Pairs seen and the mean training loss over the last logged window of a checkpoint."""
    state = json.loads((folder / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    return {"pairs": state["global_step"] * state["train_batch_size"], "loss": losses[-1] if losses else float("nan")}


HEADER = """# Learning curve of {run}

Written by `{command}`. MRR@10 on the selection data (`bench/halves.py`): BBC News validation headlines against
their bodies, Python documentation section titles against the sections of the documentation's selection part; the
LLM reads {budget} tokens. `whole`: `[h_C ; h_EOS]` normalised as one vector; `h_C`, `h_EOS`: each half alone;
`share {share:g}`: each half normalised, `h_C` weighing {share:g} of the cosine (the shipped default's embedding).
`pairs`: step x batch size. `CPU-h`: the training process's CPU time (user + system) when the checkpoint was written.
`loss`: the last logged training loss (mean over `output.logging_steps` steps). Baselines have no step.

"""


def table(records: list[dict], probes: list[str], share: float) -> str:
    """The curve as a markdown table, baselines first, then checkpoints by step."""
    parts = ["whole", "h_C", "h_EOS", f"share {share:g}"]
    head = ["model", "step", "pairs", "CPU-h", "loss"] + [f"{p} {part}" for p in probes for part in parts]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in sorted(records, key=lambda r: (r["step"] is not None, r["step"] or 0)):
        cells = [r["model"], _cell(r["step"], "d"), _cell(r["pairs"], "d"), _cell(r["cpu_hours"], ".2f"),
                 _cell(r["loss"], ".3f")]  # fmt: skip
        scores = r["scores"]  # a plain model (all-MiniLM-L6-v2) has only "whole"
        cells += [f"{scores[part][i]:.4f}" if part in scores else "" for i in range(len(probes)) for part in parts]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="the run's output folder, e.g. runs/default-v2")
    parser.add_argument("--output", type=Path, required=True, help="the markdown table to (re)write")
    parser.add_argument("--baseline", nargs="*", default=[], help="models scored the same way, e.g. default")
    parser.add_argument("--train-pid", type=int, help="the training process, for the CPU-hours column")
    parser.add_argument("--cpu-offset", type=float, default=0.0, help="CPU seconds spent before this process (0)")
    parser.add_argument("--watch", action="store_true", help="poll for new checkpoints until <run>/final exists")
    parser.add_argument("--poll", type=float, default=20.0, help="seconds between polls (20)")
    parser.add_argument("--queries", type=int, default=0, help="queries per probe, 0: every one (206 / 387)")
    parser.add_argument("--llm-max-length", type=int, default=64, help="LLM token budget (64, the shipped one)")
    parser.add_argument("--share", type=float, default=0.8, help="contextual_share of the per-half row (0.8)")
    parser.add_argument("--pairs", type=Path, default=ROOT / "data" / "pydocs-selection.jsonl", help="see halves.py")
    args = parser.parse_args()
    probes = selection_data(args.pairs, args.queries)
    store = args.run / "curve.jsonl"
    records = [json.loads(line) for line in store.read_text().splitlines()] if store.is_file() else []
    command = " ".join(["python bench/curve.py", *("PID" if a == str(args.train_pid) else a for a in sys.argv[1:])])
    sampler = CpuSampler(args.train_pid) if args.train_pid else None

    def score(model: str, label: str, step: int | None, extra: dict) -> None:
        start = time.perf_counter()
        scores = score_model(model, probes, llm_max_length=args.llm_max_length, shares=[args.share])
        record = {"model": label, "step": step, **extra, "scores": scores}
        record["score_seconds"] = round(time.perf_counter() - start)
        records.append(record)
        with store.open("a") as f:
            f.write(json.dumps(record) + "\n")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        header = HEADER.format(run=args.run, command=command, budget=args.llm_max_length, share=args.share)
        args.output.write_text(header + table(records, list(probes), args.share))
        print(f"scored {label} in {record['score_seconds']} s", flush=True)

    for model in args.baseline:
        if not any(r["model"] == model and r["step"] is None for r in records):
            score(model, model, None, {"pairs": None, "cpu_hours": None, "loss": None})
    while True:
        seen = {r["step"] for r in records if r["step"] is not None}
        todo = [(step, folder) for step, folder in checkpoints(args.run) if step not in seen]
        for step, folder in todo[:1]:  # one at a time, oldest first: the trainer may delete old ones
            cpu = sampler.at((folder / "trainer_state.json").stat().st_mtime) if sampler else None
            hours = None if cpu is None else (cpu + args.cpu_offset) / 3600
            score(str(folder), folder.name, step, {**train_state(folder), "cpu_hours": hours})
        if len(todo) > 1:
            continue
        if not args.watch or ((args.run / FINAL).is_dir() and not todo):
            break
        time.sleep(args.poll)


if __name__ == "__main__":
    main()
