"""Composition of sparse modules by scatter into the base weights, with exact restore.

``ComposedModel`` re-lays the backbone's floating-point parameters out as views into ONE flat buffer,
so every entry of every module has a single global index (parameter offset + flat index). Applying a
set of modules is then one gather (save the originals at the union of touched indices) and one
``index_add_`` of all deltas of all modules; reverting is one ``index_put_`` of the saved originals —
weights return bitwise to the loaded base after any number of switches, because nothing is ever
subtracted. Where modules overlap, deltas are summed in a canonical module order (by content), so the
result does not depend on the order the modules were given in. Afterwards the model is an ordinary
model ("fused mode"): inference runs at the bare model's speed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from rerank.errors import RerankError


class ComposedModel:
    """A backbone whose weights modules are written into.

    >>> model = ComposedModel(backbone)                  # a torch model; owns its weights from now on
    >>> model.apply(["modules/ky-lang", "modules/en-task"])
    >>> model.switch(["modules/ug-lang", "modules/en-task"])
    >>> model.revert()                                   # bitwise the loaded base again
    """

    def __init__(self, model, fingerprint: str | None = None):
        import torch

        from rerank.backbone.fingerprints import encoder_name

        self.model = model
        self.names: dict[str, torch.nn.Parameter] = {}
        for full, p in model.named_parameters():
            name = encoder_name(full)
            if name is not None and p.dtype.is_floating_point:
                self.names[name] = p
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
        self.active: list = []
        self._loaded: dict[tuple, object] = {}  # (path, mtime) -> validated module: a switch reads no file

    # -- loading ----------------------------------------------------------------------------------
    def load(self, module) -> object:
        """A module folder path or an in-memory :class:`SparseModule`, validated against this backbone."""
        from rerank.modules.format import SPARSE_KINDS, SparseModule, load_module

        if isinstance(module, str | os.PathLike):
            from pathlib import Path

            from rerank.modules.format import CONFIG_FILE, WEIGHTS_FILE

            p = Path(module).resolve()
            stamp = tuple((p / f).stat().st_mtime_ns if (p / f).exists() else 0 for f in (CONFIG_FILE, WEIGHTS_FILE))
            key = (str(p), stamp)
            if key not in self._loaded:
                self._loaded[key] = load_module(module, fingerprint=self.fingerprint, shapes=self.shapes)
            module = self._loaded[key]
        elif not isinstance(module, SparseModule):
            raise RerankError(f"not a module: {module!r}", hint="give a module folder or a SparseModule")
        elif module.config.base_fingerprint != self.fingerprint:
            raise RerankError(
                f"module {module.name} was made for backbone {module.config.base_fingerprint[:19]}, "
                f"not for this one ({self.fingerprint[:19]})",
                hint="use a module for this backbone",
            )
        if module.config.kind not in SPARSE_KINDS:
            raise RerankError(
                f"module {module.name} is a {module.config.kind} module; scatter composition takes "
                "sparse modules (sft, shira)",
                hint="LoRA and adapters are composed differently",
            )
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
        return module

    def _global(self, modules: Sequence) -> tuple:
        """All entries of all modules as (global indices int64, values), in canonical module order."""
        import torch

        idx_parts, val_parts = [], []
        for m in sorted(modules, key=lambda m: m.content_key):
            for name, (idx, val) in m.entries.items():
                idx_parts.append(idx.to(dtype=torch.int64) + self.offsets[name])
                val_parts.append(val.to(dtype=self.flat.dtype))
        if not idx_parts:
            return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=self.flat.dtype)
        return torch.cat(idx_parts), torch.cat(val_parts)

    # -- composing --------------------------------------------------------------------------------
    def apply(self, modules: Sequence, density: float | None = None) -> ComposedModel:
        """Write ``modules`` into the weights (replacing whatever was applied). All or nothing: every
        module is loaded and checked before any weight changes. ``density`` keeps only that fraction
        of each touched parameter, most important entries first."""
        import torch

        from rerank.modules.format import truncate_module

        loaded = [self.load(m) for m in modules]
        if density is not None:
            loaded = [truncate_module(m, density, self.shapes) for m in loaded]
        self._warn_same_role(loaded)
        from rerank.modules.kernels import scatter_apply

        idx, val = self._global(loaded)
        # overlapping entries summed on the CPU, sequentially in canonical module order: deterministic
        union, inverse = torch.unique(idx, return_inverse=True)  # sorted
        delta = torch.zeros(union.numel(), dtype=val.dtype).index_add_(0, inverse, val)
        union, delta = union.to(self.flat.device), delta.to(self.flat.device)
        self.revert()
        with torch.no_grad():
            self._saved_val = scatter_apply(self.flat, union, delta)  # one launch / one index_put_
            self._saved_idx = union
        self.active = loaded
        return self

    def switch(self, modules: Sequence, density: float | None = None) -> ComposedModel:
        """Restore what the active modules touched, then apply ``modules``."""
        return self.apply(modules, density)

    def revert(self) -> ComposedModel:
        """Back to the loaded base weights, bitwise."""
        import torch

        if self._saved_idx is not None:
            with torch.no_grad():
                self.flat.index_put_((self._saved_idx,), self._saved_val)
            self._saved_idx = self._saved_val = None
        self.active = []
        return self

    @staticmethod
    def _warn_same_role(modules) -> None:
        seen = {}
        for m in modules:
            key = (m.config.role, m.config.language)
            if key in seen:
                from rerank.errors import warn

                warn(
                    f"two {m.config.role} modules for language {m.config.language or '-'!r} are stacked "
                    f"({seen[key]} and {m.name}); their deltas are summed"
                )
            seen[key] = m.name
