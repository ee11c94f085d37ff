"""Composition of modules into a backbone, with exact restore.

``ComposedModel`` re-lays the backbone's floating-point parameters out as views into ONE flat buffer,
so every entry of every sparse module has a single global index (parameter offset + flat index).
Applying a set of modules writes all of them at once:

* sparse modules (sft, shira): one gather (save the originals at the union of touched indices) and one
  scatter of all deltas of all modules (``index_put_``, or one Triton launch on a GPU);
* LoRA modules: merged, ``W = W_base + scaling · B @ A`` (one ``addmm`` per target), with each target's
  original saved once;
* bottleneck adapters (the ``adapters`` library): added once and activated as a ``Stack`` (language
  before task, MAD-X style) — not fused, so they cost a little at inference;
* dense extras (a task module's ranking head): copied in, the originals saved.

Reverting copies the saved originals back — nothing is ever subtracted — so the weights return bitwise
to the loaded base after any number of switches. Modules are written in a canonical order (by kind,
then by content), so the result does not depend on the order they were given in. After applying
sparse and LoRA modules the model is an ordinary model ("fused mode"): inference runs at the bare
model's speed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from rerank.backbone.fingerprints import strip_base_prefix as _strip  # one rule for parameter names
from rerank.errors import RerankError


def _release_freed_memory() -> None:
    """Give memory the C allocator holds after large temporaries were freed back to the OS (glibc only)."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass


