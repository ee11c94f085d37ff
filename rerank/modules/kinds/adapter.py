"""Bottleneck adapters through the ``adapters`` library: the payload is that library's tensors of one adapter,
stored as ``adapter.NAME`` (``{}`` standing for the adapter's name), and its config in the module config's
``adapter_config``. Composition adds each adapter module to the model once (base weights untouched) and
activates a set as a ``Stack``, language adapters before task adapters (MAD-X) — not fused, so they cost a
little at inference. Language modules train a MAD-X language adapter (``seq_bn_inv``: bottleneck +
invertible adapter), task modules a ``seq_bn`` one on top of the (frozen) language adapter.
"""

from __future__ import annotations

from pathlib import Path

from rerank.backbone.fingerprints import strip_base_prefix
from rerank.errors import RerankError
from rerank.modules.kinds.base import Kind, Trained, float_dtype, hash_tensors

PREFIX = "adapter."


def _not_idle_adapters_warning(record) -> bool:
    """False for the `adapters` library's warning that adapters exist but none is active: the engine keeps
    added adapter modules in the model and deactivates them whenever another stack (or none: the bi-encoder,
    the base cross-encoder) runs, so for us that state is intended, not a mistake."""
    return "none are activated" not in record.getMessage()


def init_adapters(model) -> None:
    """``adapters.init(model)`` unless done, with the idle-adapters warning filtered out (see above)."""
    import logging

    try:
        import adapters
    except ImportError as e:  # pragma: no cover - a dependency
        raise RerankError("adapter modules need the `adapters` package", hint="pip install adapters") from e
    log = logging.getLogger("adapters.model_mixin")
    if _not_idle_adapters_warning not in log.filters:
        log.addFilter(_not_idle_adapters_warning)
    if not hasattr(model, "adapters_config"):
        adapters.init(model)


def adapter_tensors(model, slot: str) -> dict:
    """The tensors of the adapter ``slot`` an ``adapters``-initialised model holds, named with ``{}``."""
    return {
        strip_base_prefix(n).replace(f".{slot}.", ".{}."): p for n, p in model.named_parameters() if f".{slot}." in n
    }


class Adapter(Kind):
    name = "adapter"
    order = 2
    default_lr = 5e-4
    holds = "adapter weights"

    def owns(self, key: str) -> bool:
        return key.startswith(PREFIX)

    def read(self, tensors: dict, cfg, shapes: dict | None, where: Path) -> dict:
        return {k[len(PREFIX) :]: t.float() for k, t in tensors.items()}

    def check_config(self, cfg, payload: dict, where: Path) -> None:
        if not cfg.adapter_config or not payload:
            raise RerankError(
                f"module {where}: an adapter module needs adapter_config and adapter weights",
                hint="the module is damaged",
            )

    def write(self, payload: dict, cfg) -> dict:
        return {f"{PREFIX}{n}": t.to(float_dtype(cfg)).contiguous() for n, t in payload.items()}

    def count(self, payload: dict) -> int:
        return sum(int(t.numel()) for t in payload.values())

    def digest(self, payload: dict, h) -> None:
        hash_tensors(h, payload)

    def quantize(self, payload: dict, bits: int, block: int | None) -> dict:
        import torch

        dtype = torch.float16 if bits == 16 else torch.float32
        return {n: t.to(dtype).float() for n, t in payload.items()}

    def describe(self, payload: dict, cfg) -> str:
        keys = ("reduction_factor", "inv_adapter", "mh_adapter", "output_adapter", "non_linearity")
        kinds = ", ".join(f"{k}={v}" for k, v in (cfg.adapter_config or {}).items() if k in keys)
        return f"{self.count(payload):,} adapter numbers ({kinds})"

    # -- in a backbone ----------------------------------------------------------------------------
    def plan(self, modules: list, model) -> list:
        return list(modules)

    def prepare(self, plan: list, model, state: dict) -> None:
        """Add each adapter module to the model once and keep the names to stack, in MAD-X order."""
        if not plan:
            state["stack"] = []
            return
        import torch

        init_adapters(model.model)
        from adapters import AdapterConfig

        slots = state.setdefault("slots", {})  # module content key -> adapter name inside the model
        names = []
        for m in sorted(plan, key=lambda m: (m.config.role != "language", m.content_key)):
            slot = slots.get(m.content_key)
            if slot is None:
                slot = f"m{m.content_key[:16]}"
                try:
                    model.model.add_adapter(slot, config=AdapterConfig.load(dict(m.config.adapter_config)))
                except (ValueError, TypeError, KeyError) as e:
                    raise RerankError(
                        f"module {m.name}: adapter_config is not one the adapters library takes ({e})",
                        hint="the module is damaged",
                    ) from e
                params = adapter_tensors(model.model, slot)
                bad = set(params) ^ set(m.payload)
                bad |= {n for n in params.keys() & m.payload.keys() if params[n].shape != m.payload[n].shape}
                if bad:
                    model.model.delete_adapter(slot)
                    raise RerankError(
                        f"module {m.name}: adapter weights do not match its config ({sorted(bad)[0]})",
                        hint="the module is damaged or made for another model",
                    )
                with torch.no_grad():
                    for n, p in params.items():
                        p.copy_(m.payload[n].to(p.device, p.dtype))
                model.model.eval()
                slots[m.content_key] = slot
            names.append(slot)
        state["stack"] = names

    def apply(self, plan: list, model, state: dict) -> bool:
        names = state.get("stack") or []
        if names:
            from adapters.composition import Stack

            model.model.set_active_adapters(Stack(*names) if len(names) > 1 else names[0])
        return False

    def restore(self, model, state: dict, next_plan=None) -> None:
        if state.get("slots") and getattr(model.model, "active_adapters", None) is not None:
            model.model.set_active_adapters(None)

    def stacked(self, state: dict) -> tuple[str, ...]:
        return tuple(state.get("stack") or ())

    # -- training ---------------------------------------------------------------------------------
    def train(self, ctx) -> Trained:
        from adapters import SeqBnConfig, SeqBnInvConfig
        from adapters.composition import Stack

        spec, encoder = ctx.spec, ctx.model
        init_adapters(encoder)
        slot = "lang" if ctx.role == "language" else "task"
        n_layers = encoder.config.num_hidden_layers
        leave_out = list(range(n_layers - spec.layers)) if spec.layers else []
        config = (
            SeqBnInvConfig(reduction_factor=spec.reduction, leave_out=leave_out)
            if ctx.role == "language"
            else SeqBnConfig(reduction_factor=spec.reduction, leave_out=leave_out)
        )
        encoder.add_adapter(slot, config=config)
        encoder.train_adapter(slot)  # freezes everything else
        if ctx.below:  # MAD-X: the task adapter is trained on top of the (frozen) language adapter
            encoder.set_active_adapters(Stack(*ctx.below, slot))
        params = {n: p for n, p in encoder.named_parameters() if p.requires_grad and f".{slot}." in n}
        split = None
        if spec.mosa:
            layers = [m for n, m in encoder.named_modules() if n.endswith(f".adapters.{slot}")]
            split = _UnitSplit(layers, spec.mosa)
        log = ctx.fit(
            params | dict(ctx.extra_params), ctx.loop, self.name, dev=ctx.dev, checkpoint="adapter", split=split
        )
        payload, fields = self.collect(encoder, slot)
        if ctx.role == "language":
            ctx.recipe["note"] = "the invertible adapter is trained on the input side only (the head is ours, untied)"
        return Trained(payload, fields, log, encoder)

    @staticmethod
    def collect(model, slot: str) -> tuple[dict, dict]:
        """(payload, config fields) of the adapter ``slot`` an ``adapters``-initialised model holds."""
        if slot not in getattr(model, "adapters_config", {}):
            raise RerankError(f"the model has no adapter {slot!r}", hint="add_adapter() it first")
        payload = {n: p.detach().float().clone() for n, p in adapter_tensors(model, slot).items()}
        return payload, {"adapter_config": model.adapters_config.get(slot).to_dict()}


