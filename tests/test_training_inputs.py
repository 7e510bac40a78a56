"""Bad inputs to ``python -m training``, each with the answer a user gets: values out of range, duplicate YAML keys,
a folder given as a data file, runs that would train no step, output folders that are not the run's, resuming after
a kill mid-checkpoint, and ``--merge`` on a finished run."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import types
from pathlib import Path
from typing import Union, get_args, get_origin, get_type_hints

import numpy as np
import pytest

from causal2vec import Causal2Vec
from causal2vec.data.bbc import bbc_news_split
from tests.helpers import write_config
from training import config as config_module
from training.cli import main
from training.config import TrainConfig
from training.data.pairs import Pair, write_pairs

INSTRUCTION = "Given a news headline, retrieve the article"


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "bbc.jsonl"
    write_pairs(path, [Pair(a.title, a.body[:300], (), INSTRUCTION, "bbc") for a in bbc_news_split("train")[:40]])
    return path


# ---------------------------------------------------------------------- W3, T9, T10: every number's range


OUT_OF_RANGE = [
    ({"optim": {"warmup_ratio": 7.0}}, r"optim\.warmup_ratio=7\.0 must be a finite number in \[0, 1\)"),
    ({"optim": {"warmup_ratio": -0.1}}, r"optim\.warmup_ratio=-0\.1 must be a finite number in \[0, 1\)"),
    ({"data": {"negatives": -2}}, r"data\.negatives=-2 must be an integer >= 0"),
    ({"output": {"save_steps": 0}}, r"output\.save_steps=0 must be an integer >= 1"),
    ({"output": {"save_steps": -3}}, r"output\.save_steps=-3 must be an integer >= 1"),
    ({"output": {"save_total_limit": 0}}, r"output\.save_total_limit=0 must be an integer >= 1 \(or null: keep"),
    ({"output": {"logging_steps": 0}}, r"output\.logging_steps=0 must be an integer >= 1"),
    ({"output": {"llm_max_length": 2}}, r"output\.llm_max_length=2 must be an integer >= 4 \(or null"),
    ({"optim": {"max_steps": -5}}, r"optim\.max_steps=-5 must be an integer >= 1, or -1 \(train for optim\.epochs"),
    ({"optim": {"max_steps": 0}}, r"optim\.max_steps=0 must be an integer >= 1, or -1"),
    ({"optim": {"max_steps": -1, "epochs": -2.0}}, r"optim\.epochs=-2\.0 must be a finite number > 0"),
    ({"optim": {"epochs": 0}}, r"optim\.epochs=0\.0 must be a finite number > 0"),
    ({"optim": {"epochs": math.inf}}, r"optim\.epochs=inf must be a finite number > 0"),
    ({"optim": {"batch_size": 0}}, r"optim\.batch_size=0 must be an integer >= 1"),
    ({"optim": {"learning_rate": -1.0}}, r"optim\.learning_rate=-1\.0 must be a finite number > 0"),
    ({"optim": {"learning_rate": math.nan}}, r"optim\.learning_rate=nan must be a finite number > 0"),
    ({"optim": {"learning_rate": 0}}, r"optim\.learning_rate=0\.0 must be a finite number > 0"),
    ({"optim": {"lr_projector": math.inf}}, r"optim\.lr_projector=inf must be a finite number > 0 \(or null"),
    ({"optim": {"lr_encoder": -1e-4}}, r"optim\.lr_encoder=-0\.0001 must be a finite number > 0 \(or null"),
    ({"optim": {"weight_decay": -0.01}}, r"optim\.weight_decay=-0\.01 must be a finite number >= 0"),
    ({"optim": {"seed": -1}}, r"optim\.seed=-1 must be an integer in \[0, 4294967295\]"),
    ({"optim": {"seed": 2**32}}, r"optim\.seed=4294967296 must be an integer in \[0, 4294967295\]"),
    ({"model": {"seed": -1}}, r"model\.seed=-1 must be an integer in \[0, 4294967295\]"),
    ({"model": {"encoder_max_length": 2}}, r"model\.encoder_max_length=2 must be an integer >= 4 \(or null"),
    ({"model": {"llm_max_length": 3}}, r"model\.llm_max_length=3 must be an integer >= 4"),
    ({"model": {"contextual_norm": 0}}, r"model\.contextual_norm=0\.0 must be a finite number > 0 \(or null"),
    ({"model": {"contextual_norm": math.nan}}, r"model\.contextual_norm=nan must be a finite number > 0"),
    ({"lora": {"r": 0}}, r"lora\.r=0 must be an integer >= 1"),
    ({"lora": {"alpha": -4}}, r"lora\.alpha=-4 must be an integer > 0"),
    ({"lora": {"dropout": 1.0}}, r"lora\.dropout=1\.0 must be a finite number in \[0, 1\)"),
    ({"lora": {"dropout": -0.5}}, r"lora\.dropout=-0\.5 must be a finite number in \[0, 1\)"),
    ({"loss": {"temperature": 0}}, r"loss\.temperature=0\.0 must be a finite number in \(0, 1\]"),
    ({"loss": {"temperature": math.nan}}, r"loss\.temperature=nan must be a finite number in \(0, 1\]"),
    ({"loss": {"mini_batch_size": 0}}, r"loss\.mini_batch_size=0 must be an integer >= 1"),
]


@pytest.mark.parametrize(("change", "message"), OUT_OF_RANGE)
def test_a_number_out_of_range_is_named_with_its_range_before_any_model_loads(tmp_path, pairs_file, change, message,
                                                                              capsys):  # fmt: skip
    path = write_config(tmp_path, tmp_path / "no-such-model", pairs_file, **change)  # loading it would fail
    with pytest.raises(ValueError, match=message):
        TrainConfig.load(path)
    assert main(["--config", str(path)]) == 2
    assert "no-such-model" not in capsys.readouterr().err, "the model was reached before the value was checked"


def test_a_source_max_pairs_out_of_range_names_the_source(tmp_path, pairs_file):
    sources = [{"name": "bbc", "path": str(pairs_file), "max_pairs": 0}]
    path = write_config(tmp_path, tmp_path / "no-such-model", pairs_file, data={"sources": sources})
    with pytest.raises(ValueError, match=r"data\.sources\[0\]\.max_pairs=0 must be an integer >= 1 \(or null: all"):
        TrainConfig.load(path)


def test_a_fresh_assembly_config_is_checked_before_any_model_loads(tmp_path, pairs_file):
    bad = {"base": None, "encoder": "no-such-encoder", "llm": "no-such-llm", "config": {"llm_max_length": 2}}
    path = write_config(tmp_path, tmp_path / "unused", pairs_file, model=bad)
    with pytest.raises(ValueError, match=r"model\.config: Causal2VecConfig\.llm_max_length=2 must be an integer >= 4"):
        TrainConfig.load(path)
    path = write_config(tmp_path, tmp_path / "unused", pairs_file, model={**bad, "config": {"pooling": "mean"}})
    with pytest.raises(ValueError, match=r"model\.config: unknown key 'pooling'.* \(valid keys: \[.*'encoder_pooling'"):
        TrainConfig.load(path)


def _numeric(hint: object) -> bool:
    if get_origin(hint) in (Union, types.UnionType):
        return any(_numeric(a) for a in get_args(hint) if a is not type(None))
    return hint in (int, float)


def test_every_numeric_field_of_the_config_declares_its_range():
    sections = [TrainConfig, *(getattr(config_module, n) for n in dir(config_module) if n.endswith("Section"))]
    sections.append(config_module.Source)
    unranged = [
        f"{cls.__name__}.{f.name}"
        for cls in sections
        for f in dataclasses.fields(cls)
        if _numeric(get_type_hints(cls)[f.name]) and "range" not in f.metadata
    ]
    assert not unranged, f"numeric fields without a range: {unranged}"


def test_the_shipped_configs_pass_the_range_checks():
    root = Path(__file__).resolve().parent.parent / "training" / "configs"
    for name in ("default.yaml", "public-e5.yaml"):
        TrainConfig.load(root / name)


# ---------------------------------------------------------------------- T8: duplicate keys


def test_a_duplicate_yaml_key_is_refused_with_its_line(tmp_path, pairs_file):
    path = write_config(tmp_path, tmp_path / "no-such-model", pairs_file)
    text = path.read_text()
    path.write_text(text + "model:\n  base: other\n")
    first, line = text.splitlines().index("model:") + 1, len(text.splitlines()) + 1
    with pytest.raises(ValueError, match=rf"{path}:{line}: duplicate key 'model' \(first on line {first}\)"):
        TrainConfig.load(path)
    nested = tmp_path / "nested.yaml"
    nested.write_text("optim:\n  batch_size: 4\n  seed: 1\n  batch_size: 8\n")
    with pytest.raises(ValueError, match=rf"{nested}:4: duplicate key 'batch_size' \(first on line 2\)"):
        TrainConfig.load(nested)


def test_yaml_merge_keys_may_still_be_overridden(tmp_path, pairs_file):
    path = tmp_path / "merge.yaml"
    path.write_text(
        f"optim: {{<<: {{batch_size: 4, seed: 3}}, batch_size: 8}}\n"
        f"data: {{sources: [{{name: bbc, path: {pairs_file}}}]}}\n"
    )
    optim = TrainConfig.load(path).optim
    assert (optim.batch_size, optim.seed) == (8, 3)


# ---------------------------------------------------------------------- T6: a folder as a data file


def test_a_folder_given_as_a_data_file_is_named_as_a_folder(tmp_path, pairs_file, capsys):
    folder = tmp_path / "tr"
    folder.mkdir()
    path = write_config(tmp_path, tmp_path / "no-such-model", folder)
    assert main(["--config", str(path)]) == 2
    assert f"source 'bbc': {folder} is a directory, not a JSONL file" in capsys.readouterr().err


# ---------------------------------------------------------------------- W4: runs that would train no step


def _copies(tmp_path: Path, pairs: list[Pair], name: str) -> Path:
    path = tmp_path / name
    write_pairs(path, pairs)
    return path


@pytest.mark.parametrize(
    ("pairs", "found"),
    [
        ([Pair("one headline", "one body")] * 8, 1),  # eight copies of one pair
        ([Pair(f"headline {i}", "the same body") for i in range(8)], 1),  # one document for every query
        ([Pair(f"q{i % 3}", f"d{i % 3}") for i in range(9)], 3),  # three distinct pairs, three times each
    ],
)
def test_a_source_with_no_batch_of_distinct_texts_is_refused_before_anything_loads(tmp_path, pairs, found, capsys):
    data = _copies(tmp_path, pairs, "dup.jsonl")
    path = write_config(tmp_path, tmp_path / "no-such-model", data, optim={"batch_size": 4})
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"source 'bbc' has no batch of optim.batch_size=4 pairs without a repeated text: only {found} of its" in err
    assert not (tmp_path / "run").exists(), "something was saved"


def test_hard_negatives_count_as_texts_of_a_batch(tmp_path, capsys):
    pairs = [Pair(f"q{i}", f"d{i}", ("the same negative",)) for i in range(8)]
    data = _copies(tmp_path, pairs, "negatives.jsonl")
    path = write_config(tmp_path, tmp_path / "no-such-model", data, optim={"batch_size": 4}, data={"negatives": 1})
    assert main(["--config", str(path)]) == 2
    assert "only 1 of its 8 pairs" in capsys.readouterr().err
    path = write_config(tmp_path, tmp_path / "no-such-model", data, optim={"batch_size": 4}, data={"negatives": 0})
    assert main(["--config", str(path)]) == 2  # the negatives are not used: the sources pass, the model load fails
    assert "no-such-model" in capsys.readouterr().err


def test_a_run_whose_trainer_ran_no_step_saves_no_final_model(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    """The check after training, for what the sources' check cannot foresee: the sampler found no batch."""
    from training import recipe

    monkeypatch.setattr(recipe, "check_one_batch", lambda *args: None)  # let the duplicated source through
    data = _copies(tmp_path, [Pair("one headline", "one body")] * 8, "dup.jsonl")
    path = write_config(tmp_path, tiny_checkpoint, data, optim={"batch_size": 4})
    assert main(["--config", str(path)]) == 2
    assert "the trainer ran 0 steps" in capsys.readouterr().err
    assert not (tmp_path / "run" / "final").exists()


