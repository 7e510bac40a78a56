"""The training recipe, top to bottom: sentence-transformers' trainer on a Causal2Vec model.

1. Load the model (a checkpoint, or a fresh assembly of an encoder and an LLM).
2. Choose what trains: the projector, the encoder (frozen, full or LoRA), the LLM (frozen or LoRA).
3. Load the data: one dataset per source, so that each batch comes from one source; the source's instruction is
   the prompt of its query column (documents get none), exactly as ``encode_query`` / ``encode_document`` lay out.
4. The loss: InfoNCE with in-batch and hard negatives (MultipleNegativesRankingLoss, or its cached form), with
   negatives gathered from every rank.
5. Train with ``SentenceTransformerTrainer``: no-duplicate batches, proportional sampling across sources,
   checkpoints every N steps, resume, DDP under torchrun.
6. Save the final model with ``save_pretrained`` (LoRA merged, or kept as an adapter).

Before anything loads, the output folder must be this run's (7): new, empty, or marked by a run of the same config
(``training_run.json``), unless ``overwrite``; ``resume`` continues from its newest complete checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.sentence_transformer.losses import (
    CachedMultipleNegativesRankingLoss,
    MultipleNegativesRankingLoss,
)
from sentence_transformers.sentence_transformer.training_args import BatchSamplers, MultiDatasetBatchSamplers
from transformers import set_seed
from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME, TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, sort_checkpoints

from causal2vec import Causal2Vec, Causal2VecConfig
from causal2vec.adapters import has_adapter
from causal2vec.checkpoint import REQUIRED_FILES
from causal2vec.config import CONFIG_NAME
from causal2vec.files import member_path, read_json_object, write_atomic
from causal2vec.st_module import Causal2VecModule
from training.config import DataSection, LoraSection, LossSection, ModelSection, Source, TrainConfig, TrainSection
from training.data.pairs import Pair, read_pairs

logger = logging.getLogger(__name__)

FINAL = "final"  # the trained model, inside the output folder


def train(config: TrainConfig, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Run the recipe; returns the folder of the final model.

    Args:
        config: The run.
        resume: Continue from the newest complete checkpoint in the output folder.
        overwrite: Train into an output folder that is not this run's (see :func:`check_output`).

    Raises:
        ValueError: For bad data or settings, or an output folder that is not this run's, before training starts;
            and if the trainer ran no step (nothing is saved then).
    """
    output = Path(config.output.dir)
    check_output(output, config, overwrite=overwrite, resume=resume)  # 0: no model needed
    start = resume_point(output) if resume else None
    sources = read_sources(config.data, config.optim.batch_size, config.optim.seed)  # 3 first: no model needed
    set_seed(config.optim.seed)  # before LoRA's random initialisation, so a resumed run matches a whole one
    model = load_model(config.model)  # 1
    saved_budgets = {  # the training budgets are a training setting; the saved model keeps these
        "encoder_max_length": model.config.encoder_max_length,
        "llm_max_length": config.output.llm_max_length or model.config.llm_max_length,
    }
    model.set_token_budgets(
        encoder_max_length=config.model.encoder_max_length, llm_max_length=config.model.llm_max_length
    )
    set_trainable(model, config.train, config.lora)  # 2
    datasets, prompts = as_datasets(sources, config.data, model.config)
    check_prompts(model, prompts)
    st = SentenceTransformer(modules=[Causal2VecModule(model)], device=_device())
    loss = make_loss(st, config.loss)  # 4
    trainer = SentenceTransformerTrainer(  # 5
        model=st, args=training_arguments(config, prompts), train_dataset=datasets, loss=loss
    )
    if trainer.is_world_process_zero():  # the folder is this run's from now on
        set_aside_incomplete(output)
        write_run_record(output, config)
    trainer.train(resume_from_checkpoint=str(start) if start else None)
    final = output / FINAL  # 6
    if trainer.state.global_step == 0:
        raise ValueError(
            f"the trainer ran 0 steps: it drew no batch of optim.batch_size={config.optim.batch_size} pairs (see "
            f"its warnings above); {final} was not saved. Add distinct pairs or lower the batch size"
        )
    save_trained(trainer, model, config, final, budgets=saved_budgets, overwrite=overwrite)
    return final


