"""Language modules: masked-language modelling on text of one language, in one of four kinds.

1. The MLM head (restricted to the language's vocabulary, see :mod:`rerank.training.mlm`) is trained
   first with the encoder frozen (``head_steps``).
2. Then the module is trained with the head frozen:

   * ``shira``: a mask of ``density`` of each target weight chosen before training (``random``,
     ``magnitude`` of the weights, or ``gradient`` magnitude over a few batches), trained directly;
   * ``sft`` (LT-SFT, Ansell et al. 2022): phase 1 fine-tunes the targets fully for half the steps,
     the ``density`` of entries that moved most (global top-k) become the mask, the weights are reset,
     and phase 2 trains only those entries from the base (optionally with an L1 pull towards it);
   * ``lora``: peft LoRA of rank ``rank`` on the encoder's linear layers (ranks are stored most
     important first: by ‖B[:, i]‖·‖A[i]‖);
   * ``adapter``: a MAD-X language adapter (``seq_bn_inv``: bottleneck + invertible adapter) through the
     ``adapters`` library, ``reduction`` factor.

   Targets of the sparse kinds are the encoder's linear weights and (``embeddings=True``) the rows of
   the word embeddings for the language's pieces.

The result is a module folder (the engine's format) whose config records the recipe (steps, rates,
losses over training, dev loss, time) and the data (files, their sha256, sizes).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rerank import distributed as dist
from rerank.modules import kinds
from rerank.training.fit import default_lr, fit_module, sha256_file
from rerank.training.loop import LoopConfig, open_session, train


@dataclass
class LangConfig:
    kind: str = "shira"
    density: float = 0.02
    rank: int = 8
    reduction: int = 16
    mask: str = "gradient"  # shira: random | magnitude | gradient
    embeddings: bool = True  # sparse kinds: the language's rows of the word embeddings too
    max_steps: int = 1000
    head_steps: int | None = None  # default: a fifth of max_steps, at most 300
    seq_len: int = 128
    batch_size: int = 16
    grad_accum: int = 1
    lr: float | None = None  # default per kind
    head_lr: float = 1e-3
    l1: float = 0.0  # sft phase 2: L1 towards the base
    max_vocab: int | None = None
    time_budget: float | None = None
    eval_every: int = 100
    patience: int | None = 3
    seed: int = 0
    dev_batches: int = 8
    layers: int | None = None  # adapt only the top this many encoder layers (None: all)
    dynamic: object = None  # rerank.training.dynamic.Dynamic: a range of ranks or densities in one run (DyLoRA)
    mosa: int = 0  # adapter: train it as this many sub-adapters, merged at the end (MoSA; 0: off)


def train_language_module(
    lang: str,
    text_files: list[str | os.PathLike],
    out: str | os.PathLike,
    cfg: LangConfig,
    *,
    model: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    work_dir: str | os.PathLike | None = None,
):
    """Train a language module and write it to ``out``; returns the module. ``work_dir`` keeps
    checkpoints (default ``<out>.work``), so an interrupted run resumes."""
    from rerank.files import refuse_existing
    from rerank.modules.format import CONFIG_FILE, Module, ModuleConfig, save_module
    from rerank.training.mlm import mlm_loss

    kinds.get(cfg.kind)
    out = Path(out)
    refuse_existing(out, overwrite, marker=CONFIG_FILE, inputs=text_files)
    started = time.perf_counter()
    m = _mlm_setup(lang, text_files, cfg, model)
    code, docs, found_script, train_docs, dev_docs = m.code, m.docs, m.script, m.train_docs, m.dev_docs
    info, encoder, vocab, batches, dev_fixed, head = m.info, m.encoder, m.vocab, m.batches, m.dev_fixed, m.head
    work = Path(work_dir) if work_dir else Path(f"{out}.work")
    session, earlier_seconds = open_session(work) if dist.is_main() else (1, 0.0)

    def step_loss(i: int):
        b = batches.batch(i)
        if not dist.distributed():
            return mlm_loss(encoder, head, b), int(b["attention_mask"].sum())
        # this process's share of the sequences; its mean loss weighted by its share of the masked tokens, so
        # that the processes' average is the mean over the whole batch's masked tokens, as in one process
        rows = dist.shard(range(b["input_ids"].shape[0]), what="--batch-size")
        b = {k: v[rows] for k, v in b.items()}
        mine = int((b["labels"] >= 0).sum())
        weight = mine * dist.WORLD.size / max(1.0, dist.total(mine))
        return mlm_loss(encoder, head, b) * weight, int(b["attention_mask"].sum())

    def dev() -> float:
        return _dev_loss(encoder, head, dev_fixed)

    # -- phase 0: the head, encoder frozen
    head_log = _train_head(m, cfg, step_loss, work / "head", progress)
    base_cfg = dict(
        grad_accum=cfg.grad_accum, eval_every=cfg.eval_every, seed=cfg.seed, checkpoint_every=max(50, cfg.eval_every)
    )
    dev_before = dist.from_main(dev)
    lr = cfg.lr or default_lr(cfg.kind)
    budget = None if cfg.time_budget is None else max(1.0, cfg.time_budget - (time.perf_counter() - started))
    loop = LoopConfig(max_steps=cfg.max_steps, lr=lr, time_budget=budget, patience=cfg.patience, **base_cfg)
    fp = info.fingerprint
    common = dict(role="language", language=code, base_model=info.name, base_fingerprint=fp)
    recipe = {
        "objective": "masked LM, whole-word masking 15%, restricted output vocabulary",
        "kind": cfg.kind,
        "head_steps": head_log.steps,
        "head_lr": cfg.head_lr,
        "lr": lr,
        "max_steps": cfg.max_steps,
        "seq_len": cfg.seq_len,
        "batch_size": cfg.batch_size,
        "grad_accum": cfg.grad_accum,
        "seed": cfg.seed,
        "vocab": int(vocab.numel()),
        "embeddings": cfg.embeddings,
        "dev_loss_before": round(dev_before, 4),
    }
    trained = fit_module(
        cfg.kind,
        encoder,
        kinds.KindSpec.of(cfg),
        loop,
        step_loss,
        dev,
        work,
        role="language",
        language=code,
        recipe=recipe,
        vocab=vocab,
        mlm_head=head,
        fingerprint=fp,
        base_model=info.name,
        progress=progress,
    )
    log = trained.log
    if not dist.is_main():
        return None  # rank 0 writes the module
    recipe["processes"] = dist.WORLD.size
    module = Module(ModuleConfig(kind=cfg.kind, **common, **trained.fields), trained.payload)
    recipe.update(
        steps=log.steps,
        stopped=log.stopped,
        dev_loss=[(s, round(v, 4)) for s, v in log.dev],
        dev_loss_best=None if log.best_dev is None else round(log.best_dev, 4),
        train_loss=[(s, round(v, 4)) for s, v in log.train_loss[:: max(1, len(log.train_loss) // 20)]],
        tokens=log.tokens,
        # over every session of an interrupted run: each earlier one counted until its newest checkpoint
        seconds=round(earlier_seconds + time.perf_counter() - started, 1),
        sessions=session,
        resumed_from=log.resumed_from,
    )
    module.config.recipe = recipe
    module.config.data = {
        "files": [
            {"path": str(Path(f).resolve()), "sha256": sha256_file(f), "bytes": Path(f).stat().st_size}
            for f in text_files
        ],
        "documents": len(docs),
        "train_documents": len(train_docs),
        "dev_documents": len(dev_docs),
        "characters": sum(len(d) for d in docs),
        "script": found_script,
        "train_tokens_per_epoch": batches.tokens,
    }
    save_module(module, out, overwrite=overwrite)
    import shutil

    shutil.rmtree(work, ignore_errors=True)  # finished: the checkpoints are not needed any more
    return module


def _mlm_setup(lang: str, text_files: list, cfg: LangConfig, model):
    """What masked-LM training and its evaluation share, built in one order (so that the head starts from the same
    random state): the text and its dev split, the backbone, the language's output vocabulary, the batches, the
    fixed dev batches and a fresh MLM head tied to the word embeddings."""
    from types import SimpleNamespace

    from rerank import languages
    from rerank.backbone import resolve_model
    from rerank.backbone.runtime import load_tokenizer, load_weights
    from rerank.training.mlm import MaskedBatches, MLMHead, restricted_vocab
    from rerank.training.text import check_script, read_texts, split_dev

    code = languages.code(lang)
    docs = read_texts(text_files)
    script = check_script(docs, code)
    train_docs, dev_docs = split_dev(docs)
    info = resolve_model(model)
    tok = load_tokenizer(info.path)
    torch.manual_seed(cfg.seed)
    encoder = load_weights(info.path, head=False, device=torch.device("cpu"))
    vocab = restricted_vocab(tok, train_docs, cfg.max_vocab)
    batches = MaskedBatches(tok, train_docs, vocab, seq_len=cfg.seq_len, batch_size=cfg.batch_size, seed=cfg.seed)
    dev_set = MaskedBatches(tok, dev_docs, vocab, seq_len=cfg.seq_len, batch_size=cfg.batch_size, seed=cfg.seed + 1)
    dev_fixed = [dev_set.batch(i) for i in range(min(cfg.dev_batches, dev_set.batches_per_epoch()))]
    emb = encoder.embeddings.word_embeddings
    head = MLMHead(encoder.config.hidden_size, emb, vocab, eps=encoder.config.layer_norm_eps)
    return SimpleNamespace(
        code=code, docs=docs, script=script, train_docs=train_docs, dev_docs=dev_docs, info=info, tok=tok,
        encoder=encoder, vocab=vocab, batches=batches, dev_fixed=dev_fixed, head=head,
    )  # fmt: skip


def _train_head(m, cfg: LangConfig, step_loss, checkpoint_dir, progress: bool):
    """Phase 0: the MLM head alone, the encoder frozen at the base; the head is frozen afterwards."""
    for p in m.encoder.parameters():
        p.requires_grad_(False)
    head_steps = cfg.head_steps if cfg.head_steps is not None else min(300, max(1, cfg.max_steps // 5))
    m.encoder.train()
    base_cfg = dict(
        grad_accum=cfg.grad_accum, eval_every=cfg.eval_every, seed=cfg.seed, checkpoint_every=max(50, cfg.eval_every)
    )
    head_params = {f"head.{n}": p for n, p in m.head.named_parameters()}
    head_loop = LoopConfig(max_steps=head_steps, lr=cfg.head_lr, patience=None, **base_cfg)
    log = train(
        head_params, step_loss, head_loop, checkpoint_dir=checkpoint_dir, desc=f"{m.code} MLM head", progress=progress
    )
    for p in m.head.parameters():
        p.requires_grad_(False)
    return log


def _budget(text: float | str, what: str) -> float:
    """A rank (a whole number from 1) or a density (``0.005``, ``0.5%``), for a module whose budget is ``what``."""
    from rerank.errors import RerankError
    from rerank.modules.format import parse_density

    if what == "density":
        return parse_density(text)
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value < 1 or value != int(value):
        raise RerankError(f"budget {text!r} is not a rank", hint="ranks are whole numbers from 1, e.g. 1,2,4,8")
    return value


def _dev_loss(encoder, head, dev_fixed) -> float:
    from rerank.training.mlm import mlm_loss

    encoder.eval()
    with torch.no_grad():
        value = sum(float(mlm_loss(encoder, head, b)) for b in dev_fixed) / len(dev_fixed)
    encoder.train()
    return value


def module_dev_losses(
    module: str | os.PathLike,
    text_files: list[str | os.PathLike],
    budgets: list[float | str] | None = None,
    *,
    model: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """A language module's dev MLM loss at each budget (ranks for LoRA, densities for sparse kinds, as numbers or
    as the CLI writes them: ``2``, ``0.5%``; None: as stored), on ``text_files`` split as training splits them,
    with the MLM head fitted as training fits it (the module's recipe: steps, rate, sequence length, batch, seed)
    on the base encoder. On the module's own training
    text this reproduces the dev loss its training recorded, and scores any other budget of it the same way: a
    dynamic module's trained budgets and a fixed module's truncations alike. Keys: ``"base"`` (the base encoder
    with the fitted head) and each budget's label."""
    from rerank.errors import RerankError
    from rerank.modules.compose import ComposedModel
    from rerank.modules.format import load_module, truncate_module, truncate_rank
    from rerank.training.dynamic import Dynamic
    from rerank.training.mlm import mlm_loss

    mod = load_module(module)
    c = mod.config
    if c.role != "language":
        raise RerankError(f"{module} is a {c.role} module", hint="the masked-LM loss measures language modules")
    what = kinds.get(c.kind).dynamic_budget  # the kind's budget: rank, density, or none
    if budgets and what is None:
        raise RerankError(f"{module} is a {c.kind} module: it has no budget to vary", hint="leave out the budgets")
    values = [None if b is None else _budget(b, what) for b in budgets or []]
    r = c.recipe
    try:
        cfg = LangConfig(
            kind=c.kind,
            seq_len=int(r["seq_len"]),
            batch_size=int(r["batch_size"]),
            head_steps=int(r["head_steps"]),
            head_lr=float(r["head_lr"]),
            seed=int(r["seed"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise RerankError(f"{module}: its recipe lacks {e}", hint="a module written by rerank train lang") from e
    m = _mlm_setup(c.language, text_files, cfg, model)
    if c.base_fingerprint != m.info.fingerprint:
        raise RerankError(f"{module} was trained on {c.base_model}, not on {m.info.name}", hint="give its --model")
    _train_head(m, cfg, lambda i: (mlm_loss(m.encoder, m.head, m.batches.batch(i)), 0), None, progress)
    cm = ComposedModel(m.encoder, fingerprint=m.info.fingerprint)
    out = {"base": _dev_loss(m.encoder, m.head, m.dev_fixed)}
    for b in values or [None]:
        if b is None:
            cut, label = mod, "stored"
        else:
            cut = truncate_rank(mod, int(b)) if what == "rank" else truncate_module(mod, float(b))
            label = Dynamic(what, b, b).label(b)
        cm.apply([cut])
        out[label] = _dev_loss(m.encoder, m.head, m.dev_fixed)
        cm.revert()
    return out
