"""The cross-encoder's arithmetic: fp32, or bf16 autocast where the processor computes bf16 natively.

``auto`` (the default) is bf16 on a CPU with AMX or AVX-512 BF16 (Intel Sapphire Rapids and later, AMD Zen 4
and later) and on a CUDA device that supports bf16; fp32 elsewhere, where bf16 would be emulated and slower.
Autocast changes only how the matrix products are computed: the weights stay fp32, so module composition
(scatter into the base weights, exact reverts, ~7 ms switches) is untouched; the pooler and the ranking heads
run in fp32 (:func:`keep_fp32`). Measured with bench/rerank.py on this project's 2-core Xeon with AMX (1,000
UDHR pairs, medians of 3 rotated rounds, before the heads moved to fp32): bf16 72.5 pairs/s against 40.0 in
fp32 and 24.6 for sentence-transformers' fp32 ``CrossEncoder.predict`` (2.95×), logits within 4e-4 of fp32;
nDCG@10 of the default search within 0.001 of fp32 on every dev set and bundled topic set. int8 was measured
beside it: torch.ao's dynamic int8 linears 80.4 pairs/s and ONNX Runtime's dynamic int8 86.6, within this
machine's noise of bf16 or just above it, but 20–30× further from fp32 (logits within 0.013 and 0.010), and
neither composes: every module switch would re-quantise the weights (torch.ao) or re-export and re-quantise
the model (ONNX Runtime, seconds).
"""

from __future__ import annotations

import contextlib

from rerank.errors import RerankError

PRECISIONS = ("auto", "fp32", "bf16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise RerankError(f"unknown precision {precision!r}", hint=f"use one of: {', '.join(PRECISIONS)}")
    return precision


def native_bf16(device) -> bool:
    """Whether ``device`` computes bf16 matrix products in hardware (not by emulation)."""
    import torch

    kind = getattr(device, "type", str(device)).split(":")[0]
    if kind == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if kind != "cpu":
        return False
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # torch's own cpuinfo probes
    found = [getattr(torch.cpu, name, None) for name in probes]
    if any(f is not None for f in found):
        return any(bool(f()) for f in found if f is not None)
    try:  # an older torch without the probes: the kernel's CPU flags
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device) -> str:
    """``auto`` → ``bf16`` where :func:`native_bf16`, else ``fp32``; ``bf16`` on a device without it still runs
    (emulated: slower, as asked)."""
    check_precision(precision)
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def keep_fp32(module, device) -> None:
    """Run ``module`` (a ranking head, a pooler) in fp32 under autocast, its floating inputs cast up: bf16 has 8
    significant bits, so a logit of 3 would be rounded to a step of 1/64 and close candidates would tie, and a
    list head's small correction added to a bf16 vector would be rounded away. Heads are a sliver of the compute.
    Idempotent; the parameters are untouched (module composition writes them as before)."""
    import torch

    if module is None or getattr(module, "_rerank_fp32", False):
        return
    forward = module.forward
    kind = getattr(device, "type", str(device)).split(":")[0]

    def up(x):
        return x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() else x

    def fp32_forward(*args, **kwargs):
        with torch.autocast(kind, enabled=False):
            return forward(*(up(a) for a in args), **{k: up(v) for k, v in kwargs.items()})

    module.forward = fp32_forward
    module._rerank_fp32 = True


def autocast(precision: str, device):
    """The context a forward pass runs in for a resolved ``precision``."""
    import torch

    if precision != "bf16":
        return contextlib.nullcontext()
    kind = getattr(device, "type", str(device)).split(":")[0]
    return torch.autocast(kind, dtype=torch.bfloat16)