# ---------------------------------------------------------------------- 1. the model


def load_model(section: ModelSection) -> Causal2Vec:
    """The model to train, in float32 (bf16 is autocast, so the optimizer keeps float32 weights).

    With ``projector`` set to another kind than the base's, a fresh projector of that kind replaces it. With
    ``projector_init: isometric`` the projector restarts as an exact isometry of a random subspace of the
    encoder's space (:meth:`Projector.init_isometric`), seeded by ``seed``; with ``contextual_norm`` set, it is then
    rescaled to that mean ``|C|``.
    """
    if section.base is not None:
        model = Causal2Vec.from_pretrained(section.base)
    else:
        config = Causal2VecConfig(**section.config)
        model = Causal2Vec.from_components(section.encoder, section.llm, config=config, seed=section.seed)
    if section.projector is not None and section.projector != model.config.projector:
        model.replace_projector(section.projector, seed=section.seed)
    if section.projector_init == "isometric":
        kept = model.projector.init_isometric(section.seed)
        logger.info("projector: an isometry of %d of the encoder's %d directions", kept, model.projector.in_features)
    if section.contextual_norm is not None:
        model.calibrate_projector(target=section.contextual_norm)
    return model


# ---------------------------------------------------------------------- 2. what trains


def set_trainable(model: Causal2Vec, train: TrainSection, lora: LoraSection) -> None:
    """Freeze everything, then unfreeze the projector, and wrap the encoder and LLM as the config says.

    Raises:
        ValueError: If a LoRA target is not a module of the model, listing the names it could take.
    """
    model.requires_grad_(False)
    model.projector.requires_grad_(train.projector)
    if train.encoder == "full":
        model.encoder.requires_grad_(True)
    elif train.encoder == "lora":
        model.encoder = with_lora(model.encoder, lora, lora.encoder_targets, "lora.encoder_targets")
    if train.llm == "lora":
        model.llm = with_lora(model.llm, lora, lora.targets, "lora.targets")
    if train.gradient_checkpointing:
        for part in (model.encoder, model.llm):
            part.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if train.llm == "lora" or train.encoder == "lora":
                part.enable_input_require_grads()  # frozen embeddings: checkpointed blocks need inputs with grads
    model.train()
    counts = [p.numel() for p in model.parameters() if p.requires_grad], sum(p.numel() for p in model.parameters())
    logger.info("training %d of %d parameters", sum(counts[0]), counts[1])


def with_lora(part: torch.nn.Module, lora: LoraSection, targets: list[str], key: str) -> torch.nn.Module:
    """Wrap ``part`` with a trainable LoRA adapter on the named linear layers."""
    from peft import LoraConfig, get_peft_model

    available = sorted(lora_candidates(part))
    if missing := [t for t in targets if t not in available]:
        raise ValueError(
            f"{key} names {missing}, which {type(part).__name__} does not have; it could take: {available}"
        )
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(targets))
    return get_peft_model(part, config)


def lora_candidates(part: torch.nn.Module) -> set[str]:
    """The short names of the layers LoRA can wrap (linear and GPT-2's Conv1D)."""
    kinds = ("Linear", "Conv1D")
    return {name.rsplit(".", 1)[-1] for name, module in part.named_modules() if type(module).__name__ in kinds}


# ---------------------------------------------------------------------- 3. the data


def check_prompts(model: Causal2Vec, prompts: dict[str, dict[str, str]]) -> None:
    """Tokenize each source's query prompt now, so an instruction longer than the token budgets fails before training.

    Raises:
        ValueError: Naming the source and the budget.
    """
    for name, prompt in prompts.items():
        try:
            model.tokenize(["x"], prompt["query"])
        except ValueError as err:
            raise ValueError(f"source {name!r}: {err}") from err


def load_sources(
    data: DataSection, model_config: Causal2VecConfig, batch_size: int, seed: int
) -> tuple[dict[str, Dataset], dict[str, dict[str, str]]]:
    """One ``Dataset`` per source (columns ``query``, ``positive``, ``negative_1`` …) and the query prompts.

    Raises:
        ValueError: For an empty source, a source smaller than a batch, or a source with several instructions.
    """
    return as_datasets(read_sources(data, batch_size, seed), data, model_config)


