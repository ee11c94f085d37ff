"""LoRA: per target weight ``P``, ``P.lora_A`` (r × in) and ``P.lora_B`` (out × r); the delta is
``scaling · B @ A``, ranks stored most important first (by ‖B[:, i]‖·‖A[i]‖), so the first ``b`` ranks are a
budget chosen at load time. Composition merges ``W = W_base + scaling · B @ A`` (one ``addmm`` per target),
with each target's original saved once; restoring copies it back. Training goes through peft.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from rerank.backbone.fingerprints import strip_base_prefix
from rerank.errors import RerankError
from rerank.modules.kinds.base import Kind, Trained, float_dtype, hash_tensors, peft_target


class LoRA(Kind):
    name = "lora"
    order = 0  # merged first: the sparse kinds save their originals after the merges
    default_lr = 5e-4
    peft_type = "LORA"
    holds = "LoRA pairs"
    dynamic_budget = "rank"

    def owns(self, key: str) -> bool:
        return key.endswith((".lora_A", ".lora_B"))

    def read(self, tensors: dict, cfg, shapes: dict | None, where: Path) -> dict:
        """``P.lora_A`` / ``P.lora_B`` pairs, checked against each other and the backbone's shapes."""
        pairs = {}
        names = {k.rsplit(".", 1)[0] for k in tensors}
        for name in sorted(names):
            a, b = tensors.get(f"{name}.lora_A"), tensors.get(f"{name}.lora_B")
            at = f"module {where}, LoRA target {name}"
            if a is None or b is None:
                raise RerankError(f"{at}: lora_A and lora_B must both be present", hint="the module is damaged")
            if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1] or a.shape[0] < 1:
                raise RerankError(
                    f"{at}: lora_A {list(a.shape)} and lora_B {list(b.shape)} are not r × in and out × r",
                    hint="the module is damaged",
                )
            shape = tuple(shapes[name]) if shapes is not None and name in shapes else tuple(cfg.shapes.get(name, ()))
            if shapes is not None and name not in shapes:
                raise RerankError(f"{at}: the backbone has no such parameter", hint="a module for another model?")
            if shape and (len(shape) != 2 or (b.shape[0], a.shape[1]) != shape):
                raise RerankError(
                    f"{at}: B @ A is {[b.shape[0], a.shape[1]]}, the weight is {list(shape)}",
                    hint="a module for another model?",
                )
            pairs[name] = (a.float(), b.float())
        return pairs

    def check_config(self, cfg, payload: dict, where: Path) -> None:
        if cfg.scaling is None or not payload:
            raise RerankError(
                f"module {where}: a LoRA module needs LoRA pairs and a scaling", hint="the module is damaged"
            )

    def write(self, payload: dict, cfg) -> dict:
        dtype, tensors = float_dtype(cfg), {}
        for name, (a, b) in payload.items():
            tensors[f"{name}.lora_A"] = a.to(dtype).contiguous()
            tensors[f"{name}.lora_B"] = b.to(dtype).contiguous()
        return tensors

    def count(self, payload: dict) -> int:
        return sum(int(a.numel() + b.numel()) for a, b in payload.values())

    def digest(self, payload: dict, h) -> None:
        hash_tensors(h, payload)

    def quantize(self, payload: dict, bits: int, block: int | None) -> dict:
        import torch

        dtype = torch.float16 if bits == 16 else torch.float32
        return {n: (a.to(dtype).float(), b.to(dtype).float()) for n, (a, b) in payload.items()}

    def describe(self, payload: dict, cfg) -> str:
        return f"{self.count(payload):,} LoRA numbers in {len(payload)} targets, scaling {cfg.scaling:g}"

    def with_rank(self, payload: dict, cfg, rank: int):
        """The first ``rank`` ranks of each target (stored most important first, as DyLoRA trains them); the
        scaling stays, so the delta is a prefix of the same sum."""
        if (cfg.rank or 0) <= rank:
            return None
        return {n: (a[:rank].contiguous(), b[:, :rank].contiguous()) for n, (a, b) in payload.items()}, {"rank": rank}

    # -- in a backbone ----------------------------------------------------------------------------
    def check(self, payload: dict, model, name: str) -> None:
        for target, (a, b) in payload.items():
            shape = model.shapes.get(target)
            if shape is None or len(shape) != 2 or (b.shape[0], a.shape[1]) != shape or a.shape[0] != b.shape[1]:
                raise RerankError(
                    f"module {name}: LoRA target {target} does not fit this backbone "
                    f"(B @ A is {[b.shape[0], a.shape[1]]}, the weight {list(shape) if shape else 'absent'})",
                    hint="a module for another model?",
                )

    def plan(self, modules: list, model) -> dict:
        """Per target weight, the (A, B, scaling) of every module adapting it, on the weight's device."""
        targets: dict[str, list] = {}
        for m in modules:
            for name, (a, b) in m.payload.items():
                w = model.names[name]
                pair = (a.to(w.device, w.dtype), b.to(w.device, w.dtype), m.config.scaling)
                targets.setdefault(name, []).append(pair)
        return targets

    def apply(self, plan: dict, model, state: dict) -> bool:
        import torch

        base_of = state.setdefault("base", {})  # target -> its original weight (kept across switches)
        for name, pairs in plan.items():
            w = model.names[name].data
            base = base_of.get(name)
            if base is None:
                base = base_of[name] = w.clone()
            for i, (a, b, scaling) in enumerate(pairs):
                if i == 0:
                    torch.addmm(base, b, a, alpha=scaling, out=w)  # one pass: W = base + s·B@A
                else:
                    w.addmm_(b, a, alpha=scaling)
        return False

    def restore(self, model, state: dict, next_plan=None) -> None:
        """Targets the next set writes again keep their saved original (it overwrites them from it)."""
        base_of = state.get("base", {})
        keep = set(next_plan or ())
        for name in [n for n in base_of if n not in keep]:
            model.names[name].data.copy_(base_of.pop(name))

    # -- peft -------------------------------------------------------------------------------------
    def to_peft(self, payload: dict, cfg, prefix: str, name: str):
        targets = sorted(payload)
        r = max(a.shape[0] for a, _ in payload.values())
        tensors, rank_pattern, alpha_pattern = {}, {}, {}
        for target in targets:
            a, b = payload[target]
            mod = target[: -len(".weight")]
            tensors[f"{prefix}{mod}.lora_A.weight"] = a.float().contiguous()
            tensors[f"{prefix}{mod}.lora_B.weight"] = b.float().contiguous()
            if a.shape[0] != r:
                rank_pattern[re.escape(mod)] = a.shape[0]
                alpha_pattern[re.escape(mod)] = cfg.scaling * a.shape[0]
        alpha = cfg.scaling * r
        pcfg = dict(
            peft_type="LORA",
            r=r,
            lora_alpha=int(alpha) if float(alpha).is_integer() else alpha,
            rank_pattern=rank_pattern,
            alpha_pattern=alpha_pattern,
            lora_dropout=0.0,
            bias="none",
            fan_in_fan_out=False,
            init_lora_weights=True,
            use_rslora=False,
            use_dora=False,
        )
        return tensors, pcfg, targets

    def from_peft(self, src: Path, pcfg: dict, tensors: dict, shapes: dict):
        for flag in ("use_dora", "lora_bias", "use_qalora"):
            if pcfg.get(flag):
                raise RerankError(f"{src}: LoRA with {flag} cannot be imported", hint="merge it with peft instead")
        odd = [k for k in tensors if not re.search(r"\.lora_[AB]\.weight$", k)]
        if odd:
            raise RerankError(
                f"{src}: unsupported tensor {odd[0]} (embedding LoRA or a bias)",
                hint="only LoRA on linear layers can be imported",
            )
        alpha, rslora = float(pcfg.get("lora_alpha", 8)), bool(pcfg.get("use_rslora"))
        alpha_pattern, pairs, scalings, note = pcfg.get("alpha_pattern") or {}, {}, {}, {}
        for key in sorted(k for k in tensors if k.endswith(".lora_A.weight")):
            module = key[: -len(".lora_A.weight")]
            b = tensors.get(f"{module}.lora_B.weight")
            if b is None:
                raise RerankError(f"{src}: {module} has lora_A but no lora_B", hint="the adapter is damaged")
            name = strip_base_prefix(module) + ".weight"  # peft names modules (bert.encoder.…)
            out_f, in_f = peft_target(src, name, shapes)
            a = tensors[key].float()
            r = a.shape[0]
            if a.shape != (r, in_f) or b.shape != (out_f, r):
                raise RerankError(
                    f"{src}: {module} has lora_A {list(a.shape)} and lora_B {list(b.shape)}, the layer is "
                    f"{out_f}×{in_f}",
                    hint="an adapter for another model?",
                )
            a_t = next((float(v) for p, v in alpha_pattern.items() if re.fullmatch(rf"(.*\.)?{p}", module)), alpha)
            scalings[name] = a_t / (math.sqrt(r) if rslora else r)
            pairs[name] = (a, b.float())
        if not pairs:
            raise RerankError(f"{src}: no LoRA weights", hint="the adapter is empty")
        scaling = next(iter(scalings.values()))
        if any(s != scaling for s in scalings.values()):  # per-target scalings: folded into B, the same delta
            pairs = {n: (a, b * scalings[n]) for n, (a, b) in pairs.items()}
            scaling, note = 1.0, {"scaling": "per-target, folded into lora_B"}
        rank = max(a.shape[0] for a, _ in pairs.values())
        fields = {"rank": rank, "scaling": scaling, "shapes": {n: list(shapes[n]) for n in pairs}, "recipe": note}
        return pairs, fields

    # -- training ---------------------------------------------------------------------------------
    def train(self, ctx) -> Trained:
        import torch
        from peft import LoraConfig, get_peft_model

        from rerank.backbone.fingerprints import encoder_name
        from rerank.modules import deltas

        spec = ctx.spec
        names = sorted({n[: -len(".weight")] for n in deltas.target_weights(ctx.model, layers=spec.layers)})
        alpha = 2 * spec.rank
        peft_model = get_peft_model(
            ctx.model,
            LoraConfig(r=spec.rank, lora_alpha=alpha, target_modules=names, lora_dropout=0.0, init_lora_weights=True),
        )
        params = {n: p for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" in n}
        layers = [
            (full, mod)
            for full, mod in peft_model.named_modules()
            if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {})
        ]
        budget = _RankBudget([m for _, m in layers], spec.rank) if spec.dynamic is not None else None
        log = ctx.fit(
            params | dict(ctx.extra_params), ctx.loop, self.name, dev=ctx.dev, checkpoint="lora", budget=budget
        )
        if budget is not None:
            budget.remove()
        pairs, shapes = {}, {}
        for full, mod in layers:
            a = mod.lora_A["default"].weight.detach().float().clone()
            b = mod.lora_B["default"].weight.detach().float().clone()
            if budget is None:  # most important rank first (a dynamic run's ranks are nested as trained)
                order = torch.argsort(b.norm(dim=0) * a.norm(dim=1), descending=True)
                a, b = a[order], b[:, order]
            name = encoder_name(full.removeprefix("base_model.model.") + ".weight")
            pairs[name] = (a.contiguous(), b.contiguous())
            shapes[name] = [b.shape[0], a.shape[1]]
        peft_model.unload()
        fields = {"rank": spec.rank, "scaling": alpha / spec.rank, "shapes": shapes}
        if spec.dynamic is not None:
            fields["dynamic"] = [spec.dynamic.lo, spec.dynamic.hi]
        return Trained(pairs, fields, log, ctx.model)  # unload() gave the model its own layers back


