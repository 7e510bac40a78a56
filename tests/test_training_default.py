"""What the trained default is made with, on tiny models: training budgets, C's starting norm, dataset filters,
held-out task folders, and shipping a run's small files as the package's trained default."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from causal2vec import Causal2Vec, assets
from causal2vec.data.bbc import bbc_news_split
from causal2vec.projector import CALIBRATION_TEXTS
from tests.helpers import write_config
from training.cli import main
from training.config import ModelSection, TrainConfig
from training.data.pairs import Pair, read_pairs, write_pairs
from training.data.task import write_task_folder
from training.recipe import load_model, read_sources

INSTRUCTION = "Given a news headline, retrieve the article"


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory) -> Path:
    """One JSONL file holding two datasets with their own instructions, as the wiki and wordnet builders write."""
    path = tmp_path_factory.mktemp("pairs") / "two.jsonl"
    articles = bbc_news_split("train")[:80]
    pairs = [Pair(a.title, a.body[:300], (), INSTRUCTION, "headlines") for a in articles[:48]]
    pairs += [Pair(a.body[:60], a.body[:300], (), "Given a lead, retrieve the article", "leads") for a in articles[48:]]
    write_pairs(path, pairs)
    return path


@pytest.fixture(scope="module")
def adapter_run(tmp_path_factory, tiny_checkpoint, two_datasets) -> Path:
    """A short run shaped like the default's: a fresh (linear) isometric projector, training budgets, a saved LLM
    budget and a C norm, its LoRA kept as an adapter (what training.ship reads)."""
    folder = tmp_path_factory.mktemp("adapter-run")
    path = write_config(
        folder,
        tiny_checkpoint,
        two_datasets,
        model={
            "projector": "linear",
            "projector_init": "isometric",
            "contextual_norm": 40.0,
            "encoder_max_length": 24,
            "llm_max_length": 48,
        },
        data={"sources": [{"name": "headlines", "path": str(two_datasets), "dataset": "headlines"}]},
        optim={"max_steps": 6},
        output={"merge": False, "save_steps": 6, "llm_max_length": 20},
    )
    assert main(["--config", str(path)]) == 0
    return folder / "run" / "final"


def test_contextual_norm_rescales_the_projector_to_the_mean_norm_asked(tiny_checkpoint):
    model = load_model(ModelSection(base=str(tiny_checkpoint), contextual_norm=40.0))
    features = model.tokenize(list(CALIBRATION_TEXTS))
    with torch.no_grad():
        c = model.contextual_token(features["encoder_input_ids"], features["encoder_attention_mask"])
    assert c.norm(dim=-1).mean().item() == pytest.approx(40.0, rel=1e-4)
    with pytest.raises(ValueError, match=r"target=-1\.0 must be a positive finite norm"):
        model.calibrate_projector(target=-1.0)


def test_isometric_projector_init_then_the_norm(tiny_checkpoint):
    model = load_model(ModelSection(base=str(tiny_checkpoint), projector_init="isometric", contextual_norm=40.0))
    features = model.tokenize(list(CALIBRATION_TEXTS))
    with torch.no_grad():
        states = model.encoder(
            input_ids=features["encoder_input_ids"], attention_mask=features["encoder_attention_mask"]
        ).last_hidden_state
        c = model.contextual_token(features["encoder_input_ids"], features["encoder_attention_mask"])
    assert c.norm(dim=-1).mean().item() == pytest.approx(40.0, rel=1e-4)
    # The isometry keeps the encoder's geometry: every pooled vector maps to C with the same factor of length.
    mask = features["encoder_attention_mask"].unsqueeze(-1)
    pooled = (states * mask).sum(1) / mask.sum(1)
    assert 2 * model.projector.in_features <= model.projector.out_features  # the tiny MLP keeps every direction
    ratio = c.norm(dim=-1) / pooled.norm(dim=-1)
    torch.testing.assert_close(ratio, ratio.mean().expand_as(ratio), rtol=1e-4, atol=0)


def test_training_budgets_cap_training_and_the_saved_model_keeps_its_own(adapter_run, tiny_checkpoint):
    trained = Causal2Vec.from_pretrained(adapter_run)
    base = Causal2Vec.from_pretrained(tiny_checkpoint)
    # The encoder keeps the base's budget; the LLM keeps output.llm_max_length, not the training budget (48).
    assert trained.config.token_budgets() == (base.config.encoder_max_length, 20)
    assert (adapter_run / "llm_adapter").is_dir()
    assert (trained.config.projector, base.config.projector) == ("linear", "mlp")


def test_set_token_budgets_changes_the_layout(tiny_checkpoint, texts):
    model = Causal2Vec.from_pretrained(tiny_checkpoint)
    model.set_token_budgets(llm_max_length=8)
    features = model.tokenize(texts)
    assert features["llm_input_ids"].shape[1] == 8 and features["encoder_input_ids"].shape[1] > 8
    assert model.config.llm_max_length == 8
    with pytest.raises(ValueError, match="llm_max_length=2 must be an integer >= 4"):
        model.set_token_budgets(llm_max_length=2)


def test_a_source_can_take_one_dataset_of_a_file(tmp_path, tiny_checkpoint, two_datasets):
    sources = [
        {"name": "h", "path": str(two_datasets), "dataset": "headlines"},
        {"name": "l", "path": str(two_datasets), "dataset": "leads"},
    ]
    config = TrainConfig.load(write_config(tmp_path, tiny_checkpoint, two_datasets, data={"sources": sources}))
    read = read_sources(config.data, 16, 0)
    assert {name: (len(pairs), instruction) for name, (pairs, instruction) in read.items()} == {
        "h": (48, INSTRUCTION),
        "l": (32, "Given a lead, retrieve the article"),
    }
    sources[1]["dataset"] = "lede"
    config = TrainConfig.load(write_config(tmp_path, tiny_checkpoint, two_datasets, data={"sources": sources}))
    with pytest.raises(ValueError, match=r"no records of dataset 'lede'; it holds \['headlines', 'leads'\]"):
        read_sources(config.data, 16, 0)
    whole = [{"name": "both", "path": str(two_datasets)}]
    config = TrainConfig.load(write_config(tmp_path, tiny_checkpoint, two_datasets, data={"sources": whole}))
    with pytest.raises(ValueError, match="mixes 2 instructions"):
        read_sources(config.data, 16, 0)


@pytest.mark.parametrize(("corpus", "documents"), [(None, 32), (25, 25)])
def test_a_held_out_dataset_becomes_a_task_folder_eval_reads(tmp_path, two_datasets, corpus, documents):
    from eval.tasks import load_jsonl_task, read_qrels

    pairs = read_pairs(two_datasets)[0]
    counts = write_task_folder(
        pairs, tmp_path / "Leads", name="LeadsRetrieval", dataset="leads", queries=20, corpus=corpus
    )
    assert counts == {"corpus": documents, "queries": 20}
    task = load_jsonl_task(tmp_path / "Leads")
    assert task.metadata.name == "LeadsRetrieval"

    def read(name):
        return {r["id"]: r["text"] for r in map(json.loads, (tmp_path / "Leads" / name).read_text().split("\n")[:-1])}

    corpus, queries = read("corpus.jsonl"), read("queries.jsonl")
    positive_of = {p.query: p.positive for p in pairs if p.dataset == "leads"}
    for query_id, relevant in read_qrels(tmp_path / "Leads" / "qrels.tsv").items():
        assert [corpus[doc_id] for doc_id in relevant] == [positive_of[queries[query_id]]]
    spec = json.loads((tmp_path / "Leads" / "task.json").read_text())
    assert spec["instruction"] == "Given a lead, retrieve the article"
    assert len(corpus) == documents
    with pytest.raises(ValueError, match=r"no pair has dataset 'nope'; the input holds \['headlines', 'leads'\]"):
        write_task_folder(pairs, tmp_path / "x", name="X", dataset="nope", queries=5)
    with pytest.raises(ValueError, match=r"corpus=10 must be at least queries=20"):
        write_task_folder(pairs, tmp_path / "x", name="X", dataset="leads", queries=20, corpus=10)


def test_ship_writes_small_files_that_rebuild_the_trained_model(tmp_path, monkeypatch, adapter_run, tiny_checkpoint):
    """training.ship + the default's build give back the trained run (adapter merged, float16 adapter weights)."""
    from training import ship

    monkeypatch.setattr(assets, "untrained_assembly", lambda model_class: model_class.from_pretrained(tiny_checkpoint))
    monkeypatch.setattr(ship, "untrained_checkpoint", lambda model_class: tiny_checkpoint)
    shipped = tmp_path / "shipped"
    sizes = ship.ship(adapter_run, shipped, notes="tiny trained default")
    assert set(sizes) == {
        "config.json",
        "projector.safetensors",
        "llm_adapter/adapter_config.json",
        "llm_adapter/adapter_model.safetensors",
    }
    # Only what the run changed: the projector kind (the untrained assembly's is an MLP).
    assert json.loads((shipped / "config.json").read_text()) == {
        "llm_max_length": 20,
        "notes": "tiny trained default",
        "projector": "linear",
    }
    monkeypatch.setattr(assets, "TRAINED_DIR", shipped)
    monkeypatch.setattr(assets, "cache_dir", lambda: tmp_path / "cache")
    rebuilt = Causal2Vec.from_pretrained("default")
    run = Causal2Vec.from_pretrained(adapter_run)
    texts = ["A short headline", "Markets rallied after the central bank held rates, " * 5]
    assert not hasattr(rebuilt.llm, "peft_config") and hasattr(run.llm, "peft_config")
    np.testing.assert_allclose(rebuilt.encode(texts), run.encode(texts), atol=2e-3)
    assert np.abs(rebuilt.encode(texts) - Causal2Vec.from_pretrained(tiny_checkpoint).encode(texts)).max() > 1e-2


