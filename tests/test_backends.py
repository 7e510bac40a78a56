"""The backend layer: the precision vocabulary, ModelIdentity, load_backend's policy, a third backend plugged in,
and indexes written by the previous release (format 1) read into today's form."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from causal2vec import Causal2Vec, SemanticIndex
from causal2vec import backends as backends_module
from causal2vec.backends import Backend, BackendChoiceError, backend_names, load_backend, register_backend
from causal2vec.identity import ModelIdentity, config_fingerprint, precision_of, torch_dtype
from causal2vec.search.manifest import FORMAT_VERSION, Manifest, upgrade_format_1
from tests.helpers import HashEmbedder, docs

FIXTURES = Path(__file__).parent / "fixtures"
V1_INDEX = FIXTURES / "index-v1"
V1_CORPUS = FIXTURES / "index-v1-corpus.jsonl"

# ---------------------------------------------------------------------- the vocabulary and the identity


@pytest.mark.parametrize(
    ("given", "expected"),
    [("float32", "fp32"), ("fp32", "fp32"), (torch.bfloat16, "bf16"), ("bfloat16", "bf16"), ("half", "fp16"),
     ("float16", "fp16"), ("int8", "int8")],
)  # fmt: skip
def test_every_spelling_of_a_precision_maps_to_one_name(given, expected):
    assert precision_of(given) == expected


def test_unknown_precisions_and_int8_weights_are_refused_by_name():
    with pytest.raises(ValueError, match=r"precision 'fp8' is not one of \['fp32', 'bf16', 'fp16', 'int8'\]"):
        precision_of("fp8")
    with pytest.raises(ValueError, match="precision 'int8' is an ONNX export's"):
        torch_dtype("int8")
    assert torch_dtype("bf16") is torch.bfloat16 and torch_dtype("float32") is torch.float32


def test_identity_round_trips_and_refuses_malformed_records():
    identity = ModelIdentity("default", "ab" * 32, "onnx", "float16", 64)
    assert identity.precision == "fp16"  # stored in the one vocabulary, whatever the spelling given
    assert ModelIdentity.from_dict(json.loads(json.dumps(identity.to_dict())), "here") == identity
    assert identity.with_budget(None).max_length is None and identity.describe() == "the onnx backend in fp16"
    for bad, message in (
        ("default", "must be an object with the keys"),
        ({"name": "x"}, "must be an object with the keys"),
        ({"name": "x", "config_sha256": None, "colour": 1}, "must be an object with the keys"),
        ({"name": "x", "config_sha256": None, "precision": "fp8"}, "precision 'fp8' is not one of"),
        ({"name": "x", "config_sha256": None, "max_length": 0}, "max_length=0 must be a positive integer"),
        ({"name": "x", "config_sha256": None, "max_length": True}, "max_length=True must be a positive integer"),
    ):
        with pytest.raises(ValueError, match=f"^manifest.json: .*{message}"):
            ModelIdentity.from_dict(bad, "manifest.json")


def test_each_backend_reports_its_identity(tiny_model, tiny_checkpoint):
    identity = tiny_model.identity
    assert (identity.backend, identity.precision, identity.max_length) == ("torch", "fp32", None)
    assert identity.config_sha256 == config_fingerprint(tiny_model.config)
    loaded = load_backend(tiny_checkpoint, device="cpu", dtype="bfloat16")
    assert loaded.identity.precision == "bf16" and loaded.identity.name == str(tiny_checkpoint.resolve())
    assert loaded.identity.config_sha256 == identity.config_sha256  # the same design, saved and loaded


# ---------------------------------------------------------------------- load_backend's policy


def test_the_precision_is_asked_for_else_recorded_else_the_devices(tiny_checkpoint, monkeypatch):
    monkeypatch.setattr("causal2vec.runtime.cpu_has_bf16", lambda: True)
    assert load_backend(str(tiny_checkpoint), device="cpu").dtype == torch.bfloat16  # the device's (bf16 here)
    monkeypatch.setattr("causal2vec.runtime.cpu_has_bf16", lambda: False)
    assert load_backend(str(tiny_checkpoint), device="cpu").dtype == torch.float32
    recorded = ModelIdentity(str(tiny_checkpoint), None, "torch", "fp16")
    assert load_backend(recorded, device="cpu").dtype == torch.float16  # what the index recorded
    assert load_backend(recorded, device="cpu", dtype="fp32").dtype == torch.float32  # what was asked for
    unrecorded = ModelIdentity(str(tiny_checkpoint), None, "torch", None)  # an old index that recorded none: fp32
    assert load_backend(unrecorded, device="cpu").dtype == torch.float32


def test_bad_choices_are_named_with_what_is_allowed(tiny_checkpoint):
    with pytest.raises(BackendChoiceError, match=r"^backend 'tvm' is not one of \['torch', 'onnx'"):
        load_backend(tiny_checkpoint, backend="tvm")
    with pytest.raises(BackendChoiceError, match=r"^dtype int8: the torch backend runs in"):
        load_backend(tiny_checkpoint, dtype="int8", device="cpu")
    with pytest.raises(BackendChoiceError, match=r"^dtype fp8: precision 'fp8' is not one of"):
        load_backend(tiny_checkpoint, dtype="fp8", device="cpu")
    with pytest.raises(BackendChoiceError, match=r"^dtype bf16 applies to the torch backend; an ONNX export's"):
        load_backend(tiny_checkpoint, backend="onnx", dtype="bf16", device="cpu")
    with pytest.raises(ValueError, match="does not name a loadable model"):
        load_backend(ModelIdentity(None, None))


# ---------------------------------------------------------------------- a third backend


class NamedHashEmbedder(HashEmbedder):
    """The test's stand-in model, as a backend of its own that loads by name."""

    backend = "hash"

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name_or_path = name