def _linear(seq):
    """The down-projection's linear layer (a layer norm may come first)."""
    import torch

    return next(m for m in seq.modules() if isinstance(m, torch.nn.Linear))


class _UnitSplit:
    """MoSA's split of bottleneck adapter layers into ``parts`` groups of units (:class:`rerank.training.mosa.Split`):
    a forward hook on each layer's down-projection keeps the active group's units (scaled by ``parts``) and zeroes
    the rest; ``hold`` keeps the inactive groups' rows, bias entries and up-projection columns still."""

    def __init__(self, layers: list, parts: int):
        import torch

        self.modules, self.parts = layers, parts
        self.layers, self.units = len(layers), layers[0].adapter_up.in_features
        self.groups = list(torch.arange(self.units).chunk(parts)) if parts <= self.units else []
        self.active: list[int] | None = None
        self.masks = [torch.ones(self.units) for _ in layers]
        self.handles = [m.adapter_down.register_forward_hook(self._hook(i)) for i, m in enumerate(layers)]

    def _hook(self, i: int):
        def hook(module, args, output):
            return output if self.active is None else output * self.masks[i].to(output.dtype)

        return hook

    def activate(self, choices: list[int] | None) -> None:
        self.active = None if choices is None else list(choices)
        for mask, k in zip(self.masks, self.active or [], strict=False):
            mask.zero_()[self.groups[k]] = float(self.parts)

    def hold(self):
        import torch

        saved = []
        for m, k in zip(self.modules, self.active or [], strict=False):
            off = torch.ones(self.units, dtype=torch.bool)
            off[self.groups[k]] = False
            down, up = _linear(m.adapter_down), m.adapter_up
            saved.append((down, up, off, down.weight.detach()[off].clone(), down.bias.detach()[off].clone(),
                          up.weight.detach()[:, off].clone()))  # fmt: skip

        def undo() -> None:
            with torch.no_grad():
                for down, up, off, w, b, u in saved:
                    down.weight[off] = w
                    down.bias[off] = b
                    up.weight[:, off] = u

        return undo

    def remove(self) -> None:
        self.active = None
        for h in self.handles:
            h.remove()


ADAPTER = Adapter()
