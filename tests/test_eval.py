"""``python -m eval``: the mteb wrapper, the offline BBC tasks, user JSONL tasks, --compare, and bad input.

Every score is checked against one recomputed here from ``model.encode``: nDCG@10 by brute-force cosine ranking
(numpy), STS Spearman (scipy), and clustering V-measure and k-shot classification accuracy (scikit-learn, replaying
the sampling of mteb 2.x). A wrapper that returned random vectors fails each of them.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, get_args

import mteb
import numpy as np
import pytest
from datasets import Dataset, DatasetDict
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskType
from mteb.mocks.mock_tasks.classification import MockClassificationTask
from mteb.mocks.mock_tasks.retrieval import MockRetrievalTask
from mteb.mocks.mock_tasks.sts import MockSTSTask
from mteb.results import TaskResult
from mteb.types import PromptType
from scipy.stats import spearmanr
from sklearn.cluster import MiniBatchKMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, v_measure_score

from causal2vec import Causal2Vec
from causal2vec.data.bbc import Article, bbc_news_split
from causal2vec.mteb_encoder import load_instructions
from eval.cli import main
from eval.models import Causal2VecEncoder, ModelSource, load_encoder, resolve_model
from eval.tasks import LOCAL_TASKS
from tests.helpers import bbc_reference, ndcg_at_10

REPO = Path(__file__).resolve().parents[1]


class RecordingEncoder(Causal2VecEncoder):
    """The real wrapper, noting each call's task, prompt type, instruction and texts."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, PromptType | None, str | None, list[str]]] = []

    def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
        batches = list(inputs)
        texts = [t for b in batches for t in (b["text"] if "body" not in b else b["body"])]
        self.calls.append((task_metadata.name, prompt_type, self.instruction_for(task_metadata, prompt_type), texts))
        return super().encode(
            batches, task_metadata=task_metadata, hf_split=hf_split, hf_subset=hf_subset, prompt_type=prompt_type,
            **kwargs,
        )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_encoder(tiny_checkpoint) -> RecordingEncoder:
    source = resolve_model(str(tiny_checkpoint))
    wrapped = load_encoder(source, instructions=load_instructions(), device="cpu", dtype="float32")
    return RecordingEncoder(wrapped.model, wrapped.mteb_model_meta, wrapped.instructions)


def _sts_pairs(n: int = 60) -> dict[str, list[Any]]:
    """Headline–body pairs of BBC validation articles: 5 for the article's own body, 2 for another article on the
    same topic, 0 for an article on another topic (a third of the pairs each)."""
    articles = bbc_news_split("validation")  # grouped by topic: every third article spans all five
    heads = articles[::3][:n]
    others = [a for a in articles if a not in heads]
    rows: dict[str, list[Any]] = {"sentence1": [], "sentence2": [], "score": []}
    for i, article in enumerate(heads):
        rotated = others[i:] + others[:i]
        partner, score = [
            (article, 5),
            (next(b for b in rotated if b.topic == article.topic), 2),
            (next(b for b in rotated if b.topic != article.topic), 0),
        ][i % 3]
        rows["sentence1"].append(article.title)
        rows["sentence2"].append(partner.body[:400])
        rows["score"].append(score)
    return rows


class HeadlineBodySTS(AbsTaskSTS):
    """An offline STS task with enough pairs (60) that the Spearman of random embeddings is far from the model's."""

    metadata = MockSTSTask.metadata.model_copy(update={"name": "HeadlineBodySTS"})
    min_score = 0
    max_score = 5

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        self.dataset = DatasetDict({"test": Dataset.from_dict(_sts_pairs())})
        self.data_loaded = True


def _sts_reference(model: Causal2Vec, rows: dict[str, list[Any]], instruction: str) -> float:
    """Spearman of the gold scores and the cosines of both sides, each encoded with the STS instruction."""
    a = model.encode(rows["sentence1"], instruction=instruction, normalize=True)
    b = model.encode(rows["sentence2"], instruction=instruction, normalize=True)
    return float(spearmanr(rows["score"], (a * b).sum(1)).statistic)


