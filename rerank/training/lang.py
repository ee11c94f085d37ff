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

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rerank.errors import RerankError
from rerank.training.loop import LoopConfig, train

KINDS = ("sft", "shira", "lora", "adapter")


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


DEFAULT_LR = {"sft": 5e-5, "shira": 1e-3, "lora": 5e-4, "adapter": 5e-4}


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    from rerank import languages
    from rerank.backbone import resolve_model
    from rerank.collections._io import refuse_existing
    from rerank.modules.format import ModuleConfig, save_module
    from rerank.scoring.runtime import load_tokenizer, load_weights
    from rerank.training.mlm import MaskedBatches, MLMHead, mlm_loss, restricted_vocab
    from rerank.training.text import check_script, read_texts, split_dev

    if cfg.kind not in KINDS:
        raise RerankError(f"unknown --kind {cfg.kind!r}", hint=f"one of: {', '.join(KINDS)}")
    code = languages.code(lang)
    out = Path(out)
    refuse_existing(out, overwrite)
    started = time.perf_counter()
    docs = read_texts(text_files)
    found_script = check_script(docs, code)
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
    work = Path(work_dir) if work_dir else Path(f"{out}.work")

    def step_loss(i: int, extra=None):
        b = batches.batch(i)
        loss = mlm_loss(encoder, head, b)
        if extra is not None:
            loss = loss + extra()
        return loss, int(b["attention_mask"].sum())

    def dev() -> float:
        encoder.eval()
        with torch.no_grad():
            value = sum(float(mlm_loss(encoder, head, b)) for b in dev_fixed) / len(dev_fixed)
        encoder.train()
        return value

    # -- phase 0: the head, encoder frozen
    for p in encoder.parameters():
        p.requires_grad_(False)
    head_steps = cfg.head_steps if cfg.head_steps is not None else min(300, max(1, cfg.max_steps // 5))
    encoder.train()
    base_cfg = dict(grad_accum=cfg.grad_accum, eval_every=cfg.eval_every, seed=cfg.seed,
                    checkpoint_every=max(50, cfg.eval_every))  # fmt: skip
    head_params = {f"head.{n}": p for n, p in head.named_parameters()}
    head_loop = LoopConfig(max_steps=head_steps, lr=cfg.head_lr, patience=None, **base_cfg)
    head_log = train(head_params, step_loss, head_loop, checkpoint_dir=work / "head", desc=f"{code} MLM head",
                     progress=progress)  # fmt: skip
    for p in head.parameters():
        p.requires_grad_(False)
    dev_before = dev()
    lr = cfg.lr or DEFAULT_LR[cfg.kind]
    budget = None if cfg.time_budget is None else max(1.0, cfg.time_budget - (time.perf_counter() - started))
    loop = LoopConfig(max_steps=cfg.max_steps, lr=lr, time_budget=budget, patience=cfg.patience, **base_cfg)
    fp = info.fingerprint
    common = dict(role="language", language=code, base_model=info.name, base_fingerprint=fp)
    recipe = {
        "objective": "masked LM, whole-word masking 15%, restricted output vocabulary", "kind": cfg.kind,
        "head_steps": head_log.steps, "head_lr": cfg.head_lr, "lr": lr, "max_steps": cfg.max_steps,
        "seq_len": cfg.seq_len, "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum, "seed": cfg.seed,
        "vocab": int(vocab.numel()), "embeddings": cfg.embeddings, "dev_loss_before": round(dev_before, 4),
    }  # fmt: skip
    if cfg.kind in ("shira", "sft"):
        module, log = _train_sparse(cfg, encoder, head, vocab, loop, step_loss, dev, work, progress, code, recipe)
        module.config = ModuleConfig(kind=cfg.kind, density=cfg.density, **common, shapes=module.config.shapes)
    elif cfg.kind == "lora":
        module, log = _train_lora(cfg, encoder, loop, step_loss, dev, work, progress, code)
        module.config = ModuleConfig(kind="lora", rank=cfg.rank, scaling=module.config.scaling, **common,
                                     shapes=module.config.shapes)  # fmt: skip
    else:
        module, log = _train_adapter(cfg, encoder, loop, step_loss, dev, work, progress, code, fp, info.name)
        module.config = ModuleConfig(kind="adapter", adapter_config=module.config.adapter_config, **common)
        recipe["note"] = "the invertible adapter is trained on the input side only (the head is ours, untied)"
    recipe.update(
        steps=log.steps, stopped=log.stopped, dev_loss=[(s, round(v, 4)) for s, v in log.dev],
        dev_loss_best=None if log.best_dev is None else round(log.best_dev, 4),
        train_loss=[(s, round(v, 4)) for s, v in log.train_loss[:: max(1, len(log.train_loss) // 20)]],
        tokens=log.tokens, seconds=round(time.perf_counter() - started, 1), resumed_from=log.resumed_from,
    )  # fmt: skip
    module.config.recipe = recipe
    module.config.data = {
        "files": [{"path": str(Path(f).resolve()), "sha256": _sha(Path(f)), "bytes": Path(f).stat().st_size}
                  for f in text_files],  # fmt: skip
        "documents": len(docs), "train_documents": len(train_docs), "dev_documents": len(dev_docs),
        "characters": sum(len(d) for d in docs), "script": found_script, "train_tokens_per_epoch": batches.tokens,
    }  # fmt: skip
    save_module(module, out, overwrite=overwrite)
    import shutil

    shutil.rmtree(work, ignore_errors=True)  # finished: the checkpoints are not needed any more
    return module


def _with_extras(loop: LoopConfig, extra_params: dict | None, lr: float) -> LoopConfig:
    """Make dense extras (a task module's new head) trainable, at their own rate ``lr``."""
    from dataclasses import replace

    for p in (extra_params or {}).values():
        p.requires_grad_(True)
    return replace(loop, param_lr={**loop.param_lr, **{n: lr for n in extra_params or {}}})


def _train_sparse(cfg, encoder, head, vocab, loop, step_loss, dev, work, progress, code, recipe, extra_params=None):
    from rerank.modules.format import Module, ModuleConfig
    from rerank.training import sparse

    loop = _with_extras(loop, extra_params, cfg.head_lr)
    if cfg.kind == "shira" and cfg.mask not in sparse.MASKS:
        raise RerankError(f"unknown --mask {cfg.mask!r}", hint=f"one of: {', '.join(sparse.MASKS)}")
    rows = vocab if cfg.embeddings else None
    targets = sparse.target_weights(encoder, rows, layers=cfg.layers)
    weights = {n: getattr(m, a) for n, (m, a) in targets.items()}
    cands = {n: sparse.candidates(n, w, rows) for n, w in weights.items()}
    saved = sparse.load_mask(work, weights)  # an interrupted run trains the entries it chose before
    if saved is not None:
        chosen, done = saved
        recipe["mask"] = cfg.mask if cfg.kind == "shira" else "LT-SFT phase 1 (chosen before the interruption)"
        if cfg.kind == "sft":  # phase 1 ran before the interruption: phase 2 keeps the length it had
            recipe.update(phase1_steps=done.get("phase1_steps"), l1=cfg.l1)
            loop = LoopConfig(**{**vars(loop), "max_steps": max(1, loop.max_steps - int(done.get("phase1_steps", 0)))})
            if loop.time_budget is not None:
                loop.time_budget = max(1.0, loop.time_budget - float(done.get("phase1_seconds", 0.0)))
        extra = None
    elif cfg.kind == "shira":
        if cfg.mask == "random":
            scores = {n: torch.zeros_like(w) for n, w in weights.items()}
        elif cfg.mask == "magnitude":
            scores = {n: w.detach() for n, w in weights.items()}
        else:  # gradient magnitude over a few batches, weights unchanged
            for w in weights.values():
                w.requires_grad_(True)
            for i in range(8):
                loss, _ = step_loss(10_000_000 + i)
                loss.backward()
            scores = {n: w.grad.detach().abs() for n, w in weights.items()}
            for w in weights.values():
                w.grad = None
                w.requires_grad_(False)
        chosen = sparse.choose(scores, cfg.density, cands, per_tensor=True, seed=cfg.seed)
        recipe["mask"] = cfg.mask
        extra = None
    else:  # LT-SFT phase 1: full fine-tuning of the targets for half the steps
        base = {n: w.detach().clone() for n, w in weights.items()}
        for w in weights.values():
            w.requires_grad_(True)
        phase1 = LoopConfig(**{**vars(loop), "max_steps": max(1, loop.max_steps // 2), "patience": None})
        phase1.time_budget = None if loop.time_budget is None else loop.time_budget / 2
        trainable = dict(weights) | dict(extra_params or {})
        log1 = train(trainable, step_loss, phase1, dev=None, checkpoint_dir=work / "phase1",
                     desc=f"{code} LT-SFT phase 1", progress=progress)  # fmt: skip
        with torch.no_grad():
            moved = {n: (w.detach() - base[n]) for n, w in weights.items()}
            for n, w in weights.items():
                w.copy_(base[n])  # reset to the base
                w.requires_grad_(False)
        chosen = sparse.choose(moved, cfg.density, cands, per_tensor=False)
        del base, moved
        recipe.update(phase1_steps=log1.steps, l1=cfg.l1)
        phase1_done = {"phase1_steps": log1.steps, "phase1_seconds": log1.seconds}
        loop = LoopConfig(**{**vars(loop), "max_steps": max(1, loop.max_steps - log1.steps)})
        if loop.time_budget is not None:
            loop.time_budget = max(1.0, loop.time_budget - log1.seconds)
        extra = None
    if saved is None:
        sparse.save_mask(work, chosen, phase1_done if cfg.kind == "sft" else {})
    deltas = sparse.attach(targets, chosen, rows)
    if head is not None:
        head.row_delta = next((d for d in deltas.values() if isinstance(d, sparse.RowsDelta)), None)
    if cfg.kind == "sft" and cfg.l1 > 0:

        def extra():  # noqa: E306 - L1 pull of the deltas towards the base
            return cfg.l1 * sum(d.delta.abs().sum() for d in deltas.values())

    params = {n: d.delta for n, d in deltas.items()} | dict(extra_params or {})
    log = train(params, lambda i: step_loss(i, extra), loop, dev=dev, checkpoint_dir=work / "sparse",
                desc=f"{code} {cfg.kind}", progress=progress)  # fmt: skip
    entries = sparse.entries(deltas)
    sparse.detach(targets, deltas)
    if head is not None:
        head.row_delta = None
    shapes = {n: list(weights[n].shape) for n in entries}
    cfg_ = ModuleConfig(kind=cfg.kind, role="language", language=code, base_model="", base_fingerprint="",
                        shapes=shapes)  # fmt: skip
    return Module(cfg_, entries), log


def _train_lora(cfg, encoder, loop, step_loss, dev, work, progress, code, extra_params=None):
    from peft import LoraConfig, get_peft_model

    from rerank.backbone.fingerprints import encoder_name
    from rerank.modules.format import Module, ModuleConfig
    from rerank.training import sparse

    names = sorted({n[: -len(".weight")] for n in sparse.target_weights(encoder, layers=cfg.layers)})
    alpha = 2 * cfg.rank
    peft_model = get_peft_model(encoder, LoraConfig(r=cfg.rank, lora_alpha=alpha, target_modules=names,
                                                    lora_dropout=0.0, init_lora_weights=True))  # fmt: skip
    params = {n: p for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" in n}
    loop = _with_extras(loop, extra_params, cfg.head_lr)
    params |= dict(extra_params or {})
    log = train(params, step_loss, loop, dev=dev, checkpoint_dir=work / "lora", desc=f"{code} lora",
                progress=progress)  # fmt: skip
    pairs, shapes = {}, {}
    for full, mod in peft_model.named_modules():
        if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
            a = mod.lora_A["default"].weight.detach().float().clone()
            b = mod.lora_B["default"].weight.detach().float().clone()
            order = torch.argsort(b.norm(dim=0) * a.norm(dim=1), descending=True)  # most important rank first
            name = encoder_name(full.removeprefix("base_model.model.") + ".weight")
            pairs[name] = (a[order].contiguous(), b[:, order].contiguous())
            shapes[name] = [b.shape[0], a.shape[1]]
    peft_model.unload()
    cfg_ = ModuleConfig(kind="lora", role="language", language=code, base_model="", base_fingerprint="",
                        rank=cfg.rank, scaling=alpha / cfg.rank, shapes=shapes)  # fmt: skip
    return Module(cfg_, {}, {}, None, {}, pairs, {}), log


def _train_adapter(cfg, encoder, loop, step_loss, dev, work, progress, code, fp, name, extra_params=None,
                   role="language", below=()):  # fmt: skip
    from adapters import SeqBnConfig, SeqBnInvConfig
    from adapters.composition import Stack

    from rerank.modules.interop import from_adapters, init_adapters

    init_adapters(encoder)
    slot = "lang" if role == "language" else "task"
    n_layers = encoder.config.num_hidden_layers
    leave_out = list(range(n_layers - cfg.layers)) if cfg.layers else []
    config = SeqBnInvConfig(reduction_factor=cfg.reduction, leave_out=leave_out) if role == "language" else \
        SeqBnConfig(reduction_factor=cfg.reduction, leave_out=leave_out)
    encoder.add_adapter(slot, config=config)
    encoder.train_adapter(slot)  # freezes everything else
    if below:  # MAD-X: the task adapter is trained on top of the (frozen) language adapter
        encoder.set_active_adapters(Stack(*below, slot))
    params = {n: p for n, p in encoder.named_parameters() if p.requires_grad and f".{slot}." in n}
    loop = _with_extras(loop, extra_params, cfg.head_lr)
    params |= dict(extra_params or {})
    log = train(params, step_loss, loop, dev=dev, checkpoint_dir=work / "adapter", desc=f"{code} adapter",
                progress=progress)  # fmt: skip
    module = from_adapters(encoder, slot, role=role, language=code, fingerprint=fp, base_model=name)
    return module, log
