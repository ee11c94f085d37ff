"""What every command shares: one-line errors with exit code 2, and console handles."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from rerank.errors import RerankError

F = TypeVar("F", bound=Callable[..., Any])

# `--precision`, as `rerank search` and `rerank serve` take it (rerank.scoring.precision)
PrecisionOption = Annotated[
    str,
    typer.Option(
        "--precision",
        help="The cross-encoder's arithmetic: auto (bf16 where the processor computes it natively, else fp32), "
        "fp32 or bf16.",
    ),
]

# The reranker's options, as `rerank search` and `rerank rerank-run` take them (rerank.pipeline.SearchSettings)
RerankerOption = Annotated[
    str, typer.Option("--reranker", help="none, bi (embedding cosine), cross (ranking head) or auto.")
]
ModelOption = Annotated[
    Path | None,
    typer.Option("--model", help="Reranker folder: a backbone, or a cross-encoder [default: embedded e5-small]."),
]
DenseModelOption = Annotated[
    Path | None, typer.Option("--dense-model", help="Backbone the dense index was built with [default: --model].")
]
ModulesOption = Annotated[
    str | None,
    typer.Option(
        "--modules",
        help="Module folders stacked into the reranker, comma-separated (lang + task). Language modules of "
        "several languages: each serves the queries of its own language. auto: the shipped modules (the "
        "query language's + the task module) when they exist for the backbone; none: no modules.",
    ),
]
ModuleDensityOption = Annotated[
    str | None, typer.Option("--module-density", help="Keep this much of each sparse module, e.g. 0.5%.")
]
ModuleRankOption = Annotated[
    int | None, typer.Option("--module-rank", min=1, help="Keep the first r ranks of each LoRA module.")
]
# DyLoRA: one training run for a range of budgets, as `rerank train lang` and `rerank train task` take it
DynamicRankOption = Annotated[
    str | None,
    typer.Option(
        "--dynamic-rank",
        help="lora: train every rank LO..HI in one run (DyLoRA), e.g. 1:8; the module has rank HI and "
        "--module-rank picks any rank of the range at load time.",
    ),
]
DynamicDensityOption = Annotated[
    str | None,
    typer.Option(
        "--dynamic-density",
        help="shira/sft: train every density LO..HI in one run (nested prefixes of the mask), e.g. 0.25%:2%; "
        "the module has density HI and --module-density picks any density of the range at load time.",
    ),
]


MosaOption = Annotated[
    int,
    typer.Option(
        "--mosa",
        min=0,
        help="adapter: train it as K sub-adapters (its bottleneck units split K ways, one active per layer and "
        "step), merged into one standard adapter at the end (MoSA); 0: off.",
    ),
]


def dynamic_budgets(kind: str, rank: int, density: float, dynamic_rank, dynamic_density, seed: int, mosa: int = 0):
    """(rank, density, Dynamic or None): a dynamic range's top is the module's rank or density; ``--mosa`` is
    checked against the kind too (the training modes of rerank.training.dynamic and rerank.training.mosa)."""
    from rerank.training.dynamic import parse

    dyn = parse(kind, dynamic_rank, dynamic_density, seed)
    if mosa:
        from rerank.training.mosa import check

        check(kind, mosa)
    if dyn is not None and dyn.what == "rank":
        rank = int(dyn.hi)
    elif dyn is not None:
        density = dyn.hi
    return rank, density, dyn


FirstStageWeightOption = Annotated[
    str,
    typer.Option(
        "--first-stage-weight",
        help="Fuse the cross-encoder's order with the first stage's (RRF, k=60; the cross-encoder weighs 1). "
        "auto: the weight the task module's dev split chose; 0: the cross-encoder's order alone.",
    ),
]
MaxLengthOption = Annotated[
    int | None, typer.Option("--max-length", min=8, help="Reranker input tokens [default: 256 cross, 512 bi].")
]
DeviceOption = Annotated[str | None, typer.Option("--device", help="cpu, cuda [default: cuda if present].")]


RERANKER_OPTIONS = (
    "reranker",
    "model",
    "dense_model",
    "modules",
    "module_density",
    "module_rank",
    "first_stage_weight",
    "max_length",
    "device",
    "precision",
)


def reranker_fields(options: dict) -> dict:
    """The :class:`~rerank.pipeline.SearchSettings` fields that a command's reranker options give (``options``:
    the command's arguments by name, e.g. its ``locals()``)."""
    from rerank.modules.format import parse_density
    from rerank.pipeline import parse_modules

    o = {name: options[name] for name in RERANKER_OPTIONS}
    return o | dict(
        modules=parse_modules(o["modules"]),
        module_density=parse_density(o["module_density"]) if o["module_density"] else None,
        first_stage_weight=o["first_stage_weight"].strip().lower() or "auto",
    )


# `--processes`, as `rerank train task` and `rerank train lang` take it (rerank.distributed)
ProcessesOption = Annotated[
    int,
    typer.Option(
        "--processes",
        min=1,
        help="Data-parallel over this many processes (torch.distributed, gloo): each takes an equal share of "
        "every step's batch, gradients are averaged; only the first writes.",
    ),
]


def check_split(batch: int, processes: int, flag: str) -> None:
    """A batch that does not split into equal shares over the processes is refused before anything starts."""
    if processes > 1 and batch % processes:
        raise RerankError(
            f"{flag} {batch} does not split into {processes} equal shares",
            hint=f"make it a multiple of --processes, e.g. {processes * max(1, batch // processes)}",
        )


# A pipe or a file gets a fixed width of 120 columns instead of rich's 80, so tables keep their snippets.
ARGV: list[str] = []  # the arguments of this invocation (set by main), to record how outputs were made


def invocation() -> str:
    """This command line, as a user would type it."""
    import shlex

    return shlex.join(["rerank", *ARGV])


def write_provenance(path, **facts) -> None:
    """``<path>.json`` beside an output: the command that made it, and ``facts``."""
    import json
    from datetime import datetime
    from pathlib import Path

    from rerank import __version__
    from rerank.files import atomic_write

    record = {"command": invocation(), **facts, "created": datetime.now(UTC).isoformat(timespec="seconds")}
    record["rerank"] = __version__
    with atomic_write(Path(f"{path}.json"), overwrite=True) as f:
        f.write(json.dumps(record, indent=1, ensure_ascii=False) + "\n")


out = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` as one line on stderr and return the Exit to raise."""
    print(f"rerank: error: {' '.join(message.split())}", file=sys.stderr)
    return typer.Exit(code)


OUT_OF_MEMORY = (
    "out of memory — use a smaller --batch-size / --batch-queries (with --grad-accum to keep the "
    "batch), or a shorter --seq-len / --max-length"
)


def user_errors(fn: F) -> F:
    """Turn the errors a user can cause into one line on stderr and exit status 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RerankError as e:
            raise fail(str(e), e.exit_code) from None
        except PermissionError as e:
            raise fail(f"permission denied: {e.filename} — choose a location you can write to") from None
        except OSError as e:
            raise fail(f"{e.strerror or e}: {e.filename or ''} — check the path and free disk space") from None
        except MemoryError:
            raise fail(OUT_OF_MEMORY) from None
        except RuntimeError as e:  # torch's allocators report running out as a RuntimeError
            if "can't allocate memory" not in str(e) and "out of memory" not in str(e).lower():
                raise
            raise fail(OUT_OF_MEMORY) from None
        except KeyboardInterrupt:
            raise fail("interrupted — nothing half-written was left behind", 130) from None

    return wrapper  # type: ignore[return-value]
