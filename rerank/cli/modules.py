"""``rerank modules``: inspect and convert module folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rerank.cli._common import out, user_errors

app = typer.Typer(help="Inspect and convert composable modules.", no_args_is_help=True)


@app.command("info")
@user_errors
def info(path: Annotated[Path, typer.Argument(help="A module folder.")]) -> None:
    """Kind, role, language, base backbone, density or rank, storage bits, size, recipe."""
    from rerank.modules.format import load_module, module_size

    m = load_module(path)
    c = m.config
    touched = sum(1 for _ in m.entries)
    rows = [
        ("kind", c.kind),
        ("role", c.role),
        ("language", c.language or "-"),
        ("base", f"{c.base_model} {c.base_fingerprint}"),
        ("entries", f"{len(m):,} in {touched} parameters" + (f", density {c.density:.4%}" if c.density else "")),
        ("rank", str(c.rank) if c.rank else "-"),
        ("values", f"{c.bits} bits, blocks of {c.block}" if c.bits and c.bits < 16 else c.value_dtype),
        ("size on disk", f"{module_size(path):,} bytes"),
        ("recipe", ", ".join(f"{k}={v}" for k, v in c.recipe.items()) or "-"),
        ("data", ", ".join(f"{k}={v}" for k, v in c.data.items()) or "-"),
        ("format", f"version {c.format_version}, {c.created_by}"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        out.print(f"{k.ljust(width)}  {v}")


@app.command("quantize")
@user_errors
def quantize(
    path: Annotated[Path, typer.Argument(help="A module folder.")],
    bits: Annotated[int, typer.Option("--bits", help="1, 2, 4, 8 (codes + per-block scales), 16 or 32.")],
    out_dir: Annotated[Path, typer.Option("--out", help="The new module folder.")],
    block: Annotated[int, typer.Option("--block", min=8, help="Values per scale (1–8 bits).")] = 64,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
) -> None:
    """Store a module's values at fewer bits (dequantized when loaded)."""
    from rerank.collections._io import refuse_existing
    from rerank.modules.format import load_module, module_size, quantize_module, save_module
    from rerank.modules.quant import check_bits

    check_bits(bits)
    refuse_existing(out_dir, overwrite)
    m = load_module(path)
    q = quantize_module(m, bits, block)
    save_module(q, out_dir, overwrite=overwrite)
    before, after = module_size(path), module_size(out_dir)
    out.print(f"wrote {out_dir}: {bits}-bit values, {after:,} bytes ({after / before:.1%} of {before:,})")
