"""Shared fixtures: tiny tokenizers trained on BBC text and tiny random encoders/LLMs saved as HF folders, their
ONNX export, and the real default model (loaded once)."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from causal2vec import Causal2Vec, Causal2VecConfig
from causal2vec.data.bbc import bbc_news_articles
from tests.helpers import LLM_ARCHS, TraceCache


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return [f"{a.title}\n{a.body}" for a in bbc_news_articles()[::20]]


def _encoder_tokenizer(corpus: list[str]) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=600, special_tokens=specials))
    # The trainer finds the same tokens every time but numbers them in an order that changes from one process to
    # the next; numbered in sorted order, every session gets the same tiny encoder.
    trained = sorted(set(tok.get_vocab()) - set(specials))
    tok.model = models.WordPiece({t: i for i, t in enumerate(specials + trained)}, unk_token="[UNK]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=128,
    )  # fmt: skip


def _llm_tokenizer(corpus: list[str], specials_mode: str) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    ids = [("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))]
    if specials_mode == "bos":
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=ids[:1])
    elif specials_mode == "bos_eos":
        tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=ids)
    kwargs = {"bos_token": "<s>", "eos_token": "</s>"}
    if specials_mode != "none":  # GPT-2/Qwen-style tokenizers here have no pad token: EOS pads
        kwargs["pad_token"] = "<pad>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=256, **kwargs)


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory, corpus: list[str]) -> Path:
    path = tmp_path_factory.mktemp("encoder")
    tokenizer = _encoder_tokenizer(corpus)
    torch.manual_seed(1)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id, initializer_range=0.1,
    )  # fmt: skip
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_llm_dir(root: Path, arch: str, corpus: list[str]) -> Path:
    config_cls, model_cls, specials_mode = LLM_ARCHS[arch]
    tokenizer = _llm_tokenizer(corpus, specials_mode)
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    if arch == "gpt2":
        config = config_cls(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4, n_positions=256,
                            initializer_range=0.1, **special)  # fmt: skip
    else:
        config = config_cls(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.1, **special,
        )  # fmt: skip
    torch.manual_seed(2)
    model_cls(config).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


@pytest.fixture(scope="session")
def llm_dirs(tmp_path_factory: pytest.TempPathFactory, corpus: list[str]) -> dict[str, Path]:
    return {arch: make_llm_dir(tmp_path_factory.mktemp(arch), arch, corpus) for arch in LLM_ARCHS}


@pytest.fixture(scope="session")
def build_tiny(encoder_dir: Path, llm_dirs: dict[str, Path]):
    """A factory of fresh tiny models: build_tiny("llama", encoder_pooling="cls", …)."""

    def build(arch: str = "llama", **config_fields: object) -> Causal2Vec:
        config = Causal2VecConfig(encoder_max_length=128, llm_max_length=128, **config_fields)
        return Causal2Vec.from_components(str(encoder_dir), str(llm_dirs[arch]), config=config, seed=0)

    return build


@pytest.fixture(scope="session")
def tiny_model(build_tiny) -> Causal2Vec:
    """A shared tiny Llama-based model. Tests must not change it; build their own with build_tiny instead."""
    return build_tiny("llama")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_model: Causal2Vec) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    tiny_model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def texts(corpus: list[str]) -> list[str]:
    """Texts of very different lengths, some over the 128-token budget."""
    return [
        "Markets rallied.",
        corpus[0][:300],
        corpus[1][:1500],
        "A short headline about football",
        corpus[2][:80],
        corpus[3],
    ]


# ---------------------------------------------------------------------- ONNX exports


@pytest.fixture(scope="session")
def trace_cache(tmp_path_factory: pytest.TempPathFactory) -> TraceCache:
    """One trace per tiny model, opset and external-data setting for the session (see TraceCache)."""
    return TraceCache(tmp_path_factory.mktemp("traces"))


@dataclass
class TinyExport:
    folder: Path  # the export, alone in its parent folder
    printed: str  # what python -m export printed


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path, trace_cache: TraceCache) -> TinyExport:
    """The tiny checkpoint's float32 export written by ``python -m export`` (in-process). Tests must not change it;
    they copy it first."""
    from export import folder as folder_module
    from export.cli import main

    out = tmp_path_factory.mktemp("tiny-onnx") / "tiny"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(folder_module, "trace_onnx", trace_cache)
        assert main(["--model", str(tiny_checkpoint), "--output", str(out)]) == 0
    return TinyExport(out, printed.getvalue())


# ---------------------------------------------------------------------- the real default (tests marked slow)


@pytest.fixture(scope="session")
def default_model() -> Causal2Vec:
    """The trained default in float32, loaded once. Tests must not change it."""
    return Causal2Vec.from_pretrained("default")
