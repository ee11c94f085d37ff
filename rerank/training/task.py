"""Ranking task modules: a cross-encoder head and a module trained on source-language relevance data, on top
of the source language's module (applied and frozen) — the recipe of Litschko et al. (2022): at query
time the task module is stacked with the *query* language's module instead.

Each training step takes ``batch_queries`` queries, each with its positive and ``negatives`` negatives
(one group), scores every (query, document) pair with the cross-encoder, and applies the loss:

* ``pointwise``: binary cross-entropy, positive 1, negatives 0;
* ``pairwise``: RankNet, log(1 + exp(s_neg − s_pos)) averaged over the group's negatives;
* ``listwise``: softmax cross-entropy of the positive over its group (ListNet with a one-hot target);
* ``margin-mse``: distillation from the bi-encoder teacher's scores (the pairs file's ``teacher``):
  MSE between the student's and the teacher's positive − negative margins.

The dev metric is the MRR of the positive within its group, on held-out training queries (5%).
The head (pooler + classifier) is trained with the module and stored in it as extras.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rerank import distributed as dist
from rerank.errors import RerankError
from rerank.modules import kinds
from rerank.training.fit import fit_module, sha256_file
from rerank.training.loop import LoopConfig

LOSSES = ("pointwise", "pairwise", "listwise", "margin-mse", "listwise-kd")
TEACHER_LOSSES = ("margin-mse", "listwise-kd")
TEACHER_TEMPERATURE = 0.01  # multilingual-e5's contrastive temperature: cosine / 0.01 are its logits
# fine-tuning rates of the module after the head is probed: a fifth of the language modules' (which adapt to
# a new language from plenty of text); the head keeps its own (TaskConfig.head_lr)
TASK_LR = {name: kind.default_lr / 5 for name, kind in kinds.KINDS.items()}


@dataclass
class TaskConfig:
    kind: str = "shira"
    loss: str = "listwise"
    density: float = 0.02
    rank: int = 8
    reduction: int = 16
    mask: str = "gradient"
    max_steps: int = 500
    batch_queries: int = 4
    negatives: int = 7
    max_length: int = 256
    lr: float | None = None
    head_lr: float = 1e-3  # the new ranking head (pooler, classifier, list head) learns from scratch
    probe_queries: int = 512  # phase 0: the head alone on the frozen encoder's features of this many queries
    probe_epochs: int = 3
    l1: float = 0.0
    time_budget: float | None = None
    eval_every: int = 50
    patience: int | None = 3
    grad_accum: int = 1
    seed: int = 0
    embeddings: bool = False
    list_head: bool = False  # the list-aware head (rerank.scoring.listhead) on top of the plain one
    max_queries: int | None = None  # read no more training queries
    head: str = "plain"  # plain (first-token pooler + classifier) | residual (rerank.scoring.residual)
    hard_fraction: float = 0.0  # share of each step's queries drawn by the first stage's loss on them
    select: str = "mrr"  # the dev figure that picks the kept state: mrr | loss (listwise, on the dev groups)
    layers: int | None = None  # train only the top this many encoder layers (None: all)
    dynamic: object = None  # rerank.training.dynamic.Dynamic: a range of ranks or densities in one run (DyLoRA)
    mosa: int = 0  # adapter: train it as this many sub-adapters, merged at the end (MoSA; 0: off)


def _split(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    train, dev = [], []
    for r in rows:
        h = int(hashlib.sha1(str(r.get("qid", r["query"])).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (dev if h < 0.05 and len(dev) < 200 else train).append(r)
    if not dev:
        dev, train = train[-1:], train[:-1] or train
    return train, dev


HEADS = ("plain", "mean", "residual")  # mean: the residual head's mean-pooled correction without the prior


def group_prior(rows: list[dict], negatives: int) -> torch.Tensor:
    """The bi-encoder's cosines (the pairs' ``teacher``) of each group, padded like the groups (len, 1 + neg)."""
    out = []
    for r in rows:
        t = list(r["teacher"][: 1 + min(negatives, len(r["negatives"]))])
        out.append(t + [t[-1]] * (1 + negatives - len(t)))
    return torch.tensor(out, dtype=torch.float32)


def prior_losses(rows: list[dict], negatives: int) -> list[float]:
    """The bi-encoder's own listwise loss on each group (−log softmax(cos / T) of the positive): near 0 where it
    ranks the positive first by a wide margin, large where it is wrong. A small floor keeps every query drawable."""
    t = group_prior(rows, negatives) / TEACHER_TEMPERATURE
    loss = -torch.log_softmax(t, dim=1)[:, 0]
    return [float(x) + 0.01 for x in loss]


def group_scores(
    model,
    tok,
    rows: list[dict],
    negatives: int,
    max_length: int,
    list_head: bool = False,
    max_tokens: int = 2048,
    residual: bool = False,
) -> tuple[torch.Tensor, int]:
    """Logits (len(rows), 1 + negatives) of each query against its positive and negatives (``list_head``:
    through the list-aware head, each group being one candidate list; ``residual``: through the residual head,
    from the rows' bi-encoder cosines, :mod:`rerank.scoring.residual`). The pairs run in length-sorted
    micro-batches of at most ``max_tokens`` (padded to their own longest), not as one batch padded to the
    longest pair: on LibreOffice's help that is about half the tokens."""
    from rerank.scoring import residual as res
    from rerank.scoring.batching import length_sorted_batches, pad_batch

    firsts, seconds = [], []
    for r in rows:
        docs = [r["positive"]["text"], *(n["text"] for n in r["negatives"][:negatives])]
        docs += [docs[-1]] * (1 + negatives - len(docs))  # a short group repeats its last negative
        firsts += [r["query"]] * len(docs)
        seconds += docs
    from rerank.scoring.cross import encode_pairs

    prior = group_prior(rows, negatives).reshape(-1) if residual else None
    prefixes = res.PAIR_PREFIXES if residual else None
    ids, types, _ = encode_pairs(tok, list(zip(firsts, seconds, strict=True)), max_length, prefixes)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    parts, order = [], []
    for batch in length_sorted_batches([len(x) for x in ids], max_tokens):
        tok_ids, mask = pad_batch([ids[i] for i in batch], pad)
        inputs = {"input_ids": torch.from_numpy(tok_ids), "attention_mask": torch.from_numpy(mask)}
        if types is not None:
            inputs["token_type_ids"] = torch.from_numpy(pad_batch([types[i] for i in batch], 0)[0])
        if residual:
            parts.append(model.residual_head(res.mean_pooled(model, inputs), prior[torch.as_tensor(batch)]))
        elif list_head:
            from rerank.scoring.listhead import pooled

            parts.append(pooled(model, inputs))
        else:
            parts.append(model(**inputs).logits[:, 0])
        order.extend(batch.tolist())
    where = torch.empty(len(order), dtype=torch.long)
    where[torch.tensor(order)] = torch.arange(len(order))
    out = torch.cat(parts)[where]  # back in the groups' order
    if list_head:
        from rerank.scoring.listhead import classify

        out = classify(model, out, [1 + negatives] * len(rows), use_list=True)
    return out.view(len(rows), 1 + negatives), sum(len(x) for x in ids)


def head_logits(model, cls: torch.Tensor) -> torch.Tensor:
    """The ranking head on the last layer's first-token states ``cls`` (N, hidden): BERT's pooler, dropout and
    classifier, or a RoBERTa-style classification head (which pools itself)."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    pooler = getattr(base, "pooler", None)
    if pooler is not None:
        return model.classifier(model.dropout(pooler(cls[:, None, :])))[:, 0]
    return model.classifier(cls[:, None, :])[:, 0]


def probe_head(model, tok, rows: list[dict], cfg, head: list, progress: bool) -> dict:
    """Phase 0 (linear probing before fine-tuning, Kumar et al. 2022): the first-token states of
    ``cfg.probe_queries`` training groups are computed once with the encoder frozen (and its language module
    applied), then the new head trains on them for ``cfg.probe_epochs`` epochs. Fine-tuning from a random head
    sends noise into the encoder and distorts what it knew; from a probed head it does not."""
    import random

    from tqdm import tqdm

    from rerank.scoring import residual as res
    from rerank.scoring.batching import length_sorted_batches, pad_batch

    take = random.Random(cfg.seed).sample(rows, min(len(rows), cfg.probe_queries))
    n = 1 + cfg.negatives
    firsts, seconds = [], []
    for r in take:
        docs = [r["positive"]["text"], *(x["text"] for x in r["negatives"][: cfg.negatives])]
        docs += [docs[-1]] * (n - len(docs))
        firsts += [r["query"]] * n
        seconds += docs
    from rerank.scoring.cross import encode_pairs

    is_res = cfg.head in ("residual", "mean")
    ids, types, _ = encode_pairs(
        tok, list(zip(firsts, seconds, strict=True)), cfg.max_length, res.PAIR_PREFIXES if is_res else None
    )
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    base = getattr(model, model.base_model_prefix)
    feats = torch.zeros(len(ids), model.config.hidden_size)
    mine = list(range(dist.WORLD.rank, len(ids), dist.WORLD.size))  # this process's rows (all, in one process)
    model.eval()
    with torch.no_grad(), tqdm(total=len(mine), desc="head probe: features", unit="pair", disable=not progress) as bar:
        for part in length_sorted_batches([len(ids[i]) for i in mine], 4096):
            b = [mine[i] for i in part]
            t, m = pad_batch([ids[i] for i in b], pad)
            inputs = {"input_ids": torch.from_numpy(t), "attention_mask": torch.from_numpy(m)}
            if types is not None:
                inputs["token_type_ids"] = torch.from_numpy(pad_batch([types[i] for i in b], 0)[0])
            if is_res:
                feats[torch.as_tensor(b)] = res.mean_pooled(model, inputs).float()
            else:
                feats[torch.as_tensor(b)] = base(**inputs)[0][:, 0].float()
            bar.update(len(b))
    if dist.distributed():
        dist.sum_tensor(feats)  # each process computed its share of the rows: every process gets all of them
    feats = feats.view(len(take), n, -1)
    prior = group_prior(take, cfg.negatives) if is_res else None
    teacher = None
    if cfg.loss in TEACHER_LOSSES:
        teacher = torch.tensor([(r["teacher"] + [r["teacher"][-1]] * 64)[:n] for r in take])
    for p in head:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(head, lr=cfg.head_lr)
    model.train()
    rng = random.Random(cfg.seed)
    losses = []
    for _ in range(cfg.probe_epochs):
        order = list(range(len(take)))
        rng.shuffle(order)
        total = 0.0
        for i in range(0, len(order), cfg.batch_queries):
            pick = torch.tensor(order[i : i + cfg.batch_queries])
            flat = feats[pick].reshape(-1, feats.shape[-1])
            if is_res:
                scores = model.residual_head(flat, prior[pick].reshape(-1)).view(len(pick), n)
            else:
                scores = head_logits(model, flat).view(len(pick), n)
            loss = ranking_loss(scores, cfg.loss, None if teacher is None else teacher[pick])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(pick)
        losses.append(round(total / len(take), 4))
    return {"queries": len(take), "epochs": cfg.probe_epochs, "lr": cfg.head_lr, "loss_per_epoch": losses}


def ranking_loss(scores: torch.Tensor, loss: str, teacher: torch.Tensor | None = None) -> torch.Tensor:
    pos, neg = scores[:, :1], scores[:, 1:]
    if loss == "pointwise":
        labels = torch.zeros_like(scores)
        labels[:, 0] = 1
        return torch.nn.functional.binary_cross_entropy_with_logits(scores, labels)
    if loss == "pairwise":
        return torch.nn.functional.softplus(neg - pos).mean()
    if loss == "listwise":
        return torch.nn.functional.cross_entropy(scores, torch.zeros(len(scores), dtype=torch.long))
    if teacher is None:
        raise RerankError(f"{loss} needs teacher scores", hint="make the pairs with `rerank train pairs --teacher`")
    t = teacher / TEACHER_TEMPERATURE  # the bi-encoder's cosines as the logits it was trained with
    if loss == "margin-mse":
        return torch.nn.functional.mse_loss(pos - neg, t[:, :1] - t[:, 1:])
    # listwise-kd: the label's cross-entropy plus the KL divergence from the teacher's distribution over the group
    label = torch.nn.functional.cross_entropy(scores, torch.zeros(len(scores), dtype=torch.long))
    kd = torch.nn.functional.kl_div(
        torch.log_softmax(scores, -1), torch.log_softmax(t, -1), log_target=True, reduction="batchmean"
    )
    return label + kd


def train_task_module(
    pairs_path: str | os.PathLike,
    out: str | os.PathLike,
    cfg: TaskConfig,
    *,
    source_lang: str = "en",
    lang_module: str | os.PathLike | None = None,
    model: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    dev_topics: list | tuple = (),
):
    """Train a ranking task module (and its head) and write it to ``out``; returns the module. ``pairs_path``:
    one pairs file (or ir_datasets id) or several, read together. ``dev_topics``: topic files of the dev sets
    the module will be judged on — refused if they share a query with the training data."""
    import random
    import tempfile

    from rerank import languages
    from rerank.backbone import resolve_model
    from rerank.backbone.fingerprints import strip_base_prefix
    from rerank.backbone.runtime import load_tokenizer, load_weights
    from rerank.errors import warn
    from rerank.files import refuse_existing
    from rerank.modules.compose import ComposedModel
    from rerank.modules.format import CONFIG_FILE, Module, ModuleConfig, load_module, save_module
    from rerank.scoring.cross import init_cross_encoder
    from rerank.training.pairs import read_pairs

    kinds.get(cfg.kind)
    if cfg.loss not in LOSSES:
        raise RerankError(f"unknown --loss {cfg.loss!r}", hint=f"one of: {', '.join(LOSSES)}")
    if cfg.select not in ("mrr", "loss"):
        raise RerankError(f"unknown --select {cfg.select!r}", hint="mrr or loss")
    if cfg.head not in HEADS:
        raise RerankError(f"unknown --head {cfg.head!r}", hint=f"one of: {', '.join(HEADS)}")
    if cfg.head == "residual" and cfg.list_head:
        raise RerankError("--list-head goes on the plain head, not the residual one", hint="drop one of them")
    code = languages.code(source_lang)
    out = Path(out)
    sources = [pairs_path] if isinstance(pairs_path, str | os.PathLike) else list(pairs_path)
    refuse_existing(out, overwrite, marker=CONFIG_FILE, inputs=[*sources, lang_module])
    started = time.perf_counter()
    from_file = all(Path(p).exists() for p in sources)
    # an ir_datasets id (no file): as many queries as the steps take, and a dev split
    need = cfg.max_queries or (None if from_file else cfg.max_steps * cfg.batch_queries * cfg.grad_accum * 21 // 20)
    rows = [r for p in sources for r in read_pairs(p, max_queries=need)]
    if cfg.max_queries:
        rows = rows[: cfg.max_queries]
    for what, wanted in (
        (cfg.loss, cfg.loss in TEACHER_LOSSES),
        ("the residual head", cfg.head != "plain"),
        ("--hard-fraction", cfg.hard_fraction > 0),
    ):
        if wanted and any("teacher" not in r for r in rows):
            raise RerankError(
                f"{what} needs teacher scores (the bi-encoder's) in every training query",
                hint="rerank train pairs --teacher",
            )
    dev_files = [str(f) for f in dev_topics or ()]
    if dev_files:
        from rerank.collections.splits import check_disjoint

        check_disjoint([r["query"] for r in rows], dev_files)
    train_rows, dev_rows = _split(rows)
    info = resolve_model(model)
    tok = load_tokenizer(info.path)
    torch.manual_seed(cfg.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = info.path if info.has_head else init_cross_encoder(info.path, Path(tmp) / "ce", seed=cfg.seed)
        net = load_weights(folder, head=True, device=torch.device("cpu"))
    for p in net.parameters():
        p.requires_grad_(False)
    composer, below, lang_record = None, (), None
    if lang_module is not None:
        composer = ComposedModel(net, fingerprint=info.fingerprint)
        lm = load_module(lang_module, fingerprint=info.fingerprint, shapes=composer.shapes)
        if lm.config.role != "language":
            raise RerankError(
                f"{lang_module} is a {lm.config.role} module", hint="--lang-module takes a language module"
            )
        if lm.config.language and lm.config.language != code:
            warn(f"the language module is for {lm.config.language}, the training data for {code}")
        composer.apply([lang_module])
        below = composer.active_stack()
        lang_record = {"path": str(Path(lang_module).resolve()), "kind": lm.config.kind, "key": lm.content_key[:16]}
    if cfg.list_head:
        from rerank.scoring.listhead import attach

        if attach(net) is None:
            raise RerankError(
                "--list-head needs a BERT-style model (a pooler, then a linear classifier)",
                hint="train without --list-head",
            )
    residual = cfg.head in ("residual", "mean")
    if residual:
        from rerank.scoring import residual as res

        res.attach(net)
        parts = (res.PREFIX,)
        if cfg.head == "mean":  # no prior: the correction alone ranks (the prior's weight stays 0, untrained)
            with torch.no_grad():
                net.residual_head.prior_scale.zero_()
            parts = (f"{res.PREFIX}proj.",)
    else:
        parts = ("pooler.", "classifier.", "list_head.") if cfg.list_head else ("pooler.", "classifier.")
    head = {n: p for n, p in net.named_parameters() if strip_base_prefix(n).startswith(parts)}
    orders: dict[int, list[int]] = {}

    hard = int(round(cfg.hard_fraction * cfg.batch_queries))
    weights = prior_losses(train_rows, cfg.negatives) if hard else None

    def batch(i: int) -> list[dict]:
        """The step's queries: the epoch's shuffled order (a function of seed and step, so a resumed run sees
        what it would have seen), ``hard`` of them instead drawn in proportion to the first stage's own loss on
        the group (where the bi-encoder is wrong or unsure: the residual head's signal is there)."""
        plain = cfg.batch_queries - hard
        epoch, k = divmod(i, max(1, len(train_rows) // max(1, plain)))
        if epoch not in orders:
            idx = list(range(len(train_rows)))
            random.Random(cfg.seed * 1_000_003 + epoch).shuffle(idx)
            orders[epoch] = idx
        take = orders[epoch][k * plain : (k + 1) * plain]
        if hard:
            take += random.Random(cfg.seed * 7_919 + i).choices(range(len(train_rows)), weights=weights, k=hard)
        return dist.shard([train_rows[j] for j in take], what="--batch-queries")  # this process's share

    def step_loss(i: int, extra=None):
        b = batch(i)
        scores, tokens = group_scores(net, tok, b, cfg.negatives, cfg.max_length, cfg.list_head, residual=residual)
        teacher = None
        if cfg.loss in TEACHER_LOSSES:
            teacher = torch.tensor([(r["teacher"] + [r["teacher"][-1]] * 64)[: 1 + cfg.negatives] for r in b])
        loss = ranking_loss(scores, cfg.loss, teacher)
        if extra is not None:
            loss = loss + extra()
        return loss, tokens

    def dev_figures() -> tuple[float, float]:
        """(MRR, listwise loss) of the positives in their dev groups."""
        net.eval()
        rr, losses = [], []
        with torch.no_grad():
            for j in range(0, len(dev_rows), 4):
                scores, _ = group_scores(
                    net, tok, dev_rows[j : j + 4], cfg.negatives, cfg.max_length, cfg.list_head, residual=residual
                )
                rank = 1 + (scores[:, 1:] >= scores[:, :1]).sum(dim=1)  # ties count against the positive
                rr += (1.0 / rank.float()).tolist()
                losses += (-torch.log_softmax(scores.float(), dim=1)[:, 0]).tolist()
        net.train()
        return sum(rr) / len(rr), sum(losses) / len(losses)

    def dev_mrr() -> float:
        return dev_figures()[0]

    work = Path(f"{out}.work")
    resumed = _work_state(work, head)  # an interrupted run: its first figures and its probed head, kept from before
    net.train()
    if resumed:
        mrr_before, probe, mrr_probed = resumed["dev_mrr_before"], resumed["probe"], resumed["dev_mrr_after_probe"]
        resumed["sessions"] = int(resumed.get("sessions", 1)) + 1
        if dist.is_main():
            _save_work_state(work, resumed, head)
    else:
        mrr_before = dist.from_main(dev_mrr)
        probe = None
        if cfg.probe_queries:  # LP-FT: the new head first learns on the frozen encoder's features
            probe = probe_head(net, tok, train_rows, cfg, list(head.values()), progress)
        mrr_probed = dist.from_main(dev_mrr) if probe else None
        if dist.is_main():
            _save_work_state(
                work,
                {
                    "dev_mrr_before": mrr_before,
                    "probe": probe,
                    "dev_mrr_after_probe": mrr_probed,
                    "setup_seconds": round(time.perf_counter() - started, 1),
                },
                head,
            )
    lr = cfg.lr or TASK_LR[cfg.kind]
    loop = LoopConfig(
        max_steps=cfg.max_steps,
        lr=lr,
        time_budget=cfg.time_budget,
        patience=cfg.patience,
        grad_accum=cfg.grad_accum,
        eval_every=cfg.eval_every,
        seed=cfg.seed,
        checkpoint_every=max(50, cfg.eval_every),
    )
    recipe = {
        "objective": f"ranking, {cfg.loss} loss",
        "kind": cfg.kind,
        "loss": cfg.loss,
        "lr": lr,
        "head_lr": cfg.head_lr,
        "max_steps": cfg.max_steps,
        "batch_queries": cfg.batch_queries,
        "negatives": cfg.negatives,
        "max_length": cfg.max_length,
        "seed": cfg.seed,
        "language_module": lang_record,
        "head": cfg.head
        if residual
        else "list-aware (attention over the candidate list)"
        if cfg.list_head
        else "plain",
        "layers": cfg.layers,
        "hard_fraction": cfg.hard_fraction,
        "dev_mrr_before": round(mrr_before, 4),
        "probe": probe,
        "dev_mrr_after_probe": None if mrr_probed is None else round(mrr_probed, 4),
    }

    def dev():  # the loop minimises: 1 − MRR, or the listwise loss (smoother where MRR is near its ceiling)
        mrr, loss = dev_figures()
        return (loss if cfg.select == "loss" else 1.0 - mrr), {"mrr": round(mrr, 4), "loss": round(loss, 4)}

    trained = fit_module(
        cfg.kind,
        net,
        kinds.KindSpec.of(cfg),
        loop,
        step_loss,
        dev,
        work,
        role="task",
        language=code,
        recipe=recipe,
        extra_params=head,
        below=below,
        fingerprint=info.fingerprint,
        base_model=info.name,
        progress=progress,
    )
    log, net = trained.log, trained.model
    if not dist.is_main():
        return None  # rank 0 checks and writes the module
    recipe["processes"] = dist.WORLD.size
    if residual:
        head = {n: p for n, p in net.named_parameters() if strip_base_prefix(n).startswith(res.PREFIX)}
    extras = {strip_base_prefix(n): p.detach().float().clone() for n, p in head.items()}
    common = dict(role="task", language=code, base_model=info.name, base_fingerprint=info.fingerprint)
    module = Module(ModuleConfig(kind=cfg.kind, **common, **trained.fields), trained.payload, extras)
    recipe.update(
        steps=log.steps,
        stopped=log.stopped,
        dev_mrr=[(s, info["mrr"]) for s, info in log.dev_info],
        dev_loss=[(s, info["loss"]) for s, info in log.dev_info],
        selected_by=f"dev {cfg.select}",
        dev_mrr_best=_best_mrr(log),
        train_loss=[(s, round(v, 4)) for s, v in log.train_loss[:: max(1, len(log.train_loss) // 20)]],
        tokens=log.tokens,
        resumed_from=log.resumed_from,
    )
    recipe.update(dev_checks(module, lang_module, model, dev_rows, cfg.negatives, cfg.max_length))
    session = time.perf_counter() - started
    # wall time over every session of an interrupted run: the training loop's own clock (carried in its
    # checkpoints), the first session's set-up, and this session's set-up and final checks
    earlier_setup = float((resumed or {}).get("setup_seconds", 0.0))
    recipe.update(
        seconds=round(log.seconds + earlier_setup + max(0.0, session - _loop_seconds(log)), 1),
        loop_seconds=round(log.seconds, 1),
        sessions=int((resumed or {}).get("sessions", 1)),
    )
    module.config.recipe = recipe
    if from_file:
        files = [{"pairs": str(Path(p).resolve()), "sha256": sha256_file(p), **_pairs_facts(Path(p))} for p in sources]
        source = files[0] if len(files) == 1 else {"pairs": files}
    else:
        source = {"ir_datasets": ", ".join(str(p) for p in sources)}
    module.config.data = {
        **source,
        "queries": len(rows),
        "train_queries": len(train_rows),
        "dev_queries": len(dev_rows),
        "dev_topics_checked": dev_files,
    }
    save_module(module, out, overwrite=overwrite)
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return module


def _best_mrr(log) -> float | None:
    """The dev MRR of the state the loop kept (the best by the selection figure)."""
    if log.best_dev is None or not log.dev_info:
        return None
    picked = next((s for s, v in log.dev if v == log.best_dev), None)
    return next((info["mrr"] for s, info in log.dev_info if s == picked), None)


def _pairs_facts(path: Path) -> dict:
    """What ``rerank train pairs`` recorded about how a pairs file was made (``<file>.json``), if anything."""
    import json

    try:
        raw = json.loads(Path(f"{path}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    keep = (
        "method",
        "lang",
        "queries",
        "first_stage",
        "depth",
        "negatives_per_query",
        "filtered",
        "topics",
        "qrels",
        "source",
        "teacher",
    )
    return {"made": {k: raw[k] for k in keep if k in raw}} if isinstance(raw, dict) else {}


def _save_work_state(work: Path, facts: dict, head: dict) -> None:
    """What an interrupted task-module run must not redo: the dev figures before training, the probe's record
    and the probed head (safetensors), in ``<out>.work/start/``."""
    import json

    from safetensors.torch import save_file

    from rerank.files import atomic_dir

    with atomic_dir(work / "start", overwrite=True, marker="state.json") as tmp:
        save_file({n: p.detach().contiguous() for n, p in head.items()}, str(tmp / "head.safetensors"))
        (tmp / "state.json").write_text(json.dumps(facts), encoding="utf-8")


def _work_state(work: Path, head: dict) -> dict | None:
    """The saved start of an interrupted run (its head parameters restored into ``head``), or None."""
    import json

    from safetensors.torch import load_file

    folder = work / "start"
    if not (folder / "state.json").is_file():
        return None
    try:
        facts = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        tensors = load_file(str(folder / "head.safetensors"))
    except (OSError, ValueError):
        return None
    if set(tensors) != set(head) or any(tensors[n].shape != p.shape for n, p in head.items()):
        raise RerankError(
            f"{work} holds an interrupted run with another head",
            hint=f"delete {work} to start over, or resume with the same settings",
        )
    with torch.no_grad():
        for n, p in head.items():
            p.copy_(tensors[n])
    return facts


def _loop_seconds(log) -> float:
    """The seconds this session's training loop ran (its clock carries earlier sessions' time)."""
    return max(0.0, log.seconds - log.seconds_at_resume)


def _random_mrr(n: int) -> float:
    return sum(1 / k for k in range(1, n + 1)) / n


FUSION_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # the first stage's RRF weight, the cross-encoder's is 1


def dev_checks(module, lang_module, model, dev_rows: list[dict], negatives: int, max_length: int) -> dict:
    """The final checks on the dev split, recorded in the module's recipe:

    * ``dev_mrr_composed``: the saved module as a search composes it (a fresh cross-encoder, the language
      module and this one stacked);
    * ``dev_mrr_shuffled_queries``: each group's query swapped for another group's — a model that ranks by
      what documents look like rather than by how they answer the query keeps its MRR then;
    * ``dev_mrr_random``: 1/n Σ 1/k;
    * with teacher scores in the pairs: ``dev_mrr_teacher`` (the bi-encoder on the same groups) and
      ``fusion``: the weight of the first stage in reciprocal-rank fusion (k=60) with the cross-encoder's
      ranking that maximises dev MRR (bi-encoder as the first stage; ties go to the smaller weight).
      ``rerank search`` fuses with that weight by default (``--first-stage-weight``)."""
    from rerank.indexes.fusion import DEFAULT_K
    from rerank.scoring.reranker import Reranker

    rr = Reranker(
        model,
        kind="cross",
        max_length=max_length,
        head_from_module=True,
        modules=[lang_module, module] if lang_module else [module],
    )
    found: dict[int, list[float]] = {0: [], 1: []}
    kept: list[list[float]] = []
    for shift in (0, 1):
        for j, r in enumerate(dev_rows):
            q = dev_rows[(j + shift) % len(dev_rows)]["query"]
            docs = [r["positive"]["text"], *(n["text"] for n in r["negatives"][:negatives])]
            # the residual head starts from the bi-encoder's cosines: the row's own for its query; for another
            # query's, the reranker computes them
            prior = r["teacher"][: len(docs)] if shift == 0 and "teacher" in r else None
            s = [float(x) for x in rr.predict([(q, d) for d in docs], prior=prior)]
            found[shift].append(_rr(s))
            if shift == 0:
                kept.append(s)
    out = {
        "dev_mrr_composed": round(_mean(found[0]), 4),
        "dev_mrr_shuffled_queries": round(_mean(found[1]), 4),
        "dev_mrr_random": round(_random_mrr(1 + negatives), 4),
    }
    if dev_rows and all("teacher" in r for r in dev_rows):
        teacher = [list(r["teacher"][: len(s)]) for r, s in zip(dev_rows, kept, strict=True)]
        out["dev_mrr_teacher"] = round(_mean([_rr(t) for t in teacher]), 4)
        out["fusion"] = fusion_choice(kept, teacher, DEFAULT_K)
    return out


def fusion_choice(cross: list[list[float]], first: list[list[float]], k: float) -> dict:
    """The first stage's RRF weight (the cross-encoder's is 1) with the best MRR over groups whose entry 0
    is the positive; ties go to the smaller weight."""
    grid = {
        w: _mean([_rr(_rrf_scores(c, f, w, k)) for c, f in zip(cross, first, strict=True)]) for w in FUSION_WEIGHTS
    }
    best = max(FUSION_WEIGHTS, key=lambda w: (round(grid[w], 6), -w))
    return {
        "k": k,
        "first_stage_weight": best,
        "dev_mrr": round(grid[best], 4),
        "dev_mrr_by_weight": {str(w): round(v, 4) for w, v in grid.items()},
    }


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _rr(scores) -> float:
    """Reciprocal rank of entry 0 (the positive); ties count against it, as in training's dev MRR."""
    return 1.0 / (1 + sum(1 for x in scores[1:] if x >= scores[0]))


def _ranks(scores) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    ranks = [0] * len(scores)
    for r, i in enumerate(order, start=1):
        ranks[i] = r
    return ranks


def _rrf_scores(cross, first, weight: float, k: float) -> list[float]:
    rc, rf = _ranks(cross), _ranks(first)
    return [1.0 / (k + a) + weight / (k + b) for a, b in zip(rc, rf, strict=True)]


def recheck_task_module(path, pairs_path, model=None, progress: bool = True) -> dict:
    """Run :func:`dev_checks` again on a trained task module (same pairs file, same dev split) and store
    the results in its recipe — for modules trained before a check existed. The config is rewritten
    atomically; the weights are not touched."""
    import json
    from dataclasses import asdict

    from rerank.modules.format import CONFIG_FILE, read_config
    from rerank.training.pairs import read_pairs

    path, p = Path(path), Path(pairs_path)
    cfg_file = path / CONFIG_FILE
    cfg = read_config(path)
    recipe, data = cfg.recipe or {}, cfg.data or {}
    if cfg.role != "task" or "negatives" not in recipe:
        raise RerankError(f"{path} is not a trained task module", hint="give a folder written by rerank train task")
    if data.get("sha256") and data["sha256"] != sha256_file(p):
        raise RerankError(
            f"{p} is not the pairs file {path} was trained on (its sha256 differs)", hint=f"give {data.get('pairs')}"
        )
    rows = read_pairs(p, max_queries=data.get("queries"))
    _, dev_rows = _split(rows)
    below = (recipe.get("language_module") or {}).get("path")
    recipe.update(dev_checks(path, below, model, dev_rows, recipe["negatives"], recipe["max_length"]))
    cfg.recipe = recipe
    tmp = cfg_file.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(cfg), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, cfg_file)
    return recipe