# ---------------------------------------------------------------------- a finished run, shared by the tests below

STEPS = {"optim": {"max_steps": 4}, "output": {"save_steps": 2, "save_total_limit": None}}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_checkpoint, pairs_file) -> Path:
    """A 4-step run with checkpoints at steps 2 and 4 and its LoRA kept as an adapter in final/."""
    folder = tmp_path_factory.mktemp("finished")
    assert main(["--config", str(write_config(folder, tiny_checkpoint, pairs_file, **STEPS))]) == 0
    return folder / "run"


def copy_run(finished_run: Path, tmp_path: Path, tiny_checkpoint: Path, pairs_file: Path, **changes) -> Path:
    """A copy of the finished run in ``tmp_path/run``, and its config (with ``changes``) in ``tmp_path/run.yaml``."""
    shutil.copytree(finished_run, tmp_path / "run")
    sections = {name: {**STEPS.get(name, {}), **changes.get(name, {})} for name in {*STEPS, *changes}}
    return write_config(tmp_path, tiny_checkpoint, pairs_file, **sections)


def embeddings(folder: Path) -> np.ndarray:
    return Causal2Vec.from_pretrained(folder).encode([a.title for a in bbc_news_split("validation")[:6]])


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------- W6: output folders that are not the run's


def test_a_folder_that_no_run_wrote_is_refused_before_any_model_loads(tmp_path, pairs_file, capsys):
    run = tmp_path / "run"
    for folder in (run / "final", run / "checkpoint-1"):
        folder.mkdir(parents=True)
        (folder / "notes.txt").write_text("mine")
    (run / "notes.txt").write_text("mine")
    before = tree(run)
    path = write_config(tmp_path, tmp_path / "no-such-model", pairs_file)
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{run} holds checkpoint-1/, final/, notes.txt but no training_run.json" in err, err
    assert "--overwrite" in err and "no-such-model" not in err
    assert main(["--config", str(path), "--resume"]) == 2
    assert tree(run) == before, "a file of the user's changed"