def read_sources(data: DataSection, batch_size: int, seed: int) -> dict[str, tuple[list[Pair], str | None]]:
    """Every source's pairs and instruction, checked; needs no model, so bad data fails before one loads."""
    sources = {}
    for source in data.sources:
        pairs = _sample(read_source(source, data.skip_bad), source.max_pairs, seed)
        if len(pairs) < batch_size:
            raise ValueError(
                f"source {source.name!r} has {len(pairs)} pairs, fewer than optim.batch_size={batch_size}; "
                f"lower the batch size or add data"
            )
        check_one_batch(pairs, _negatives_used(pairs, data.negatives), batch_size, source.name)
        sources[source.name] = (pairs, source.instruction or _one_instruction(pairs, source.name))
        logger.info("source %s: %d pairs, instruction %r", source.name, len(pairs), sources[source.name][1])
    return sources


def check_one_batch(pairs: list[Pair], negatives: int, batch_size: int, name: str) -> None:
    """Refuse a source from which the no-duplicates sampler could draw no batch, so training would do no step.

    The sampler never puts a text (query, positive or used negative) twice in one batch; this takes pairs greedily,
    in file order, until a batch is full.

    Raises:
        ValueError: Naming the source, the batch size and how many pairs could share a batch.
    """
    taken: set[str] = set()
    found = 0
    for pair in pairs:
        texts = {pair.query, pair.positive, *pair.negatives[:negatives]}
        if taken.isdisjoint(texts):
            taken |= texts
            found += 1
            if found == batch_size:
                return
    raise ValueError(
        f"source {name!r} has no batch of optim.batch_size={batch_size} pairs without a repeated text: only "
        f"{found} of its {len(pairs)} pairs fit in one batch without repeating a query or document (batches never "
        f"repeat a text, so training would do 0 steps); add distinct pairs or lower optim.batch_size"
    )


def as_datasets(
    sources: dict[str, tuple[list[Pair], str | None]], data: DataSection, model_config: Causal2VecConfig
) -> tuple[dict[str, Dataset], dict[str, dict[str, str]]]:
    """The sources as datasets, and each instruction formatted by the model's template as its query prompt."""
    datasets = {name: _columns(pairs, data.negatives, name) for name, (pairs, _) in sources.items()}
    prompts = {
        name: {"query": model_config.format_instruction(instruction)}
        for name, (_, instruction) in sources.items()
        if instruction
    }
    return datasets, prompts


def read_source(source: Source, skip_bad: bool) -> list[Pair]:
    """The pairs of one source, from its JSONL file or its hub dataset."""
    if source.path is not None:
        if Path(source.path).is_dir():
            raise ValueError(f"source {source.name!r}: {source.path} is a directory, not a JSONL file")
        pairs, skipped = read_pairs(Path(source.path), skip_bad=skip_bad)
        if skipped:
            logger.warning("source %s: skipped %d malformed lines of %s", source.name, skipped, source.path)
        if source.dataset is not None:
            present = sorted({str(p.dataset) for p in pairs})
            pairs = [p for p in pairs if p.dataset == source.dataset]
            if not pairs:
                raise ValueError(
                    f"source {source.name!r}: {source.path} has no records of dataset {source.dataset!r}; "
                    f"it holds {present}"
                )
        return pairs
    return _hub_pairs(source)


