"""Hub datasets in training: the shipped public-E5 config, and the hub loading path on local ``datasets`` folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from datasets import Dataset, DatasetDict

from causal2vec import Causal2Vec
from causal2vec.data.bbc import bbc_news_split
from training.cli import main
from training.config import Source, TrainConfig
from training.recipe import load_sources, read_source

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_E5 = ROOT / "training" / "configs" / "public-e5.yaml"
INSTRUCTION = "Given a news headline, retrieve the article"

# LLM2Vec's llm2vec/dataset/E5Data.py (E5_EMBEDDING_PROMPTS), first instruction where it lists two.
E5_PROMPTS = {
    "allnli": "Given a premise, retrieve a hypothesis that is entailed by the premise",
    "dureader": "Given a Chinese search query, retrieve web passages that answer the question",
    "eli5": "Provided a user question, retrieve the highest voted answers on Reddit ELI5 forum",
    "hotpotqa": "Given a multi-hop question, retrieve documents that can help answer the question",
    "miracl": "Given a question, retrieve Wikipedia passages that answer the question",
    "mrtydi": "Given a question, retrieve Wikipedia passages that answer the question",
    "msmarco_passage": "Given a web search query, retrieve relevant passages that answer the query",
    "nq": "Given a question, retrieve Wikipedia passages that answer the question",
    "quora_duplicates": "Given a question, retrieve questions that are semantically equivalent to the given question",
    "squad": "Retrieve Wikipedia passages that answer the question",
    "t2ranking": "Given a Chinese search query, retrieve web passages that answer the question",
    "trivia_qa": "Retrieve Wikipedia passages that answer the question",
}
# Echo embeddings' README: the sources sampled below 1 and the rows their hub copies hold.
RATIOS = {"eli5": (0.1, 325_000), "msmarco_passage": (0.5, 502_939), "quora_duplicates": (0.1, 101_762),
          "t2ranking": (0.5, 90_500)}  # fmt: skip


def _family(name: str) -> str:
    """miracl_en -> miracl, mrtydi_ja -> mrtydi; other names are their own family."""
    head = name.split("_")[0]
    return head if head in ("miracl", "mrtydi") else name


# ---------------------------------------------------------------------- the shipped config


def test_public_e5_config_validates_and_names_every_source_with_its_e5_instruction():
    config = TrainConfig.load(PUBLIC_E5)
    names = [s.name for s in config.data.sources]
    assert len(names) == len(set(names))
    assert {_family(n) for n in names} == set(E5_PROMPTS), "one source family per E5Data.py key, none invented"
    for source in config.data.sources:
        assert source.hub and "/" in source.hub and source.path is None, source.name
        assert source.split == "train", source.name
        assert source.instruction == E5_PROMPTS[_family(source.name)], source.name
        assert set(source.columns.values()) <= {"query", "positive", "negative"}, source.name
    assert {s.name: s.max_pairs for s in config.data.sources if s.max_pairs is not None} == {
        name: round(ratio * rows) for name, (ratio, rows) in RATIOS.items()
    }
    assert (config.train.projector, config.train.encoder, config.train.llm) == (True, "frozen", "lora")
    assert (config.lora.r, config.lora.alpha, config.lora.dropout) == (16, 32, 0.05)
    assert config.lora.targets == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert (config.loss.kind, config.loss.temperature, config.loss.gather_across_devices) == ("mnrl", 0.05, True)
    assert (config.optim.learning_rate, config.optim.warmup_ratio, config.optim.bf16) == (2e-4, 0.1, True)
    assert config.data.negatives == 1


# ---------------------------------------------------------------------- the hub path on local folders


def hub_rows(n: int = 40) -> dict[str, list]:
    """Hub-style columns: anchor / positive / negative text, plus a score column the loader must drop."""
    articles = bbc_news_split("train")[:n]
    return {
        "anchor": [a.title for a in articles],
        "positive": [a.body[:200] for a in articles],
        "negative": [articles[(i + 1) % n].body[:200] for i in range(n)],
        "score": [float(i) for i in range(n)],
    }


@pytest.fixture(scope="module")
def hub_folders(tmp_path_factory) -> dict[str, Path]:
    """The same rows saved with save_to_disk as a DatasetDict (train + validation) and as a plain Dataset."""
    root = tmp_path_factory.mktemp("hub")
    rows = hub_rows()
    validation = {k: v[:5] for k, v in hub_rows(45).items()}
    validation["anchor"] = [f"validation {i}" for i in range(5)]
    DatasetDict({"train": Dataset.from_dict(rows), "validation": Dataset.from_dict(validation)}).save_to_disk(
        root / "dict"
    )
    Dataset.from_dict(rows).save_to_disk(root / "plain")
    return {"dict": root / "dict", "plain": root / "plain"}


@pytest.mark.parametrize("kind", ["dict", "plain"])
def test_a_local_datasets_folder_reads_as_the_hub_rows_with_columns_renamed(hub_folders, kind):
    rows = hub_rows()
    source = Source(name="news", hub=str(hub_folders[kind]), columns={"anchor": "query"}, instruction=INSTRUCTION)
    pairs = read_source(source, skip_bad=False)
    assert [p.query for p in pairs] == rows["anchor"]
    assert [p.positive for p in pairs] == rows["positive"]
    assert [p.negatives for p in pairs] == [(n,) for n in rows["negative"]]
    assert all(p.instruction is None for p in pairs), "the instruction comes from the source, not the rows"


def test_the_split_of_a_saved_dataset_dict_is_the_one_named(hub_folders):
    source = Source(name="news", hub=str(hub_folders["dict"]), split="validation", columns={"anchor": "query"})
    assert [p.query for p in read_source(source, skip_bad=False)] == [f"validation {i}" for i in range(5)]


def test_load_sources_gives_query_positive_negative_columns_and_the_instruction_prompt(hub_folders, tiny_model):
    rows = hub_rows()
    data = TrainConfig.load(write_config(hub_folders["dict"].parent / "cfg", Path("unused"), hub_folders["dict"])).data
    datasets, prompts = load_sources(data, tiny_model.config, batch_size=8, seed=0)
    assert list(datasets) == ["news"]
    table = datasets["news"]
    assert table.column_names == ["query", "positive", "negative_1"]
    assert table["query"] == rows["anchor"] and table["negative_1"] == rows["negative"]
    assert prompts == {"news": {"query": tiny_model.config.format_instruction(INSTRUCTION)}}
    assert prompts["news"]["query"] and INSTRUCTION in prompts["news"]["query"]

    data.negatives = 0
    datasets, _ = load_sources(data, tiny_model.config, batch_size=8, seed=0)
    assert datasets["news"].column_names == ["query", "positive"]

    data.sources[0].max_pairs = 10
    datasets, _ = load_sources(data, tiny_model.config, batch_size=8, seed=0)
    assert len(datasets["news"]) == 10 and set(datasets["news"]["query"]) < set(rows["anchor"])


def test_several_hub_negative_columns_keep_their_order(tmp_path):
    Dataset.from_dict({"q": ["a", "b"], "p": ["pa", "pb"], "n1": ["x1", "y1"], "n2": ["x2", "y2"]}).save_to_disk(
        tmp_path / "multi"
    )
    columns = {"q": "query", "p": "positive", "n1": "negative_1", "n2": "negative_2"}
    pairs = read_source(Source(name="m", hub=str(tmp_path / "multi"), columns=columns), skip_bad=False)
    assert [(p.query, p.positive, p.negatives) for p in pairs] == [("a", "pa", ("x1", "x2")), ("b", "pb", ("y1", "y2"))]


def test_a_missing_column_names_the_columns_the_dataset_has(hub_folders):
    source = Source(name="news", hub=str(hub_folders["plain"]))  # no mapping: anchor is not query
    with pytest.raises(ValueError, match=r"has no column \['query'\] \(columns: \['anchor', 'positive', 'negative', "
                                         r"'score'\]\); map them with columns"):  # fmt: skip
        read_source(source, skip_bad=False)
    wrong = Source(name="news", hub=str(hub_folders["plain"]), columns={"title": "query", "text": "positive"})
    with pytest.raises(ValueError, match=r"no column \['query'\].*'anchor', 'positive'"):
        read_source(wrong, skip_bad=False)


# ---------------------------------------------------------------------- a real run


def write_config(folder: Path, base: Path, hub: Path, **sections: dict) -> Path:
    data = {
        "model": {"base": str(base)},
        "train": {"projector": True, "encoder": "frozen", "llm": "lora"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "data": {"sources": [{"name": "news", "hub": str(hub), "split": "train", "columns": {"anchor": "query"},
                              "instruction": INSTRUCTION}], "negatives": 1},
        "optim": {"batch_size": 8, "max_steps": 3, "learning_rate": 1e-3, "lr_projector": 1e-2, "bf16": False},
        "output": {"dir": str(folder / "run"), "save_steps": 3, "logging_steps": 1},
    }  # fmt: skip
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_training_from_a_local_datasets_folder_writes_a_final_model_that_loads(tmp_path, tiny_checkpoint, hub_folders):
    path = write_config(tmp_path, tiny_checkpoint, hub_folders["dict"])
    assert main(["--config", str(path)]) == 0
    final = tmp_path / "run" / "final"
    assert (tmp_path / "run" / "checkpoint-3").is_dir()
    trained = Causal2Vec.from_pretrained(final)
    before = Causal2Vec.from_pretrained(tiny_checkpoint)
    texts = hub_rows()["anchor"][:4]
    after = trained.encode_query(texts, instruction=INSTRUCTION)
    assert after.shape[0] == 4
    assert abs(after - before.encode_query(texts, instruction=INSTRUCTION)).max() > 1e-4, "training changed nothing"


def test_a_run_on_a_folder_without_the_mapped_columns_fails_before_training(
    tmp_path, tiny_checkpoint, hub_folders, capsys
):
    path = write_config(tmp_path, tiny_checkpoint, hub_folders["plain"], data={"sources": [
        {"name": "news", "hub": str(hub_folders["plain"]), "columns": {"headline": "query"}}]})  # fmt: skip
    assert main(["--config", str(path)]) == 2
    assert "source 'news'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_hub_subset_reaches_load_dataset(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, split=None):  # records the call; the hub itself is not reachable here
        calls.append((path, name, split))
        return Dataset.from_dict({"anchor": ["q"], "positive": ["p"]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    source = Source(name="h", hub="sentence-transformers/hotpotqa", subset="triplet", columns={"anchor": "query"})
    assert [(p.query, p.positive) for p in read_source(source, skip_bad=False)] == [("q", "p")]
    assert calls == [("sentence-transformers/hotpotqa", "triplet", "train")]


def test_a_split_the_folder_lacks_is_named(hub_folders):
    source = Source(name="news", hub=str(hub_folders["dict"]), split="test", columns={"anchor": "query"})
    with pytest.raises(ValueError, match=r"has splits \['train', 'validation'\], not 'test'"):
        read_source(source, skip_bad=False)


def test_only_text_columns_named_negative_are_negatives(tmp_path):
    rows = {"query": ["a"], "positive": ["p"], "negative": ["n"], "negative_score": [0.5], "negatives": [["x", "y"]]}
    Dataset.from_dict(rows).save_to_disk(tmp_path / "mixed")
    pairs = read_source(Source(name="m", hub=str(tmp_path / "mixed")), skip_bad=False)
    assert [p.negatives for p in pairs] == [("n",)]


def test_mapping_onto_a_column_the_dataset_has_is_a_clear_error(tmp_path):
    Dataset.from_dict({"anchor": ["a"], "query": ["q"], "positive": ["p"]}).save_to_disk(tmp_path / "both")
    source = Source(name="b", hub=str(tmp_path / "both"), columns={"anchor": "query"})
    with pytest.raises(ValueError, match=r"columns maps onto \['query'\], which the dataset already has"):
        read_source(source, skip_bad=False)
