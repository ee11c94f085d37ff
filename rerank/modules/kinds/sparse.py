"""Sparse kinds: ``sft`` (LT-SFT masks, Ansell et al. 2022) and ``shira`` (sparse high-rank adapters).

The payload is, per base parameter ``P``, flat indices into ``P`` (int32, most important first) and the
deltas at them: ``P.idx`` and ``P.val`` in ``module.safetensors`` (``P.codes`` + ``P.scales`` instead of
``P.val`` at 1–8 bits). Composition writes every entry of every sparse module of a set at once: one gather
of the originals at the union of touched indices and one scatter of the summed deltas; restoring copies the
saved originals back (nothing is subtracted), so the weights return bitwise to the base.

Training: ``shira`` chooses ``density`` of each target weight before training (``random``, weight
``magnitude`` or ``gradient`` magnitude over a few batches) and trains those entries; ``sft`` fine-tunes the
targets fully for half the steps, keeps the ``density`` of entries that moved most (global top-k), resets the
weights and trains only those (optionally with an L1 pull towards the base).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from rerank.backbone.fingerprints import strip_base_prefix
from rerank.errors import RerankError
from rerank.modules.kinds.base import LOW_BITS, Kind, Trained, float_dtype, peft_target

_SUFFIXES = (".idx", ".val", ".codes", ".scales")


@dataclass
class SparseEntries:
    """name -> (idx: int32 flat indices, val: deltas), most important first; ``packed``: name -> {"codes",
    "scales"} when read from (or quantized to) 1–8 bits."""

    entries: dict = field(default_factory=dict)
    packed: dict = field(default_factory=dict)


class Sparse(Kind):
    group = "sparse"
    order = 1  # after LoRA merges (their originals are saved before), restored before them
    low_bit = True
    peft_type = "SHIRA"
    holds = "sparse entries"
    dynamic_budget = "density"

    def __init__(self, name: str, default_lr: float, reads_peft: bool):
        self.name, self.default_lr, self.reads_peft = name, default_lr, reads_peft
        super().__init__()

    # -- the payload ------------------------------------------------------------------------------
    def empty(self) -> SparseEntries:
        return SparseEntries()

    def owns(self, key: str) -> bool:
        return key.endswith(_SUFFIXES)

    def read(self, tensors: dict, cfg, shapes: dict | None, where: Path) -> SparseEntries:
        import torch

        from rerank.modules.quant import check_bits, dequantize

        if cfg.bits is not None:
            check_bits(cfg.bits)
        names = {k[: -len(".idx")] for k in tensors if k.endswith(".idx")}
        entries, packed = {}, {}
        for name in sorted(names):
            idx, val = tensors.get(f"{name}.idx"), tensors.get(f"{name}.val")
            at = f"module {where}, parameter {name}"
            if val is None and f"{name}.codes" in tensors and idx is not None and idx.dim() == 1:
                if cfg.bits not in LOW_BITS or not cfg.block or f"{name}.scales" not in tensors:
                    raise RerankError(f"{at}: codes without bits/block/scales", hint="the module is damaged")
                codes, scales = tensors[f"{name}.codes"], tensors[f"{name}.scales"]
                val = dequantize(codes, scales, idx.numel(), cfg.bits, cfg.block)
                packed[name] = {"codes": codes, "scales": scales}
            if val is None:
                raise RerankError(f"{at}: indices without values", hint="the module is damaged; rebuild it")
            if idx.dtype != torch.int32 or idx.dim() != 1 or val.dim() != 1 or idx.numel() != val.numel():
                raise RerankError(
                    f"{at}: expected 1-D int32 indices and as many values", hint="the module is damaged; rebuild it"
                )
            shape = tuple(cfg.shapes.get(name, ()))
            if shapes is not None:
                if name not in shapes:
                    raise RerankError(f"{at}: the backbone has no such parameter", hint="a module for another model?")
                if shape and tuple(shape) != tuple(shapes[name]):
                    raise RerankError(
                        f"{at}: made for shape {list(shape)}, the backbone's is {list(shapes[name])}",
                        hint="a module for another model?",
                    )
                shape = tuple(shapes[name])
            numel = math.prod(shape)
            if idx.numel():
                lo, hi = int(idx.min()), int(idx.max())
                if lo < 0 or (shape and hi >= numel):
                    raise RerankError(
                        f"{at}: index {hi if lo >= 0 else lo} is out of range (0..{numel - 1})",
                        hint="the module is damaged or made for another model",
                    )
                if torch.unique(idx).numel() != idx.numel():
                    raise RerankError(f"{at}: duplicate indices", hint="each entry may appear once; rebuild it")
            entries[name] = (idx, val)
        stray = {k[: -len(".val")] for k in tensors if k.endswith(".val")} - names
        if stray:
            raise RerankError(
                f"module {where}, parameter {sorted(stray)[0]}: values without indices",
                hint="the module is damaged; rebuild it",
            )
        return SparseEntries(entries, packed)

    def write(self, payload: SparseEntries, cfg) -> dict:
        import torch

        from rerank.modules.quant import quantize

        tensors = {}
        for name, (idx, val) in payload.entries.items():
            tensors[f"{name}.idx"] = idx.to(torch.int32).contiguous()
            if cfg.bits in LOW_BITS:
                packed = payload.packed.get(name) or quantize(val, cfg.bits, cfg.block)
                tensors[f"{name}.codes"], tensors[f"{name}.scales"] = packed["codes"], packed["scales"]
            else:
                tensors[f"{name}.val"] = val.to(float_dtype(cfg)).contiguous()
        return tensors

    def count(self, payload: SparseEntries) -> int:
        return sum(int(i.numel()) for i, _ in payload.entries.values())

    def digest(self, payload: SparseEntries, h) -> None:
        for name in sorted(payload.entries):
            idx, val = payload.entries[name]
            h.update(name.encode())
            h.update(idx.numpy().tobytes())
            h.update(val.float().numpy().tobytes())

    def quantize(self, payload: SparseEntries, bits: int, block: int | None) -> SparseEntries:
        import torch

        from rerank.modules.quant import dequantize, quantize

        entries, packed = {}, {}
        for name, (idx, val) in payload.entries.items():
            if bits in LOW_BITS:
                q = quantize(val, bits, block)
                packed[name] = q
                entries[name] = (idx, dequantize(q["codes"], q["scales"], idx.numel(), bits, block))
            else:
                dtype = torch.float16 if bits == 16 else torch.float32
                entries[name] = (idx, val.to(dtype).to(torch.float32))
        return SparseEntries(entries, packed)

    def describe(self, payload: SparseEntries, cfg) -> str:
        what = f"{self.count(payload):,} sparse entries in {len(payload.entries)} parameters"
        return what + (f", density {cfg.density:.4%}" if cfg.density else "")

    def with_density(self, payload: SparseEntries, cfg, density: float, shapes: dict | None):
        """The first ``density`` × size entries of each parameter; a module trained for a range of densities in
        one run (``cfg.dynamic``) keeps each parameter's prefix exactly as training took it (:func:`prefix`)."""
        entries = {}
        for name, (idx, val) in payload.entries.items():
            shape = (shapes or {}).get(name) or cfg.shapes.get(name)
            if not shape:
                raise RerankError(f"the {cfg.kind} module records no shape for {name}", hint="cannot apply a budget")
            if cfg.dynamic and cfg.density:
                keep = prefix(idx.numel(), density, cfg.density)
            else:
                keep = max(1, math.ceil(math.prod(shape) * density))
            entries[name] = (idx[:keep], val[:keep])
        return SparseEntries(entries), {"density": min(density, cfg.density or density)}

    # -- in a backbone ----------------------------------------------------------------------------
    def check(self, payload: SparseEntries, model, name: str) -> None:
        for pname, (idx, _) in payload.entries.items():
            if pname not in model.shapes:
                raise RerankError(
                    f"module {name}: the backbone has no parameter {pname}", hint="a module for another model?"
                )
            numel = model.names[pname].numel()
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= numel):
                raise RerankError(
                    f"module {name}, parameter {pname}: indices out of range (0..{numel - 1})",
                    hint="the module is damaged or made for another model",
                )

    def plan(self, modules: list, model) -> dict:
        """All entries of all sparse modules as global indices into the model's flat buffer; overlapping
        entries summed on the CPU, sequentially in canonical module order (deterministic)."""
        import torch

        idx_parts, val_parts = [], []
        for m in modules:
            for name, (idx, val) in m.payload.entries.items():
                idx_parts.append(idx.to(dtype=torch.int64) + model.offsets[name])
                val_parts.append(val.to(dtype=model.flat.dtype))
        idx = torch.cat(idx_parts) if idx_parts else torch.zeros(0, dtype=torch.int64)
        val = torch.cat(val_parts) if val_parts else torch.zeros(0, dtype=model.flat.dtype)
        union, inverse = torch.unique(idx, return_inverse=True)  # sorted
        delta = torch.zeros(union.numel(), dtype=val.dtype).index_add_(0, inverse, val)
        return {
            "union": union.to(model.flat.device),
            "delta": delta.to(model.flat.device),
            "saved": None,  # the values under `union` before the first write (the same every time: restore is exact)
            "written": None,  # saved + delta: what a later application of this set writes in one pass
        }

    def apply(self, plan: dict, model, state: dict) -> bool:
        import torch

        from rerank.modules.kernels import scatter_apply

        union = plan["union"].long()
        fresh = plan["written"] is None
        if fresh:  # first time: gather the originals, write base + delta
            saved = scatter_apply(model.flat, union, plan["delta"])  # one launch on a GPU
            plan["saved"], plan["written"] = saved, saved + plan["delta"]
            plan["union"], plan["delta"] = union.to(torch.int32), None  # int32: global indices < 2**31
        else:  # the values under these indices are the same every time: one write, no gather
            model.flat.index_copy_(0, union, plan["written"])
        state["idx"], state["val"] = union, plan["saved"]
        return fresh

    def restore(self, model, state: dict, next_plan=None) -> None:
        if state.get("idx") is not None:
            model.flat.index_copy_(0, state["idx"], state["val"])
            state["idx"] = state["val"] = None

    # -- peft (SHiRA) -----------------------------------------------------------------------------
    def to_peft(self, payload: SparseEntries, cfg, prefix: str, name: str):
        """SHiRA layers hold exactly ``r·(in+out)`` entries each: a module with fewer entries in a layer is
        padded with zero-valued entries at untouched positions (adding zero changes nothing)."""
        import torch

        targets = sorted(payload.entries)
        shapes = {n: tuple(cfg.shapes.get(n, ())) for n in targets}
        bad = [n for n in targets if len(shapes[n]) != 2 or n.startswith("embeddings.") or not n.endswith(".weight")]
        if bad:
            raise RerankError(
                f"{name} touches {bad[0]} (and {len(bad) - 1} more) that SHiRA cannot adapt: "
                "it adapts linear weights only",
                hint="export a module trained on linear layers only",
            )
        r = max(math.ceil(payload.entries[n][0].numel() / sum(shapes[n])) for n in targets)
        tensors = {}
        for target in targets:
            out_f, in_f = shapes[target]
            if r * (out_f + in_f) > out_f * in_f:
                raise RerankError(
                    f"{name}: {target} needs r={r}, more SHiRA entries than the layer has",
                    hint="a module this dense cannot be exported to SHiRA",
                )
            idx, val = payload.entries[target]
            idx, val = _pad(idx.to(torch.int64), val.float(), r * (out_f + in_f), out_f * in_f)
            mod = target[: -len(".weight")]
            tensors[f"{prefix}{mod}.shira_indices"] = torch.stack([idx // in_f, idx % in_f]).to(torch.int)
            tensors[f"{prefix}{mod}.shira_weight"] = val.contiguous()
        pcfg = dict(
            peft_type="SHIRA", r=r, mask_type="random", random_seed=None, fan_in_fan_out=False, init_weights=True
        )
        return tensors, pcfg, targets

    def from_peft(self, src: Path, pcfg: dict, tensors: dict, shapes: dict):
        """peft's tensors named by encoder weight (``….shira_weight``, ``….shira_indices``); importance is
        magnitude, zero entries (padding) are dropped."""
        import torch

        odd = [k for k in tensors if not k.endswith((".shira_weight", ".shira_indices"))]
        if odd:
            raise RerankError(
                f"{src}: unsupported tensor {odd[0]}", hint="only SHiRA on linear layers can be imported"
            )
        entries, touched = {}, 0
        for key in sorted(k for k in tensors if k.endswith(".shira_weight")):
            module = key[: -len(".shira_weight")]
            ind = tensors.get(f"{module}.shira_indices")
            if ind is None:
                raise RerankError(
                    f"{src}: {module} has shira_weight but no shira_indices", hint="the adapter is damaged"
                )
            name = strip_base_prefix(module) + ".weight"  # peft names modules (bert.encoder.…)
            out_f, in_f = peft_target(src, name, shapes)
            val, ind = tensors[key].float(), ind.to(torch.int64)
            if ind.dim() != 2 or ind.shape[0] != 2 or ind.shape[1] != val.numel():
                raise RerankError(
                    f"{src}: {module} has indices {list(ind.shape)} for {val.numel()} values", hint="damaged"
                )
            if ind.numel() and (int(ind.min()) < 0 or int(ind[0].max()) >= out_f or int(ind[1].max()) >= in_f):
                raise RerankError(
                    f"{src}: {module} has indices outside {out_f}×{in_f}", hint="another model's adapter?"
                )
            flat = ind[0] * in_f + ind[1]
            order = torch.argsort(val.abs(), descending=True, stable=True)  # importance = magnitude
            keep = val[order] != 0
            entries[name] = (flat[order][keep].to(torch.int32), val[order][keep])
            touched += out_f * in_f
        if not entries:
            raise RerankError(f"{src}: no SHiRA weights", hint="the adapter is empty")
        n = sum(int(i.numel()) for i, _ in entries.values())
        return SparseEntries(entries), {"density": n / touched, "shapes": {k: list(shapes[k]) for k in entries}}

    # -- training ---------------------------------------------------------------------------------
    def train(self, ctx) -> Trained:
        import torch

        from rerank.modules import deltas as sparse

        spec, loop, recipe = ctx.spec, ctx.loop, ctx.recipe
        if self.name == "shira" and spec.mask not in sparse.MASKS:
            raise RerankError(f"unknown --mask {spec.mask!r}", hint=f"one of: {', '.join(sparse.MASKS)}")
        rows = ctx.vocab if spec.embeddings else None
        targets = sparse.target_weights(ctx.model, rows, layers=spec.layers)
        weights = {n: getattr(m, a) for n, (m, a) in targets.items()}
        cands = {n: sparse.candidates(n, w, rows) for n, w in weights.items()}
        saved = sparse.load_mask(ctx.work, weights)  # an interrupted run trains the entries it chose before
        phase1_done: dict = {}
        if saved is not None:
            chosen, done = saved
            recipe["mask"] = spec.mask if self.name == "shira" else "LT-SFT phase 1 (chosen before the interruption)"
            if self.name == "sft":  # phase 1 ran before the interruption: phase 2 keeps the length it had
                recipe.update(phase1_steps=done.get("phase1_steps"), l1=spec.l1)
                loop = replace(loop, max_steps=max(1, loop.max_steps - int(done.get("phase1_steps", 0))))
                if loop.time_budget is not None:
                    loop.time_budget = max(1.0, loop.time_budget - float(done.get("phase1_seconds", 0.0)))
        elif self.name == "shira":
            chosen = sparse.choose(
                self._mask_scores(ctx, weights), spec.density, cands, per_tensor=True, seed=spec.seed
            )
            recipe["mask"] = spec.mask
        else:  # LT-SFT phase 1: full fine-tuning of the targets for half the steps
            base = {n: w.detach().clone() for n, w in weights.items()}
            for w in weights.values():
                w.requires_grad_(True)
            phase1 = replace(
                loop,
                max_steps=max(1, loop.max_steps // 2),
                patience=None,
                time_budget=None if loop.time_budget is None else loop.time_budget / 2,
            )
            log1 = ctx.fit(
                dict(weights) | dict(ctx.extra_params), phase1, "LT-SFT phase 1", dev=None, checkpoint="phase1"
            )
            with torch.no_grad():
                moved = {n: (w.detach() - base[n]) for n, w in weights.items()}
                for n, w in weights.items():
                    w.copy_(base[n])  # reset to the base
                    w.requires_grad_(False)
            chosen = sparse.choose(moved, spec.density, cands, per_tensor=False)
            del base, moved
            recipe.update(phase1_steps=log1.steps, l1=spec.l1)
            phase1_done = {"phase1_steps": log1.steps, "phase1_seconds": log1.seconds}
            loop = replace(loop, max_steps=max(1, loop.max_steps - log1.steps))
            if loop.time_budget is not None:
                loop.time_budget = max(1.0, loop.time_budget - log1.seconds)
        from rerank import distributed

        if saved is None and distributed.is_main():  # one writer: with several processes, rank 0
            sparse.save_mask(ctx.work, chosen, phase1_done)
        deltas = sparse.attach(targets, chosen, rows)
        if ctx.mlm_head is not None:
            ctx.mlm_head.row_delta = next((d for d in deltas.values() if isinstance(d, sparse.RowsDelta)), None)
        step_loss = ctx.step_loss
        if self.name == "sft" and spec.l1 > 0:

            def step_loss(i: int):  # noqa: E306 - phase 2 with an L1 pull of the deltas towards the base
                loss, tokens = ctx.step_loss(i)
                return loss + spec.l1 * sum(d.delta.abs().sum() for d in deltas.values()), tokens

        params = {n: d.delta for n, d in deltas.items()} | dict(ctx.extra_params)
        budget = _DensityBudget(deltas, spec.density) if spec.dynamic is not None else None
        log = ctx.fit(params, loop, self.name, dev=ctx.dev, checkpoint="sparse", step_loss=step_loss, budget=budget)
        entries = sparse.entries(deltas, nested=budget is not None)
        sparse.detach(targets, deltas)
        if ctx.mlm_head is not None:
            ctx.mlm_head.row_delta = None
        fields = {"density": spec.density, "shapes": {n: list(weights[n].shape) for n in entries}}
        if spec.dynamic is not None:
            fields["dynamic"] = [spec.dynamic.lo, spec.dynamic.hi]
        return Trained(SparseEntries(entries), fields, log, ctx.model)

    @staticmethod
    def _mask_scores(ctx, weights: dict) -> dict:
        """SHiRA's scores: none (random), the weights' magnitude, or the gradient's over 8 batches."""
        import torch

        if ctx.spec.mask == "random":
            return {n: torch.zeros_like(w) for n, w in weights.items()}
        if ctx.spec.mask == "magnitude":
            return {n: w.detach() for n, w in weights.items()}
        for w in weights.values():  # gradient magnitude over a few batches, weights unchanged
            w.requires_grad_(True)
        for i in range(8):
            loss, _ = ctx.step_loss(10_000_000 + i)
            loss.backward()
        from rerank import distributed

        distributed.average_grads(weights.values())  # each process saw its share: the same mask everywhere
        scores = {n: w.grad.detach().abs() for n, w in weights.items()}
        for w in weights.values():
            w.grad = None
            w.requires_grad_(False)
        return scores


def prefix(count: int, density: float, full: float) -> int:
    """How many of a parameter's ``count`` entries (chosen at density ``full``, most important first) make its
    budget at ``density``: the same share of them, at least one."""
    return max(1, min(count, math.ceil(count * density / full - 1e-9)))


class _DensityBudget:
    """The dynamic density budget (:class:`rerank.training.dynamic.Budget`): each sparse delta acts with the
    :func:`prefix` of its entries; ``hold`` keeps the entries past it still across the optimizer step."""

    def __init__(self, deltas: dict, full: float):
        self.deltas, self.full = list(deltas.values()), full

    def set(self, b: float) -> None:
        for d in self.deltas:
            n = d.delta.numel()
            d.keep = None if b >= self.full else prefix(n, b, self.full)

    def hold(self):
        import torch

        parts = [(d.delta, d.keep) for d in self.deltas if d.keep is not None and d.keep < d.delta.numel()]
        saved = [p.detach()[k:].clone() for p, k in parts]

        def undo() -> None:
            with torch.no_grad():
                for (p, k), v in zip(parts, saved, strict=True):
                    p[k:] = v

        return undo


def _pad(idx, val, n: int, numel: int):
    """``idx``/``val`` padded to ``n`` entries with zeros at the first untouched positions."""
    import torch

    if idx.numel() >= n:
        return idx, val
    free = torch.ones(numel, dtype=torch.bool)
    free[idx] = False
    extra = torch.nonzero(free).flatten()[: n - idx.numel()]
    return torch.cat([idx, extra]), torch.cat([val, torch.zeros(extra.numel(), dtype=val.dtype)])


SFT = Sparse("sft", 5e-5, reads_peft=False)  # exported as SHIRA too; a SHIRA adapter imports as shira
SHIRA = Sparse("shira", 1e-3, reads_peft=True)