def _hub_pairs(source: Source) -> list[Pair]:
    """Pairs from a Hugging Face dataset id or a local ``datasets`` folder, columns renamed by ``source.columns``.

    Negatives are the string columns named ``negative…`` (after renaming), in name order.
    """
    table = _hub_table(source)
    renames = {k: v for k, v in source.columns.items() if k in table.column_names and k != v}
    if clash := [v for k, v in renames.items() if v in table.column_names and v not in renames]:
        raise ValueError(f"source {source.name!r}: columns maps onto {clash}, which the dataset already has")
    table = table.rename_columns(renames)
    if missing := [c for c in ("query", "positive") if c not in table.column_names]:
        raise ValueError(
            f"source {source.name!r} ({source.hub}) has no column {missing} (columns: {table.column_names}); "
            f"map them with columns: {{<its column>: query, <its column>: positive}}"
        )
    negatives = sorted(c for c in table.column_names if c.startswith("negative") and _is_text(table, c))
    rows = table.select_columns(["query", "positive", *negatives]).to_list()
    return [Pair(r["query"], r["positive"], tuple(r[c] for c in negatives)) for r in rows]


def _hub_table(source: Source) -> Any:
    from datasets import load_dataset, load_from_disk

    local = Path(str(source.hub)).expanduser()
    if not local.is_dir():
        return load_dataset(source.hub, source.subset, split=source.split)
    table = load_from_disk(str(local))
    if hasattr(table, "keys"):  # a DatasetDict saved to disk
        if source.split not in table:
            raise ValueError(f"source {source.name!r}: {local} has splits {list(table)}, not {source.split!r}")
        table = table[source.split]
    return table


def _is_text(table: Any, column: str) -> bool:
    return getattr(table.features[column], "dtype", None) in ("string", "large_string")


def _sample(pairs: list[Pair], limit: int | None, seed: int) -> list[Pair]:
    if limit is None or len(pairs) <= limit:
        return pairs
    return random.Random(seed).sample(pairs, limit)


def _negatives_used(pairs: list[Pair], negatives: int) -> int:
    """How many hard negatives per pair the dataset holds: the number asked for, if every pair has that many."""
    return min([negatives, *(len(p.negatives) for p in pairs)])


def _columns(pairs: list[Pair], negatives: int, name: str) -> Dataset:
    """The dataset's columns: the loss reads them in order (anchor, positive, negatives)."""
    used = _negatives_used(pairs, negatives)
    if used < negatives:
        logger.info("source %s: %d hard negatives requested, every pair has %d", name, negatives, used)
    columns: dict[str, list[str]] = {"query": [p.query for p in pairs], "positive": [p.positive for p in pairs]}
    for k in range(used):
        columns[f"negative_{k + 1}"] = [p.negatives[k] for p in pairs]
    return Dataset.from_dict(columns)


def _one_instruction(pairs: list[Pair], name: str) -> str | None:
    found = {p.instruction for p in pairs}
    if len(found) > 1:
        raise ValueError(
            f"source {name!r} mixes {len(found)} instructions ({sorted(map(str, found))[:3]} …); batches are drawn "
            f"per source, so give each instruction its own source or set the source's instruction"
        )
    return found.pop()


# ---------------------------------------------------------------------- 4. the loss


def make_loss(st: SentenceTransformer, section: LossSection) -> torch.nn.Module:
    """InfoNCE with scale 1/τ over in-batch and hard negatives, gathered across ranks."""
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun / accelerate launch
    common = {"scale": 1.0 / section.temperature, "gather_across_devices": section.gather_across_devices and world > 1}
    if section.kind == "cached_mnrl":
        return CachedMultipleNegativesRankingLoss(st, mini_batch_size=section.mini_batch_size, **common)
    return MultipleNegativesRankingLoss(st, **common)


# ---------------------------------------------------------------------- 5. the trainer


def training_arguments(config: TrainConfig, prompts: dict[str, dict[str, str]]) -> SentenceTransformerTrainingArguments:
    """The Trainer's arguments: every value from the config, nothing hidden."""
    optim, out = config.optim, config.output
    rates = {"projector": optim.lr_projector, r"encoder\.": optim.lr_encoder}
    return SentenceTransformerTrainingArguments(
        output_dir=out.dir,
        per_device_train_batch_size=optim.batch_size,
        num_train_epochs=optim.epochs,
        max_steps=optim.max_steps,
        learning_rate=optim.learning_rate,
        learning_rate_mapping={k: v for k, v in rates.items() if v is not None} or None,
        warmup_steps=optim.warmup_ratio,  # a float below 1 is a share of the steps
        weight_decay=optim.weight_decay,
        bf16=optim.bf16,
        use_cpu=not torch.cuda.is_available(),
        seed=optim.seed,
        data_seed=optim.seed,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        multi_dataset_batch_sampler=MultiDatasetBatchSamplers.PROPORTIONAL,
        prompts=prompts or None,
        dataloader_drop_last=True,
        save_strategy="steps",
        save_steps=out.save_steps,
        save_total_limit=out.save_total_limit,
        logging_steps=out.logging_steps,
        report_to=[],
        ddp_find_unused_parameters=False,
    )


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------- 6. the final model


