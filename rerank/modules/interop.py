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
import math
import os
import re
from pathlib import Path

from rerank.errors import RerankError
from rerank.modules.format import SPARSE_KINDS, Module, ModuleConfig

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."
_BASE_PREFIX = {"bert": "bert.", "xlm-roberta": "roberta.", "roberta": "roberta."}


def _encoder_param(module_name: str) -> str:
    """peft's module name (``bert.encoder.layer.0.attention.self.query``) → our weight name."""
    from rerank.modules.compose import _strip

    return _strip(module_name) + ".weight"


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
    kind = str(pcfg.get("peft_type", "")).upper()
    extras, rest = {}, {}
    for k, t in tensors.items():
        name = k[len(_PEFT_PREFIX) :] if k.startswith(_PEFT_PREFIX) else k
        rest[name] = t
    saved_modules = tuple(pcfg.get("modules_to_save") or ())
    for name in list(rest):
        if saved_modules and not re.search(r"\.(lora_[AB]|shira_weight|shira_indices)", name):
            from rerank.modules.compose import _strip

            extras[_strip(name)] = rest.pop(name).float()
    recipe = {"imported_from": f"peft {kind}", "peft_version": pcfg.get("peft_version", "")}
    data = {"source": str(src.resolve())}
    common = dict(role=role, language=language, base_model=base_model, base_fingerprint=fingerprint)
    if kind == "LORA":
        return _import_lora(src, pcfg, rest, extras, shapes, common, recipe, data)
    if kind == "SHIRA":
        return _import_shira(src, rest, extras, shapes, common, recipe, data)
    raise RerankError(
        f"{src}: peft type {kind or '?'} cannot be imported", hint="LORA and SHIRA adapters can; merge others first"
    )


def _check_target(src: Path, name: str, shapes: dict) -> tuple[int, int]:
    shape = shapes.get(name)
    if shape is None or len(shape) != 2 or name.startswith("embeddings."):
        raise RerankError(
            f"{src}: adapts {name[: -len('.weight')]}, which is not a linear layer of this backbone's encoder",
            hint="only encoder linear layers can be imported (train with target_modules on the encoder)",
        )
    return shape


def _import_lora(src, pcfg, tensors, extras, shapes, common, recipe, data) -> Module:
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
    alpha_pattern, pairs, scalings = pcfg.get("alpha_pattern") or {}, {}, {}
    for key in sorted(k for k in tensors if k.endswith(".lora_A.weight")):
        module = key[: -len(".lora_A.weight")]
        b = tensors.get(f"{module}.lora_B.weight")
        if b is None:
            raise RerankError(f"{src}: {module} has lora_A but no lora_B", hint="the adapter is damaged")
        name = _encoder_param(module)
        out_f, in_f = _check_target(src, name, shapes)
        a = tensors[key].float()
        r = a.shape[0]
        if a.shape != (r, in_f) or b.shape != (out_f, r):
            raise RerankError(
                f"{src}: {module} has lora_A {list(a.shape)} and lora_B {list(b.shape)}, the layer is {out_f}×{in_f}",
                hint="an adapter for another model?",
            )
        a_t = next((float(v) for p, v in alpha_pattern.items() if re.fullmatch(rf"(.*\.)?{p}", module)), alpha)
        scalings[name] = a_t / (math.sqrt(r) if rslora else r)
        pairs[name] = (a, b.float())
    if not pairs:
        raise RerankError(f"{src}: no LoRA weights", hint="the adapter is empty")
    scaling = next(iter(scalings.values()))
    if any(s != scaling for s in scalings.values()):  # per-target scalings: folded into B, exactly the same delta
        pairs = {n: (a, b * scalings[n]) for n, (a, b) in pairs.items()}
        scaling, recipe = 1.0, {**recipe, "scaling": "per-target, folded into lora_B"}
    rank = max(a.shape[0] for a, _ in pairs.values())
    cfg = ModuleConfig(
        kind="lora", rank=rank, scaling=scaling, shapes={n: list(shapes[n]) for n in pairs}, recipe=recipe,
        data=data, **common,
    )  # fmt: skip
    return Module(cfg, {}, extras, None, {}, pairs, {})


