"""Writing composed deltas into the flat weight buffer: one fused Triton kernel on a GPU, torch
indexing otherwise. Both compute exactly ``flat[u] = flat[u] + delta[u]`` at unique indices ``u``
(overlapping modules are pre-summed, deterministically, on the CPU), and return the values they
overwrote, so the two paths give bitwise the same weights.

The kernel reads, saves and writes every touched entry of every parameter of every module in a single
launch over the concatenated (global) index space. Set ``RERANK_TRITON=1`` to use it on the CPU
under ``TRITON_INTERPRET=1`` (what the tests do); ``RERANK_TRITON=0`` turns it off on a GPU.
"""

from __future__ import annotations

import os

BLOCK = 1024
_kernel = None


def _build():
    import triton
    import triton.language as tl

    @triton.jit
    def scatter_add_save(flat_ptr, idx_ptr, delta_ptr, saved_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        idx = tl.load(idx_ptr + offs, mask=mask, other=0)
        d = tl.load(delta_ptr + offs, mask=mask, other=0.0)
        w = tl.load(flat_ptr + idx, mask=mask, other=0.0)
        tl.store(saved_ptr + offs, w, mask=mask)
        tl.store(flat_ptr + idx, w + d, mask=mask)

    return scatter_add_save


def use_triton(flat) -> bool:
    flag = os.environ.get("RERANK_TRITON", "")
    if flag == "0":
        return False
    if flag == "1" or flat.is_cuda:
        try:
            import triton  # noqa: F401
        except ImportError:
            return False
        return True
    return False


def scatter_apply(flat, union, delta):
    """``flat[union] += delta`` (``union`` unique int64 indices); returns the overwritten values."""
    import torch

    if union.numel() == 0:
        return torch.zeros(0, dtype=flat.dtype, device=flat.device)
    if use_triton(flat):
        global _kernel
        if _kernel is None:
            _kernel = _build()
        saved = torch.empty_like(delta)
        n = union.numel()
        _kernel[((n + BLOCK - 1) // BLOCK,)](flat, union, delta, saved, n, BLOCK=BLOCK)
        return saved
    saved = flat.index_select(0, union)
    flat.index_copy_(0, union, saved + delta)
    return saved
