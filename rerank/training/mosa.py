"""MoSA (Mixture of Sparse Adapters): split a bottleneck adapter, train the parts sparsely, merge them back.

``--kind adapter --mosa K`` splits the bottleneck units of every adapter layer into ``K`` non-overlapping groups
(sub-adapters: a group's rows of the down-projection, its bias entries, its columns of the up-projection). Each
optimizer step activates one sub-adapter per layer, drawn uniformly and independently per layer (the MoSA paper
activates one of its sparse modules per forward pass; drawing per layer mixes more combinations across layers in
the same number of steps). Only the active group acts in the forward pass and learns; the others are held still
across the step (no momentum drift). The active group's output is scaled by ``K``, as inverted dropout scales:
the merged adapter — every group at once, unscaled, which is the adapter the module stores — then gives the mean
of what the sub-adapters were trained to give, so the module is a standard adapter with no extra inference or
storage cost, composable with everything else. Dev evaluations use the merged adapter.

Two departures from the paper, on purpose: its split is by random masks over the weights' entries, ours by
bottleneck units, as the product's issue asks (a unit is the natural atom of a bottleneck adapter: a sub-adapter
is then an adapter of its own, of bottleneck ``size / K``); and the paper's optional hierarchical sparse
strategy is not built. The up-projection's bias and (for language modules) the invertible adapter are shared by
all sub-adapters and train in every step.

A kind supports this by giving :func:`rerank.training.fit.fit_module`'s ``fit`` a :class:`Split`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from rerank.errors import RerankError


@dataclass(frozen=True)
class Mosa:
    parts: int
    seed: int = 0

    def draw(self, step: int, layer: int) -> int:
        """The sub-adapter layer ``layer`` trains at optimizer step ``step`` (the same after a resume and in
        every process of a data-parallel run)."""
        return random.Random(f"mosa:{self.seed}:{step}:{layer}").randrange(self.parts)

    def record(self) -> dict:
        return {
            "parts": self.parts,
            "split": "bottleneck units, non-overlapping, equal groups",
            "activation": "one sub-adapter per layer per step, drawn uniformly; its output scaled by the parts",
            "others": "held still in that step; the up-projection's bias and the invertible adapter are shared",
            "merged": "every unit at once, unscaled: a standard adapter (the mean of the sub-adapters' outputs)",
        }


class Split:
    """What a kind hands the loop for MoSA: its number of adapter ``layers`` and bottleneck ``units``;
    ``activate(choices)`` makes sub-adapter ``choices[i]`` the active one of layer ``i`` (None: every unit, the
    merged adapter as stored), ``hold()`` snapshots the inactive units and returns what writes them back, and
    ``remove()`` takes the split out of the model."""

    layers: int
    units: int

    def activate(self, choices: list[int] | None) -> None:
        raise NotImplementedError

    def hold(self) -> Callable[[], None]:
        raise NotImplementedError

    def remove(self) -> None:
        raise NotImplementedError


def check(kind: str, parts: int, bottleneck: int | None = None) -> None:
    """``--mosa K`` is for adapters, with at least 2 parts and at least one unit in each."""
    if kind != "adapter":
        raise RerankError(f"--mosa does not apply to --kind {kind}", hint="MoSA splits a bottleneck: --kind adapter")
    if parts < 2:
        raise RerankError(f"--mosa {parts}: split into at least 2 sub-adapters", hint="e.g. --mosa 4")
    if bottleneck is not None and parts > bottleneck:
        raise RerankError(
            f"--mosa {parts}: the adapter's bottleneck has {bottleneck} units, fewer than the parts",
            hint=f"at most --mosa {bottleneck}, or a smaller --reduction",
        )


def wrap(mosa: Mosa, split: Split, step_loss: Callable, dev: Callable | None, grad_accum: int):
    """``step_loss`` with its step's sub-adapters active; ``dev`` on the merged adapter."""
    check("adapter", mosa.parts, split.units)

    def mosa_step_loss(i: int, *args, **kwargs):
        step = i // grad_accum
        split.activate([mosa.draw(step, layer) for layer in range(split.layers)])
        return step_loss(i, *args, **kwargs)

    if dev is None:
        return mosa_step_loss, None

    def merged_dev():
        split.activate(None)
        return dev()

    return mosa_step_loss, merged_dev