def _import_shira(src, tensors, extras, shapes, common, recipe, data) -> Module:
    import torch

    odd = [k for k in tensors if not k.endswith((".shira_weight", ".shira_indices"))]
    if odd:
        raise RerankError(f"{src}: unsupported tensor {odd[0]}", hint="only SHiRA on linear layers can be imported")
    entries, touched = {}, 0
    for key in sorted(k for k in tensors if k.endswith(".shira_weight")):
        module = key[: -len(".shira_weight")]
        ind = tensors.get(f"{module}.shira_indices")
        if ind is None:
            raise RerankError(f"{src}: {module} has shira_weight but no shira_indices", hint="the adapter is damaged")
        name = _encoder_param(module)
        out_f, in_f = _check_target(src, name, shapes)
        val, ind = tensors[key].float(), ind.to(torch.int64)
        if ind.dim() != 2 or ind.shape[0] != 2 or ind.shape[1] != val.numel():
            raise RerankError(
                f"{src}: {module} has indices {list(ind.shape)} for {val.numel()} values", hint="damaged"
            )
        if ind.numel() and (int(ind.min()) < 0 or int(ind[0].max()) >= out_f or int(ind[1].max()) >= in_f):
            raise RerankError(f"{src}: {module} has indices outside {out_f}×{in_f}", hint="another model's adapter?")
        flat = ind[0] * in_f + ind[1]
        order = torch.argsort(val.abs(), descending=True, stable=True)  # importance = magnitude
        keep = val[order] != 0  # zero entries (padding) change nothing
        entries[name] = (flat[order][keep].to(torch.int32), val[order][keep])
        touched += out_f * in_f
    if not entries:
        raise RerankError(f"{src}: no SHiRA weights", hint="the adapter is empty")
    n = sum(int(i.numel()) for i, _ in entries.values())
    cfg = ModuleConfig(
        kind="shira", density=n / touched, shapes={k: list(shapes[k]) for k in entries}, recipe=recipe, data=data,
        **common,
    )  # fmt: skip
    return Module(cfg, entries, extras)


