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
    what = m.kind.describe(m.payload, c)
    if m.extras:
        what += f"; extras: {', '.join(sorted(m.extras))}"
    rows = [
        ("kind", c.kind),
        ("role", c.role),
        ("language", c.language or "-"),
        ("base", f"{c.base_model} {c.base_fingerprint}"),
        ("contents", what),
        ("rank", str(c.rank) if c.rank else "-"),
        ("budgets", _budgets(c)),
        ("values", f"{c.bits} bits, blocks of {c.block}" if c.bits and c.bits < 16 else c.value_dtype),
        ("size on disk", f"{module_size(path):,} bytes"),
        ("recipe", ", ".join(f"{k}={v}" for k, v in c.recipe.items()) or "-"),
        ("data", ", ".join(f"{k}={v}" for k, v in c.data.items()) or "-"),
        ("format", f"version {c.format_version}, {c.created_by}"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        out.print(f"{k.ljust(width)}  {v}")


def _budgets(c) -> str:
    """What --module-rank / --module-density can choose: a dynamic module's trained range, or a truncation."""
    if not c.dynamic:
        return "one (smaller --module-rank/--module-density truncate it)" if c.rank or c.density else "-"
    from rerank.modules import kinds

    lo, hi = c.dynamic
    if kinds.get(c.kind).dynamic_budget == "rank":
        return f"every rank {int(lo)}..{int(hi)}, trained in one run (--module-rank)"
    return f"every density {lo:.4%}..{hi:.4%}, trained in one run as nested prefixes (--module-density)"


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
    from rerank.files import refuse_existing
    from rerank.modules.format import CONFIG_FILE, load_module, module_size, quantize_module, save_module
    from rerank.modules.quant import check_bits

    check_bits(bits)
    refuse_existing(out_dir, overwrite, marker=CONFIG_FILE, inputs=(path,))
    m = load_module(path)
    q = quantize_module(m, bits, block)
    save_module(q, out_dir, overwrite=overwrite)
    before, after = module_size(path), module_size(out_dir)
    out.print(f"wrote {out_dir}: {bits}-bit values, {after:,} bytes ({after / before:.1%} of {before:,})")


@app.command("export")
@user_errors
def export(
    path: Annotated[Path, typer.Argument(help="A module folder (LoRA or sparse).")],
    out_dir: Annotated[Path, typer.Option("--out", help="The peft adapter folder to write.")],
    to: Annotated[str, typer.Option("--to", help="Target library (peft).")] = "peft",
    for_model: Annotated[
        str,
        typer.Option(
            "--for",
            help="auto | encoder | cross-encoder: the model class peft will wrap (auto: cross-encoder when the "
            "module carries a classification head).",
        ),
    ] = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
) -> None:
    """Write a module as a folder peft loads (LoRA as LORA, sparse as SHIRA)."""
    from rerank.errors import RerankError
    from rerank.files import refuse_existing
    from rerank.modules.format import load_module
    from rerank.modules.interop import PEFT_CONFIG, export_peft

    if to != "peft":
        raise RerankError(f"--to {to!r}: modules are exported to peft", hint="--to peft")
    if for_model not in ("auto", "encoder", "cross-encoder"):
        raise RerankError(f"--for {for_model!r} is not a model class", hint="auto, encoder or cross-encoder")
    refuse_existing(out_dir, overwrite, marker=PEFT_CONFIG, inputs=(path,))
    m = load_module(path)
    head = None if for_model == "auto" else for_model == "cross-encoder"
    export_peft(m, out_dir, head=head, overwrite=overwrite)
    loads = f"PeftModel.from_pretrained(base, {str(out_dir)!r}) loads it"
    out.print(f"wrote {out_dir}: a peft {m.kind.peft_type} adapter ({loads})")


@app.command("import")
@user_errors
def import_(
    path: Annotated[Path, typer.Argument(help="A peft adapter folder (LORA or SHIRA, safetensors).")],
    out_dir: Annotated[Path, typer.Option("--out", help="The module folder to write.")],
    model: Annotated[
        Path | None, typer.Option("--model", help="The backbone it was trained on [default: embedded e5-small].")
    ] = None,
    role: Annotated[str, typer.Option("--role", help="language or task.")] = "task",
    lang: Annotated[str, typer.Option("--lang", help="Its language (a language module needs one).")] = "",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
) -> None:
    """Turn a peft LoRA or SHiRA adapter into a module for a backbone."""
    from rerank import languages
    from rerank.backbone import resolve_model
    from rerank.errors import RerankError
    from rerank.files import refuse_existing
    from rerank.modules.format import CONFIG_FILE, ROLES, module_size, save_module
    from rerank.modules.interop import backbone_shapes, import_peft

    if role not in ROLES:
        raise RerankError(f"--role {role!r} is not a module role", hint="language or task")
    if role == "language" and not lang:
        raise RerankError("a language module needs its language", hint="add --lang, e.g. --lang ky")
    code = languages.code(lang) if lang else ""
    refuse_existing(out_dir, overwrite, marker=CONFIG_FILE, inputs=(path,))
    info_ = resolve_model(model)
    m = import_peft(
        path,
        fingerprint=info_.fingerprint,
        shapes=backbone_shapes(info_.path),
        base_model=info_.name,
        role=role,
        language=code,
    )
    save_module(m, out_dir, overwrite=overwrite)
    out.print(f"wrote {out_dir}: a {m.config.kind} {role} module, {len(m):,} numbers, {module_size(out_dir):,} bytes")