def save_trained(
    trainer: SentenceTransformerTrainer,
    model: Causal2Vec,
    config: TrainConfig,
    final: Path,
    *,
    budgets: dict[str, int | None],
    overwrite: bool,
) -> None:
    """Save the trained model from rank 0, with the token budgets it keeps (every rank calls this)."""
    if trainer.is_fsdp_enabled:
        # FSDP leaves each rank a shard of every weight: gather the whole state dict (a collective: every rank
        # calls it) and load it into an unsharded copy on rank 0, which is saved like any other run.
        state = trainer.accelerator.get_state_dict(trainer.model)
        if trainer.is_world_process_zero():
            model = unsharded_copy(config, state)
    if trainer.is_world_process_zero():
        model.set_token_budgets(**budgets)
        save_final(model, final, merge=config.output.merge, overwrite=overwrite)


def unsharded_copy(config: TrainConfig, state: dict[str, torch.Tensor]) -> Causal2Vec:
    """A fresh, unsharded model of the run's structure (LoRA included) holding ``state``, a gathered state dict."""
    model = load_model(config.model)
    set_trainable(model, config.train, config.lora)
    holder = SentenceTransformer(modules=[Causal2VecModule(model)], device="cpu")  # the trainer's key layout
    holder.load_state_dict({key: value.to("cpu") for key, value in state.items()}, strict=True)
    return model


def save_final(model: Causal2Vec, folder: Path, *, merge: bool, overwrite: bool = False) -> None:
    """Save the trained model; with ``merge``, LoRA is folded into the weights (no adapter at inference).

    Raises:
        FileExistsError: If ``folder`` exists and is not a Causal2Vec checkpoint (unless ``overwrite``).
    """
    model.eval()
    if merge:
        for name in ("encoder", "llm"):
            part: Any = getattr(model, name)
            if hasattr(part, "merge_and_unload"):
                setattr(model, name, part.merge_and_unload())
    model.save_pretrained(folder, overwrite=overwrite)
    logger.info("saved the trained model to %s", folder)


def merge_finished(config: TrainConfig) -> Path | None:
    """Fold the LoRA of a finished run's ``final/`` into its weights, without training again.

    Returns:
        The folder of the final model, or None when the output folder holds no finished run of ``config`` (its
        :data:`RUN_RECORD` differs, or it has no ``final/`` checkpoint): then there is nothing to fold.
    """
    output = Path(config.output.dir)
    final = output / FINAL
    if not (final / CONFIG_NAME).is_file() or _foreign(output, config, [FINAL]) is not None:
        return None
    if int(os.environ.get("RANK", "0")) != 0:  # launched by torchrun: rank 0 alone folds and saves
        return final
    model = Causal2Vec.from_pretrained(final)
    if not (has_adapter(model.llm) or has_adapter(model.encoder)):
        logger.warning("%s holds no LoRA adapter: its weights are merged already", final)
        return final
    save_final(model, final, merge=True)
    logger.info("merged the LoRA adapter of %s into its weights (no training)", final)
    return final


# ---------------------------------------------------------------------- 7. the run's folder

RUN_RECORD = "training_run.json"  # written into the output folder at the start: the config of the run it belongs to
INCOMPLETE = "incomplete-"  # prefix of a checkpoint folder set aside because a kill cut its writing short
CHECKPOINT = re.compile(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)")
OPTIMIZER = OPTIMIZER_NAME.split(".")[0]  # the Trainer resumes from optimizer.pt, optimizer.bin or optimizer_* folders


