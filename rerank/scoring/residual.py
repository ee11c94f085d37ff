"""The residual ranking head: a cross-encoder that starts where the first stage is.

    s(q, d) = a · cos(q, d) / T  +  w · mean(h(q ⊕ d)) + b

``cos(q, d)`` is the bi-encoder's cosine (the dense first stage's own score, with the *base* weights), ``T``
multilingual-e5's contrastive temperature (0.01: ``cos / T`` are the logits e5 was trained with), ``h`` the
cross-encoder's last hidden states over the joint input ``"query: q" </s></s> "passage: d"`` — mean-pooled
over every token, as e5 pools — and ``w, b`` a linear correction initialised at zero, ``a`` at one. Before any
training step the head therefore ranks exactly as the dense first stage; training (with the task module's
weights) can only move it from there. A freshly initialised first-token pooler on a model that never trained
its first token, by contrast, starts from noise (modules/README.md compares the two on the dev sets).

The head is attached to a cross-encoder model as ``residual_head`` (zero, so inert) and its values travel in a
task module as ``extra.residual_head.*``, written in by module composition like any ranking head; it is *used*
when the stacked task module carries it (:func:`carries`).
"""

from __future__ import annotations

import torch
from torch import nn

TEMPERATURE = 0.01
PREFIX = "residual_head."
PAIR_PREFIXES = ("query: ", "passage: ")


class ResidualHead(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.proj = nn.Linear(hidden, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.prior_scale = nn.Parameter(torch.ones(1))

    def forward(self, pooled: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """``pooled`` (N, hidden), ``prior`` (N,): the bi-encoder's cosines → (N,) logits."""
        return self.prior_scale * (prior.to(pooled.dtype) / TEMPERATURE) + self.proj(pooled)[:, 0]


def attach(model) -> ResidualHead:
    """Give ``model`` an inert residual head (correction 0, prior weight 1) when it has none; return it."""
    if getattr(model, "residual_head", None) is None:
        ref = next(model.parameters())
        model.residual_head = ResidualHead(model.config.hidden_size).to(device=ref.device, dtype=ref.dtype)
    return model.residual_head


def mean_pooled(model, inputs: dict) -> torch.Tensor:
    """The mean of the encoder's last hidden states over the attended tokens (N, hidden)."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), model)
    last = base(**inputs)[0]
    mask = inputs["attention_mask"].to(last.dtype)[:, :, None]
    return (last * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def carries(module) -> bool:
    """Whether a module (in memory) brings a residual head."""
    return any(n.startswith(PREFIX) for n in getattr(module, "extras", {}) or {})


def prior_cosines(encoder, query: str, docs: list[str]) -> list[float]:
    """The bi-encoder's cosine of ``query`` with each of ``docs`` (``encoder``: a :class:`rerank.scoring.encoder.
    Encoder` on the base weights)."""
    import numpy as np

    q = encoder.encode([query], "query")[0]
    d = encoder.encode(docs, "passage")
    return [float(x) for x in np.asarray(d @ q)]