class ComposedModel:
    """A backbone whose weights modules are written into.

    >>> model = ComposedModel(backbone)                  # a torch model; owns its weights from now on
    >>> model.apply(["modules/ky-lang", "modules/en-task"])
    >>> model.switch(["modules/ug-lang", "modules/en-task"])
    >>> model.revert()                                   # bitwise the loaded base again
    """

    # module sets whose prepared writes are kept (12 bytes per entry): switching back to one is two passes
    # of writes (restore, write), no sort and no gather; 0 keeps only the active set
    max_plans = 8

    def __init__(self, model=None, fingerprint: str | None = None, device: str | None = None):
        """``model``: a loaded torch model, or a model folder (``None``: the embedded backbone), loaded here
        with its ranking head when it has one."""
        import torch

        from rerank.backbone.fingerprints import encoder_name

        if model is None or isinstance(model, str | os.PathLike):
            from rerank.backbone import resolve_model
            from rerank.scoring.runtime import load_weights, pick_device

            info = resolve_model(model)
            model = load_weights(info.path, head=info.has_head, device=pick_device(device))
            fingerprint = fingerprint or info.fingerprint
        self.model = model
        self.names: dict[str, torch.nn.Parameter] = {}
        self.heads: dict[str, torch.nn.Parameter] = {}  # head parameters (classifier, pooler): extras go here
        for full, p in model.named_parameters():
            name = encoder_name(full)
            if name is not None and p.dtype.is_floating_point:
                self.names[name] = p
            elif name is None:
                self.heads[_strip(full)] = p
        if fingerprint is None:
            from rerank.backbone import fingerprint as fp

            fingerprint = fp({n: p.detach() for n, p in self.names.items()}, cache=False)
        self.fingerprint = fingerprint
        dtypes = {p.dtype for p in self.names.values()}
        devices = {p.device for p in self.names.values()}
        if len(dtypes) != 1 or len(devices) != 1:
            raise RerankError(
                "the backbone's parameters must share one dtype and device to be composed",
                hint="load it in float32 on one device",
            )
        dtype, device = dtypes.pop(), devices.pop()
        total = sum(p.numel() for p in self.names.values())
        self.flat = torch.empty(total, dtype=dtype, device=device)
        self.offsets: dict[str, int] = {}
        off = 0
        with torch.no_grad():
            for name, p in self.names.items():
                n = p.numel()
                self.flat[off : off + n].copy_(p.detach().reshape(-1))
                p.data = self.flat[off : off + n].view(p.shape)  # the parameter now lives in the buffer
                self.offsets[name] = off
                off += n
        self.shapes = {n: tuple(p.shape) for n, p in self.names.items()}
        self._saved_idx = None  # global indices whose originals are saved (sorted, unique)
        self._saved_val = None
        self._lora_base: dict[str, torch.Tensor] = {}  # LoRA target -> its original weight (kept across switches)
        self._extra_saved: dict[str, torch.Tensor] = {}  # head parameter -> its original
        self._slots: dict[str, str] = {}  # adapter module content key -> adapter name inside the model
        self.active: list = []
        self._loaded: dict[tuple, object] = {}  # (path, mtime) -> validated module: a switch reads no file
        self._checked: dict[int, object] = {}  # id -> in-memory module already checked
        self._plans: dict[tuple, dict] = {}  # module set (+ budgets) -> what it writes, prepared once (LRU)

    # -- loading ----------------------------------------------------------------------------------
    def load(self, module) -> object:
        """A module folder path or an in-memory :class:`Module`, validated against this backbone."""
        from rerank.modules.format import Module, load_module

        if isinstance(module, str | os.PathLike):
            from pathlib import Path

            from rerank.modules.format import CONFIG_FILE, WEIGHTS_FILE

            p = Path(module).resolve()
            stamp = tuple((p / f).stat().st_mtime_ns if (p / f).exists() else 0 for f in (CONFIG_FILE, WEIGHTS_FILE))
            key = (str(p), stamp)
            if key not in self._loaded:
                m = load_module(module, fingerprint=self.fingerprint, shapes=self.shapes)
                self._check(m)
                self._loaded[key] = m
            return self._loaded[key]
        if not isinstance(module, Module):
            raise RerankError(f"not a module: {module!r}", hint="give a module folder or a Module")
        if self._checked.get(id(module)) is module:
            return module
        if module.config.base_fingerprint != self.fingerprint:
            raise RerankError(
                f"module {module.name} was made for backbone {module.config.base_fingerprint[:19]}, "
                f"not for this one ({self.fingerprint[:19]})",
                hint="use a module for this backbone",
            )
        self._check(module)
        self._checked[id(module)] = module
        return module

    def _check(self, module) -> None:
        """Names, index ranges and shapes of an in-memory module against this backbone."""
        for name, (idx, _) in module.entries.items():
            if name not in self.shapes:
                raise RerankError(
                    f"module {module.name}: the backbone has no parameter {name}", hint="a module for another model?"
                )
            numel = self.names[name].numel()
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= numel):
                raise RerankError(
                    f"module {module.name}, parameter {name}: indices out of range (0..{numel - 1})",
                    hint="the module is damaged or made for another model",
                )
        for name, (a, b) in module.lora.items():
            shape = self.shapes.get(name)
            if shape is None or len(shape) != 2 or (b.shape[0], a.shape[1]) != shape or a.shape[0] != b.shape[1]:
                raise RerankError(
                    f"module {module.name}: LoRA target {name} does not fit this backbone "
                    f"(B @ A is {[b.shape[0], a.shape[1]]}, the weight {list(shape) if shape else 'absent'})",
                    hint="a module for another model?",
                )
        for name, t in module.extras.items():
            if name in self.heads and tuple(self.heads[name].shape) != tuple(t.shape):
                raise RerankError(
                    f"module {module.name}: extra {name} is {list(t.shape)}, the model's is "
                    f"{list(self.heads[name].shape)}",
                    hint="a head for another model?",
                )
            if name not in self.heads:
                from rerank.errors import warn

                warn(f"module {module.name}: this model has no {name}; that extra is not used")

    # -- composing --------------------------------------------------------------------------------
    def apply(self, modules: Sequence, density: float | None = None, rank: int | None = None) -> ComposedModel:
        """Write ``modules`` into the model (replacing whatever was applied). All or nothing: every module
        is loaded and checked before any weight changes. ``density`` keeps only that fraction of each
        parameter a sparse module touches, most important entries first; ``rank`` keeps the first
        ``rank`` ranks of each LoRA module."""
        import torch

        from rerank.modules.kernels import scatter_apply

        loaded = [self.load(m) for m in modules]
        key = (tuple(sorted(m.content_key for m in loaded)), density, rank)
        plan = self._plans.pop(key, None)
        if plan is None:
            plan = self._plan(loaded, density, rank)
        self._plans[key] = plan  # most recently used last
        while len(self._plans) > max(self.max_plans, 1):
            self._plans.pop(next(iter(self._plans)))
        union, delta, targets, extras = plan["union"].long(), plan["delta"], plan["targets"], plan["extras"]
        slots = self._prepare_adapters(plan["adapters"])
        # -- from here on nothing can fail on a module: restore, then write
        fresh = False
        with torch.no_grad():
            self._restore(keep_lora=set(targets))
            for name, pairs in targets.items():
                w = self.names[name].data
                base = self._lora_base.get(name)
                if base is None:
                    base = self._lora_base[name] = w.clone()
                for i, (a, b, scaling) in enumerate(pairs):
                    if i == 0:
                        torch.addmm(base, b, a, alpha=scaling, out=w)  # one pass: W = base + s·B@A
                    else:
                        w.addmm_(b, a, alpha=scaling)
            if plan["written"] is None:  # first time: gather the originals, write base + delta
                saved = scatter_apply(self.flat, union, delta)  # one launch on a GPU
                plan["saved"], plan["written"] = saved, saved + delta
                plan["union"], plan["delta"] = union.to(torch.int32), None  # int32: global indices < 2**31
                fresh = True
            else:  # the values under these indices are the same every time: one write, no gather
                self.flat.index_copy_(0, union, plan["written"])
            self._saved_idx, self._saved_val = union, plan["saved"]
            for name, t in extras.items():
                p = self.heads[name]
                self._extra_saved[name] = p.detach().clone()
                p.data.copy_(t.to(p.device, p.dtype))
        if slots:
            from adapters.composition import Stack

            self.model.set_active_adapters(Stack(*slots) if len(slots) > 1 else slots[0])
        self.active = plan["modules"]
        if fresh:
            _release_freed_memory()  # planning a set frees tens of MB of temporaries the allocator would keep
        return self

    def _plan(self, loaded: Sequence, density: float | None, rank: int | None) -> dict:
        """Everything a set of modules writes, prepared (and checked) once: budgets applied, canonical
        order, overlapping sparse entries pre-summed, LoRA pairs per target, heads, adapters."""
        import torch

        from rerank.modules.format import SPARSE_KINDS, truncate_module, truncate_rank

        ordered = sorted(loaded, key=lambda m: m.content_key)
        if density is not None:
            ordered = [truncate_module(m, density, self.shapes) for m in ordered]
        if rank is not None:
            ordered = [truncate_rank(m, rank) for m in ordered]
        self._warn_same_role(ordered)
        idx, val = self._global([m for m in ordered if m.config.kind in SPARSE_KINDS])
        # overlapping entries summed on the CPU, sequentially in canonical module order: deterministic
        union, inverse = torch.unique(idx, return_inverse=True)  # sorted
        delta = torch.zeros(union.numel(), dtype=val.dtype).index_add_(0, inverse, val)
        targets: dict[str, list] = {}
        for m in ordered:
            for name, (a, b) in m.lora.items():
                w = self.names[name]
                targets.setdefault(name, []).append(
                    (a.to(w.device, w.dtype), b.to(w.device, w.dtype), m.config.scaling)
                )
        return {
            "modules": ordered,
            "union": union.to(self.flat.device),
            "delta": delta.to(self.flat.device),
            "saved": None,  # the values under `union` before the first write (the same every time: restore is exact)
            "written": None,  # saved + delta: what a later application of this set writes in one pass
            "targets": targets,
            "extras": self._merged_extras(ordered),
            "adapters": [m for m in ordered if m.config.kind == "adapter"],
        }

    def switch(self, modules: Sequence, density: float | None = None, rank: int | None = None) -> ComposedModel:
        """Restore what the active modules changed, then apply ``modules``."""
        return self.apply(modules, density, rank)

    def revert(self) -> ComposedModel:
        """Back to the loaded base weights, bitwise (and no adapter active)."""
        import torch

        with torch.no_grad():
            self._restore(keep_lora=set())
        self.active = []
        return self

    def _restore(self, keep_lora: set) -> None:
        # sparse first: its saved values were read after the LoRA merges, the LoRA originals before them
        if self._saved_idx is not None:
            self.flat.index_copy_(0, self._saved_idx, self._saved_val)
            self._saved_idx = self._saved_val = None
        for name in [n for n in self._lora_base if n not in keep_lora]:
            self.names[name].data.copy_(self._lora_base.pop(name))
        for name, t in self._extra_saved.items():
            self.heads[name].data.copy_(t)
        self._extra_saved = {}
        if self._slots and getattr(self.model, "active_adapters", None) is not None:
            self.model.set_active_adapters(None)

    def _global(self, modules: Sequence) -> tuple:
        """All entries of all sparse modules as (global indices int64, values), in the given order."""
        import torch

        idx_parts, val_parts = [], []
        for m in modules:
            for name, (idx, val) in m.entries.items():
                idx_parts.append(idx.to(dtype=torch.int64) + self.offsets[name])
                val_parts.append(val.to(dtype=self.flat.dtype))
        if not idx_parts:
            return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=self.flat.dtype)
        return torch.cat(idx_parts), torch.cat(val_parts)

    def _merged_extras(self, modules: Sequence) -> dict:
        """Head tensors the modules carry; two modules carrying different values for one head conflict."""
        import torch

        out, owner = {}, {}
        for m in modules:
            for name, t in m.extras.items():
                if name not in self.heads:
                    continue
                if name in out and not torch.equal(out[name], t):
                    raise RerankError(
                        f"modules {owner[name]} and {m.name} both carry {name}, with different values",
                        hint="stack one task module (the one with the head) at a time",
                    )
                out[name], owner[name] = t, m.name
        return out

    def _prepare_adapters(self, modules: Sequence) -> list[str]:
        """Add each bottleneck-adapter module to the model once (base weights untouched) and return their
        names in stacking order: language adapters before task adapters (MAD-X)."""
        if not modules:
            return []
        import torch

        try:
            from adapters import AdapterConfig
        except ImportError as e:  # pragma: no cover - a dependency
            raise RerankError("adapter modules need the `adapters` package", hint="pip install adapters") from e
        from rerank.modules.interop import init_adapters

        init_adapters(self.model)
        names = []
        for m in sorted(modules, key=lambda m: (m.config.role != "language", m.content_key)):
            slot = self._slots.get(m.content_key)
            if slot is None:
                slot = f"m{m.content_key[:16]}"
                try:
                    self.model.add_adapter(slot, config=AdapterConfig.load(dict(m.config.adapter_config)))
                except (ValueError, TypeError, KeyError) as e:
                    raise RerankError(
                        f"module {m.name}: adapter_config is not one the adapters library takes ({e})",
                        hint="the module is damaged",
                    ) from e
                params = {
                    _strip(n).replace(f".{slot}.", ".{}."): p
                    for n, p in self.model.named_parameters()
                    if f".{slot}." in n
                }
                bad = set(params) ^ set(m.weights)
                bad |= {n for n in params.keys() & m.weights.keys() if params[n].shape != m.weights[n].shape}
                if bad:
                    self.model.delete_adapter(slot)
                    raise RerankError(
                        f"module {m.name}: adapter weights do not match its config ({sorted(bad)[0]})",
                        hint="the module is damaged or made for another model",
                    )
                with torch.no_grad():
                    for n, p in params.items():
                        p.copy_(m.weights[n].to(p.device, p.dtype))
                self.model.eval()
                self._slots[m.content_key] = slot
            names.append(slot)
        return names

    @staticmethod
    def _warn_same_role(modules) -> None:
        seen = {}
        for m in modules:
            key = (m.config.role, m.config.language)
            if key in seen:
                from rerank.errors import warn

                warn(
                    f"two {m.config.role} modules for language {m.config.language or '-'!r} are stacked "
                    f"({seen[key]} and {m.name}); they are summed"
                )
            seen[key] = m.name
        has_lang = any(m.config.role == "language" for m in modules)
        for m in modules:
            recipe = m.config.recipe or {}
            if m.config.role == "task" and has_lang and "language_module" in recipe and not recipe["language_module"]:
                from rerank.errors import warn

                warn(
                    f"task module {m.name} was trained without a language module; stacking it with one is not "
                    "the setting it learned in"
                )
