"""Nothing of the user's is deleted or read: folders beside a target, files a checkpoint names, pickle weights."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from causal2vec import Causal2Vec
from causal2vec.config import CONFIG_NAME
from causal2vec.files import member_path, remove_stale_siblings, replace_dir
from causal2vec.runtime import require
from tests.helpers import dead_pid


def with_config(folder: Path, **changes: object) -> None:
    path = folder / CONFIG_NAME
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


# ------------------------------------------------------------------ folders beside a target


def user_backups(parent: Path, name: str) -> list[Path]:
    """Hidden folders a user might keep beside ``name``: each would match a loose ``.name.*-<digits>`` pattern."""
    backups = []
    for suffix in (f"bak-{dead_pid()}", "bak-20261201", f"tmp-{dead_pid()}", f"old-1234abcd-x{dead_pid()}"):
        backup = parent / f".{name}.{suffix}"
        backup.mkdir()
        (backup / "notes.txt").write_text("my only backup")
        backups.append(backup)
    return backups


def test_a_users_backups_beside_a_saved_checkpoint_are_kept(tmp_path, tiny_model):
    backups = user_backups(tmp_path, "my-model")
    tiny_model.save_pretrained(tmp_path / "my-model")
    tiny_model.save_pretrained(tmp_path / "my-model")  # over the checkpoint: the sweep runs again
    for backup in backups:
        assert (backup / "notes.txt").read_text() == "my only backup", f"{backup.name} was removed"


def test_a_users_backups_beside_an_index_are_kept(tmp_path, tiny_checkpoint):
    from causal2vec.cli import main

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"document number {i} about markets"}) + "\n" for i in range(6)))
    backups = user_backups(tmp_path, "k.idx")
    args = ["index", "--corpus", str(corpus), "--index", str(tmp_path / "k.idx"), "--model", str(tiny_checkpoint)]
    assert main([*args, "-q"]) == 0
    assert main([*args, "--overwrite", "-q"]) == 0
    for backup in backups:
        assert (backup / "notes.txt").read_text() == "my only backup", f"{backup.name} was removed"


def test_leftovers_of_a_killed_writer_are_swept(tmp_path):
    target = tmp_path / "thing"
    target.mkdir()
    pid = dead_pid()
    tmp, old = tmp_path / f".thing.tmp-0123abcd-{pid}", tmp_path / f".thing.old-4567cdef-{pid}"
    alive = tmp_path / f".thing.tmp-89abcdef-{os.getpid()}"  # a writer still at work
    for folder in (tmp, old, alive):
        folder.mkdir()
    remove_stale_siblings(target)
    assert not tmp.exists() and not old.exists(), "a dead writer's leftovers stayed"
    assert alive.exists(), "a live writer's folder was removed"


def test_a_kill_between_the_renames_is_undone(tmp_path):
    """The previous target sits in ``.old``, and the target is missing: it is put back, not removed."""
    target = tmp_path / "thing"
    old = tmp_path / f".thing.old-0123abcd-{dead_pid()}"
    old.mkdir()
    (old / "weights").write_text("the previous version")
    remove_stale_siblings(target)
    assert (target / "weights").read_text() == "the previous version" and not old.exists()


def test_replace_dir_builds_under_a_name_the_sweep_knows(tmp_path):
    with replace_dir(tmp_path / "thing") as folder:
        building = [p.name for p in tmp_path.iterdir()]
        (folder / "f").write_text("x")
    assert building == [folder.name] and folder.name.startswith(".thing.tmp-")
    assert folder.name.endswith(f"-{os.getpid()}") and len(folder.name.split("-")[1]) == 8


# ------------------------------------------------------------------ files a checkpoint names


@pytest.mark.parametrize(
    "name", ["../../../../../../etc/passwd", "/etc/passwd", "llm/../../outside.bin", "encoder\\..\\..\\x", ""]
)
def test_checksum_names_outside_the_folder_are_refused_unread(tmp_path, tiny_checkpoint, name, monkeypatch):
    target = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    (tmp_path / "outside.bin").write_bytes(b"secret")
    checksums = json.loads((target / CONFIG_NAME).read_text())["checksums"]
    with_config(target, checksums={**checksums, name: "xxh3_128:" + "0" * 32})
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: (opened.append(str(f)), real_open(f, *a, **k))[1])
    with pytest.raises(ValueError, match="not a plain relative path inside that folder; refused") as err:
        Causal2Vec.from_pretrained(target)
    assert "passwd" not in " ".join(opened) and "outside.bin" not in " ".join(opened), opened
    assert "checksum is" not in str(err.value)


@pytest.mark.parametrize("linked", ["projector.safetensors", "encoder/model.safetensors", "llm"])
@pytest.mark.parametrize("checksums", [True, False])
def test_symlinks_out_of_the_folder_are_refused(tmp_path, tiny_checkpoint, linked, checksums):
    target = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    elsewhere = tmp_path / "elsewhere"
    (target / linked).rename(elsewhere)
    (target / linked).symlink_to(elsewhere, target_is_directory=elsewhere.is_dir())
    if not checksums:
        with_config(target, checksums={})
    with pytest.raises(ValueError, match=f"{linked}.* resolves to {elsewhere}\\S*, outside {target}"):
        Causal2Vec.from_pretrained(target)


def test_symlinks_inside_the_folder_and_into_a_hub_blob_store_load(tmp_path, tiny_checkpoint, tiny_model, texts):
    """huggingface_hub's cache links snapshots/<rev>/<file> to blobs/<hash>: that layout must keep loading."""
    repo = tmp_path / "models--org--name"
    snapshot = shutil.copytree(tiny_checkpoint, repo / "snapshots" / "0123abc")
    (repo / "blobs").mkdir()
    for name in ("projector.safetensors", "llm/model.safetensors"):
        blob = repo / "blobs" / name.replace("/", "-")
        (snapshot / name).rename(blob)
        (snapshot / name).symlink_to(os.path.relpath(blob, (snapshot / name).parent))
    (snapshot / "encoder" / "tokenizer.json").rename(snapshot / "encoder" / "tokenizer.real")
    (snapshot / "encoder" / "tokenizer.json").symlink_to("tokenizer.real")
    np.testing.assert_array_equal(Causal2Vec.from_pretrained(snapshot).encode(texts), tiny_model.encode(texts))


