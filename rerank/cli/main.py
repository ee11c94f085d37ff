"""The ``rerank`` command: one sub-app (or command) per group, each in its own file."""

from __future__ import annotations

import typer

from rerank import __version__
from rerank.cli import collections as collections_cli
from rerank.cli import index as index_cli
from rerank.cli import search as search_cli

app = typer.Typer(
    name="rerank",
    help="Multilingual and cross-lingual search: BM25 first stage (Pyserini), reranking, evaluation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("index", help=index_cli.index.__doc__)(index_cli.index)
app.command("search", help=search_cli.search.__doc__)(search_cli.search)
app.add_typer(collections_cli.app, name="collections")


def _version(value: bool) -> None:
    if value:
        print(f"rerank {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    pass


def main() -> None:
    app()


if __name__ == "__main__":
    main()
