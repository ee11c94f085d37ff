"""Trainable sparse deltas: a fixed set of trainable entries per weight, the rest frozen.

Each target weight gets a :class:`SparseDelta` parametrization: the weight seen by the forward pass is
``W + scatter(idx, delta)``, where only ``delta`` (one value per chosen entry) is a parameter. The
optimizer therefore holds state for the chosen entries only — frozen entries cost nothing beyond the
forward pass. SHiRA chooses the entries before training (random, weight magnitude, or gradient
magnitude); LT-SFT chooses them after a phase of full fine-tuning (the entries that moved most).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

MASKS = ("random", "magnitude", "gradient")


class SparseDelta(nn.Module):
    """``keep``: only the first this many entries act (a dynamic budget's prefix; None: all)."""

    def __init__(self, idx: torch.Tensor):
        super().__init__()
        self.register_buffer("idx", idx.to(torch.long))
        self.delta = nn.Parameter(torch.zeros(idx.numel()))
        self.keep: int | None = None

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        idx, delta = (self.idx, self.delta) if self.keep is None else (self.idx[: self.keep], self.delta[: self.keep])
        return w.reshape(-1).index_add(0, idx, delta.to(w.dtype)).view_as(w)


class RowsDelta(nn.Module):
    """A sparse delta on some rows of an embedding matrix that never materialises the matrix: a forward
    hook adds the delta's rows to the looked-up embeddings, and an MLM head tied to the embeddings adds
    :meth:`for_ids` to its decoder rows. ``idx`` are flat indices into the full matrix."""

    def __init__(self, idx: torch.Tensor, rows: torch.Tensor, shape: tuple[int, int]):
        super().__init__()
        n, cols = shape
        rows = torch.unique(rows.to(torch.long))
        idx = idx.to(torch.long)
        local_row = torch.searchsorted(rows, idx // cols)
        if bool((rows[local_row.clamp(max=rows.numel() - 1)] != idx // cols).any()):
            raise ValueError("an index outside the given rows")
        self.register_buffer("idx", idx)
        self.register_buffer("local", local_row * cols + idx % cols)
        to_local = torch.full((n,), rows.numel(), dtype=torch.long)
        to_local[rows] = torch.arange(rows.numel())
        self.register_buffer("to_local", to_local)
        self.rows, self.cols = rows.numel(), cols
        self.delta = nn.Parameter(torch.zeros(idx.numel()))
        self.keep: int | None = None  # as SparseDelta's

    def table(self) -> torch.Tensor:
        """(rows + 1) × cols: the delta rows, and a zero row for every other id."""
        flat = torch.zeros((self.rows + 1) * self.cols, dtype=self.delta.dtype, device=self.delta.device)
        k = self.keep
        local, delta = (self.local, self.delta) if k is None else (self.local[:k], self.delta[:k])
        return flat.index_add(0, local, delta).view(self.rows + 1, self.cols)

    def for_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(self.to_local[ids], self.table())

    def hook(self, module, args, output):
        return output + self.for_ids(args[0]).to(output.dtype)


def target_weights(
    model, embeddings_rows: torch.Tensor | None = None, layers: int | None = None
) -> dict[str, tuple[nn.Module, str]]:
    """The weights a module adapts, by normalised name → (owning module, attribute): every linear weight
    of the encoder (``layers``: of its top this many layers only), and the word embeddings when
    ``embeddings_rows`` (the language's pieces) is given."""
    import re

    from rerank.backbone.fingerprints import encoder_name

    first = 0
    if layers is not None:
        n = int(getattr(getattr(model, "config", None), "num_hidden_layers", 0) or 0)
        if not 1 <= layers <= n:
            from rerank.errors import RerankError

            raise RerankError(f"--layers {layers}: the model has {n} layers", hint=f"a number from 1 to {n}")
        first = n - layers
    out = {}
    for full, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            name = encoder_name(f"{full}.weight")
            m = re.match(r"encoder\.layer\.(\d+)\.", name or "")
            if name is not None and name.startswith("encoder.") and (m is None or int(m.group(1)) >= first):
                out[name] = (mod, "weight")
        elif isinstance(mod, nn.Embedding) and embeddings_rows is not None and full.endswith("word_embeddings"):
            out[encoder_name(f"{full}.weight")] = (mod, "weight")
    return out


def candidates(name: str, weight: torch.Tensor, embeddings_rows: torch.Tensor | None) -> torch.Tensor | None:
    """Flat indices that may be chosen (all, or the language's embedding rows); None = all."""
    if name.endswith("word_embeddings.weight") and embeddings_rows is not None:
        cols = weight.shape[1]
        return (embeddings_rows.to(torch.long)[:, None] * cols + torch.arange(cols)[None, :]).reshape(-1)
    return None


def choose(
    scores: dict[str, torch.Tensor],
    density: float,
    cands: dict[str, torch.Tensor | None],
    *,
    per_tensor: bool = True,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Indices with the highest ``scores`` (None: random): ``density`` of each tensor's candidates
    (``per_tensor``), or of all candidates together (LT-SFT's global top-k)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    if per_tensor:
        for name, s in scores.items():
            c = cands[name]
            pool = s.reshape(-1) if c is None else s.reshape(-1)[c]
            k = max(1, math.ceil(pool.numel() * density))
            if bool((pool == 0).all()):  # no scores (a random mask)
                pick = torch.randperm(pool.numel(), generator=g)[:k]
            else:
                pick = torch.topk(pool.abs(), k).indices
            out[name] = pick if c is None else c[pick]
        return out
    pools = {n: (s.reshape(-1) if cands[n] is None else s.reshape(-1)[cands[n]]).abs() for n, s in scores.items()}
    total = sum(p.numel() for p in pools.values())
    k = max(1, math.ceil(total * density))
    flat = torch.cat(list(pools.values()))
    threshold = torch.topk(flat, k).values.min()
    for n, p in pools.items():
        pick = torch.nonzero(p >= threshold).flatten()
        pick = pick[torch.argsort(p[pick], descending=True, stable=True)]  # most important first, as topk gives
        out[n] = pick if cands[n] is None else cands[n][pick]
    return out


def save_mask(work, chosen: dict[str, torch.Tensor], facts: dict | None = None) -> None:
    """Keep the chosen entries in ``<work>/mask.safetensors`` (and ``facts`` about how, as its metadata): a
    resumed run must train the same ones (its checkpoint holds values, not where they go)."""
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    p = Path(work)
    p.mkdir(parents=True, exist_ok=True)
    tmp = p / ".mask.safetensors.tmp"
    save_file(
        {n: i.to(torch.int64).contiguous() for n, i in chosen.items()},
        str(tmp),
        metadata={"facts": json.dumps(facts or {})},
    )
    tmp.replace(p / "mask.safetensors")


def load_mask(work, weights: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The entries an interrupted run chose and the facts saved with them (None when it chose none yet);
    refused if they are another model's."""
    import json
    from pathlib import Path

    from safetensors import safe_open
    from safetensors.torch import load_file

    p = Path(work) / "mask.safetensors"
    if not p.is_file():
        return None
    chosen = load_file(str(p))
    with safe_open(str(p), framework="pt") as f:
        facts = json.loads((f.metadata() or {}).get("facts", "{}"))
    if set(chosen) != set(weights) or any(int(i.max()) >= weights[n].numel() for n, i in chosen.items() if i.numel()):
        from rerank.errors import RerankError

        raise RerankError(f"{p} is the mask of another run", hint=f"delete {p.parent} to start over")
    return chosen, facts


def attach(targets: dict, chosen: dict[str, torch.Tensor], rows: torch.Tensor | None = None) -> dict:
    """Make each target's chosen entries trainable; returns the deltas (their ``delta`` trains). The
    word embeddings get a :class:`RowsDelta` over ``rows`` (hooked, not parametrized) when given."""
    deltas = {}
    for name, idx in chosen.items():
        mod, attr = targets[name]
        w = getattr(mod, attr)
        w.requires_grad_(False)
        if rows is not None and isinstance(mod, nn.Embedding):
            d = RowsDelta(idx, rows, tuple(w.shape))
            d.handle = mod.register_forward_hook(d.hook)
        else:
            d = SparseDelta(idx)
            parametrize.register_parametrization(mod, attr, d, unsafe=True)
        deltas[name] = d
    return deltas


def detach(targets: dict, deltas: dict) -> None:
    """Remove the parametrizations and hooks, leaving the base weights as they were (nothing merged)."""
    for name, d in deltas.items():
        mod, attr = targets[name]
        if isinstance(d, RowsDelta):
            d.handle.remove()
        else:
            parametrize.remove_parametrizations(mod, attr, leave_parametrized=False)


def entries(deltas: dict[str, SparseDelta], nested: bool = False) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The module's entries: per weight, indices (int32) and values, most important (largest) first;
    entries that stayed exactly zero are dropped. ``nested``: in the order they were trained as prefixes (a
    dynamic budget), every entry kept, so that each trained prefix is a prefix of the stored entries."""
    out = {}
    for name, d in deltas.items():
        val = d.delta.detach().float()
        if nested:
            out[name] = (d.idx.to(torch.int32).clone(), val.clone())
            continue
        order = torch.argsort(val.abs(), descending=True, stable=True)
        keep = val[order] != 0
        out[name] = (d.idx[order][keep].to(torch.int32), val[order][keep].clone())
    return out
