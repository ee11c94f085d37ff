"""The modules shipped with the product (top-level ``modules/``) and the default stack for a query language.

``rerank search --lang ky`` (and ``Pipeline(modules="auto")``) stacks, for each query language:

* the task module (role ``task``, with its ranking head) made for the reranker's backbone — with several,
  the first by folder name;
* when the task module was trained on top of a language module: the query language's module in its place
  (role ``language``), preferring the kind of the one it was trained on. A language without a module gets
  the task module's own source-language module instead: the task module then runs in the setting it was
  trained in (Litschko et al. 2022 stack the task module with the target language's module, the source
  language's one only for training). A task module trained on the bare backbone (its relevance data in
  several query languages, no one language module below it) is stacked alone, as it was trained; language
  modules are then the user's to stack (``--modules``), and modules/README.md measures what they do.

``--reranker auto`` stacks them only when the task module earned it on its own dev split
(:func:`task_verdict`): its cross-encoder alone must rank at least as well as the bi-encoder it would
replace (the ``dev_mrr_composed`` and ``dev_mrr_teacher`` its training recorded). ``--reranker cross``
stacks them regardless.

Only modules whose base fingerprint is the backbone's are considered, so a shipped module never reaches
another backbone. The folder (:func:`modules_home`) is ``$RERANK_MODULES`` when set; else the ``modules/``
folder of the source checkout the package runs from; else ``modules/`` in rerank's user cache
(``$RERANK_HOME``, default ``~/.cache/rerank``) — where an installed package finds modules copied there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rerank.errors import RerankError
from rerank.modules.format import CONFIG_FILE, peek_config, read_config


@dataclass(frozen=True)
class Entry:
    path: Path
    kind: str
    role: str
    language: str
    fingerprint: str
    trained_on: str | None  # task modules: the kind of the language module below it in training


def modules_home() -> Path | None:
    """Where the shipped modules are: ``$RERANK_MODULES``; else ``<checkout>/modules`` when the package runs
    from a source checkout; else ``<rerank home>/modules`` (the user cache). None when the folder is absent."""
    from rerank.backbone.files import rerank_home

    env = os.environ.get("RERANK_MODULES", "").strip()
    if env:
        home = Path(env).expanduser()
        return home if home.is_dir() else None
    package = Path(__file__).resolve().parents[1]  # rerank/
    checkout = package.parent / "modules"
    if (package.parent / "pyproject.toml").is_file() and checkout.is_dir():
        return checkout
    cache = rerank_home() / "modules"
    return cache if cache.is_dir() else None


def catalog(home: str | os.PathLike | None = None) -> list[Entry]:
    """Every module folder directly under ``home`` (default :func:`modules_home`), sorted by name.
    Folders whose config cannot be read are skipped (``rerank modules info`` says what is wrong)."""
    root = Path(home) if home is not None else modules_home()
    if root is None or not root.is_dir():
        return []
    out = []
    for folder in sorted(p for p in root.iterdir() if (p / CONFIG_FILE).is_file()):
        cfg = peek_config(folder)
        if cfg is not None:
            out.append(Entry(folder, cfg.kind, cfg.role, cfg.language or "", cfg.base_fingerprint, cfg.trained_on))
    return out


def default_stack(
    lang: str | None, fingerprint: str, home: str | os.PathLike | None = None, entries: list[Entry] | None = None
) -> tuple[Path, ...]:
    """The shipped modules stacked for queries in ``lang`` on the backbone ``fingerprint``: (language
    module, task module), or () when no task module is made for this backbone."""
    from rerank import languages

    mine = [e for e in (catalog(home) if entries is None else entries) if e.fingerprint == fingerprint]
    tasks = [e for e in mine if e.role == "task"]
    if not tasks:
        return ()
    task = tasks[0]
    langs = [e for e in mine if e.role == "language"]

    def pick(code: str) -> Entry | None:
        found = [e for e in langs if e.language == code]
        return next((e for e in found if e.kind == task.trained_on), found[0] if found else None)

    if not task.trained_on:
        return (task.path,)
    code = languages.code(lang) if lang else ""
    chosen = (pick(code) if code else None) or pick(task.language)
    return (chosen.path, task.path) if chosen else (task.path,)


def task_verdict(task: str | os.PathLike) -> str | None:
    """None when the task module may be used by default; else why not, in one line. A module that
    records no bi-encoder figure (trained on pairs without teacher scores) is trusted."""
    try:
        dev = read_config(task).dev
    except (RerankError, OSError):
        return None  # unreadable: loading it reports what is wrong
    if dev.earned():
        return None
    return (
        f"{Path(task).name} is not used by --reranker auto: on its dev split the cross-encoder's MRR {dev.mrr} "
        f"is below the bi-encoder's {dev.mrr_first_stage} (--reranker cross stacks it anyway)"
    )