def test_member_path_accepts_plain_names(tmp_path):
    assert member_path(tmp_path, "llm/model.safetensors", "file") == tmp_path / "llm" / "model.safetensors"


# ------------------------------------------------------------------ pickle weights


@pytest.mark.parametrize(
    ("part", "pickle_name", "safetensors_name"),
    [("encoder", "pytorch_model.bin", "model.safetensors"), ("llm", "pytorch_model.bin", "model.safetensors"),
     ("llm_adapter", "adapter_model.bin", "adapter_model.safetensors")],
)  # fmt: skip
def test_pickle_weights_are_refused_naming_the_file(tmp_path, build_tiny, part, pickle_name, safetensors_name):
    model = build_tiny("llama")
    if part == "llm_adapter":
        peft = require("peft")
        model.llm = peft.get_peft_model(model.llm, peft.LoraConfig(r=2, target_modules=["q_proj"]))
    model.save_pretrained(tmp_path / "ckpt")
    folder = tmp_path / "ckpt" / part
    marker = tmp_path / "ran"
    torch.save({"payload": Exploit(marker)}, folder / pickle_name)  # what an untrusted download could carry
    (folder / safetensors_name).unlink()
    with_config(tmp_path / "ckpt", checksums={})  # "saved before checksums": nothing else stops the load
    with pytest.raises(ValueError, match=f"{folder} holds its weights as pickles \\({pickle_name}\\).*safetensors"):
        Causal2Vec.from_pretrained(tmp_path / "ckpt")
    assert not marker.exists(), "the pickle ran"


class Exploit:
    """Pickles to a call that creates a file, so a test sees whether loading ran it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_code_named_by_a_parts_config_does_not_run(tmp_path, tiny_checkpoint, tiny_model, texts):
    """A config's ``auto_map`` points transformers at a ``.py`` in the folder: the standard class loads instead."""
    target = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    marker = tmp_path / "ran"
    (target / "llm" / "evil.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    config = json.loads((target / "llm" / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "evil.EvilModel", "AutoConfig": "evil.EvilConfig"}
    (target / "llm" / "config.json").write_text(json.dumps(config))
    with_config(target, checksums={})
    np.testing.assert_array_equal(Causal2Vec.from_pretrained(target).encode(texts), tiny_model.encode(texts))
    assert not marker.exists(), "the folder's code ran"