def run_record(config: TrainConfig) -> dict[str, Any]:
    """The config as the output folder records it: every setting but the folder itself and how final/ is saved."""
    record = dataclasses.asdict(config)
    record["output"] = {k: v for k, v in record["output"].items() if k not in ("dir", "merge")}
    return json.loads(json.dumps(record))


def check_output(output: Path, config: TrainConfig, *, overwrite: bool = False, resume: bool = False) -> None:
    """Refuse an output folder that is not this run's, before anything loads; the run never deletes what it refuses.

    A folder is this run's when it is new or empty, or holds the :data:`RUN_RECORD` of a run of the same config
    (as :func:`run_record` compares them), and its ``final/`` is absent or a Causal2Vec checkpoint. With
    ``overwrite`` any folder is trained into: the run's ``checkpoint-N/`` and ``final/`` replace folders of those
    names (and the Trainer's rotation removes older ``checkpoint-*`` folders); other files are left alone.

    Raises:
        ValueError: Naming the folder, why it is not this run's, and ``--overwrite``.
    """
    if output.exists() and not output.is_dir():
        raise ValueError(f"output.dir {output} is a file; the run needs a folder")
    names = sorted(output.iterdir()) if output.is_dir() else []
    entries = [p.name + "/" * p.is_dir() for p in names if not p.name.lstrip(".").startswith(RUN_RECORD)]
    if not entries:
        return  # new, empty, or left by a run that stopped before it saved anything
    problem, final = _foreign(output, config, entries), output / FINAL
    if problem is None and (final.exists() or final.is_symlink()) and not (final.is_dir() and _is_model(final)):
        problem = f"{final} is not a Causal2Vec checkpoint"
    if problem is not None and not overwrite:
        raise ValueError(
            f"{problem}. Training into it would replace its final/ and let the Trainer's rotation delete its "
            f"checkpoint-* folders: choose a new or empty output folder (--output), or pass --overwrite to train "
            f"into it anyway (files of other names are left alone)"
        )
    if problem is None and not resume and any(CHECKPOINT.fullmatch(name.rstrip("/")) for name in entries):
        logger.warning("%s holds checkpoints of an earlier run of this config; training starts again from step 0 "
                       "(pass --resume to continue from its newest complete checkpoint)", output)  # fmt: skip


