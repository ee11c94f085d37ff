"""Dynamic budgets (DyLoRA, Valipour et al. 2023): one training run serves every budget of a range.

``--dynamic-rank 1:8`` (LoRA) or ``--dynamic-density 0.25%:2%`` (``shira``, ``sft``) trains the module at its
largest budget, but every optimizer step first samples a budget ``b`` in the range and trains the *prefix* of the
module up to ``b``: the first ``b`` ranks of each LoRA pair, or the first ``ceil(K · b / b_max)`` of the ``K``
entries each sparse weight holds (entries stored in the order the mask chose them, most important first). The
forward pass sees only that prefix, so every prefix is trained as a module of its own and ``--module-rank b`` /
``--module-density b`` at load time is a trained budget, not a truncation of something trained whole.

The update rule: the whole prefix up to ``b`` learns in the step that sampled ``b`` (the paper's variant that
updates only the ``b``-th rank, the earlier ones frozen, gives rank 1 a share of ``1/R`` of the steps; with the
few hundred steps a module gets here, the small budgets would hardly train). What lies past ``b`` does not move
in that step: the optimizer's momentum would otherwise carry it on without a gradient (:meth:`Budget.hold`).

Ranks are drawn uniformly from the integers of the range (as the paper does); densities log-uniformly (a range
of 0.25%–2% spans three doublings: each gets a third of the steps). The draw is a function of (seed, step), so
a resumed run and every process of a data-parallel one draw the same budgets. The dev figure the loop selects by
is the mean over a grid of budgets (the range's ends and the doublings between), each recorded.

A kind supports this by giving :func:`rerank.training.fit.fit_module`'s ``fit`` a :class:`Budget`: what sets the
prefix the forward pass uses, and what holds the rest still across an optimizer step.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from rerank.errors import RerankError


@dataclass(frozen=True)
class Dynamic:
    """A budget range trained in one run: ``what`` is ``rank`` (LoRA) or ``density`` (sparse kinds)."""

    what: str
    lo: float
    hi: float
    seed: int = 0

    def sample(self, step: int) -> float:
        """The budget of optimizer step ``step`` (the same in every process and after a resume)."""
        r = random.Random(f"dynamic:{self.seed}:{step}")
        if self.what == "rank":
            return float(r.randint(int(self.lo), int(self.hi)))
        return math.exp(r.uniform(math.log(self.lo), math.log(self.hi)))

    def grid(self) -> list[float]:
        """The budgets the dev figure averages over and records: lo, lo·2, lo·4, … below hi, and hi."""
        out, b = [], self.lo
        while b < self.hi * (1 - 1e-9):
            out.append(b)
            b *= 2
        return out + [self.hi]

    def label(self, b: float) -> str:
        return str(int(b)) if self.what == "rank" else f"{b * 100:.4f}".rstrip("0").rstrip(".") + "%"

    def record(self) -> dict:
        return {
            "budget": self.what,
            "range": [self.label(self.lo), self.label(self.hi)],
            "sampling": "uniform over the integers" if self.what == "rank" else "log-uniform",
            "update": "prefix: each step trains everything up to the sampled budget; what lies past it is held",
            "grid": [self.label(b) for b in self.grid()],
        }


class Budget:
    """What a kind hands the loop to train prefixes: ``set(b)`` makes the forward pass use the prefix of budget
    ``b`` (a rank, or a density); ``hold()`` snapshots what lies past the current prefix and returns the function
    that writes it back (called around the optimizer step)."""

    def set(self, b: float) -> None:
        raise NotImplementedError

    def hold(self) -> Callable[[], None]:
        raise NotImplementedError


def parse(kind: str, rank: str | None, density: str | None, seed: int = 0) -> Dynamic | None:
    """The range of ``--dynamic-rank LO:HI`` or ``--dynamic-density LO:HI`` for a module of ``kind`` (None: a
    fixed budget); a range the kind cannot train is one clear error."""
    from rerank.modules.format import parse_density

    if rank is not None and density is not None:
        raise RerankError("give --dynamic-rank or --dynamic-density, not both", hint="ranks are LoRA's budget")
    if rank is None and density is None:
        return None
    what, text = ("rank", rank) if rank is not None else ("density", density)
    flag = f"--dynamic-{what}"
    check(kind, what)
    parts = str(text).split(":")
    example = "1:8" if what == "rank" else "0.25%:2%"
    if len(parts) != 2:
        raise RerankError(f"{flag} {text!r} is not a range LO:HI", hint=f"e.g. {flag} {example}")
    if what == "rank":
        try:
            lo, hi = int(parts[0]), int(parts[1])
        except ValueError:
            lo = hi = 0
        if lo < 1 or hi > 4096:
            raise RerankError(f"{flag} {text!r}: ranks are whole numbers from 1", hint=f"e.g. {flag} {example}")
    else:
        lo, hi = parse_density(parts[0]), parse_density(parts[1])
    if not lo < hi:
        raise RerankError(f"{flag} {text!r}: the range is empty (LO must be below HI)", hint=f"e.g. {flag} {example}")
    return Dynamic(what, float(lo), float(hi), seed)


def check(kind: str, what: str) -> None:
    """Refuse a ``what`` range (rank, density) for a kind whose budget is another (or none)."""
    from rerank.modules import kinds

    if kinds.get(kind).dynamic_budget == what:
        return
    able = [k.name for k in kinds.KINDS.values() if k.dynamic_budget == what]
    own = kinds.get(kind).dynamic_budget
    hint = f"--dynamic-{what} is for --kind {' or '.join(able)}"
    hint += f" (--dynamic-{own} for --kind {kind})" if own else f"; {kind} modules have no budget to vary"
    raise RerankError(f"--dynamic-{what} does not apply to --kind {kind}", hint=hint)


def wrap(
    dynamic: Dynamic, budget: Budget, step_loss: Callable, dev: Callable | None, grad_accum: int
) -> tuple[Callable, Callable | None]:
    """``step_loss`` at the budget its step draws, and ``dev`` as the mean over :meth:`Dynamic.grid` (its other
    figures averaged too, and each budget's kept under ``"at"``)."""

    def dyn_step_loss(i: int, *args, **kwargs):
        budget.set(dynamic.sample(i // grad_accum))
        return step_loss(i, *args, **kwargs)

    if dev is None:
        return dyn_step_loss, None

    def dyn_dev():
        values, infos = {}, {}
        for b in dynamic.grid():
            budget.set(b)
            got = dev()
            value, info = got if isinstance(got, tuple) else (got, None)
            values[dynamic.label(b)] = float(value)
            if info is not None:
                infos[dynamic.label(b)] = info
        budget.set(dynamic.hi)
        mean = sum(values.values()) / len(values)
        out = {"at": {k: round(v, 4) for k, v in values.items()}}
        if infos:
            keys = [k for k, v in next(iter(infos.values())).items() if isinstance(v, int | float)]
            out |= {k: sum(i[k] for i in infos.values()) / len(infos) for k in keys}
            out["at"] = {b: {k: round(i[k], 4) for k in keys} for b, i in infos.items()}
        return mean, out

    return dyn_step_loss, dyn_dev


def at_best(log) -> dict | None:
    """The per-budget dev figures of the state the loop kept (the best mean), from its log."""
    if log.best_dev is None or not log.dev_info:
        return None
    picked = next((s for s, v in log.dev if v == log.best_dev), None)
    return next((info.get("at") for s, info in log.dev_info if s == picked and isinstance(info, dict)), None)