@pytest.fixture
def hash_backend():
    loads: list[tuple[str, str]] = []

    def load(name: str, *, device: str, precision: str | None, strict: bool) -> NamedHashEmbedder:
        loads.append((name, device))
        return NamedHashEmbedder(name)

    register_backend(Backend("hash", load))
    yield loads
    backends_module.unregister_backend("hash")


def test_a_registered_backend_round_trips_through_an_index(hash_backend, tmp_path):
    """Registered in one place, a third backend is recorded by the index it builds and reopens it as itself."""
    assert "hash" in backend_names()
    model = load_backend("hash-model-v1", backend="hash", device="cpu")
    path = tmp_path / "hash.idx"
    SemanticIndex.build(path, model, docs(30)).close()
    recorded = json.loads((path / "manifest.json").read_text())["model"]
    assert recorded["backend"] == "hash" and recorded["name"] == "hash-model-v1"
    with SemanticIndex.load(path) as index:
        hits = index.search("T7\ndocument number 7", k=3)  # the stand-in hashes the embedded text
        assert hits[0].id == "d7" and hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert isinstance(index.model, NamedHashEmbedder) and index.model.identity == model.identity
    assert hash_backend == [("hash-model-v1", "cpu"), ("hash-model-v1", backends_module.default_device())]
    with pytest.raises(ValueError, match="a backend named 'hash' is already registered"):
        register_backend(Backend("hash", lambda name, **_: NamedHashEmbedder(name)))


def test_the_cli_offers_a_registered_backend(hash_backend):
    from causal2vec.cli import build_parser

    args = build_parser().parse_args(["encode", "texts.txt", "-o", "x.npy", "--backend", "hash"])
    assert args.backend == "hash"


# ---------------------------------------------------------------------- indexes of the previous release


def test_format_1_settings_are_read_into_an_identity():
    base = {"dim": 4, "factory": "Flat", "model": "m", "model_config_sha256": "s", "format_version": 1}
    where = Path("manifest.json")
    cases = [
        ({"max_length": 64, "dtype": "bfloat16", "backend": "torch", "precision": "bfloat16"},
         ModelIdentity("m", "s", "torch", "bf16", 64)),
        ({"max_length": None, "dtype": "float32", "backend": "onnx", "precision": "fp32"},
         ModelIdentity("m", "s", "onnx", "fp32", None)),
        ({"encoder_max_length": 128, "llm_max_length": 64, "dtype": "float32"},  # the oldest: two budgets
         ModelIdentity("m", "s", "torch", "fp32", 64)),
        ({}, ModelIdentity("m", "s", "torch", None, None)),  # nothing recorded
    ]  # fmt: skip
    for settings, expected in cases:
        upgraded = upgrade_format_1({**base, "model_settings": settings}, where)
        assert upgraded["format_version"] == 2 and "model_settings" not in upgraded
        assert Manifest.from_dict(upgraded, where).model == expected
    with pytest.raises(ValueError, match="format 1 needs 'model' and a 'model_settings' object"):
        upgrade_format_1({**base, "model_settings": [1]}, where)


@pytest.mark.slow
def test_an_index_of_the_previous_release_opens_searches_appends_and_keeps_its_identity(tmp_path):
    """tests/fixtures/index-v1 was written by causal2vec 0.1.0 (format 1) with the default model in float32."""
    path = tmp_path / "v1.idx"
    shutil.copytree(V1_INDEX, path)
    expected = ModelIdentity("default", json.loads((V1_INDEX / "manifest.json").read_text())["model_config_sha256"],
                             "torch", "fp32", 64)  # fmt: skip
    corpus = [json.loads(line) for line in V1_CORPUS.read_text().splitlines()]
    with SemanticIndex.load(path, device="cpu") as index:
        assert index.manifest.model == expected and len(index) == 20
        assert index.model.identity.with_budget(64) == expected  # the default, loaded in the recorded precision
        query = corpus[3]["title"]
        hits = index.search(query, k=5)
        # brute force over the stored documents, embedded again by the model the index names
        docs_emb = index.model.encode_document([f"{d['title']}\n{d['text']}" for d in corpus], max_length=64)
        q = index.model.encode_query(query, max_length=64)
        order = np.argsort(-(docs_emb @ q))[:5]
        assert [h.id for h in hits] == [corpus[i]["id"] for i in order]
        assert hits[0].id == corpus[3]["id"]
        index.add([{"id": "new-1", "title": "A new article", "text": "Interest rates rose again this month."}])
        index.save()
    on_disk = json.loads((path / "manifest.json").read_text())
    assert on_disk["format_version"] == FORMAT_VERSION == 2 and "model_settings" not in on_disk
    assert ModelIdentity.from_dict(on_disk["model"], "manifest") == expected  # the same identity, in format 2
    with SemanticIndex.load(path, device="cpu") as reopened:
        assert len(reopened) == 21 and reopened.search("Interest rates rose again", k=1)[0].id == "new-1"
        assert reopened.manifest.model == expected


def test_an_index_of_the_previous_release_is_read_without_changing_it(tmp_path):
    path = tmp_path / "v1.idx"
    shutil.copytree(V1_INDEX, path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    with SemanticIndex.load(path, model=HashEmbedder(1152)) as index:
        assert index.manifest.format_version == 2 and index.manifest.model.backend == "torch"
        assert [d.id for d in index.get(["bbc-00", "bbc-19"])] == ["bbc-00", "bbc-19"]
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before  # a reader writes nothing


def test_causal2vec_is_the_torch_backend(tiny_model):
    assert isinstance(tiny_model, Causal2Vec) and tiny_model.backend == "torch" and tiny_model.precision == "fp32"