def _foreign(output: Path, config: TrainConfig, entries: list[str]) -> str | None:
    """Why ``output`` is not a folder of a run of ``config`` (None: it is)."""
    shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
    if not (output / RUN_RECORD).is_file():
        return f"{output} holds {shown} but no {RUN_RECORD}, so no run of python -m training wrote it"
    try:
        theirs = json.loads((output / RUN_RECORD).read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{output}/{RUN_RECORD} is unreadable ({err})"
    mine, theirs = _flat(run_record(config)), _flat(theirs)
    if mine == theirs:
        return None
    changed = [f"{key}: {value!r} here, {theirs[key]!r} there" for key, value in mine.items() if key in theirs
               and theirs[key] != value]  # fmt: skip
    changed += [f"{key}: only here" for key in mine if key not in theirs]
    changed += [f"{key}: only there" for key in theirs if key not in mine]
    return f"{output} was written by a run of another config ({'; '.join(changed[:4])})"


def _flat(record: Any, prefix: str = "") -> dict[str, Any]:
    """A nested record as dotted keys: ``{"optim.seed": 0, "data.sources[0].name": "bbc", ...}``."""
    if isinstance(record, dict):
        return {k: v for key, value in record.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    if isinstance(record, list) and record and all(isinstance(item, dict) for item in record):
        return {k: v for i, item in enumerate(record) for k, v in _flat(item, f"{prefix[:-1]}[{i}].").items()}
    return {prefix[:-1]: record}


def _is_model(folder: Path) -> bool:
    return (folder / CONFIG_NAME).is_file() or not any(folder.iterdir())


def write_run_record(output: Path, config: TrainConfig) -> None:
    """Mark ``output`` as the folder of a run of ``config`` (atomically), before the first checkpoint is written."""
    output.mkdir(parents=True, exist_ok=True)
    record = {"format": 1, "config": run_record(config)}
    write_atomic(output / RUN_RECORD, lambda f: f.write(json.dumps(record, indent=2, ensure_ascii=False) + "\n"))


def checkpoint_problem(folder: Path) -> str | None:
    """Why a ``checkpoint-N`` folder cannot be resumed from (None: it is complete).

    The Trainer writes the model, then the optimizer and scheduler, then ``trainer_state.json``; a kill can cut
    any of them short, and a kill during the rotation can leave an old checkpoint half deleted.
    """
    try:
        step = read_json_object(folder / TRAINER_STATE_NAME, "trainer state")["global_step"]
    except FileNotFoundError:
        return f"it has no {TRAINER_STATE_NAME}"
    except (OSError, ValueError, KeyError):
        return f"its {TRAINER_STATE_NAME} is unreadable"
    match = CHECKPOINT.fullmatch(folder.name)
    if match is None or step != int(match.group(1)):
        return f"its {TRAINER_STATE_NAME} is of step {step}"
    if not any(p.name.startswith(OPTIMIZER) for p in folder.iterdir()):  # optimizer.pt, .bin, or FSDP's folder
        return f"it has no {OPTIMIZER_NAME}"
    needed = dict.fromkeys([SCHEDULER_NAME, *REQUIRED_FILES, *_checksummed(folder)])  # in order, each once
    if missing := [name for name in needed if not (folder / name).is_file()]:
        return f"it has no {missing[0]}" + (f" (and {len(missing) - 1} more files)" if len(missing) > 1 else "")
    return None


def _checksummed(folder: Path) -> list[str]:
    """The model files a checkpoint's config names (only names inside the folder)."""
    try:
        names = read_json_object(folder / CONFIG_NAME, "Causal2Vec config file").get("checksums", {})
    except (OSError, ValueError):
        return []  # no readable config: REQUIRED_FILES names it
    return [n for n in names if isinstance(n, str) and _inside(folder, n)]


def _inside(folder: Path, name: str) -> bool:
    try:
        member_path(folder, name, "checkpoint file")
    except ValueError:
        return False
    return True


def checkpoints(output: Path) -> list[Path]:
    """The ``checkpoint-N`` folders of ``output``, newest (highest step) first, as the Trainer numbers them."""
    found = [Path(p) for p in sort_checkpoints(str(output)) if CHECKPOINT.fullmatch(Path(p).name)]
    return sorted(found, key=lambda p: -int(CHECKPOINT.fullmatch(p.name).group(1)))


def resume_point(output: Path) -> Path:
    """The newest complete checkpoint of ``output``; newer incomplete ones are skipped with a warning naming them.

    Raises:
        ValueError: If ``output`` holds no complete checkpoint, naming the incomplete ones and why.
    """
    skipped = []
    for folder in checkpoints(output) if output.is_dir() else []:
        problem = checkpoint_problem(folder)
        if problem is None:
            if skipped:
                logger.warning("resuming from %s, the newest complete checkpoint", folder.name)
            return folder
        logger.warning("%s is incomplete (%s), as a kill while it was written leaves it; skipped", folder, problem)
        skipped.append(f"{folder.name} ({problem})")
    found = f"; incomplete: {', '.join(skipped)}" if skipped else ""
    raise ValueError(f"--resume: {output} holds no complete checkpoint to resume from{found}")


def set_aside_incomplete(output: Path) -> None:
    """Rename incomplete ``checkpoint-N`` folders to ``incomplete-checkpoint-N``, kept but out of the Trainer's way.

    The Trainer's rotation counts every ``checkpoint-*`` folder towards ``save_total_limit`` and keeps the one
    written last, which a kill mid-write makes an incomplete one; a resumed run then writes ``checkpoint-N`` anew.
    """
    for folder in checkpoints(output) if output.is_dir() else []:
        if (problem := checkpoint_problem(folder)) is None:
            continue
        aside, n = output / f"{INCOMPLETE}{folder.name}", 1
        while aside.exists():
            n += 1
            aside = output / f"{INCOMPLETE}{folder.name}-{n}"
        folder.rename(aside)
        logger.warning("%s is incomplete (%s); moved to %s, which you may delete", folder, problem, aside.name)
