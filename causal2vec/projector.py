"""The projector that maps the encoder's pooled vector into the LLM's input-embedding space."""

from __future__ import annotations

import torch
from torch import nn

from causal2vec.config import ProjectorKind

# Neutral sentences used once at construction to scale a fresh projector, so that |C| starts on the scale of the
# LLM's token embeddings. They are data, not a training set: only the mean norm of the projected vectors is used.
CALIBRATION_TEXTS = (
    "The committee will publish its report next week.",
    "Heavy rain caused delays on several train lines this morning.",
    "She scored twice in the second half to win the match.",
    "The company said profits rose by ten percent last year.",
    "A new phone with a larger screen goes on sale in March.",
    "The film opened to strong reviews and large audiences.",
    "How do I reset my password?",
    "Parliament debated the new education bill for six hours.",
    "The recipe needs two eggs, flour, sugar and a pinch of salt.",
    "Scientists found water ice near the moon's south pole.",
    "Interest rates were left unchanged by the central bank.",
    "The museum is closed on Mondays and public holidays.",
)


class Projector(nn.Module):
    """``c = MLP(c_bert)``: Linear(d_enc→d_llm), GELU, Linear(d_llm→d_llm), or one Linear(d_enc→d_llm)."""

    def __init__(self, in_features: int, out_features: int, kind: ProjectorKind = "mlp") -> None:
        super().__init__()
        if kind == "mlp":
            self.net = nn.Sequential(
                nn.Linear(in_features, out_features), nn.GELU(), nn.Linear(out_features, out_features)
            )
        elif kind == "linear":
            self.net = nn.Sequential(nn.Linear(in_features, out_features))
        else:
            raise ValueError(f"projector kind {kind!r} is not allowed; choose 'mlp' or 'linear'")
        self.kind = kind

    @property
    def in_features(self) -> int:
        """The encoder dimension the projector reads."""
        return self.net[0].in_features

    @property
    def out_features(self) -> int:
        """The LLM dimension the projector writes."""
        return self.net[-1].out_features

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Project ``(B, d_enc)`` to ``(B, d_llm)``."""
        return self.net(pooled)

    @torch.no_grad()
    def rescale_output(self, factor: float) -> None:
        """Multiply the last layer's weight and bias, scaling every output by ``factor``."""
        last = self.net[-1]
        last.weight.mul_(factor)
        last.bias.mul_(factor)


def check_projector_shapes(state: dict[str, torch.Tensor], in_features: int, out_features: int, source: str) -> None:
    """Check a saved projector against the encoder and LLM it is loaded with.

    Raises:
        ValueError: Naming the file, the saved dimensions and the ones the encoder and LLM need.
    """
    weights = sorted(k for k in state if k.endswith(".weight"))
    if not weights:
        raise ValueError(f"{source} holds no projector weights (keys: {sorted(state)})")
    saved_in = state[weights[0]].shape[1]
    saved_out = state[weights[-1]].shape[0]
    if (saved_in, saved_out) != (in_features, out_features):
        raise ValueError(
            f"{source} maps {saved_in} -> {saved_out}, but the encoder has hidden size {in_features} "
            f"and the LLM {out_features}; the projector must map {in_features} -> {out_features}"
        )
