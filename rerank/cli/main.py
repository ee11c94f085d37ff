"""The ``rerank`` command: one sub-app (or command) per group, each in its own file."""

from __future__ import annotations

import sys

import typer

from rerank import __version__
from rerank.cli import collections as collections_cli
from rerank.cli import eval as eval_cli
from rerank.cli import index as index_cli
from rerank.cli import modules as modules_cli
from rerank.cli import rerank_run as rerank_run_cli
from rerank.cli import search as search_cli
from rerank.cli import serve as serve_cli
from rerank.cli import train as train_cli

app = typer.Typer(
    name="rerank",
    help="Multilingual and cross-lingual search: BM25 first stage (Pyserini), reranking, evaluation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("index")(index_cli.index)
app.command("search")(search_cli.search)
app.command("serve")(serve_cli.serve)
app.command("rerank-run")(rerank_run_cli.rerank_run)
app.add_typer(collections_cli.app, name="collections")
app.add_typer(modules_cli.app, name="modules")
app.add_typer(eval_cli.app, name="eval")
app.add_typer(train_cli.app, name="train")


def _version(value: bool) -> None:
    if value:
        print(f"rerank {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    pass


def main(argv: list[str] | None = None) -> None:
    """Console entry point. Every way of failing ends in one line on stderr and a non-zero status:
    user errors and usage errors exit 2, an interrupt 130."""
    from rerank.cli import _common

    _common.ARGV[:] = list(sys.argv[1:] if argv is None else argv)
    try:
        rv = app(args=argv, prog_name="rerank", standalone_mode=False)
    except typer.TyperException as e:  # usage errors: missing/unknown option, bad value (typer's own click)
        ctx = getattr(e, "ctx", None)
        where = f" — see `{ctx.command_path} --help`" if ctx is not None else ""
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        if not message.strip():  # `rerank` alone: the help was printed
            sys.exit(2)
        print(f"rerank: error: {' '.join(message.split())}{where}", file=sys.stderr)
        sys.exit(getattr(e, "exit_code", 2))
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("rerank: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
