"""Resolving the model a user names: the embedded default backbone or a local Hugging Face folder.

Nothing is ever downloaded: a model is a local folder with ``config.json``, safetensors weights and a
tokenizer. Every problem with such a folder is one :class:`~rerank.errors.RerankError` with one line
that says what is wrong and what to do. This module reads JSON files and safetensors headers only;
it does not import torch or transformers.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerank.backbone.files import META_NAME, read_json, safetensors_header, weight_files
from rerank.errors import RerankError

SUPPORTED_TYPES = ("bert", "xlm-roberta", "roberta")
ROBERTA_TYPES = ("xlm-roberta", "roberta")  # position ids start after the padding index: 2 positions fewer
TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "vocab.txt")
PICKLE_PATTERNS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
E5_PREFIXES = {"query": "query: ", "passage": "passage: "}
NO_PREFIXES = {"query": "", "passage": ""}
DEFAULT_MAX_LENGTH = 512

# "org/name": what a hub id looks like (a local relative path of that shape would have existed)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_E5 = re.compile(r"(^|[^a-z0-9])e5([^a-z0-9]|$)", re.IGNORECASE)
_FOLDER_HINT = (
    "pass a local folder with config.json, model.safetensors and a tokenizer, "
    "or leave the model unset for the built-in multilingual-e5-small"
)


@dataclass(frozen=True)
class BackboneInfo:
    """What the rest of rerank needs to know about an encoder folder."""

    path: Path  # absolute folder
    name: str  # e.g. "multilingual-e5-small", else the folder name
    fingerprint: str  # see rerank.backbone.fingerprints
    model_type: str  # "bert", "xlm-roberta" or "roberta"
    prefixes: dict[str, str] = field(hash=False)  # {"query": …, "passage": …} prepended before tokenizing
    pooling: str  # "mean" or "cls" (for bi-encoder use)
    max_length: int  # tokens including the special ones
    has_head: bool  # a sequence-classification head with one label (a ready cross-encoder)


def _check_folder(path: str | os.PathLike) -> Path:
    text = os.fspath(path)
    p = Path(text).expanduser()
    if not p.exists():
        if _HUB_ID.match(text):
            raise RerankError(
                f"model folder {text!r} does not exist; it looks like a Hugging Face hub id, "
                "but rerank downloads nothing from a hub",
                hint=f"download it yourself and {_FOLDER_HINT}",
            )
        raise RerankError(f"model folder {text!r} does not exist (rerank downloads nothing)", hint=_FOLDER_HINT)
    if not p.is_dir():
        raise RerankError(f"{p} is a file, not a model folder", hint=_FOLDER_HINT)
    return p.resolve()


def _read_config(folder: Path) -> dict[str, Any]:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise RerankError(
            f"{folder} has no config.json", hint="a Hugging Face model folder (written by save_pretrained) is needed"
        )
    config = read_json(config_path)
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise RerankError(f"cannot read {config_path}: it has no model_type", hint="expected a transformers config")
    if config["model_type"] not in SUPPORTED_TYPES:
        raise RerankError(
            f"{config_path}: model type {config['model_type']!r} is not supported",
            hint=f"use a BERT or XLM-R encoder (model_type {', '.join(SUPPORTED_TYPES)})",
        )
    return config


def _check_weights(folder: Path) -> list[Path]:
    files = weight_files(folder)
    if files:
        return files
    pickles = sorted({q.name for pat in PICKLE_PATTERNS for q in folder.glob(pat)})
    if pickles:
        raise RerankError(
            f"{folder} has only {pickles[0]}: pickle weights are not loaded; convert to safetensors",
            hint="in a Python session you trust: AutoModel.from_pretrained(folder).save_pretrained(folder, "
            "safe_serialization=True)",
        )
    raise RerankError(
        f"{folder} has no model weights",
        hint="needs model.safetensors, or sharded model-*.safetensors with model.safetensors.index.json",
    )


def _check_tokenizer(folder: Path) -> None:
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise RerankError(
            f"{folder} has no tokenizer",
            hint="needs tokenizer.json, or sentencepiece.bpe.model (XLM-R) / vocab.txt (BERT) + tokenizer_config.json",
        )


def _json_or_empty(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = read_json(path)
    return data if isinstance(data, dict) else {}


def _prefixes(folder: Path, meta: dict, config: dict) -> dict[str, str]:
    if isinstance(meta.get("prefixes"), dict):
        return {k: str(meta["prefixes"].get(k, "")) for k in ("query", "passage")}
    prompts = _json_or_empty(folder / "config_sentence_transformers.json").get("prompts")
    if isinstance(prompts, dict) and "query" in prompts:
        passage = prompts.get("passage", prompts.get("document", ""))
        return {"query": str(prompts["query"]), "passage": str(passage)}
    names = (folder.name, str(config.get("_name_or_path", "")))
    return dict(E5_PREFIXES if any(_E5.search(n) for n in names) else NO_PREFIXES)


def _pooling(folder: Path, meta: dict) -> str:
    if meta.get("pooling") in ("mean", "cls"):
        return meta["pooling"]
    pooling_dir = "1_Pooling"
    modules = folder / "modules.json"
    if modules.is_file():
        entries = read_json(modules)
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and str(entry.get("type", "")).endswith("Pooling"):
                pooling_dir = str(entry.get("path", pooling_dir))
    pooling = _json_or_empty(folder / pooling_dir / "config.json")
    return "cls" if pooling.get("pooling_mode_cls_token") else "mean"


def _max_length(folder: Path, meta: dict, config: dict) -> int:
    limits = []
    positions = config.get("max_position_embeddings")
    if isinstance(positions, int) and positions > 0:
        limits.append(positions - (2 if config["model_type"] in ROBERTA_TYPES else 0))
    tok_max = _json_or_empty(folder / "tokenizer_config.json").get("model_max_length")
    if isinstance(tok_max, int | float) and 0 < tok_max < 1_000_000:  # "unset" is stored as 1e30
        limits.append(int(tok_max))
    if isinstance(meta.get("max_length"), int):
        limits.append(meta["max_length"])
    return min(limits) if limits else DEFAULT_MAX_LENGTH


def _has_head(config: dict, files: list[Path]) -> bool:
    architectures = config.get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in architectures):
        return False
    id2label = config.get("id2label")
    num_labels = config.get("num_labels", len(id2label) if isinstance(id2label, dict) and id2label else 2)
    if num_labels != 1:
        return False
    return any(name.startswith("classifier.") for f in files for name in safetensors_header(f)[0])


def resolve_model(path: str | os.PathLike | None = None) -> BackboneInfo:
    """Validate a model folder and describe it; ``None`` means the embedded multilingual-e5-small.

    Raises :class:`RerankError` for a path that does not exist (nothing is downloaded from a hub), a
    file instead of a folder, a missing or unreadable ``config.json``, missing safetensors weights
    (pickle weights are refused) and a missing tokenizer.
    """
    from rerank.backbone.fingerprints import fingerprint

    if path is None:
        from rerank.backbone.convert import default_backbone

        folder = default_backbone().resolve()
    else:
        folder = _check_folder(path)
    config = _read_config(folder)
    files = _check_weights(folder)
    _check_tokenizer(folder)
    meta = _json_or_empty(folder / META_NAME)
    return BackboneInfo(
        path=folder,
        name=str(meta.get("name") or folder.name),
        fingerprint=fingerprint(folder),
        model_type=config["model_type"],
        prefixes=_prefixes(folder, meta, config),
        pooling=_pooling(folder, meta),
        max_length=_max_length(folder, meta, config),
        has_head=_has_head(config, files),
    )
