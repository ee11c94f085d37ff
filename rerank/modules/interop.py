"""Modules to and from the libraries users already have: peft (LoRA, SHiRA) and adapters (bottleneck).

* :func:`import_peft` reads a peft adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``)
  of type LORA or SHIRA and returns a :class:`~rerank.modules.format.Module` for the given backbone;
  ``modules_to_save`` (a classification head) become extras.
* :func:`export_peft` writes a LoRA or sparse module as a folder ``PeftModel.from_pretrained`` loads:
  LoRA as LORA; a sparse module as SHIRA, whose layers hold exactly ``r·(in+out)`` entries each, so a
  module with fewer entries in a layer is padded with zero-valued entries at untouched positions
  (adding zero changes nothing). SHiRA only adapts linear layers, so a module that also touches
  embeddings, biases or LayerNorms cannot be exported and is refused.
* :func:`from_adapters` takes a bottleneck adapter the ``adapters`` library holds in a model.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from rerank.backbone.fingerprints import strip_base_prefix
from rerank.errors import RerankError
from rerank.modules import kinds
from rerank.modules.format import Module, ModuleConfig

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."
_BASE_PREFIX = {"bert": "bert.", "xlm-roberta": "roberta.", "roberta": "roberta."}


def import_peft(
    folder: str | os.PathLike,
    *,
    fingerprint: str,
    shapes: dict[str, tuple[int, ...]],
    base_model: str,
    role: str = "task",
    language: str = "",
) -> Module:
    """A peft LoRA or SHiRA adapter folder as a module for the backbone with ``fingerprint``/``shapes``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    src = Path(folder)
    if not (src / PEFT_CONFIG).is_file():
        raise RerankError(
            f"{src} is not a peft adapter folder (no {PEFT_CONFIG})", hint="give a save_pretrained folder"
        )
    try:
        pcfg = json.loads((src / PEFT_CONFIG).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise RerankError(f"{src / PEFT_CONFIG} is not valid JSON ({e})", hint="the adapter is damaged") from e
    if not (src / PEFT_WEIGHTS).is_file():
        raise RerankError(
            f"{src} has no {PEFT_WEIGHTS}",
            hint="only safetensors are read (never pickle): save it with safe_serialization=True",
        )
    try:
        tensors = load_file(str(src / PEFT_WEIGHTS))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise RerankError(f"{src / PEFT_WEIGHTS} is truncated or corrupt", hint="save the adapter again") from e
    peft_type = str(pcfg.get("peft_type", "")).upper()
    extras, rest = {}, {}
    for k, t in tensors.items():
        name = k[len(_PEFT_PREFIX) :] if k.startswith(_PEFT_PREFIX) else k
        rest[name] = t
    saved_modules = tuple(pcfg.get("modules_to_save") or ())
    for name in list(rest):
        if saved_modules and not re.search(r"\.(lora_[AB]|shira_weight|shira_indices)", name):
            extras[strip_base_prefix(name)] = rest.pop(name).float()
    recipe = {"imported_from": f"peft {peft_type}", "peft_version": pcfg.get("peft_version", "")}
    data = {"source": str(src.resolve())}
    kind = next((k for k in kinds.KINDS.values() if k.peft_type == peft_type and k.reads_peft), None)
    if kind is None:
        raise RerankError(
            f"{src}: peft type {peft_type or '?'} cannot be imported",
            hint="LORA and SHIRA adapters can; merge others first",
        )
    payload, fields = kind.from_peft(src, pcfg, rest, shapes)
    recipe |= fields.pop("recipe", {})
    cfg = ModuleConfig(
        kind=kind.name,
        role=role,
        language=language,
        base_model=base_model,
        base_fingerprint=fingerprint,
        recipe=recipe,
        data=data,
        **fields,
    )
    return Module(cfg, payload, extras)


def export_peft(
    module: Module,
    out: str | os.PathLike,
    *,
    model_type: str = "bert",
    head: bool | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``module`` as a peft folder. ``head``: the keys name a sequence-classification model
    (``bert.encoder…``, for a cross-encoder) rather than a bare encoder (``encoder…``); by default, when
    the module carries a classification head."""
    from safetensors.torch import save_file

    from rerank.files import atomic_dir

    cfg = module.config
    extras = module.extras
    if head is None:
        head = any(n.startswith(("classifier.", "score.")) for n in extras)
    base = _BASE_PREFIX.get(model_type, "bert.") if head else ""
    tensors, pcfg, targets = module.kind.to_peft(module.payload, cfg, f"{_PEFT_PREFIX}{base}", module.name)
    modules_to_save = sorted({n.rsplit(".", 1)[0] for n in extras})
    for name, t in extras.items():
        full = (base if name.startswith("pooler.") else "") + name
        tensors[f"{_PEFT_PREFIX}{full}"] = t.contiguous()
    pcfg.update(
        target_modules=[n[: -len(".weight")] for n in targets],
        modules_to_save=modules_to_save or None,
        base_model_name_or_path=None,
        inference_mode=True,
        task_type="SEQ_CLS" if head else None,
        revision=None,
    )
    card = (
        f"# {cfg.kind} {cfg.role} module ({cfg.language or 'any language'}) exported by rerank\n\n"
        f"Base model: {cfg.base_model} (fingerprint {cfg.base_fingerprint}).\n"
        "Load with `PeftModel.from_pretrained(base, this_folder)`.\n"
    )
    with atomic_dir(out, overwrite, marker=PEFT_CONFIG) as tmp:
        save_file(tensors, str(tmp / PEFT_WEIGHTS), metadata={"format": "pt"})
        (tmp / PEFT_CONFIG).write_text(json.dumps(pcfg, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(card, encoding="utf-8")
    return Path(out)


def from_adapters(
    model,
    adapter_name: str,
    *,
    role: str,
    language: str,
    fingerprint: str,
    base_model: str = "",
    recipe: dict | None = None,
    data: dict | None = None,
) -> Module:
    """A bottleneck adapter held by an ``adapters``-initialised model, as a module."""
    kind = kinds.get("adapter")
    payload, fields = kind.collect(model, adapter_name)
    cfg = ModuleConfig(
        kind=kind.name,
        role=role,
        language=language,
        base_model=base_model,
        base_fingerprint=fingerprint,
        recipe=recipe or {},
        data=data or {},
        **fields,
    )
    return Module(cfg, payload)


def backbone_shapes(folder: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Encoder parameter shapes of a model folder, read from its safetensors headers (no weights loaded)."""
    from rerank.backbone.files import safetensors_header, weight_files
    from rerank.backbone.fingerprints import encoder_name

    shapes = {}
    for f in weight_files(Path(folder)):
        header, _ = safetensors_header(f)
        for full, meta in header.items():
            name = encoder_name(full) if full != "__metadata__" else None
            if name is not None:
                shapes[name] = tuple(meta["shape"])
    return shapes
