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
    the kind's own choices (mask, phases)."""
    k = kinds.get(kind)
    extra_params = dict(extra_params or {})
    for p in extra_params.values():
        p.requires_grad_(True)
    loop = replace(loop, param_lr={**loop.param_lr, **{n: spec.head_lr for n in extra_params}})
    work = Path(work)

    def run(params: dict, loop_: LoopConfig, name: str, *, dev=None, checkpoint: str, step_loss=step_loss):
        return train(
            params,
            step_loss,
            loop_,
            dev=dev,
            checkpoint_dir=work / checkpoint,
            desc=f"{language} {name}".strip(),
            progress=progress,
        )

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
    return k.train(ctx)
