"""The quality table: the trained default against its ablations, the untrained assembly and all-MiniLM-L6-v2.

Every row is evaluated in this one run through the evaluation package (mteb) on the three BBC News tasks and on
PyDocsRetrieval, a retrieval task built from the Python documentation's test part of pages, which training never
reads (it trains on the train part's pages: the outside task). Rows:

- ``default``: the shipped trained default;
- three rows trained here for the same ``--steps`` on the same data, batches and optimiser settings
  (``training/configs/default.yaml``, ``--steps`` overriding its length):
  - ``causal2vec``: the default's recipe;
  - ``eos-only``: the same, embedding with ``h_EOS`` alone (the paper's ablation of the concatenation);
  - ``last-token``: SmolLM2 with plain last-token pooling and no Contextual token, a plain sentence-transformers
    model with LoRA through the same trainer (the paper's causal baseline);
- ``default-untrained`` and ``all-MiniLM-L6-v2``;
- ``default@N``: the trained default with the LLM reading at most N tokens instead of its own 64 (the encoder still
  reads up to 512), with its encode speed-up over the full LLM budget of 512, timed side by side on the same BBC
  texts in this run (the ``default`` row shows its own).

    .venv/bin/python bench/quality.py                      # ~2 h on 2 CPU cores (trains 3 rows, evaluates 9)
    .venv/bin/python bench/quality.py --steps 30 --budgets 32,128,512 --output runs/quality
    .venv/bin/python bench/quality.py --rows default,all-MiniLM-L6-v2   # some rows only

Trained rows and evaluation results are kept in ``--output`` and reused by a later run (delete the folder to redo).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's training/ and eval/ packages

from causal2vec import Causal2Vec, assets
from causal2vec.data.bbc import bbc_news_split
from causal2vec.runtime import auto_dtype

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "training" / "configs" / "default.yaml"
BBC_TASKS = ["BBCNewsRetrieval", "BBCNewsClustering", "BBCNewsClassification"]
OUTSIDE = "PyDocsRetrieval"
TRAINED_ROWS = ["causal2vec", "eos-only", "last-token"]
FULL_BUDGET = 512
logger = logging.getLogger("quality")


# ---------------------------------------------------------------------- data


def build_data(data: Path) -> Path:
    """The training JSONL files named by the default's config, and the outside task folder; returns the task."""
    from training.data.bbc import build_bbc_pairs
    from training.data.pairs import read_pairs, write_pairs
    from training.data.pydocs import build_pydocs_pairs
    from training.data.task import write_task_folder
    from training.data.wiki import build_wiki_pairs
    from training.data.wordnet import build_wordnet_pairs

    data.mkdir(parents=True, exist_ok=True)
    builders = {
        "bbc": lambda: build_bbc_pairs(),
        "wiki": lambda: build_wiki_pairs(None, queries=["title", "description"]),
        "wordnet": lambda: build_wordnet_pairs(Path("/usr/share/wordnet")),
        "pydocs-train": lambda: build_pydocs_pairs(part="train"),
        "pydocs-test": lambda: build_pydocs_pairs(part="test"),
    }
    for name, build in builders.items():
        target, built = data / f"{name}.jsonl", ROOT / "data" / f"{name}.jsonl"  # the latter: by make train-default
        if not target.is_file():
            if built.is_file():
                shutil.copyfile(built, target)
            else:
                write_pairs(target, build())
    task = data / OUTSIDE
    if not task.is_dir():
        pairs = read_pairs(data / "pydocs-test.jsonl")[0]
        write_task_folder(pairs, task, name=OUTSIDE, dataset="pydocs", queries=500, corpus=1500)
    return task


def training_config(data: Path, steps: int, out: Path):
    """The default's config with its data read from ``data``, ``steps`` steps, and the run written to ``out``."""
    from training.config import TrainConfig

    config = TrainConfig.load(CONFIG)
    for source in config.data.sources:
        source.path = str(data / Path(source.path).name)
    config.optim.max_steps = steps
    config.output = dataclasses.replace(config.output, dir=str(out), save_steps=steps, merge=True)
    return config


# ---------------------------------------------------------------------- the equal-budget rows


def train_causal2vec(data: Path, steps: int, out: Path, pooling: str) -> Path:
    """The default's recipe for ``steps`` steps, from the untrained assembly with ``pooling`` as output pooling."""
    from training.recipe import train

    config = training_config(data, steps, out)
    if pooling != "contextual_eos":
        base = Causal2Vec.from_pretrained(config.model.base)
        base.update_config(output_pooling=pooling)
        base.save_pretrained(out.parent / f"{out.name}-base", overwrite=True)
        config.model.base = str(out.parent / f"{out.name}-base")
    return train(config)


