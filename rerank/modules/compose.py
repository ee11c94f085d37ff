"""Composition of modules into a backbone, with exact restore.

``ComposedModel`` re-lays the backbone's floating-point parameters out as views into ONE flat buffer,
so every entry of every sparse module has a single global index (parameter offset + flat index).
Applying a set of modules writes all of them at once; each kind (:mod:`rerank.modules.kinds`) says how:

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
model's speed. This file never tests a kind's name: it plans, writes and restores kind by kind.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from rerank.backbone.fingerprints import strip_base_prefix
from rerank.errors import RerankError
from rerank.modules import kinds


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
            from rerank.backbone.runtime import load_weights, pick_device

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
                self.heads[strip_base_prefix(full)] = p
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
        self._state: dict[str, dict] = {}  # kind group -> what that kind keeps to restore (its own keys)
        self._extra_saved: dict[str, torch.Tensor] = {}  # head parameter -> its original
        self.active: list = []
        self._loaded: dict[tuple, object] = {}  # (path, mtime) -> validated module: a switch reads no file
        self._checked: dict[int, object] = {}  # id -> in-memory module already checked
        self._plans: dict[tuple, dict] = {}  # module set (+ budgets) -> what it writes, prepared once (LRU)

    def adopt_heads(self) -> None:
        """Take in head parameters added to the model after it was composed (e.g. the list-aware head), so
        modules carrying them write them in; prepared plans are dropped (they skipped those extras)."""
        from rerank.backbone.fingerprints import encoder_name

        for full, p in self.model.named_parameters():
            if encoder_name(full) is None and strip_base_prefix(full) not in self.heads:
                self.heads[strip_base_prefix(full)] = p
        self._plans.clear()

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
        module.kind.check(module.payload, self, module.name)
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

        loaded = [self.load(m) for m in modules]
        key = (tuple(sorted(m.content_key for m in loaded)), density, rank)
        plan = self._plans.pop(key, None)
        if plan is None:
            plan = self._plan(loaded, density, rank)
        self._plans[key] = plan  # most recently used last
        while len(self._plans) > max(self.max_plans, 1):
            self._plans.pop(next(iter(self._plans)))
        groups = self._groups()
        for kind in groups:
            kind.prepare(plan["kinds"][kind.group], self, self._state.setdefault(kind.group, {}))
        # -- from here on nothing can fail on a module: restore, then write
        fresh = False
        with torch.no_grad():
            self._restore(plan)
            for kind in groups:
                fresh |= kind.apply(plan["kinds"][kind.group], self, self._state[kind.group])
            for name, t in plan["extras"].items():
                p = self.heads[name]
                self._extra_saved[name] = p.detach().clone()
                p.data.copy_(t.to(p.device, p.dtype))
        self.active = plan["modules"]
        if fresh:
            _release_freed_memory()  # planning a set frees tens of MB of temporaries the allocator would keep
        return self

    @staticmethod
    def _groups() -> list:
        """One kind per composition group, in writing order."""
        seen: dict[str, object] = {}
        for kind in sorted(kinds.KINDS.values(), key=lambda k: k.order):
            seen.setdefault(kind.group, kind)
        return list(seen.values())

    def _plan(self, loaded: Sequence, density: float | None, rank: int | None) -> dict:
        """Everything a set of modules writes, prepared (and checked) once: budgets applied, canonical
        order, then each kind's own plan (for every group, also the empty ones), and the heads."""
        from rerank.modules.format import truncate_module, truncate_rank

        ordered = sorted(loaded, key=lambda m: m.content_key)
        if density is not None:
            ordered = [truncate_module(m, density, self.shapes) for m in ordered]
        if rank is not None:
            ordered = [truncate_rank(m, rank) for m in ordered]
        self._warn_same_role(ordered)
        return {
            "modules": ordered,
            "kinds": {k.group: k.plan([m for m in ordered if m.kind.group == k.group], self) for k in self._groups()},
            "extras": self._merged_extras(ordered),
        }

    def switch(self, modules: Sequence, density: float | None = None, rank: int | None = None) -> ComposedModel:
        """Restore what the active modules changed, then apply ``modules``."""
        return self.apply(modules, density, rank)

    def revert(self) -> ComposedModel:
        """Back to the loaded base weights, bitwise (and no adapter active)."""
        import torch

        with torch.no_grad():
            self._restore(None)
        self.active = []
        return self

    def active_stack(self) -> tuple[str, ...]:
        """The names inside the model of the active modules that run as stacked layers (bottleneck adapters),
        in stacking order: what a module trained on top of them stacks below itself."""
        return tuple(n for k in self._groups() for n in k.stacked(self._state.get(k.group, {})))

    def _restore(self, next_plan: dict | None) -> None:
        """Each kind undoes its writes, in the reverse of writing order (the sparse kinds' saved values were
        read after the LoRA merges, the LoRA originals before them); ``next_plan``: the set written next."""
        for kind in reversed(self._groups()):
            state = self._state.get(kind.group)
            if state is not None:
                kind.restore(self, state, None if next_plan is None else next_plan["kinds"][kind.group])
        for name, t in self._extra_saved.items():
            self.heads[name].data.copy_(t)
        self._extra_saved = {}

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
            if has_lang and m.config.trained_alone:
                from rerank.errors import warn

                warn(
                    f"task module {m.name} was trained without a language module; stacking it with one is not "
                    "the setting it learned in"
                )
