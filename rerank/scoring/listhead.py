"""A list-aware ranking head (the "ranking-aware" idea): before the classifier scores a candidate, its
pooled [CLS] vector attends to the pooled vectors of the other candidates of the same query, so a score
can depend on what else was retrieved.

    s_i = classifier(p_i + W_o · Σ_j softmax_j((W_q p_i)·(W_k p_j) / √d) · W_v p_j)

``W_o`` starts at zero, so an untrained list head is exactly the plain head. It is attached to a BERT-style
sequence-classification model as ``list_head`` (its parameters travel in a task module as
``extra.list_head.*``, written in by module composition like the classifier), and used only while its
output projection is non-zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

DIM = 64


class ListHead(nn.Module):
    def __init__(self, hidden: int, dim: int = DIM):
        super().__init__()
        self.q = nn.Linear(hidden, dim)
        self.k = nn.Linear(hidden, dim)
        self.v = nn.Linear(hidden, dim)
        self.out = nn.Linear(dim, hidden)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def active(self) -> bool:
        return bool(self.out.weight.detach().any()) or bool(self.out.bias.detach().any())

    def forward(self, pooled: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
        """``pooled``: (N, hidden), the candidates of consecutive lists of ``sizes``; returns (N, hidden)."""
        q, k, v = self.q(pooled), self.k(pooled), self.v(pooled)
        parts, start = [], 0
        for n in sizes:
            sl = slice(start, start + n)
            att = torch.softmax(q[sl] @ k[sl].T / math.sqrt(q.shape[1]), dim=-1)
            parts.append(att @ v[sl])
            start += n
        return pooled + self.out(torch.cat(parts))


def supports_list_head(model) -> bool:
    """A BERT-style classifier: a base model with a pooler, then ``dropout`` and ``classifier``."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    return getattr(base, "pooler", None) is not None and isinstance(getattr(model, "classifier", None), nn.Linear)


def attach(model) -> ListHead | None:
    """Give ``model`` a (zero, so inactive) list head when its architecture allows one; return it."""
    if not supports_list_head(model):
        return None
    if getattr(model, "list_head", None) is None:
        ref = model.classifier.weight
        with torch.random.fork_rng(devices=[]):  # the same start every time, the caller's RNG untouched
            torch.manual_seed(0)
            head = ListHead(model.config.hidden_size)
        model.list_head = head.to(device=ref.device, dtype=ref.dtype)
    return model.list_head


def pooled(model, inputs: dict) -> torch.Tensor:
    """The pooled [CLS] vectors the classifier reads (before dropout)."""
    return getattr(model, model.base_model_prefix)(**inputs).pooler_output


def classify(model, vectors: torch.Tensor, sizes: Sequence[int], use_list: bool | None = None) -> torch.Tensor:
    """Logits (N,) from pooled vectors through the list head (``use_list``; default: when it is active)
    and the classifier."""
    head = getattr(model, "list_head", None)
    if head is not None and (head.active() if use_list is None else use_list):
        vectors = head(vectors, sizes)
    return model.classifier(model.dropout(vectors))[:, 0]
