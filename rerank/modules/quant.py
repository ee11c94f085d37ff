"""Low-bit storage of module values: 16-bit floats, or 8/4/2/1-bit codes with one scale per block.

Values are quantized in blocks of ``block`` consecutive entries (entries are stored most important
first, so a block holds values of similar size). b ≥ 2 bits: 2^b levels placed symmetrically around 0
at half-steps (±0.5, ±1.5, … times the step), so 2 bits give four levels rather than a ternary code;
the step is max|v| / ((2^b − 1)/2) for 4 and 8 bits, and for 2 bits the step that minimises a
Gaussian's squared error (≈ the block's RMS; the extremes are clipped to the outer levels).
1 bit: v ≈ sign(v) · mean|v| of the block (the scale that minimises the squared error for a sign
code). Codes are packed low bits first into bytes; scales are float16.
"""

from __future__ import annotations

from rerank.errors import RerankError

BITS = (1, 2, 4, 8, 16, 32)
DEFAULT_BLOCK = 64


def check_bits(bits: int) -> int:
    if bits not in BITS:
        raise RerankError(f"unsupported bit width {bits}", hint=f"use one of: {', '.join(map(str, BITS))}")
    return bits


def quantize(val, bits: int, block: int = DEFAULT_BLOCK) -> dict:
    """{"codes": uint8 packed, "scales": float16} for 1–8 bits."""
    import torch

    check_bits(bits)
    if bits >= 16:
        raise RerankError("16/32-bit values are stored as floats, not codes", hint="use bits 1, 2, 4 or 8")
    v = val.detach().float().reshape(-1)
    n = v.numel()
    pad = (-n) % block
    blocks = torch.nn.functional.pad(v, (0, pad)).view(-1, block)
    if bits == 1:
        counts = torch.full((blocks.shape[0],), float(block))
        counts[-1] = block - pad
        scales = blocks.abs().sum(1) / counts
        codes = (blocks >= 0).to(torch.uint8)  # 1 = +scale, 0 = −scale
    else:
        half = (2**bits - 1) / 2
        counts = torch.full((blocks.shape[0],), float(block))
        counts[-1] = block - pad
        if bits == 2:  # four levels: the step that minimises a Gaussian's squared error (Max 1960), ≈ σ
            scales = 0.9957 * (blocks.pow(2).sum(1) / counts).sqrt()
        else:  # enough levels that clipping nothing (step = max|v| / half) costs little
            scales = blocks.abs().amax(1) / half
        safe = torch.where(scales > 0, scales, torch.ones_like(scales))
        codes = torch.round(blocks / safe[:, None] + half).clamp(0, 2**bits - 1).to(torch.uint8)
    scales16 = scales.to(torch.float16)
    return {"codes": _pack(codes.reshape(-1)[:n], bits), "scales": scales16}


def dequantize(codes, scales, n: int, bits: int, block: int = DEFAULT_BLOCK):
    """float32 values from packed codes and per-block scales."""
    import torch

    check_bits(bits)
    q = _unpack(codes, bits, n).to(torch.float32)
    s = scales.to(torch.float32).repeat_interleave(block)[:n]
    if s.numel() != n:
        raise RerankError(f"{scales.numel()} scales for {n} values in blocks of {block}", hint="the module is damaged")
    if bits == 1:
        return torch.where(q > 0, s, -s)
    return (q - (2**bits - 1) / 2) * s


def _pack(codes, bits: int):
    import torch

    if bits == 8:
        return codes.clone()
    per = 8 // bits
    pad = (-codes.numel()) % per
    c = torch.nn.functional.pad(codes, (0, pad)).view(-1, per).to(torch.int32)
    shifts = torch.arange(per, dtype=torch.int32) * bits
    return (c << shifts).sum(1).to(torch.uint8)


def _unpack(packed, bits: int, n: int):
    import torch

    if bits == 8:
        if packed.numel() != n:
            raise RerankError(f"{packed.numel()} codes for {n} values", hint="the module is damaged")
        return packed.to(torch.int32)
    per = 8 // bits
    if packed.numel() != -(-n // per):
        raise RerankError(f"{packed.numel()} code bytes for {n} values at {bits} bits", hint="the module is damaged")
    shifts = torch.arange(per, dtype=torch.int32) * bits
    return ((packed.to(torch.int32)[:, None] >> shifts) & ((1 << bits) - 1)).reshape(-1)[:n]
