"""Module switching: `ComposedModel.switch` against peft's merge/unmerge, on the real backbone.

Backbone: the embedded multilingual-e5-small (BertModel, 12 layers, hidden 384, ff 1536). Modules touch
every encoder linear weight (query, key, value, attention.output.dense, intermediate.dense,
output.dense of all 12 layers: 72 targets, 21.2M entries) with r·(in+out) entries each (--rank r = 5:
1.95% of those entries). They are made the fair way: peft SHiRA adapters `ky`, `ug` (language) and
`task` (ShiraConfig(r, init_weights=False, random_seed=…), values scaled by 0.01), saved with
save_pretrained, imported with `import_peft` and saved with `save_module` — both sides hold exactly
the same entries. The LoRA baseline: LoraConfig(r, lora_alpha=r, init_lora_weights=False) adapters
`ky`, `ug`, `task` on the same targets: the same trainable count, r·(in+out) per target.

Figures (medians of --repeats alternating runs, bench.bm25.paired or its rotation for more sides; min/max beside them):
  switch     restore + apply a language and the task module, alternating {ky, task} ↔ {ug, task}:
             ours `cm.switch([ky_dir, task_dir])` with module folders (as the search pipeline calls
             it; loaded modules are cached, so a warm switch reads no file) against one PeftModel
             holding the three SHiRA adapters (`unmerge_adapter()` + `merge_adapter(["ug", "task"])`)
             and the same with the three LoRA adapters (peft under torch.no_grad, grads off). Ratios
             peft/ours; goals ≥10× vs SHiRA, ≥3× vs LoRA. Both peft merges are checked once: SHiRA's
             merged weights against ours (the same entries), LoRA's against base + s·(B·A + B'·A').
             Also: the first (cold) switch of each set, peft's unmerge drift after all the switches,
             whether our revert is bitwise, and torch.profiler's split of one warm switch.
  bound      memory-bandwidth bound of our switch: copy bandwidth = median of dst.copy_(src) of a
             --copy-mb float32 tensor (bytes = read + write). Bytes a warm switch touches, U = entries in
             the union of the two modules' indices (global indices, float32 values):
               restore U_prev: indices read 8 + saved values read 4 + weight entries written 4 = 16·U_prev
               apply U_new:    the set's int32 indices widened to int64 (read 4 + write 8), indices
                               read 8 + prepared values (base + delta) read 4 + weight entries
                               written 4 = 28·U_new
             averaged over the two directions; bound = bytes / bandwidth; goal ours/bound ≤ 3. The
             cache-line-aware variant counts every 64-byte line of the weights holding a touched entry
             as read once and written once in each phase (128 B per line per phase: a partial write
             reads the line first), the sequential arrays at their byte counts.
  inference  forward of --batch × --seq random token ids under torch.inference_mode, four sides rotating
             which runs first each repeat (set-up outside the timing): the bare backbone = the composed
             model reverted (`cm.revert()`: the same instance and buffer), the composed model after
             `cm.apply([ky, task])` (fused), a peft LoRA model with `ky` and `task` both active, unmerged
             (`base_model.set_adapter(["ky", "task"])`), and a second, plain from_pretrained model
             (`bare_as_loaded`: its weights are pages of the mmapped safetensors file). Ratios
             composed/bare (goal ≤ 1.02), composed/bare_as_loaded and peft_unmerged/composed.
  memory     child processes (this script, --memory-child) report VmRSS and Pss (/proc/self/status,
             smaps_rollup) after setup, and again after reading every weight once ("touched"): (a) the
             bare model; (b) a ComposedModel with --memory-modules SHiRA-shaped language modules (random,
             seeded, the same r) loaded with `cm.load(dir)` and one applied; (c) as many merged copies
             (one model per module, merged in place). Σ module bytes = their in-memory tensors; goal
             (b) ≤ (a) + 1.2·Σ, checked on each figure; and (c)/(b).
  size       bytes on disk of the `ky` module at 32, 16, 8, 4, 2, 1 bits (`quantize_module` +
             `save_module`, `module_size`: safetensors + JSON) against peft's adapter_model.safetensors
             of the SHiRA and LoRA adapters with the same trainable count.
No GPU is used (the Triton kernel is not benchmarked); "gpu" says what this session had.

    .venv/bin/python bench/switch.py [--repeats 7] [--rank 5] [--only switch inference memory size]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.bm25 import paired  # noqa: E402  (alternating paired timing, shared by the benchmarks)

SUFFIXES = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)
SEEDS = {"ky": 1, "ug": 2, "task": 3}
VALUE_SCALE = 0.01  # SHiRA's init_weights=False draws N(0, 1); scaled to a fine-tuning-sized delta
PARTS = ("switch", "inference", "memory", "size")


def stats(ts: list[float], scale: float = 1.0, digits: int = 4) -> dict:
    return {k: round(f(ts) * scale, digits) for k, f in (("median", statistics.median), ("min", min), ("max", max))}


def targets(layers: int = 12) -> list[str]:
    return [f"encoder.layer.{i}.{s}" for i in range(layers) for s in SUFFIXES]


def load_backbone(folder: Path):
    import torch
    from transformers import AutoModel
    from transformers.utils import logging

    logging.set_verbosity_error()  # the bare encoder has no pooler weights: a (seeded) random one is fine
    torch.manual_seed(0)
    model = AutoModel.from_pretrained(str(folder)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# -- making the modules -----------------------------------------------------------------------------
def make_peft(folder: Path, kind: str, rank: int, work: Path):
    """A PeftModel holding adapters ky, ug, task (kind shira or lora), saved under work/peft-KIND/NAME."""
    import torch
    from peft import LoraConfig, ShiraConfig, get_peft_model

    def config(name):
        if kind == "shira":
            return ShiraConfig(r=rank, target_modules=targets(), init_weights=False, random_seed=SEEDS[name])
        return LoraConfig(r=rank, lora_alpha=rank, target_modules=targets(), init_lora_weights=False)

    torch.manual_seed(10)  # LoRA's random init
    model = get_peft_model(load_backbone(folder), config("ky"), adapter_name="ky")
    for name in ("ug", "task"):
        model.add_adapter(name, config(name))
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.requires_grad_(False)
            if kind == "shira" and ".shira_weight." in n:
                p.mul_(VALUE_SCALE)
    model.eval()
    model.save_pretrained(str(work / f"peft-{kind}"), selected_adapters=list(SEEDS))
    return model


def import_modules(work: Path, fp: str, shapes: dict, name: str) -> dict[str, Path]:
    from rerank.modules.format import save_module
    from rerank.modules.interop import import_peft

    paths = {}
    for a in SEEDS:
        role, lang = ("task", "") if a == "task" else ("language", a)
        m = import_peft(
            work / "peft-shira" / a, fingerprint=fp, shapes=shapes, base_model=name, role=role, language=lang
        )
        paths[a] = save_module(m, work / f"module-{a}")
    return paths


def random_module(shapes: dict, rank: int, seed: int, fp: str, name: str, lang: str):
    """A SHiRA-shaped module: r·(in+out) random entries in each of the 72 targets (seeded)."""
    import torch

    from rerank.modules.format import Module, ModuleConfig
    from rerank.modules.kinds.sparse import SparseEntries

    g = torch.Generator().manual_seed(seed)
    entries, touched = {}, 0
    for t in targets():
        w = f"{t}.weight"
        out_f, in_f = shapes[w]
        k = rank * (out_f + in_f)
        idx = torch.randperm(out_f * in_f, generator=g)[:k].to(torch.int32)
        entries[w] = (idx, torch.randn(k, generator=g) * VALUE_SCALE)
        touched += out_f * in_f
    n = sum(i.numel() for i, _ in entries.values())
    cfg = ModuleConfig(
        kind="shira",
        role="language",
        language=lang,
        base_model=name,
        base_fingerprint=fp,
        density=n / touched,
        shapes={w: list(shapes[w]) for w in entries},
    )
    return Module(cfg, SparseEntries(entries))


# -- switch -----------------------------------------------------------------------------------------
def union_of(cm, modules):
    import torch

    parts = [idx.to(torch.int64) + cm.offsets[n] for m in modules for n, (idx, _) in m.payload.entries.items()]
    return torch.unique(torch.cat(parts))


def copy_bandwidth(mb: int, reps: int = 7) -> float:
    """Bytes/s of dst.copy_(src) (read + write) over a float32 tensor of ``mb`` MB."""
    import torch

    src = torch.rand(mb * (1 << 20) // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        dst.copy_(src)
        ts.append(time.perf_counter() - t)
    return 2 * src.nbytes / statistics.median(ts)


def profile_switch(cm, modules: list) -> dict:
    """Self CPU ms per torch op in one warm switch (torch.profiler), and the rest (Python, bookkeeping)."""
    import torch.profiler as tp

    with tp.profile(activities=[tp.ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        cm.switch(modules)
        wall = time.perf_counter() - t
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    top = {f"{e.key} x{e.count}": round(e.self_cpu_time_total / 1000, 2) for e in ops[:8] if e.self_cpu_time_total}
    in_ops = sum(e.self_cpu_time_total for e in ops) / 1000
    return {
        "wall_ms_under_profiler": round(wall * 1000, 2),
        "self_cpu_ms_by_op": top,
        "outside_torch_ops_ms": round(wall * 1000 - in_ops, 2),
    }


def bench_switch(ctx: dict, repeats: int, copy_mb: int) -> dict:
    import torch

    from rerank.modules.format import load_module

    cm, paths = ctx["cm"], ctx["paths"]
    shira, lora = ctx["shira"], ctx["lora"]
    names = [f"{t}.weight" for t in targets()]
    base = {n: cm.names[n].detach().clone() for n in names}
    sets = [[str(paths["ky"]), str(paths["task"])], [str(paths["ug"]), str(paths["task"])]]
    peft_sets = [["ky", "task"], ["ug", "task"]]

    def peft_params(model):
        p = dict(model.named_parameters())
        return {n: p[f"base_model.model.{n[: -len('.weight')]}.base_layer.weight"] for n in names}

    shira_w, lora_w = peft_params(shira), peft_params(lora)

    # -- first (cold) switches, then the checks that both peft merges did what they should
    first = {}
    for i, s in enumerate(sets):
        t = time.perf_counter()
        cm.switch(s)
        first[f"ours_{'+'.join(peft_sets[i])}_s"] = round(time.perf_counter() - t, 4)
    cm.switch(sets[0])
    with torch.no_grad():
        for label, model in (("shira", shira), ("lora", lora)):
            t = time.perf_counter()
            model.base_model.merge_adapter(peft_sets[0])
            first[f"peft_{label}_first_merge_s"] = round(time.perf_counter() - t, 4)
    checks = {
        "peft_shira_merged_adapters": sorted(shira.base_model.model.encoder.layer[0].output.dense.merged_adapters),
        "peft_lora_merged_adapters": sorted(lora.base_model.model.encoder.layer[0].output.dense.merged_adapters),
        "ours_vs_peft_shira_max_abs_diff": max(float((cm.names[n] - shira_w[n]).abs().max()) for n in names),
        "entries_changed_by_peft_shira": sum(int((shira_w[n] != base[n]).sum()) for n in names),
        "entries_changed_by_ours": sum(int((cm.names[n] != base[n]).sum()) for n in names),
    }
    lora_err = 0.0
    for n in names:
        layer = lora.base_model.model.get_submodule(n[: -len(".weight")])
        want = base[n].clone()
        for a in peft_sets[0]:
            want += layer.scaling[a] * (layer.lora_B[a].weight @ layer.lora_A[a].weight)
        lora_err = max(lora_err, float((lora_w[n] - want).abs().max()))
    checks["peft_lora_merged_vs_base_plus_BA_max_abs_diff"] = lora_err

    # -- timed: each call switches to the other set
    state = {"ours": 0, "shira": 0, "lora": 0}

    def ours():
        state["ours"] ^= 1
        cm.switch(sets[state["ours"]])

    def peft_switch(model, key):
        def run():
            state[key] ^= 1
            with torch.no_grad():
                model.base_model.unmerge_adapter()
                model.base_model.merge_adapter(peft_sets[state[key]])

        return run

    bw = [copy_bandwidth(copy_mb)]  # before and after the timed switches
    ours_s, shira_s = paired(repeats, ours, peft_switch(shira, "shira"))
    ours_l, lora_s = paired(repeats, ours, peft_switch(lora, "lora"))
    breakdown = profile_switch(cm, sets[state["ours"] ^ 1])
    state["ours"] ^= 1

    # -- drift: peft subtracts what it added; ours copies the originals back
    with torch.no_grad():
        shira.base_model.unmerge_adapter()
        lora.base_model.unmerge_adapter()
    cm.revert()
    checks["peft_shira_unmerge_drift_max_abs"] = max(float((shira_w[n] - base[n]).abs().max()) for n in names)
    checks["peft_lora_unmerge_drift_max_abs"] = max(float((lora_w[n] - base[n]).abs().max()) for n in names)
    checks["ours_revert_bitwise"] = all(torch.equal(cm.names[n], base[n]) for n in names)
    checks["switches_each_side"] = 2 * repeats + 3

    # -- the memory-bandwidth bound
    mods = {a: load_module(paths[a], fingerprint=cm.fingerprint, shapes=cm.shapes) for a in SEEDS}
    u = [union_of(cm, [mods["ky"], mods["task"]]), union_of(cm, [mods["ug"], mods["task"]])]
    n_u = [int(x.numel()) for x in u]
    lines = [int(torch.unique((cm.flat.data_ptr() + 4 * x) // 64).numel()) for x in u]
    plain = (16 * n_u[0] + 28 * n_u[1] + 16 * n_u[1] + 28 * n_u[0]) / 2
    line_aware = sum(12 * n + 128 * ln + 24 * n + 128 * ln for n, ln in zip(n_u, lines, strict=True)) / 2
    ours_all = ours_s + ours_l
    bw.append(copy_bandwidth(copy_mb))
    bandwidth = statistics.median(bw)
    m_ours = statistics.median(ours_all)
    m_shira, m_lora = statistics.median(shira_s), statistics.median(lora_s)
    ratio_shira = m_shira / statistics.median(ours_s)
    ratio_lora = m_lora / statistics.median(ours_l)
    return {
        "ours_ms": stats(ours_all, 1000, 2),
        "peft_shira_ms": stats(shira_s, 1000, 2),
        "peft_lora_ms": stats(lora_s, 1000, 2),
        "speedup_vs_peft_shira": round(ratio_shira, 2),
        "speedup_vs_peft_lora": round(ratio_lora, 2),
        "goal_met_vs_shira_10x": ratio_shira >= 10,
        "goal_met_vs_lora_3x": ratio_lora >= 3,
        "note": "speedups are peft median / ours median within each paired run (ours timed in both runs)",
        "first_switch": first,
        "checks": checks,
        "union_entries": {"ky+task": n_u[0], "ug+task": n_u[1]},
        "bound": {
            "copy_bandwidth_gb_per_s": round(bandwidth / 1e9, 2),
            "copy_bandwidth_each_gb_per_s": [round(b / 1e9, 2) for b in bw],
            "bytes_per_switch": int(plain),
            "bound_ms": round(plain / bandwidth * 1000, 3),
            "ours_over_bound": round(m_ours / (plain / bandwidth), 2),
            "goal_met_3x": m_ours / (plain / bandwidth) <= 3,
            "cache_line_aware": {
                "weight_lines_touched": {"ky+task": lines[0], "ug+task": lines[1]},
                "bytes_per_switch": int(line_aware),
                "bound_ms": round(line_aware / bandwidth * 1000, 3),
                "ours_over_bound": round(m_ours / (line_aware / bandwidth), 2),
            },
        },
        "ours_one_switch_profile": breakdown,
    }


# -- inference --------------------------------------------------------------------------------------
def rotation(repeats: int, sides: dict) -> dict[str, list[float]]:
    """``paired`` for several sides: each side is (prepare, run); only ``run`` is timed, and which side goes
    first rotates every repeat, so drift falls on all sides alike."""
    times: dict[str, list[float]] = {k: [] for k in sides}
    order = list(sides)
    for r in range(repeats):
        for k in order[r % len(order) :] + order[: r % len(order)]:
            prepare, run = sides[k]
            prepare()
            t = time.perf_counter()
            run()
            times[k].append(time.perf_counter() - t)
    return times


def bench_inference(ctx: dict, repeats: int, batch: int, seq: int) -> dict:
    import torch

    cm, paths, lora = ctx["cm"], ctx["paths"], ctx["lora"]
    loaded = load_backbone(ctx["folder"])
    modules = [str(paths["ky"]), str(paths["task"])]
    with torch.no_grad():
        if any(getattr(m, "merged", False) for m in lora.modules() if hasattr(m, "merged_adapters")):
            lora.base_model.unmerge_adapter()
    lora.base_model.set_adapter(["ky", "task"], inference_mode=True)
    active = list(lora.base_model.model.encoder.layer[0].attention.self.query.active_adapters)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, loaded.config.vocab_size, (batch, seq), generator=g)
    mask = torch.ones_like(ids)

    def forward(model):
        with torch.inference_mode():
            return model(input_ids=ids, attention_mask=mask).last_hidden_state

    def nothing():
        pass

    sides = {
        "bare": (cm.revert, lambda: forward(cm.model)),  # the same model, modules reverted
        "composed": (lambda: cm.apply(modules), lambda: forward(cm.model)),
        "peft_lora_unmerged": (nothing, lambda: forward(lora)),
        "bare_as_loaded": (nothing, lambda: forward(loaded)),  # a plain from_pretrained model (mmap-backed)
    }
    outs = {}
    for k, (prepare, _) in sides.items():  # warm-up
        prepare()
        outs[k] = forward(cm.model if k in ("bare", "composed") else lora if k.startswith("peft") else loaded)
    times = rotation(repeats, sides)
    cm.apply(modules)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["composed"] / med["bare"]
    return {
        "batch": batch,
        "seq": seq,
        **{f"{k}_s": stats(v, 1, 3) for k, v in times.items()},
        "composed_over_bare": round(ratio, 4),
        "goal_met_composed_le_1.02": ratio <= 1.02,
        "composed_over_bare_as_loaded": round(med["composed"] / med["bare_as_loaded"], 4),
        "peft_unmerged_over_composed": round(med["peft_lora_unmerged"] / med["composed"], 4),
        "peft_active_adapters": active,
        "composed_vs_bare_output_max_abs_diff": float((outs["composed"] - outs["bare"]).abs().max()),
        "bare_vs_bare_as_loaded_output_equal": bool(torch.equal(outs["bare"], outs["bare_as_loaded"])),
        "note": "bare = the composed model reverted (same instance, same flat buffer); composed = ky + task "
        "SHiRA modules fused; bare_as_loaded = a second, plain from_pretrained model (weights mmapped "
        "from safetensors); revert/apply are outside the timed forward; the four sides rotate which "
        "runs first each repeat",
    }


# -- memory -----------------------------------------------------------------------------------------
def memory_figures() -> dict:
    """VmRSS, RssAnon, RssFile, VmHWM (/proc/self/status) and Pss (smaps_rollup: shared pages divided
    among their mappings, the physical footprint) in MB."""
    want = ("VmRSS", "RssAnon", "RssFile", "VmHWM")
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in want:
            out[key] = round(int(line.split()[1]) / 1024, 1)
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            out["Pss"] = round(int(line.split()[1]) / 1024, 1)
    return out


def memory_child(which: str, work: Path) -> None:
    """Run in a subprocess: set up (a) bare, (b) composed + modules, (c) merged copies; print memory JSON
    after setup and again after every weight has been read once."""
    import torch

    from rerank.backbone import default_backbone, fingerprint
    from rerank.modules.compose import ComposedModel
    from rerank.modules.format import load_module

    folder = default_backbone()
    dirs = sorted(work.glob("lang-*"))
    out: dict = {"which": which}
    if which == "bare":
        models = [load_backbone(folder)]
    elif which == "composed":
        cm = ComposedModel(load_backbone(folder), fingerprint=fingerprint(folder))
        loaded = [cm.load(d) for d in dirs]
        cm.apply([dirs[0]])
        models = [cm.model]
        out["module_bytes"] = sum(
            int(i.nbytes + v.nbytes) + sum(int(t.nbytes) for p in m.payload.packed.values() for t in p.values())
            for m in loaded
            for i, v in m.payload.entries.values()
        )
    else:
        models = []
        for d in dirs:
            model = load_backbone(folder)
            params = dict(model.named_parameters())
            m = load_module(d)
            with torch.no_grad():
                for name, (idx, val) in m.payload.entries.items():
                    params[name].view(-1).index_add_(0, idx.to(torch.int64), val)
            del m
            models.append(model)
    gc.collect()
    out["setup"] = memory_figures()
    for model in models:
        for p in model.parameters():
            float(p.sum())
    out["touched"] = memory_figures()
    out["models"] = len(models)
    print(json.dumps(out))


def bench_memory(ctx: dict, n_modules: int, rank: int, work: Path) -> dict:
    from rerank.modules.format import save_module

    mem = work / "memory"
    mem.mkdir(exist_ok=True)
    for i in range(n_modules):
        m = random_module(ctx["shapes"], rank, 100 + i, ctx["fp"], ctx["name"], f"l{i}")
        save_module(m, mem / f"lang-{i:02d}")
    res = {}
    for which in ("bare", "composed", "merged"):
        cp = subprocess.run(
            [sys.executable, __file__, "--memory-child", which, "--work", str(mem)],
            capture_output=True,
            text=True,
            check=True,
        )
        res[which] = json.loads(cp.stdout.strip().splitlines()[-1])
    sigma = res["composed"]["module_bytes"] / 2**20
    out: dict = {"modules": n_modules, "sum_module_bytes_mb": round(sigma, 2)}
    for when in ("touched", "setup"):
        for metric in ("VmRSS", "Pss"):
            a, b, c = (res[w][when][metric] for w in ("bare", "composed", "merged"))
            out[f"{when}_{metric}"] = {
                "a_bare_mb": a,
                "b_composed_plus_modules_mb": b,
                "c_merged_copies_mb": c,
                "goal_b_le_mb": round(a + 1.2 * sigma, 1),
                "goal_met": b <= a + 1.2 * sigma,
                "b_minus_a_mb": round(b - a, 1),
                "c_over_b": round(c / b, 2),
            }
    out["detail_mb"] = {w: {**r["setup"], "touched": r["touched"]} for w, r in res.items()}
    out["note"] = (
        "one child process each; (b) has one module applied. from_pretrained maps the safetensors file: "
        "weights are file pages, resident only once read (setup_*), and the merged copies share the pages "
        "their merge does not write; the ComposedModel copies every weight into one anonymous buffer. "
        "touched_* = after reading every weight once (the steady state of a process that uses them); Pss "
        "divides shared pages among their mappings (the physical footprint)"
    )
    return out


# -- size -------------------------------------------------------------------------------------------
def bench_size(ctx: dict, work: Path) -> dict:
    from rerank.modules.format import load_module, module_size, quantize_module, save_module

    m = load_module(ctx["paths"]["ky"])
    shira_file = (work / "peft-shira" / "ky" / "adapter_model.safetensors").stat().st_size
    lora_file = (work / "peft-lora" / "ky" / "adapter_model.safetensors").stat().st_size
    out: dict = {"entries": len(m), "peft_shira_bytes": shira_file, "peft_lora_bytes": lora_file, "ours": {}}
    for bits in (32, 16, 8, 4, 2, 1):
        size = module_size(save_module(quantize_module(m, bits), work / f"size-{bits}bit"))
        out["ours"][f"{bits}bit"] = {
            "bytes": size,
            "bytes_per_entry": round(size / len(m), 3),
            "peft_shira_over_ours": round(shira_file / size, 2),
            "peft_lora_over_ours": round(lora_file / size, 2),
        }
    return out


# -- main -------------------------------------------------------------------------------------------
def setup(work: Path, rank: int) -> dict:
    import torch

    from rerank.backbone import resolve_model
    from rerank.modules.compose import ComposedModel

    info = resolve_model(None)
    ctx: dict = {"folder": info.path, "fp": info.fingerprint, "name": info.name}
    t = time.perf_counter()
    cm = ComposedModel(load_backbone(info.path), fingerprint=info.fingerprint)
    ctx["cm"], ctx["shapes"] = cm, cm.shapes
    ctx["shira"] = make_peft(info.path, "shira", rank, work)
    ctx["paths"] = import_modules(work, info.fingerprint, cm.shapes, info.name)
    ctx["lora"] = make_peft(info.path, "lora", rank, work)
    linear = sum(int(torch.tensor(cm.shapes[f"{t}.weight"]).prod()) for t in targets())
    every = sum(p.numel() for p in cm.names.values())
    entries = {a: len(cm.load(p)) for a, p in ctx["paths"].items()}
    lora_params = sum(p.numel() for n, p in ctx["lora"].named_parameters() if ".lora_" in n and ".ky." in n)
    ctx["facts"] = {
        "backbone": info.name,
        "fingerprint": info.fingerprint[:23],
        "encoder_parameters": every,
        "target_linear_weights": len(targets()),
        "target_entries": linear,
        "rank": rank,
        "module_entries": entries,
        "density_of_targets": round(entries["ky"] / linear, 5),
        "density_of_all_encoder_parameters": round(entries["ky"] / every, 5),
        "peft_lora_trainable_per_adapter": lora_params,
        "setup_s": round(time.perf_counter() - t, 1),
    }
    return ctx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per side (switch, inference)")
    ap.add_argument("--rank", type=int, default=5, help="SHiRA/LoRA r: r·(in+out) entries per target")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--copy-mb", type=int, default=256, help="tensor size for the copy bandwidth")
    ap.add_argument("--memory-modules", type=int, default=10)
    ap.add_argument("--only", nargs="*", choices=PARTS)
    ap.add_argument("--memory-child", choices=["bare", "composed", "merged"], help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.work)
        return
    import torch

    start = time.perf_counter()
    parts = args.only or list(PARTS)
    result: dict = {
        "benchmark": "switch",
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": sys.version.split()[0],
            "gpu": torch.cuda.get_device_name(0) + " (not used)"
            if torch.cuda.is_available()
            else "none available in this session",
        },
        "settings": {"repeats": args.repeats, "rank": args.rank, "batch": args.batch, "seq": args.seq},
    }
    import peft

    result["machine"]["peft"] = peft.__version__
    with tempfile.TemporaryDirectory(prefix="bench-switch-") as tmp:
        work = Path(tmp)
        ctx = setup(work, args.rank)
        result["modules"] = ctx["facts"]
        if "switch" in parts:
            result["switch"] = bench_switch(ctx, args.repeats, args.copy_mb)
        if "inference" in parts:
            result["inference"] = bench_inference(ctx, args.repeats, args.batch, args.seq)
        if "size" in parts:
            result["size"] = bench_size(ctx, work)
        if "memory" in parts:
            for k in ("cm", "shira", "lora"):
                ctx.pop(k, None)
            gc.collect()
            result["memory"] = bench_memory(ctx, args.memory_modules, args.rank, work)
    result["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