def test_a_folder_of_another_config_is_refused_naming_what_differs(tmp_path, finished_run, tiny_checkpoint,
                                                                   pairs_file, capsys):  # fmt: skip
    path = copy_run(finished_run, tmp_path, tiny_checkpoint, pairs_file, optim={"max_steps": 6, "seed": 1})
    before = tree(tmp_path / "run")
    assert main(["--config", str(path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "was written by a run of another config (optim.max_steps: 6 here, 4 there; optim.seed: 1 here, 0" in err
    assert tree(tmp_path / "run") == before


def test_a_final_folder_that_is_not_a_checkpoint_is_refused_at_the_start(tmp_path, finished_run, tiny_checkpoint,
                                                                         pairs_file, capsys):  # fmt: skip
    path = copy_run(finished_run, tmp_path, tiny_checkpoint, pairs_file)
    final = tmp_path / "run" / "final"
    shutil.rmtree(final)
    final.mkdir()
    (final / "notes.txt").write_text("mine")
    assert main(["--config", str(path)]) == 2
    assert f"{final} is not a Causal2Vec checkpoint" in capsys.readouterr().err
    assert (final / "notes.txt").read_text() == "mine"


def test_save_final_refuses_a_folder_that_is_not_a_checkpoint(tmp_path, tiny_model):
    from training.recipe import save_final

    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a Causal2Vec checkpoint"):
        save_final(tiny_model, tmp_path / "final", merge=False)
    assert (tmp_path / "final" / "notes.txt").read_text() == "mine"


def test_overwrite_trains_into_a_folder_no_run_wrote_and_leaves_its_other_files(tmp_path, tiny_checkpoint,
                                                                               pairs_file):  # fmt: skip
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "final" / "notes.txt").write_text("mine")
    (run / "notes.txt").write_text("mine")
    path = write_config(tmp_path, tiny_checkpoint, pairs_file, optim={"max_steps": 1}, output={"save_steps": 1})
    assert main(["--config", str(path), "--overwrite"]) == 0
    assert (run / "notes.txt").read_text() == "mine"
    Causal2Vec.from_pretrained(run / "final")
    assert json.loads((run / "training_run.json").read_text())["config"]["optim"]["max_steps"] == 1
    assert main(["--config", str(path), "--merge"]) == 0, "the run's folder is now this config's"


def test_a_run_folder_from_before_the_run_record_resumes_with_overwrite(tmp_path, finished_run, tiny_checkpoint,
                                                                         pairs_file, capsys):  # fmt: skip
    path = copy_run(finished_run, tmp_path, tiny_checkpoint, pairs_file)
    run = tmp_path / "run"
    (run / "training_run.json").unlink()
    shutil.rmtree(run / "final")
    assert main(["--config", str(path), "--resume"]) == 2
    assert "but no training_run.json" in capsys.readouterr().err
    assert main(["--config", str(path), "--resume", "--overwrite"]) == 0  # from checkpoint-4: no step left
    assert (run / "training_run.json").is_file() and (run / "final" / "causal2vec_config.json").is_file()


# ---------------------------------------------------------------------- W5: resuming after a kill mid-checkpoint


def test_resume_skips_an_incomplete_checkpoint_and_ends_as_an_uninterrupted_run(tmp_path, finished_run,
                                                                                tiny_checkpoint, pairs_file,
                                                                                caplog):  # fmt: skip
    path = copy_run(finished_run, tmp_path, tiny_checkpoint, pairs_file)
    run = tmp_path / "run"
    shutil.rmtree(run / "final")
    for name in ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth"):  # as a kill left it
        (run / "checkpoint-4" / name).unlink()
    kept = (run / "checkpoint-2" / "optimizer.pt").stat().st_mtime_ns
    with caplog.at_level(logging.WARNING, logger="training.recipe"):
        assert main(["--config", str(path), "--resume"]) == 0
    assert f"{run / 'checkpoint-4'} is incomplete (it has no trainer_state.json)" in caplog.text
    assert "resuming from checkpoint-2" in caplog.text
    assert (run / "incomplete-checkpoint-4").is_dir(), "the incomplete folder is kept, out of the Trainer's way"
    assert (run / "checkpoint-4" / "trainer_state.json").is_file()
    assert (run / "checkpoint-2" / "optimizer.pt").stat().st_mtime_ns == kept, "trained again from step 0"
    np.testing.assert_allclose(embeddings(run / "final"), embeddings(finished_run / "final"), atol=1e-4)


def test_an_incomplete_checkpoint_is_neither_kept_nor_counted_by_the_rotation(tmp_path, finished_run):
    """An incomplete folder touched last is what the Trainer's rotation (by mtime) would keep over a complete one."""
    from transformers.trainer_utils import rotate_checkpoints

    from training.recipe import set_aside_incomplete

    run = tmp_path / "run"
    shutil.copytree(finished_run / "checkpoint-2", run / "checkpoint-2")
    shutil.copytree(finished_run / "checkpoint-4", run / "checkpoint-6")
    (run / "checkpoint-6" / "trainer_state.json").unlink()
    os.utime(run / "checkpoint-2", (1e9, 1e9))  # older than the incomplete one
    set_aside_incomplete(run)
    rotate_checkpoints(str(run), save_total_limit=1, use_mtime=True)
    assert (run / "checkpoint-2" / "trainer_state.json").is_file()
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-2", "incomplete-checkpoint-6"]


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda c: (c / "trainer_state.json").unlink(), "it has no trainer_state.json"),
        (lambda c: (c / "trainer_state.json").write_text("{"), "its trainer_state.json is unreadable"),
        (lambda c: (c / "optimizer.pt").unlink(), "it has no optimizer.pt"),
        (lambda c: (c / "scheduler.pt").unlink(), "it has no scheduler.pt"),
        (lambda c: (c / "encoder" / "model.safetensors").unlink(), "it has no encoder/model.safetensors"),
        (lambda c: shutil.rmtree(c / "llm"), "it has no llm/config.json (and 3 more files)"),
        (lambda c: (c / "optimizer.pt").rename(c / "optimizer.bin"), None),  # as accelerate's FSDP names it
        (lambda c: None, None),
    ],
)
def test_a_checkpoint_is_complete_only_with_every_file_the_trainer_writes(tmp_path, finished_run, damage, problem):
    from training.recipe import checkpoint_problem

    folder = tmp_path / "checkpoint-2"
    shutil.copytree(finished_run / "checkpoint-2", folder)
    damage(folder)
    assert checkpoint_problem(folder) == problem
    shutil.copytree(finished_run / "checkpoint-2", tmp_path / "checkpoint-3")
    assert checkpoint_problem(tmp_path / "checkpoint-3") == "its trainer_state.json is of step 2"


