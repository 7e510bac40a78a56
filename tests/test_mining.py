"""Mined hard negatives (training/data/mining.py), checked against a brute-force ranking with the same tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from causal2vec.data.bbc import bbc_news_articles
from training.data.cli import main
from training.data.mining import MiningSettings, mine_negatives
from training.data.pairs import Pair, read_pairs, write_pairs

MARGIN = 0.002


@pytest.fixture(scope="module")
def miner(encoder_dir) -> SentenceTransformer:
    return SentenceTransformer(str(encoder_dir), device="cpu")  # the tiny random BERT, mean-pooled


@pytest.fixture(scope="module")
def pairs() -> list[Pair]:
    articles = bbc_news_articles()[::97][:14]
    pairs = [Pair(a.title, a.body[:300], (f"structural {i}",), dataset="bbc") for i, a in enumerate(articles)]
    # one query with two positives: neither may become its negative
    return [*pairs, Pair(pairs[0].query, pairs[1].positive, (), dataset="bbc")]


def scores(pairs: list[Pair], model: SentenceTransformer) -> tuple[list[str], dict[str, np.ndarray]]:
    """The corpus (distinct positives) and each query's cosine to every document of it."""
    corpus = list(dict.fromkeys(p.positive for p in pairs))
    docs = model.encode(corpus, normalize_embeddings=True)
    return corpus, {p.query: docs @ model.encode([p.query], normalize_embeddings=True)[0] for p in pairs}


def reference(
    pairs: list[Pair], model: SentenceTransformer, margin: float, max_score: float
) -> dict[tuple[str, str], str | None]:
    """The best-scoring document that is no positive of the query and passes both filters, or None."""
    corpus, cosines = scores(pairs, model)
    positives: dict[str, set[int]] = {}
    for p in pairs:
        positives.setdefault(p.query, set()).add(corpus.index(p.positive))
    found = {}
    for p in pairs:
        row = cosines[p.query]
        positive = min(row[i] for i in positives[p.query])
        threshold = min(positive - abs(positive) * margin, max_score)
        allowed = [i for i in np.argsort(-row) if i not in positives[p.query] and row[i] <= threshold]
        found[p.query, p.positive] = corpus[allowed[0]] if allowed else None
    return found


def median_lowest(pairs: list[Pair], model: SentenceTransformer) -> float:
    """A max_score that leaves about half the queries without any candidate (the tiny model's cosines are ~0.97)."""
    corpus, cosines = scores(pairs, model)
    lowest = sorted(min(np.delete(cosines[p.query], corpus.index(p.positive))) for p in pairs)
    middle = len(lowest) // 2
    return float(lowest[middle - 1] + lowest[middle]) / 2  # between two scores: no candidate on the boundary


def test_mined_negatives_match_brute_force_and_come_first(pairs, miner):
    cap = median_lowest(pairs, miner)
    expected = reference(pairs, miner, MARGIN, cap)
    settings = MiningSettings(count=1, relative_margin=MARGIN, max_score=cap, range_max=len(pairs) + 2)
    mined, counts = mine_negatives(pairs, miner, settings)
    kept = [(p.query, p.positive) for p in pairs if p.negatives or expected[p.query, p.positive]]
    assert [(p.query, p.positive) for p in mined] == kept, "input order; only pairs with no negative at all dropped"
    got = {(p.query, p.positive): p for p in mined}
    for pair in pairs:
        key, want = (pair.query, pair.positive), expected[pair.query, pair.positive]
        if key not in got:
            assert want is None and not pair.negatives, f"{key} dropped although it has a negative"
            continue
        negatives = got[key].negatives
        assert negatives == ((want,) if want else ()) + pair.negatives, f"{key}: {negatives} (expected {want})"
    first = got[pairs[0].query, pairs[0].positive].negatives
    assert first[0] not in {pairs[0].positive, pairs[1].positive}, "a positive of the query was mined"
    outcomes = [("mined" if expected[p.query, p.positive] else "structural_only" if p.negatives else "dropped")
                for p in pairs]  # fmt: skip
    assert counts == {kind: outcomes.count(kind) for kind in ("mined", "structural_only", "dropped")}
    n_mined = outcomes.count("mined")
    assert 0 < n_mined < len(pairs), f"the fixture should exercise both outcomes, mined {n_mined} of {len(pairs)}"


def test_a_tight_margin_leaves_the_structural_negatives_and_drops_the_rest(pairs, miner):
    mined, counts = mine_negatives(pairs, miner, MiningSettings(relative_margin=0.0, max_score=-1.0))
    assert counts == {"mined": 0, "structural_only": len(pairs) - 1, "dropped": 1}
    assert [p.negatives for p in mined] == [p.negatives for p in pairs if p.negatives]
    kept, counts = mine_negatives(pairs, miner, MiningSettings(max_score=-1.0), keep_unmatched=True)
    assert len(kept) == len(pairs) and counts["dropped"] == 0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (MiningSettings(count=0), "count must be an integer >= 1, got 0"),
        (MiningSettings(relative_margin=1.5), "relative_margin must be in [0, 1)"),
        (MiningSettings(max_score=2.0), "max_score must be a cosine in [-1, 1]"),
        (MiningSettings(range_min=5, range_max=5), "range_max=5 must be above range_min=5"),
    ],
)
def test_bad_settings_are_refused(pairs, miner, settings, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        mine_negatives(pairs, miner, settings)


def test_cli_mine_writes_and_summarises(tmp_path, capsys, pairs, encoder_dir):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_pairs(source, pairs)
    argv = ["mine", "--input", str(source), "--output", str(out), "--model", str(encoder_dir), "--json"]
    assert main([*argv, "--relative-margin", str(MARGIN), "--range-max", str(len(pairs) + 2)]) == 0
    summary = json.loads(capsys.readouterr().out)
    written = read_pairs(out)[0]
    assert summary["pairs"] == len(written) and summary["mined"] + summary["structural_only"] == len(written)
    assert written == mine_negatives(pairs, SentenceTransformer(str(encoder_dir), device="cpu"),
                                     MiningSettings(relative_margin=MARGIN, range_max=len(pairs) + 2))[0]  # fmt: skip
    assert main([*argv, "--relative-margin", "2"]) == 2
    assert "relative_margin must be in [0, 1)" in capsys.readouterr().err


def test_the_v2_config_is_the_default_recipe_with_mined_negatives_and_its_own_schedule():
    from pathlib import Path

    from training.config import TrainConfig

    configs = Path(__file__).resolve().parents[1] / "training" / "configs"
    default, v2 = TrainConfig.load(configs / "default.yaml"), TrainConfig.load(configs / "default-v2.yaml")
    assert v2.data.negatives == 1 and all(s.path.endswith("-mined.jsonl") for s in v2.data.sources)
    assert [(s.name, s.dataset, s.max_pairs) for s in v2.data.sources] == [
        (s.name, s.dataset, s.max_pairs) for s in default.data.sources
    ], "the default's sources and shares"
    for section in ("model", "train", "lora", "loss"):
        assert getattr(v2, section) == getattr(default, section), f"{section} differs from default.yaml"
    differs = {k for k, v in vars(v2.optim).items() if vars(default.optim)[k] != v}
    assert differs == {"max_steps"}, differs
    steps = v2.optim.max_steps // v2.output.save_steps
    assert steps == 8 and v2.output.save_total_limit >= steps, "eight checkpoints for the curve, all kept"