def train_last_token(data: Path, steps: int, out: Path) -> Path:
    """SmolLM2 with last-token pooling and LoRA: a plain sentence-transformers model through the same trainer."""
    from peft import LoraConfig, get_peft_model
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    from causal2vec.config import Causal2VecConfig
    from causal2vec.mteb_encoder import load_instructions
    from training.recipe import as_datasets, make_loss, read_sources, training_arguments

    config = training_config(data, steps, out)
    config.optim.lr_projector = None  # this model has no projector for a learning-rate group to match
    transformer = Transformer(str(assets.smollm2_path()), max_seq_length=config.model.llm_max_length)
    tokenizer = transformer.tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="lasttoken")
    st = SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu")
    lora = config.lora
    transformer.model = get_peft_model(  # auto_model is a read-only view of .model in sentence-transformers 6.2
        transformer.model,
        LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.targets)),
    )
    templates = Causal2VecConfig()  # the same instruction format as the Causal2Vec rows
    datasets, prompts = as_datasets(read_sources(config.data, config.optim.batch_size, 0), config.data, templates)
    trainer = SentenceTransformerTrainer(
        model=st, args=training_arguments(config, prompts), train_dataset=datasets, loss=make_loss(st, config.loss)
    )
    trainer.train()
    transformer.model = transformer.model.merge_and_unload()
    transformer.max_seq_length = FULL_BUDGET  # trained at the training budget, evaluated at the full one like the rest
    # mteb applies prompts by task type (local task names are not in its registry): queries of retrieval tasks,
    # every text of clustering and classification, as the Causal2Vec rows are evaluated.
    instructions = load_instructions()
    st.prompts = {
        "Retrieval-query": templates.format_instruction(instructions["Retrieval"]),
        "Clustering": templates.format_instruction(instructions["Clustering"]),
        "Classification": templates.format_instruction(instructions["Classification"]),
    }
    final = out / "final"
    st.save(str(final))
    return final


# ---------------------------------------------------------------------- the LLM budget rows


def budget_rows(budgets: list[int], out: Path) -> tuple[dict[str, Path], dict[str, float]]:
    """A checkpoint of the trained default per LLM budget, and each budget's encode speed-up over the full one.

    The ``default`` row's speed-up is that of the default's own LLM budget.
    """
    model = Causal2Vec.from_pretrained("default", dtype=auto_dtype("auto", "cpu"))
    own = model.config.llm_max_length
    texts = [f"{a.title}\n{a.body}" for a in bbc_news_split("validation")[:96]]
    seconds: dict[int, list[float]] = {b: [] for b in dict.fromkeys([FULL_BUDGET, own, *budgets])}
    model.encode(texts[:8], max_length=FULL_BUDGET)  # warm-up
    for _ in range(3):  # interleaved repeats: the machine is shared and noisy
        for budget in seconds:
            model.set_token_budgets(llm_max_length=budget)
            start = time.perf_counter()
            model.encode(texts, batch_size=32)
            seconds[budget].append(time.perf_counter() - start)
    speedups = {f"default@{b}": min(seconds[FULL_BUDGET]) / min(seconds[b]) for b in budgets if b != own}
    speedups["default"] = min(seconds[FULL_BUDGET]) / min(seconds[own])
    folders = {}
    full = Causal2Vec.from_pretrained("default")
    shipped = hashlib.sha256(json.dumps(assets.trained_stamp(), sort_keys=True).encode()).hexdigest()[:12]
    for budget in (b for b in budgets if b != own):
        folder = out / f"default-{shipped}-llm{budget}"  # named by the shipped files: a new default gets new rows
        if not folder.is_dir():
            full.set_token_budgets(llm_max_length=budget)
            full.save_pretrained(folder)
        folders[f"default@{budget}"] = folder
    return folders, speedups


# ---------------------------------------------------------------------- the table