def test_ship_records_inference_settings_and_refuses_bad_ones(tmp_path, monkeypatch, adapter_run, tiny_checkpoint):
    from training import ship

    monkeypatch.setattr(ship, "untrained_checkpoint", lambda model_class: tiny_checkpoint)
    args = ["--run", str(adapter_run), "--notes", "n", "--set", "normalization=per_half"]
    args += ["--set", "contextual_share=0.8"]
    assert ship.main([*args, "--output", str(tmp_path / "shipped")]) == 0
    changes = json.loads((tmp_path / "shipped" / "config.json").read_text())
    assert changes["normalization"] == "per_half" and changes["contextual_share"] == 0.8
    with pytest.raises(ValueError, match=r"settings \['contextual_shares'\] name no config field"):
        ship.ship(adapter_run, tmp_path / "bad", notes="n", settings={"contextual_shares": 0.8})
    with pytest.raises(ValueError, match=r"contextual_share=2 must be a number from 0 to 1"):
        ship.ship(adapter_run, tmp_path / "bad", notes="n", settings={"contextual_share": 2})
    assert not (tmp_path / "bad").exists()


def test_ship_refuses_a_run_whose_base_weights_changed(tmp_path, monkeypatch, tiny_checkpoint, two_datasets):
    from training import ship

    path = write_config(
        tmp_path,
        tiny_checkpoint,
        two_datasets,
        data={"sources": [{"name": "h", "path": str(two_datasets), "dataset": "headlines"}]},
        optim={"max_steps": 2},
        output={"merge": True, "save_steps": 2},
    )
    assert main(["--config", str(path)]) == 0
    monkeypatch.setattr(ship, "untrained_checkpoint", lambda model_class: tiny_checkpoint)
    with pytest.raises(ValueError, match=r"llm/model.safetensors.*differ from the untrained assembly"):
        ship.ship(tmp_path / "run" / "final", tmp_path / "shipped", notes="x")
    assert not (tmp_path / "shipped").exists()
