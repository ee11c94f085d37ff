"""Composable modules: the on-disk format and their composition into a backbone's weights.

A module is a folder (``module_config.json`` + ``module.safetensors``); sparse modules are written
into the base weights by scatter (:mod:`rerank.modules.compose`) and restored exactly.
"""

from __future__ import annotations

__all__ = ["ComposedModel", "Module", "ModuleConfig", "load_module", "save_module"]


def __getattr__(name: str):
    if name in ("Module", "ModuleConfig", "load_module", "save_module"):
        from rerank.modules import format as fmt

        return getattr(fmt, name)
    if name == "ComposedModel":
        from rerank.modules.compose import ComposedModel

        return ComposedModel
    raise AttributeError(f"module 'rerank.modules' has no attribute {name!r}")
