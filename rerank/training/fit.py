"""Training shared by language and task modules: one module of any kind, trained by the loop.

:func:`fit_module` hands the kind (:mod:`rerank.modules.kinds`) a :class:`~rerank.modules.kinds.TrainContext`
whose ``fit`` runs :func:`rerank.training.loop.train` (checkpointed under the work folder, so an interrupted
run resumes); the kind makes the model trainable its way, trains, and gives back its payload. The caller
supplies the objective (``step_loss``, ``dev``) and the module's role; dense extras (a task module's new
head) train beside the module at their own rate.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

from rerank.modules import kinds
from rerank.training.loop import LoopConfig, train


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_lr(kind: str) -> float:
    """The learning rate a language module of ``kind`` trains at unless told."""
    return kinds.get(kind).default_lr


def fit_module(
    kind: str,
    model,
    spec: kinds.KindSpec,
    loop: LoopConfig,
    step_loss,
    dev,
    work: str | os.PathLike,
    *,
    role: str = "language",
    language: str = "",
    recipe: dict | None = None,
    extra_params: dict | None = None,
    vocab=None,
    mlm_head=None,
    below: tuple = (),
    fingerprint: str = "",
    base_model: str = "",
    progress: bool = True,
) -> kinds.Trained:
    """Train a module of ``kind`` on ``model`` and return what the kind collected (payload, config fields,
    the loop's log). ``step_loss(i)`` → (loss, tokens); ``dev()`` → the figure the loop selects by (or
    (figure, info)). ``extra_params`` (e.g. a new head) train with it at ``spec.head_lr``; ``recipe`` receives
    the kind's own choices (mask, phases). ``spec.dynamic`` (:class:`rerank.training.dynamic.Dynamic`): a budget
    range trained in one run; the kind gives ``fit`` the :class:`~rerank.training.dynamic.Budget` that sets it.
    ``spec.mosa`` (K > 0): MoSA's split into K sub-adapters; the kind gives ``fit`` the
    :class:`~rerank.training.mosa.Split`."""
    from rerank.training import dynamic as dyn
    from rerank.training import mosa as mosa_mode

    k = kinds.get(kind)
    extra_params = dict(extra_params or {})
    for p in extra_params.values():
        p.requires_grad_(True)
    loop = replace(loop, param_lr={**loop.param_lr, **{n: spec.head_lr for n in extra_params}})
    work = Path(work)
    dynamic = spec.dynamic
    mosa = mosa_mode.Mosa(spec.mosa, spec.seed) if spec.mosa else None

    def run(
        params: dict,
        loop_: LoopConfig,
        name: str,
        *,
        dev=None,
        checkpoint: str,
        step_loss=step_loss,
        budget=None,
        split=None,
    ):
        hold = None
        if budget is not None and dynamic is not None:  # each step trains the prefix of the budget it draws
            step_loss, dev = dyn.wrap(dynamic, budget, step_loss, dev, loop_.grad_accum)
            hold = budget.hold
        if split is not None and mosa is not None:  # each step trains one sub-adapter per layer
            step_loss, dev = mosa_mode.wrap(mosa, split, step_loss, dev, loop_.grad_accum)
            hold = split.hold
        log = train(
            params,
            step_loss,
            loop_,
            dev=dev,
            checkpoint_dir=work / checkpoint,
            desc=f"{language} {name}".strip(),
            progress=progress,
            hold=hold,
        )
        if budget is not None and dynamic is not None:
            budget.set(dynamic.hi)  # the module is its whole budget again
            ctx.recipe["dynamic"] = dynamic.record() | {"dev_at_best": dyn.at_best(log)}
        if split is not None and mosa is not None:
            split.remove()  # merged: the adapter as it is stored
            ctx.recipe["mosa"] = mosa.record()
        return log

    ctx = kinds.TrainContext(
        model=model,
        spec=spec,
        loop=loop,
        fit=run,
        step_loss=step_loss,
        dev=dev,
        work=work,
        role=role,
        language=language,
        recipe=recipe if recipe is not None else {},
        extra_params=extra_params,
        vocab=vocab,
        mlm_head=mlm_head,
        below=tuple(below),
        fingerprint=fingerprint,
        base_model=base_model,
    )
    if dynamic is not None:
        dyn.check(kind, dynamic.what)
    if mosa is not None:
        mosa_mode.check(kind, mosa.parts)
    trained = k.train(ctx)
    for mode, name in ((dynamic, "dynamic"), (mosa, "mosa")):
        if mode is not None and name not in ctx.recipe:
            raise RuntimeError(f"the {kind} kind did not train in the {name} mode (its fit was given no part)")
    return trained
