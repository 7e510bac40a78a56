"""LoRA adapters on the LLM or the encoder: the one module that imports peft (lazily).

A checkpoint whose LLM carries an adapter stores the clean base model in ``llm/`` and the adapter, in peft's own
format, in ``llm_adapter/`` (the encoder's in ``encoder_adapter/``); loading re-applies it. Shipping a trained
model then costs only the projector and the adapters on top of a known base.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from causal2vec.runtime import require

ADAPTER_DIR = "llm_adapter"
ENCODER_ADAPTER_DIR = "encoder_adapter"


def has_adapter(llm: nn.Module) -> bool:
    """Whether a part (the LLM or the encoder) is wrapped by peft (checked without importing peft)."""
    return hasattr(llm, "peft_config") and hasattr(llm, "get_base_model")


def base_state_dict(llm: nn.Module) -> dict[str, Any]:
    """The weights of the LLM without its adapter: LoRA tensors dropped, peft's ``base_layer`` names undone."""
    state = llm.get_base_model().state_dict()
    return {k.replace(".base_layer.", "."): v for k, v in state.items() if "lora_" not in k}


def save_adapter(llm: nn.Module, folder: Path) -> None:
    """Write the LLM's adapter (peft format, safetensors) to ``folder``."""
    llm.save_pretrained(folder, safe_serialization=True)


def load_adapter(llm: nn.Module, folder: Path) -> nn.Module:
    """Wrap the base LLM with the adapter saved in ``folder`` (frozen, for inference)."""
    peft = require("peft")
    try:
        return peft.PeftModel.from_pretrained(llm, folder, is_trainable=False)
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"corrupt LoRA adapter {folder}: {err}") from err