def test_resume_with_only_incomplete_checkpoints_names_them(tmp_path, finished_run, tiny_checkpoint, pairs_file,
                                                            capsys):  # fmt: skip
    path = copy_run(finished_run, tmp_path, tiny_checkpoint, pairs_file)
    for step in (2, 4):
        (tmp_path / "run" / f"checkpoint-{step}" / "trainer_state.json").write_text('{"global_st')  # cut short
    assert main(["--config", str(path), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "holds no complete checkpoint to resume from" in err
    assert "checkpoint-4 (its trainer_state.json is unreadable)" in err


# ---------------------------------------------------------------------- T17: --merge on a finished run


def test_merge_on_a_finished_run_folds_its_final_lora_without_training(tmp_path, finished_run, tiny_checkpoint,
                                                                       pairs_file, monkeypatch, capsys):  # fmt: skip
    from training import recipe

    path = copy_run(finished_run, tmp_path, tiny_checkpoint, pairs_file)
    final = tmp_path / "run" / "final"
    assert (final / "llm_adapter").is_dir()
    before = embeddings(final)

    def no_training(*args, **kwargs):
        raise AssertionError("--merge on a finished run trained again")

    monkeypatch.setattr(recipe, "train", no_training)
    assert main(["--config", str(path), "--merge"]) == 0
    assert f"merged model: {final}" in capsys.readouterr().out
    assert not (final / "llm_adapter").exists()
    np.testing.assert_allclose(embeddings(final), before, atol=1e-5)
    assert main(["--config", str(path), "--merge"]) == 0  # merged already: nothing to fold, nothing trained
