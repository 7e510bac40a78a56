"""The training recipe on tiny models: config validation, the inference layout, a loss that falls, the command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from causal2vec import Causal2Vec
from causal2vec.data.bbc import bbc_news_split
from tests.helpers import INSTRUCTION, ROOT, write_config
from training.cli import main
from training.config import TrainConfig
from training.data.pairs import Pair, write_pairs
from training.recipe import load_sources, make_loss, set_trainable, training_arguments


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "bbc.jsonl"
    articles = bbc_news_split("train")[:96]
    write_pairs(path, [Pair(a.title, a.body[:300], (), INSTRUCTION, "bbc") for a in articles])
    return path


def retrieval_loss(model: Causal2Vec, pairs: list[Pair], scale: float = 20.0) -> float:
    """InfoNCE of queries against their positives among the batch, from the inference path (encode)."""
    q = model.encode_query([p.query for p in pairs], instruction=INSTRUCTION)
    d = model.encode_document([p.positive for p in pairs])
    logits = torch.from_numpy(scale * q @ d.T)
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(pairs))).item()


# ---------------------------------------------------------------------- the config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"optim": {"learnig_rate": 1e-3}}, r"unknown key 'learnig_rate'; did you mean 'learning_rate'\?"),
        ({"train": {"llm": "full"}}, r"llm='full' is not allowed; choose one of \['frozen', 'lora'\]"),
        ({"loss": {"kind": "triplet"}}, r"kind='triplet' is not allowed; choose one of \['mnrl', 'cached_mnrl'\]"),
        ({"model": {"projector_init": "orth"}}, r"projector_init='orth' is not allowed; choose one of \['isometric'\]"),
        ({"output": {"llm_max_length": 2}}, r"output.llm_max_length=2 must be an integer >= 4"),
        ({"model": {"projector": "conv"}}, r"projector='conv' is not allowed; choose one of \['mlp', 'linear'\]"),
        ({"optim": {"batch_size": "big"}}, r"batch_size='big' must be of type int"),
        ({"loss": {"temperature": 0}}, r"loss.temperature=0.0 must be a finite number in \(0, 1\]"),
        ({"data": {"sources": []}}, "data.sources is empty"),
        ({"model": {"encoder": "x"}}, "apply to a fresh assembly only"),
    ],
)
def test_bad_configs_are_refused_before_anything_loads(tmp_path, tiny_checkpoint, pairs_file, change, message):
    path = write_config(tmp_path, tiny_checkpoint, pairs_file, **change)
    with pytest.raises(ValueError, match=message):
        TrainConfig.load(path)
    assert main(["--config", str(path)]) == 2


def test_a_missing_lora_target_lists_the_names_it_could_take(tmp_path, tiny_checkpoint, pairs_file):
    config = TrainConfig.load(write_config(tmp_path, tiny_checkpoint, pairs_file, lora={"targets": ["q_proj", "qkv"]}))
    model = Causal2Vec.from_pretrained(tiny_checkpoint)
    with pytest.raises(ValueError, match=r"lora.targets names \['qkv'\], .* it could take: \[.*'q_proj'.*\]"):
        set_trainable(model, config.train, config.lora)


def test_a_batch_larger_than_a_source_is_refused(tmp_path, tiny_checkpoint, pairs_file, tiny_model):
    config = TrainConfig.load(write_config(tmp_path, tiny_checkpoint, pairs_file, optim={"batch_size": 128}))
    with pytest.raises(ValueError, match=r"source .bbc. has 96 pairs, fewer than optim\.batch_size=128"):
        load_sources(config.data, tiny_model.config, 128, 0)


# ---------------------------------------------------------------------- the inference layout


def test_training_features_embed_as_encode_query_and_encode_document(tmp_path, tiny_checkpoint, pairs_file):
    from sentence_transformers import SentenceTransformerTrainer

    from causal2vec.st_module import Causal2VecModule

    config = TrainConfig.load(write_config(tmp_path, tiny_checkpoint, pairs_file))
    model = Causal2Vec.from_pretrained(tiny_checkpoint)
    datasets, prompts = load_sources(config.data, model.config, 16, 0)
    st = SentenceTransformer(modules=[Causal2VecModule(model)], device="cpu")
    trainer = SentenceTransformerTrainer(
        model=st, args=training_arguments(config, prompts), train_dataset=datasets, loss=make_loss(st, config.loss)
    )
    rows = [{**datasets["bbc"][i], "dataset_name": "bbc"} for i in range(5)]
    features, _ = trainer.collect_features(trainer.data_collator(rows))
    st.eval()
    with torch.no_grad():
        queries, documents = (st(f)["sentence_embedding"].numpy() for f in features[:2])
    expected_q = model.encode_query([r["query"] for r in rows], instruction=INSTRUCTION)
    expected_d = model.encode_document([r["positive"] for r in rows])
    np.testing.assert_allclose(queries, expected_q, atol=1e-5)
    np.testing.assert_allclose(documents, expected_d, atol=1e-5)
    assert np.abs(queries - model.encode_document([r["query"] for r in rows])).max() > 1e-3, "no instruction applied"


def test_a_gathered_state_dict_rebuilds_the_run_unsharded(tmp_path, tiny_checkpoint, pairs_file):
    """What FSDP's final save does after gathering: the trainer's state dict, loaded into a fresh copy of the run."""
    from causal2vec.st_module import Causal2VecModule
    from training.recipe import load_model, unsharded_copy

    config = TrainConfig.load(write_config(tmp_path, tiny_checkpoint, pairs_file))
    model = load_model(config.model)
    set_trainable(model, config.train, config.lora)
    st = SentenceTransformer(modules=[Causal2VecModule(model)], device="cpu")
    with torch.no_grad():  # as if trained: every weight, frozen or LoRA, moves
        for parameter in st.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    copy = unsharded_copy(config, st.state_dict())
    model.eval(), copy.eval()
    texts = ["A headline about the economy", "A match report from the weekend"]
    np.testing.assert_allclose(copy.encode_document(texts), model.encode_document(texts), atol=1e-6)
    with pytest.raises(RuntimeError, match="Missing key"):
        unsharded_copy(config, {k: v for k, v in st.state_dict().items() if "lora_B" not in k})


# ---------------------------------------------------------------------- training


def test_training_lowers_the_retrieval_loss_and_the_result_loads_everywhere(tmp_path, tiny_checkpoint, pairs_file):
    from training.data.pairs import read_pairs

    held_out = [Pair(a.title, a.body[:300]) for a in bbc_news_split("train")[:96][:32]]
    before = retrieval_loss(Causal2Vec.from_pretrained(tiny_checkpoint), held_out)
    path = write_config(
        tmp_path, tiny_checkpoint, pairs_file, optim={"max_steps": 24}, output={"merge": True, "save_steps": 10}
    )
    assert main(["--config", str(path)]) == 0
    final = tmp_path / "run" / "final"
    trained = Causal2Vec.from_pretrained(final)
    after = retrieval_loss(trained, held_out)
    assert after < before - 0.2, f"loss on training pairs {before:.3f} -> {after:.3f}"
    assert not (final / "llm_adapter").exists(), "merged: no adapter at inference"
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == [
        "checkpoint-10",
        "checkpoint-20",
        "checkpoint-24",
    ]
    texts = [p.query for p in read_pairs(pairs_file)[0][:4]]
    st = SentenceTransformer(str(final), trust_remote_code=True, device="cpu")
    np.testing.assert_allclose(st.encode_document(texts), trained.encode_document(texts), atol=1e-5)


def test_a_killed_run_resumed_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, tiny_checkpoint, pairs_file):
    import os
    import signal
    import subprocess
    import sys
    import time

    steps = {"optim": {"max_steps": 12}, "output": {"save_steps": 4, "save_total_limit": None}}
    whole = write_config(tmp_path / "whole", tiny_checkpoint, pairs_file, **steps)
    assert main(["--config", str(whole)]) == 0
    killed = write_config(tmp_path / "killed", tiny_checkpoint, pairs_file, **steps)
    command = [sys.executable, "-m", "training", "--config", str(killed)]
    root = Path(__file__).resolve().parent.parent
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "killed" / "run" / "checkpoint-4" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "killed" / "run" / "final").exists(), "the run finished before it could be killed"
    assert main(["--config", str(killed), "--resume"]) == 0
    texts = [a.title for a in bbc_news_split("validation")[:8]]
    a = Causal2Vec.from_pretrained(tmp_path / "whole" / "run" / "final").encode(texts, normalize=False)
    b = Causal2Vec.from_pretrained(tmp_path / "killed" / "run" / "final").encode(texts, normalize=False)
    before = Causal2Vec.from_pretrained(tiny_checkpoint).encode(texts, normalize=False)
    assert np.abs(a - before).max() > 1e-2, "training changed nothing"
    np.testing.assert_allclose(b, a, atol=1e-4, rtol=1e-4)


def test_resume_without_a_checkpoint_is_refused(tmp_path, tiny_checkpoint, pairs_file):
    path = write_config(tmp_path, tiny_checkpoint, pairs_file)
    assert main(["--config", str(path), "--resume"]) == 2


def test_two_gloo_processes_gather_negatives_like_one_process_on_the_global_batch(tmp_path, tiny_model, pairs_file):
    """Step 1's loss under torchrun with 2 ranks of 8 pairs equals one process's loss on those 16 pairs."""
    import json
    import socket
    import subprocess
    import sys

    quiet = Causal2Vec(tiny_model.encoder, tiny_model.llm, tiny_model.projector, tiny_model.encoder_tokenizer,
                       tiny_model.llm_tokenizer, tiny_model.config)  # fmt: skip
    quiet.encoder.config.hidden_dropout_prob = quiet.encoder.config.attention_probs_dropout_prob = 0.0  # no noise
    quiet.save_pretrained(tmp_path / "base")
    tiny_model.encoder.config.hidden_dropout_prob = tiny_model.encoder.config.attention_probs_dropout_prob = 0.1
    sixteen = tmp_path / "sixteen.jsonl"
    sixteen.write_text("".join(pairs_file.read_text().splitlines(keepends=True)[:16]))

    def step_one_loss(name: str, batch_size: int, launcher: list[str] | None) -> float:
        run = {"optim": {"batch_size": batch_size, "max_steps": 1}, "output": {"save_steps": 1}}
        config = write_config(tmp_path / name, tmp_path / "base", sixteen, **run)
        if launcher is None:  # one process: this one
            assert main(["--config", str(config)]) == 0
        else:
            done = subprocess.run([*launcher, "-m", "training", "--config", str(config)], cwd=ROOT,
                                  capture_output=True, text=True, timeout=600)  # fmt: skip
            assert done.returncode == 0, done.stderr[-3000:]
        state = json.loads((tmp_path / name / "run" / "checkpoint-1" / "trainer_state.json").read_text())
        return next(entry["loss"] for entry in state["log_history"] if "loss" in entry)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    two_ranks = step_one_loss("ddp", 8, torchrun)
    one = step_one_loss("single", 16, None)
    assert two_ranks == pytest.approx(one, abs=1e-4), f"2 ranks: {two_ranks}, 1 process: {one}"


def test_bad_data_fails_before_any_model_loads(tmp_path, pairs_file, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(pairs_file.read_text().splitlines()[0] + "\n{not json\n")
    path = write_config(tmp_path, tmp_path / "no-such-model", bad)  # loading this model would fail
    assert main(["--config", str(path)]) == 2
    assert f"{bad}:2" in capsys.readouterr().err
    assert main(["--config", str(path), "--skip-bad"]) == 2  # one good pair left: fewer than a batch
    assert "has 1 pairs, fewer than optim.batch_size=16" in capsys.readouterr().err