def _classification_reference(
    model: Causal2Vec,
    instruction: str,
    train: tuple[list[str], list[Any]],
    test: tuple[list[str], list[Any]],
    *,
    seed: int = 42,
    samples_per_label: int = 8,
    experiments: int = 10,
) -> float:
    """Mean accuracy of mteb 2.x's k-shot logistic-regression experiments, replayed with scikit-learn.

    mteb shuffles one list of train indices in place with a fresh ``np.random.RandomState(seed)`` before each
    experiment (so the shuffles compound), keeps the first ``samples_per_label`` of each label, fits
    ``LogisticRegression(max_iter=100, random_state=seed)`` and scores accuracy on the whole test split. The train
    texts are embedded once, as the sorted union of every experiment's picks.
    """
    (train_texts, train_labels), (test_texts, test_labels) = train, test
    order, picks = list(range(len(train_texts))), []
    for _ in range(experiments):
        np.random.RandomState(seed).shuffle(order)
        counts: Counter = Counter()
        picked = []
        for i in order:
            if counts[train_labels[i]] < samples_per_label:
                counts[train_labels[i]] += 1
                picked.append(i)
        picks.append(picked)
    union = sorted(set().union(*picks))
    embedded = model.encode([train_texts[i] for i in union], instruction=instruction, normalize=True)
    row = {index: position for position, index in enumerate(union)}
    test_embeddings = model.encode(test_texts, instruction=instruction, normalize=True)
    accuracies = []
    for picked in picks:
        classifier = LogisticRegression(max_iter=100, random_state=seed)
        classifier.fit(embedded[[row[i] for i in picked]], [train_labels[i] for i in picked])
        accuracies.append(accuracy_score(test_labels, classifier.predict(test_embeddings)))
    return float(np.mean(accuracies))


def _clustering_reference(
    embeddings: np.ndarray, labels: list[str], *, seed: int = 42, runs: int = 10, sample: int = 16_384
) -> float:
    """Mean V-measure of mteb 2.x's bootstrapped clustering, replayed with scikit-learn.

    Each run draws ``sample`` documents with replacement (``random.Random(seed).choices``, one generator for all
    runs) and clusters them with one ``MiniBatchKMeans`` (k = number of labels, batch 512, k-means++, one init,
    ``random_state=seed``) refitted per run.
    """
    rng, gold = random.Random(seed), np.array(labels)
    kmeans = MiniBatchKMeans(n_clusters=len(set(labels)), batch_size=512, init="k-means++", n_init=1, random_state=seed)
    scores = []
    for _ in range(runs):
        drawn = rng.choices(range(len(labels)), k=sample)
        scores.append(v_measure_score(gold[drawn], kmeans.fit_predict(embeddings[drawn])))
    return float(np.mean(scores))