class _RankBudget:
    """DyLoRA's rank budget in peft's LoRA layers (:class:`rerank.training.dynamic.Budget`): a forward hook on
    each ``lora_A`` zeroes the ranks past ``b`` (the scaling stays: the delta of rank ``b`` is the prefix of the
    same sum ``--module-rank b`` keeps at load time); ``hold`` keeps those rows of A and columns of B still."""

    def __init__(self, layers: list, rank: int):
        import torch

        self.layers, self.rank, self.b = layers, rank, rank
        self.mask = torch.ones(rank)
        self.handles = [m.lora_A["default"].register_forward_hook(self._hook) for m in layers]

    def _hook(self, module, args, output):
        return output * self.mask.to(output.dtype) if self.b < self.rank else output

    def set(self, b: float) -> None:
        self.b = max(1, min(self.rank, int(round(b))))
        self.mask.zero_()[: self.b] = 1.0

    def hold(self):
        import torch

        if self.b >= self.rank:
            return lambda: None
        b = self.b
        kept = [(m.lora_A["default"].weight, m.lora_B["default"].weight) for m in self.layers]
        saved = [(a.detach()[b:].clone(), w.detach()[:, b:].clone()) for a, w in kept]

        def undo() -> None:
            with torch.no_grad():
                for (a, w), (sa, sw) in zip(kept, saved, strict=True):
                    a[b:] = sa
                    w[:, b:] = sw

        return undo

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


LORA = LoRA()