def export_peft(
    module: Module, out: str | os.PathLike, *, model_type: str = "bert", head: bool | None = None,
    overwrite: bool = False,
) -> Path:  # fmt: skip
    """Write ``module`` as a peft folder. ``head``: the keys name a sequence-classification model
    (``bert.encoder…``, for a cross-encoder) rather than a bare encoder (``encoder…``); by default, when
    the module carries a classification head."""
    import torch
    from safetensors.torch import save_file

    from rerank.collections._io import atomic_dir

    cfg = module.config
    extras = module.extras
    if head is None:
        head = any(n.startswith(("classifier.", "score.")) for n in extras)
    base = _BASE_PREFIX.get(model_type, "bert.") if head else ""
    tensors: dict[str, torch.Tensor] = {}
    if cfg.kind == "lora":
        targets = sorted(module.lora)
        r = max(a.shape[0] for a, _ in module.lora.values())
        rank_pattern, alpha_pattern = {}, {}
        for name in targets:
            a, b = module.lora[name]
            mod = name[: -len(".weight")]
            tensors[f"{_PEFT_PREFIX}{base}{mod}.lora_A.weight"] = a.float().contiguous()
            tensors[f"{_PEFT_PREFIX}{base}{mod}.lora_B.weight"] = b.float().contiguous()
            if a.shape[0] != r:
                rank_pattern[re.escape(mod)] = a.shape[0]
                alpha_pattern[re.escape(mod)] = cfg.scaling * a.shape[0]
        alpha = cfg.scaling * r
        pcfg = dict(
            peft_type="LORA", r=r, lora_alpha=int(alpha) if float(alpha).is_integer() else alpha,
            rank_pattern=rank_pattern, alpha_pattern=alpha_pattern, lora_dropout=0.0, bias="none",
            fan_in_fan_out=False, init_lora_weights=True, use_rslora=False, use_dora=False,
        )  # fmt: skip
    elif cfg.kind in SPARSE_KINDS:
        targets = sorted(module.entries)
        shapes = {n: tuple(cfg.shapes.get(n, ())) for n in targets}
        bad = [n for n in targets if len(shapes[n]) != 2 or n.startswith("embeddings.") or not n.endswith(".weight")]
        if bad:
            raise RerankError(
                f"{module.name} touches {bad[0]} (and {len(bad) - 1} more) that SHiRA cannot adapt: "
                "it adapts linear weights only",
                hint="export a module trained on linear layers only",
            )
        r = max(math.ceil(module.entries[n][0].numel() / sum(shapes[n])) for n in targets)
        for name in targets:
            out_f, in_f = shapes[name]
            if r * (out_f + in_f) > out_f * in_f:
                raise RerankError(
                    f"{module.name}: {name} needs r={r}, more SHiRA entries than the layer has",
                    hint="a module this dense cannot be exported to SHiRA",
                )
            idx, val = module.entries[name]
            idx, val = _pad(idx.to(torch.int64), val.float(), r * (out_f + in_f), out_f * in_f)
            mod = name[: -len(".weight")]
            tensors[f"{_PEFT_PREFIX}{base}{mod}.shira_indices"] = torch.stack([idx // in_f, idx % in_f]).to(torch.int)
            tensors[f"{_PEFT_PREFIX}{base}{mod}.shira_weight"] = val.contiguous()
        pcfg = dict(
            peft_type="SHIRA", r=r, mask_type="random", random_seed=None, fan_in_fan_out=False, init_weights=True
        )
    else:
        raise RerankError(
            f"{module.name} is a {cfg.kind} module; peft export takes LoRA and sparse modules",
            hint="adapter modules are the adapters library's own format",
        )
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
    with atomic_dir(out, overwrite) as tmp:
        save_file(tensors, str(tmp / PEFT_WEIGHTS), metadata={"format": "pt"})
        (tmp / PEFT_CONFIG).write_text(json.dumps(pcfg, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(card, encoding="utf-8")
    return Path(out)


def _pad(idx, val, n: int, numel: int):
    """``idx``/``val`` padded to ``n`` entries with zeros at the first untouched positions."""
    import torch

    if idx.numel() >= n:
        return idx, val
    free = torch.ones(numel, dtype=torch.bool)
    free[idx] = False
    extra = torch.nonzero(free).flatten()[: n - idx.numel()]
    return torch.cat([idx, extra]), torch.cat([val, torch.zeros(extra.numel(), dtype=val.dtype)])


def _not_idle_adapters_warning(record) -> bool:
    """False for the `adapters` library's warning that adapters exist but none is active: the engine keeps
    added adapter modules in the model and deactivates them whenever another stack (or none: the bi-encoder,
    the base cross-encoder) runs, so for us that state is intended, not a mistake."""
    return "none are activated" not in record.getMessage()


def init_adapters(model) -> None:
    """``adapters.init(model)`` unless done, with the idle-adapters warning filtered out (see above)."""
    import logging

    import adapters

    log = logging.getLogger("adapters.model_mixin")
    if _not_idle_adapters_warning not in log.filters:
        log.addFilter(_not_idle_adapters_warning)
    if not hasattr(model, "adapters_config"):
        adapters.init(model)


def from_adapters(
    model, adapter_name: str, *, role: str, language: str, fingerprint: str, base_model: str = "",
    recipe: dict | None = None, data: dict | None = None,
) -> Module:  # fmt: skip
    """A bottleneck adapter held by an ``adapters``-initialised model, as a module."""
    from rerank.modules.compose import _strip

    if adapter_name not in getattr(model, "adapters_config", {}):
        raise RerankError(f"the model has no adapter {adapter_name!r}", hint="add_adapter() it first")
    weights = {
        _strip(n).replace(f".{adapter_name}.", ".{}."): p.detach().float().clone()
        for n, p in model.named_parameters()
        if f".{adapter_name}." in n
    }
    adapter_config = model.adapters_config.get(adapter_name).to_dict()
    cfg = ModuleConfig(
        kind="adapter", role=role, language=language, base_model=base_model, base_fingerprint=fingerprint,
        adapter_config=adapter_config, recipe=recipe or {}, data=data or {},
    )  # fmt: skip
    return Module(cfg, {}, {}, None, {}, {}, weights)


def backbone_shapes(folder: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Encoder parameter shapes of a model folder, read from its safetensors headers (no weights loaded)."""
    from rerank.backbone._files import safetensors_header, weight_files
    from rerank.backbone.fingerprints import encoder_name

    shapes = {}
    for f in weight_files(Path(folder)):
        header, _ = safetensors_header(f)
        for full, meta in header.items():
            name = encoder_name(full) if full != "__metadata__" else None
            if name is not None:
                shapes[name] = tuple(meta["shape"])
    return shapes