def test_wrapper_scores_retrieval_sts_and_classification_as_recomputed_here(tiny_encoder, tiny_model):
    tiny_encoder.calls.clear()
    tasks = [MockRetrievalTask(), HeadlineBodySTS(), MockClassificationTask()]
    result = mteb.evaluate(tiny_encoder, tasks, cache=None, co2_tracker=False, show_progress_bar=False)
    assert not result.exceptions
    scores = {r.task_name: r for r in result.task_results}
    assert set(scores) == {"MockRetrievalTask", "HeadlineBodySTS", "MockClassificationTask"}
    instructions = load_instructions()

    # Retrieval: queries carry the instruction, documents none, and the score is the brute-force one.
    calls = {(name, kind): (instr, texts) for name, kind, instr, texts in tiny_encoder.calls}
    query_instr, queries = calls["MockRetrievalTask", PromptType.query]
    doc_instr, _ = calls["MockRetrievalTask", PromptType.document]
    assert query_instr == instructions["Retrieval"] and doc_instr is None
    task = MockRetrievalTask()
    task.load_data()
    split = task.dataset["default"]["test"]
    q = tiny_model.encode(list(split["queries"]["text"]), instruction=query_instr)
    docs = [f"{d['title']}\n{d['text']}" for d in split["corpus"]]
    d = tiny_model.encode(docs)
    best = {qid: max(rel, key=rel.get) for qid, rel in split["relevant_docs"].items()}
    doc_ids = list(split["corpus"]["id"])
    relevant = [doc_ids.index(best[qid]) for qid in split["queries"]["id"]]
    assert scores["MockRetrievalTask"].get_score() == pytest.approx(ndcg_at_10(q, d, relevant), abs=1e-4)
    assert queries == list(split["queries"]["text"])

    # STS: both sides are encoded with the STS instruction; the score is the Spearman of cosines and gold scores.
    sts_calls = [c for c in tiny_encoder.calls if c[0] == "HeadlineBodySTS"]
    assert {c[1] for c in sts_calls} == {None} and {c[2] for c in sts_calls} == {instructions["STS"]}
    rows = _sts_pairs()
    assert [c[3] for c in sts_calls] == [rows["sentence1"], rows["sentence2"]]
    expected = _sts_reference(tiny_encoder.model, rows, instructions["STS"])
    assert scores["HeadlineBodySTS"].get_score() == pytest.approx(expected, abs=1e-6)

    # Classification: every text gets the task type's instruction; the accuracy is scikit-learn's on the same split.
    mock = MockClassificationTask()
    mock.load_data()
    train, test = ((list(mock.dataset[s]["text"]), list(mock.dataset[s]["label"])) for s in ("train", "test"))
    expected = _classification_reference(tiny_encoder.model, instructions["Classification"], train, test)
    assert {c[2] for c in tiny_encoder.calls if c[0] == "MockClassificationTask"} == {instructions["Classification"]}
    assert scores["MockClassificationTask"].get_score() == pytest.approx(expected, abs=1e-9)


def test_instruction_precedence_task_name_then_task_prompt_then_task_type(tiny_encoder):
    instructions = tiny_encoder.instructions
    sci_fact = mteb.get_task("SciFact").metadata
    assert tiny_encoder.instruction_for(sci_fact, PromptType.query) == instructions["SciFact"]
    assert tiny_encoder.instruction_for(sci_fact, PromptType.document) is None
    unlisted = mteb.get_task("LegalBenchConsumerContractsQA").metadata
    assert unlisted.name not in instructions
    expected = unlisted.prompt["query"] if isinstance(unlisted.prompt, dict) else unlisted.prompt
    expected = expected or instructions["Retrieval"]
    assert tiny_encoder.instruction_for(unlisted, PromptType.query) == expected
    no_prompt = MockClassificationTask().metadata
    assert no_prompt.prompt is None
    assert tiny_encoder.instruction_for(no_prompt, None) == instructions["Classification"]


def test_shipped_instructions_name_real_tasks_or_task_types():
    instructions = load_instructions()
    task_types = set(get_args(TaskType))
    for key in instructions:
        if key in LOCAL_TASKS or key in task_types:
            continue
        assert mteb.get_task(key).metadata.name == key  # raises KeyError for a misspelt task


def _article_texts(articles: list[Article]) -> tuple[list[str], list[str]]:
    """Headline and body on separate lines, as the index embeds a titled document, and the topics."""
    return [f"{a.title}\n{a.body}" for a in articles], [a.topic for a in articles]


