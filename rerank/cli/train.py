"""``rerank train``: language modules by masked-language modelling (task modules and pairs follow)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rerank.cli._common import out, user_errors

app = typer.Typer(help="Train composable modules.", no_args_is_help=True)


@app.command("lang")
@user_errors
def lang(
    language: Annotated[str, typer.Option("--lang", help="The language (ISO code or name), e.g. ky.")],
    text: Annotated[
        list[Path],
        typer.Option(
            "--text", help="Plain text: one document a line, or blank-line separated; repeat for more files."
        ),
    ],  # fmt: skip
    out_dir: Annotated[Path, typer.Option("--out", help="The module folder to write.")],
    kind: Annotated[str, typer.Option("--kind", help="sft (LT-SFT) | shira | lora | adapter.")] = "shira",
    density: Annotated[str, typer.Option("--density", help="sft/shira: share of entries trained, e.g. 2%.")] = "2%",
    rank: Annotated[int, typer.Option("--rank", min=1, help="lora: rank.")] = 8,
    reduction: Annotated[int, typer.Option("--reduction", min=1, help="adapter: bottleneck reduction.")] = 16,
    mask: Annotated[str, typer.Option("--mask", help="shira: random | magnitude | gradient.")] = "gradient",
    embeddings: Annotated[
        bool, typer.Option("--embeddings/--no-embeddings", help="sft/shira: also the language's embedding rows.")
    ] = True,
    max_steps: Annotated[int, typer.Option("--max-steps", min=1, help="Optimizer steps.")] = 1000,
    head_steps: Annotated[int | None, typer.Option("--head-steps", min=0, help="MLM head steps first.")] = None,
    time_budget: Annotated[str | None, typer.Option("--time-budget", help="Stop after this long, e.g. 25m.")] = None,
    seq_len: Annotated[int, typer.Option("--seq-len", min=16, max=512, help="Tokens per sequence.")] = 128,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Sequences per step.")] = 16,
    grad_accum: Annotated[int, typer.Option("--grad-accum", min=1, help="Micro-batches per step.")] = 1,
    lr: Annotated[float | None, typer.Option("--lr", min=0.0, help="Learning rate [default: per kind].")] = None,
    l1: Annotated[float, typer.Option("--l1", min=0.0, help="sft: L1 pull of the deltas to the base.")] = 0.0,
    max_vocab: Annotated[int | None, typer.Option("--max-vocab", min=100, help="Output vocabulary cap.")] = None,
    eval_every: Annotated[int, typer.Option("--eval-every", min=1, help="Dev evaluation interval.")] = 100,
    patience: Annotated[int, typer.Option("--patience", min=0, help="Evaluations without gain (0: off).")] = 3,
    seed: Annotated[int, typer.Option("--seed", help="Seed of data order, masks and initialisation.")] = 0,
    model: Annotated[Path | None, typer.Option("--model", help="Backbone [default: embedded e5-small].")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Train a language module by masked-language modelling (resumes from <out>.work/ if interrupted)."""

    from rerank.modules.format import module_size, parse_density
    from rerank.training.lang import LangConfig, train_language_module
    from rerank.training.loop import parse_budget

    if batch_size * seq_len > 64 * 512:
        from rerank.errors import RerankError

        raise RerankError(
            f"--batch-size {batch_size} × --seq-len {seq_len} tokens per step would not fit in memory here",
            hint="use --grad-accum to reach a large batch in smaller steps",
        )
    cfg = LangConfig(
        kind=kind, density=parse_density(density), rank=rank, reduction=reduction, mask=mask, embeddings=embeddings,
        max_steps=max_steps, head_steps=head_steps, seq_len=seq_len, batch_size=batch_size, grad_accum=grad_accum,
        lr=lr, l1=l1, max_vocab=max_vocab, time_budget=parse_budget(time_budget), eval_every=eval_every,
        patience=patience or None, seed=seed,
    )  # fmt: skip
    m = train_language_module(language, text, out_dir, cfg, model=model, overwrite=overwrite, progress=not quiet)
    r = m.config.recipe
    out.print(
        f"wrote {out_dir}: {kind} language module for {m.config.language}, {len(m):,} numbers, "
        f"{module_size(out_dir):,} bytes; dev MLM loss {r['dev_loss_before']} → {r['dev_loss_best']} "
        f"in {r['steps']} steps, {r['seconds']} s ({r['stopped']})"
    )