def forget_if_changed(task: Path, out: Path) -> None:
    """Drop cached results of the local ``task`` when its files differ from those the cache was made with.

    mteb's cache is keyed by task name, not content, so a rebuilt task folder would otherwise be scored from stale
    results.
    """
    digest = hashlib.sha256()
    for name in ("corpus.jsonl", "queries.jsonl", "qrels.tsv", "task.json"):
        digest.update((task / name).read_bytes())
    stamp = out / f"{task.name}.sha256"
    if stamp.is_file() and stamp.read_text().strip() == digest.hexdigest():
        return
    stale = list((out / "results").glob(f"**/{task.name}.json")) if out.is_dir() else []
    for path in stale:
        path.unlink()
    if stale:
        logging.getLogger(__name__).info("task %s changed: dropped %d cached results", task.name, len(stale))
    out.mkdir(parents=True, exist_ok=True)
    stamp.write_text(digest.hexdigest() + "\n")


def evaluate(models: dict[str, str], task: Path, out: Path) -> dict[str, dict[str, float]]:
    """Main scores × 100 by row and task, through the evaluation package (mteb), cached in ``out``."""
    from causal2vec.mteb_encoder import INSTRUCTIONS_PATH, load_instructions
    from eval.models import ModelSource, resolve_model
    from eval.run import evaluate_models
    from eval.tasks import resolve_tasks

    forget_if_changed(task, out)
    tasks = resolve_tasks([*BBC_TASKS, str(task)])
    sources = [dataclasses.replace(resolve_model(location), label=label) for label, location in models.items()]
    assert all(isinstance(s, ModelSource) for s in sources)
    summary = evaluate_models(
        sources,
        tasks,
        out,
        batch_size=32,
        device="cpu",
        dtype=auto_dtype("auto", "cpu"),
        backend="torch",
        instructions=load_instructions(INSTRUCTIONS_PATH),
        overwrite=False,
    )
    return {label: {t: 100 * summary.scores[t][label] for t in summary.scores if label in summary.scores[t]}
            for label in models}  # fmt: skip


def table(scores: dict[str, dict[str, float]], speedups: dict[str, float]) -> str:
    """One Markdown table: rows are models; BBC News tasks, their average, the outside task, encode speed-up."""
    head = ["model", "BBC retrieval", "BBC clustering", "BBC classification", "BBC average", OUTSIDE, "speed-up"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for label, row in scores.items():
        bbc = [row.get(t) for t in BBC_TASKS]
        average = np.mean(bbc) if all(v is not None for v in bbc) else None
        cells = [*bbc, average, row.get(OUTSIDE)]
        text = ["–" if v is None else f"{v:.2f}" for v in cells]
        text.append(f"{speedups[label]:.2f}x" if label in speedups else "")
        lines.append(f"| {label} | " + " | ".join(text) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="training steps of each equal-budget row (30)")
    parser.add_argument(
        "--budgets", default="32,128,512", help="LLM token budgets of the default@N rows (the default reads 64)"
    )
    parser.add_argument("--rows", help="evaluate only these rows, comma-separated (default: all)")
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "quality", help="work folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    budgets = [int(b) for b in args.budgets.split(",") if b]
    out: Path = args.output
    task = build_data(out / "data")
    wanted = set(args.rows.split(",")) if args.rows else None
    models: dict[str, str] = {"default": "default"}
    trainers = {
        "causal2vec": lambda o: train_causal2vec(out / "data", args.steps, o, "contextual_eos"),
        "eos-only": lambda o: train_causal2vec(out / "data", args.steps, o, "eos"),
        "last-token": lambda o: train_last_token(out / "data", args.steps, o),
    }
    recipe = hashlib.sha256(CONFIG.read_bytes()).hexdigest()[:12]  # a changed recipe retrains the rows
    for label, train in trainers.items():
        if wanted is None or label in wanted:
            final = out / f"{label}-{args.steps}-{recipe}" / "final"
            if not final.is_dir():
                logger.info("training the %s row (%d steps)", label, args.steps)
                start = time.perf_counter()
                train(final.parent)
                logger.info("%s trained in %.0f s", label, time.perf_counter() - start)
            models[f"{label} ({args.steps} steps)"] = str(final)
    models.update({"default-untrained": "default-untrained", "all-MiniLM-L6-v2": "all-MiniLM-L6-v2"})
    folders, speedups = budget_rows(budgets, out) if budgets else ({}, {})
    models.update({label: str(folder) for label, folder in folders.items()})
    if wanted is not None:
        models = {k: v for k, v in models.items() if k.split(" (")[0] in wanted}
    scores = evaluate(models, task, out / "eval")
    print(table(scores, speedups))
    (out / "quality.json").write_text(json.dumps({"scores": scores, "speedups": speedups}, indent=2) + "\n")


if __name__ == "__main__":
    main()