def _table(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    """Parse a Markdown table: the header cells and each row's cells by its first cell."""
    lines = path.read_text().strip().splitlines()
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    assert all(set(c) <= set("-:") for c in cells[1]), "second line must be the separator row"
    assert len({len(row) for row in cells}) == 1, "every row has as many cells as the header"
    return cells[0], {row[0]: row[1:] for row in cells[2:]}


def test_local_bbc_tasks_end_to_end(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["--model", str(tiny_checkpoint), "--benchmark", "BBCNews", "--output", str(out), "--dtype", "float32"]
    assert main(args) == 0
    results = {}
    for name in LOCAL_TASKS:
        (path,) = out.glob(f"results/local__tiny/*/*/*/{name}.json")
        results[name] = TaskResult.from_disk(path)
    model, instructions = Causal2Vec.from_pretrained(tiny_checkpoint), load_instructions()
    assert results["BBCNewsRetrieval"].get_score() == pytest.approx(bbc_reference(model), abs=1e-4)
    test_texts, test_topics = _article_texts(bbc_news_split("test"))
    clustered = model.encode(test_texts, instruction=instructions["BBCNewsClustering"], normalize=True)
    expected = _clustering_reference(clustered, test_topics)
    assert results["BBCNewsClustering"].get_score() == pytest.approx(expected, abs=1e-6)
    train = _article_texts(bbc_news_split("train"))
    expected = _classification_reference(model, instructions["BBCNewsClassification"], train, (test_texts, test_topics))
    assert results["BBCNewsClassification"].get_score() == pytest.approx(expected, abs=1e-6)
    loaded = mteb.ResultCache(cache_path=out).load_results(
        tasks=list(LOCAL_TASKS), include_remote=False, load_experiments="match_name"
    )
    assert [(m.model_name, len(m.task_results)) for m in loaded.model_results] == [("local/tiny", 3)]
    header, rows = _table(out / "summary.md")
    assert header == ["Task", "Type", "Metric", str(tiny_checkpoint)]
    for name, result in results.items():
        assert float(rows[name][-1]) == pytest.approx(100 * result.get_score(), abs=0.005)
    assert "| BBCNewsRetrieval |" in capsys.readouterr().out


def test_results_are_reused_for_the_same_weights_unless_overwrite(tiny_checkpoint, tmp_path):
    out = tmp_path / "eval"
    args = ["--model", str(tiny_checkpoint), "--tasks", "BBCNewsRetrieval", "--output", str(out), "--dtype", "float32"]
    assert main(args) == 0
    (path,) = out.glob("results/*/*/*/*/BBCNewsRetrieval.json")
    record = json.loads(path.read_text())
    true_score = record["scores"]["test"][0]["main_score"]
    record["scores"]["test"][0]["main_score"] = 0.12345
    path.write_text(json.dumps(record))
    assert main(args) == 0

    def summary_score() -> float:
        return json.loads((out / "summary.json").read_text())["scores"]["BBCNewsRetrieval"][str(tiny_checkpoint)]

    assert summary_score() == 0.12345
    assert main([*args, "--overwrite"]) == 0
    assert summary_score() == pytest.approx(true_score)


def test_revision_is_a_fingerprint_of_the_weights(tiny_checkpoint, tmp_path):
    copy = tmp_path / "tiny"
    shutil.copytree(tiny_checkpoint, copy)
    assert (
        ModelSource("a", "causal2vec", str(copy), "local/tiny").fingerprint()
        == resolve_model(str(tiny_checkpoint)).fingerprint()
    )
    with open(copy / "projector.safetensors", "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\x00\x00\x80\x3f")
    assert resolve_model(str(copy)).fingerprint() != resolve_model(str(tiny_checkpoint)).fingerprint()


def _write_task(folder: Path, n: int = 40, **task_json: str) -> list:
    articles = bbc_news_split("validation")[:n]
    folder.mkdir()
    with open(folder / "corpus.jsonl", "w") as f:
        for a in articles:
            f.write(json.dumps({"_id": f"d-{a.id}", "title": "", "text": a.body}) + "\n")
    with open(folder / "queries.jsonl", "w") as f:
        for a in articles:
            f.write(json.dumps({"_id": f"q-{a.id}", "text": a.title}) + "\n")
        f.write(json.dumps({"_id": "q-unjudged", "text": "a query without qrels"}) + "\n")
    (folder / "qrels").mkdir()
    rows = "".join(f"q-{a.id}\td-{a.id}\t1\n" for a in articles)
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    if task_json:
        (folder / "task.json").write_text(json.dumps(task_json))
    return articles


def test_user_jsonl_retrieval_task_without_code(tiny_checkpoint, tmp_path):
    instruction = "Given a headline, find its article"
    articles = _write_task(tmp_path / "headlines", name="MyHeadlines", instruction=instruction)
    out = tmp_path / "eval"
    args = ["--model", str(tiny_checkpoint), "--tasks", str(tmp_path / "headlines"), "--output", str(out)]
    assert main([*args, "--dtype", "float32"]) == 0
    (path,) = out.glob("results/*/*/*/*/MyHeadlines.json")
    model = Causal2Vec.from_pretrained(tiny_checkpoint)
    q = model.encode([a.title for a in articles], instruction=instruction)
    d = model.encode([a.body for a in articles])
    expected = ndcg_at_10(q, d, list(range(len(articles))))
    assert TaskResult.from_disk(path).get_score() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: (f / "qrels" / "test.tsv").unlink(), r"missing qrels\.tsv \(or qrels/test\.tsv, qrels\.jsonl\)"),
        (lambda f: (f / "corpus.jsonl").unlink(), r"is not a retrieval task folder: missing corpus\.jsonl"),
        (
            lambda f: (f / "qrels" / "test.tsv").write_text("q-x\td-nope\t1\n"),
            r"names ids that are not in queries\.jsonl / corpus\.jsonl: queries \['q-x'\], documents \['d-nope'\]",
        ),
        (lambda f: (f / "qrels" / "test.tsv").write_text("a\tb\tc\nq\td\thigh\n"), r"test\.tsv:2: score 'high'"),
        (lambda f: (f / "task.json").write_text('{"nmae": "x"}'), r"unknown keys \['nmae'\]"),
        (lambda f: (f / "task.json").write_text('{"name": "SciFact"}'), r"named 'SciFact', which is already an MTEB"),
    ],
)
def test_user_task_errors_name_the_file_and_problem(tiny_checkpoint, tmp_path, capsys, change, message):
    _write_task(tmp_path / "t", n=3)
    change(tmp_path / "t")
    args = ["--model", str(tiny_checkpoint), "--tasks", str(tmp_path / "t"), "--output", str(tmp_path / "o")]
    assert main(args) == 2
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.slow
def test_compare_writes_one_table_for_causal2vec_and_sentence_transformers(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "cmp"
    models = f"{tiny_checkpoint},all-MiniLM-L6-v2"
    assert main(["--compare", models, "--tasks", "BBCNewsRetrieval", "--output", str(out)]) == 0
    header, rows = _table(out / "summary.md")
    assert header == ["Task", "Type", "Metric", str(tiny_checkpoint), "all-MiniLM-L6-v2"]
    assert set(rows) == {"BBCNewsRetrieval", "Average (1 task)"}
    (tiny_path,) = out.glob("results/local__tiny/*/*/*/BBCNewsRetrieval.json")
    (minilm_path,) = out.glob("results/sentence-transformers__all-MiniLM-L6-v2/*/BBCNewsRetrieval.json")
    expected = [100 * TaskResult.from_disk(p).get_score() for p in (tiny_path, minilm_path)]
    assert [float(c) for c in rows["BBCNewsRetrieval"][2:]] == pytest.approx(expected, abs=0.005)
    assert [float(c) for c in rows["Average (1 task)"][2:]] == pytest.approx(expected, abs=0.005)
    assert expected[1] > 80, "all-MiniLM-L6-v2 finds most BBC articles from their headlines"


def test_unknown_task_and_benchmark_list_close_matches(tmp_path, capsys):
    assert main(["--model", "default", "--tasks", "BBCNewsRetrival", "--output", str(tmp_path)]) == 2
    assert "unknown task 'BBCNewsRetrival'" in (err := capsys.readouterr().err) and "'BBCNewsRetrieval'" in err
    assert main(["--model", "default", "--tasks", "sts12", "--output", str(tmp_path)]) == 2
    assert "did you mean 'STS12'" in capsys.readouterr().err
    assert main(["--model", "default", "--benchmark", "BBCNew", "--output", str(tmp_path)]) == 2
    assert "unknown benchmark 'BBCNew'; did you mean 'BBCNews'" in capsys.readouterr().err


@pytest.mark.parametrize("under", [False, True], ids=["is-a-file", "under-a-file"])
def test_an_output_that_is_a_file_is_rejected_before_any_work(tiny_checkpoint, tmp_path, capsys, under):
    blocker = tmp_path / "results.txt"
    blocker.write_text("keep me")
    output = blocker / "eval" if under else blocker
    args = ["--model", str(tiny_checkpoint), "--tasks", "BBCNewsRetrieval", "--output", str(output)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"--output {output} " in err and "must be a folder" in err, err
    assert (f"lies under {blocker}, which is a file" if under else "is a file") in err
    assert blocker.read_text() == "keep me"


def test_a_folder_that_is_not_a_checkpoint_is_rejected(tmp_path, capsys):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    assert main(["--model", str(tmp_path / "hf"), "--tasks", "BBCNewsRetrieval", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a checkpoint: it has no causal2vec_config.json" in err and "plain Hugging Face model" in err
    assert not (tmp_path / "summary.md").exists()


def test_onnx_backend_scores_as_torch_does(tiny_checkpoint, tiny_onnx, tmp_path, capsys):
    args = ["--tasks", "BBCNewsRetrieval", "--output", str(tmp_path / "eval"), "--backend", "onnx"]
    assert main(["--model", str(tiny_checkpoint), *args]) == 2
    assert "has no ONNX export (onnx/model.onnx); make one with: python -m export" in capsys.readouterr().err
    folder = tiny_onnx.folder  # python -m export --model tiny_checkpoint --output .../tiny
    assert main(["--model", str(folder), *args]) == 0
    (path,) = (tmp_path / "eval").glob("results/local__tiny/*/experiments/backend_onnx/BBCNewsRetrieval.json")
    expected = bbc_reference(Causal2Vec.from_pretrained(tiny_checkpoint))
    assert TaskResult.from_disk(path).get_score() == pytest.approx(expected, abs=1e-3)


def test_a_task_that_needs_the_network_is_reported_and_the_others_run(tiny_checkpoint, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    out = tmp_path / "eval"
    command = [sys.executable, "-m", "eval", "--model", str(tiny_checkpoint), "--output", str(out)]
    proc = subprocess.run(
        [*command, "--tasks", "STS12,BBCNewsRetrieval", "--dtype", "float32"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "task STS12 needs the network: its dataset mteb/sts12-sts is not cached here" in proc.stderr
    _, rows = _table(out / "summary.md")
    assert rows["STS12"][-1] == "needs network"
    assert float(rows["BBCNewsRetrieval"][-1]) > 0


def test_mteb_benchmarks_and_tasks_resolve_without_loading_data():
    from eval.tasks import resolve_benchmark, resolve_tasks

    tasks = resolve_benchmark("MTEB(eng, v1)")
    assert len(tasks) == 56 and "STS12" in {t.metadata.name for t in tasks}
    names = ["SciFact", "BBCNewsClustering"]
    assert [t.metadata.name for t in resolve_tasks(names)] == names
    assert not any(t.data_loaded for t in tasks)


def test_qrels_read_from_tsv_with_or_without_header_and_from_jsonl(tmp_path):
    from eval.tasks import read_qrels

    expected = {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2}}
    (tmp_path / "bare.tsv").write_text("q1\td1\t1\nq1\td2\t0\nq2\td3\t2\n")
    (tmp_path / "headed.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\nq2\td3\t2\n")
    (tmp_path / "q.jsonl").write_text(
        '{"query-id": "q1", "corpus-id": "d1", "score": 1}\n{"query_id": "q1", "corpus_id": "d2", "score": 0}\n\n'
        '{"query-id": "q2", "corpus-id": "d3", "score": 2}\n'
    )
    for name in ("bare.tsv", "headed.tsv", "q.jsonl"):
        assert read_qrels(tmp_path / name) == expected, name
    (tmp_path / "bad.jsonl").write_text('{"query-id": "q1", "score": 1}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: a qrels record needs 'query-id', 'corpus-id' and 'score'"):
        read_qrels(tmp_path / "bad.jsonl")
    (tmp_path / "wide.tsv").write_text("q1\td1\t1\textra\n")
    with pytest.raises(ValueError, match=r"wide\.tsv:1: 4 columns"):
        read_qrels(tmp_path / "wide.tsv")


def _rescore(folder: Path, score: str, first_only: bool = False) -> None:
    """Give every qrels row (or only the first judged query's) another score."""
    path = folder / "qrels" / "test.tsv"
    header, *rows = path.read_text().splitlines()
    rows = [r.rsplit("\t", 1)[0] + f"\t{score}" if not first_only or i == 0 else r for i, r in enumerate(rows)]
    path.write_text("\n".join([header, *rows]) + "\n")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda f: (f / "task.json").write_text('{"main_score": "accuracy_at_999"}'),
            r"task\.json: main_score 'accuracy_at_999' is not a score of a retrieval task; did you mean 'accuracy'\? "
            r"Choose one of accuracy, hit_rate_at_1, .*, ndcg_at_10, .*, recall_at_5, or an nauc_\* score",
        ),
        (lambda f: (f / "task.json").write_text('{"main_score": "NDCG@10"}'), r"main_score 'NDCG@10' is not a score"),
        (lambda f: _rescore(f, "0"), r"task t: no score in .*test\.tsv is positive, so no query has a relevant"),
        (lambda f: _rescore(f, "-5"), r"task t: no score in .*test\.tsv is positive"),
    ],
)
def test_task_folder_scores_are_checked_before_any_model_loads(tmp_path, capsys, monkeypatch, change, message):
    import eval.models

    _write_task(tmp_path / "t", n=3)
    change(tmp_path / "t")
    monkeypatch.setattr(eval.models, "resolve_model", lambda label: pytest.fail(f"{label} was loaded"))
    args = ["--model", "default", "--tasks", str(tmp_path / "t"), "--output", str(tmp_path / "o")]
    assert main(args) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_queries_without_a_positive_score_are_named_in_a_warning(tmp_path, caplog):
    from eval.tasks import load_jsonl_task

    articles = _write_task(tmp_path / "t", n=3)
    _rescore(tmp_path / "t", "0", first_only=True)
    with caplog.at_level("WARNING", logger="eval.tasks"):
        task = load_jsonl_task(tmp_path / "t")
    assert task.metadata.main_score == "ndcg_at_10"
    (record,) = [r for r in caplog.records if r.levelname == "WARNING"]
    pattern = rf"task t: 1 of 3 judged queries in .*test\.tsv have no positive score .* e\.g\. 'q-{articles[0].id}'"
    assert re.search(pattern, record.getMessage()), record.getMessage()


def test_mteb_evaluates_the_model_object_as_python_m_eval_does(tiny_checkpoint, tiny_encoder, onnx_export):
    """``mteb.evaluate(model, tasks)`` on a Causal2Vec model and on its ONNX export, without a wrapper, scores as the
    wrapper ``python -m eval`` runs does; mteb's own offline ``mock_run`` finds the protocol complete."""
    from causal2vec.backends.onnx import OnnxCausal2Vec

    model = Causal2Vec.from_pretrained(tiny_checkpoint)
    tasks = [MockRetrievalTask(), HeadlineBodySTS()]
    options = {"cache": None, "co2_tracker": False, "show_progress_bar": False}
    expected = {r.task_name: r.get_score() for r in mteb.evaluate(tiny_encoder, tasks, **options).task_results}
    for candidate in (model, OnnxCausal2Vec.from_pretrained(onnx_export)):
        meta = candidate.mteb_model_meta
        assert meta.embed_dim == candidate.embedding_dim and meta.revision == candidate.identity.config_sha256[:12]
        got = {r.task_name: r.get_score() for r in mteb.evaluate(candidate, tasks, **options).task_results}
        assert got == pytest.approx(expected, abs=1e-5)
    checked = mteb.mock_run(model)
    assert checked.all_passed, {name: status for name, status in checked.items() if status is not None}
    assert Causal2Vec.from_pretrained(tiny_checkpoint).mteb_model_meta.framework == ["PyTorch"]


@pytest.fixture(scope="module")
def onnx_export(tiny_checkpoint, tmp_path_factory):
    from export.folder import ExportOptions, export_folder

    folder = tmp_path_factory.mktemp("mteb") / "tiny-onnx"
    export_folder(Causal2Vec.from_pretrained(tiny_checkpoint), folder, ExportOptions())
    return folder
