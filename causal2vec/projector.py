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
    def init_isometric(self, seed: int = 0) -> int:
        """Reinitialise as an exact linear isometry on a random subspace: ``c = Q P x``, biases zero.

        A random MLP scrambles the encoder's vector, so ``h_C`` starts with little of the encoder's retrieval
        quality. This start keeps it: GELU(u) - GELU(-u) = u for every u, so pairs of hidden units, one reading
        ``+p·x`` and one ``-p·x``, pass a direction ``p`` through exactly, with no offset to lose in bfloat16. The
        MLP's hidden layer holds ``min(d_enc, d_llm // 2)`` such pairs (288 of MiniLM's 384 directions for
        SmolLM2; a random 288-dimensional subspace keeps MiniLM's retrieval within about 1% MRR); the linear kind
        keeps all ``min(d_enc, d_llm)``. Rescale the output afterwards (:meth:`rescale_output`).

        Args:
            seed: Seed of the random orthonormal bases ``P`` (the kept directions) and ``Q`` (their image).

        Returns:
            The number of encoder directions passed through.
        """
        generator = torch.Generator().manual_seed(seed)
        d_in, d_out = self.in_features, self.out_features
        kept = min(d_in, d_out) if self.kind == "linear" else min(d_in, d_out // 2)

        def orthonormal(rows: int, cols: int) -> torch.Tensor:  # (rows, cols), orthonormal columns
            return torch.linalg.qr(torch.randn(rows, cols, generator=generator, dtype=torch.float64))[0]

        p = orthonormal(d_in, kept).T  # (kept, d_in): the kept directions
        q = orthonormal(d_out, kept)  # (d_out, kept): where they go
        first, last = self.net[0], self.net[-1]
        if self.kind == "linear":
            weights = {first: q @ p}
        else:
            hidden = torch.zeros(d_out, d_in, dtype=torch.float64)
            hidden[:kept], hidden[kept : 2 * kept] = p, -p  # unused hidden units read nothing
            out = torch.zeros(d_out, d_out, dtype=torch.float64)
            out[:, :kept], out[:, kept : 2 * kept] = q, -q
            weights = {first: hidden, last: out}
        for layer, weight in weights.items():
            layer.weight.copy_(weight.to(layer.weight.dtype))
            layer.bias.zero_()
        return kept

    @torch.no_grad()
    def rescale_output(self, factor: float) -> None:
        """Multiply the last layer's weight and bias, scaling every output by ``factor``."""
        last = self.net[-1]
        last.weight.mul_(factor)
        last.bias.mul_(factor)


def seeded_projector(in_features: int, out_features: int, kind: ProjectorKind, seed: int) -> Projector:
    """A fresh projector drawn from ``seed``, leaving the global random state as it was."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return Projector(in_features, out_features, kind)
    finally:
        torch.random.set_rng_state(state)


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
