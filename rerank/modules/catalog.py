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
another backbone. The folder is ``$RERANK_MODULES`` when set, else the ``modules/`` folder beside the
package (a source checkout).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from rerank.modules.format import CONFIG_FILE


@dataclass(frozen=True)
class Entry:
    path: Path
    kind: str
    role: str
    language: str
    fingerprint: str
    trained_on: str | None  # task modules: the kind of the language module below it in training


def modules_home() -> Path | None:
    """Where the shipped modules are: ``$RERANK_MODULES``, else ``<checkout>/modules``; None when absent."""
    env = os.environ.get("RERANK_MODULES", "").strip()
    home = Path(env) if env else Path(__file__).resolve().parents[2] / "modules"
    return home if home.is_dir() else None


def catalog(home: str | os.PathLike | None = None) -> list[Entry]:
    """Every module folder directly under ``home`` (default :func:`modules_home`), sorted by name.
    Folders whose config cannot be read are skipped (``rerank modules info`` says what is wrong)."""
    root = Path(home) if home is not None else modules_home()
    if root is None or not root.is_dir():
        return []
    out = []
    for folder in sorted(p for p in root.iterdir() if (p / CONFIG_FILE).is_file()):
        try:
            raw = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
            below = (raw.get("recipe") or {}).get("language_module") or {}
            out.append(Entry(folder, str(raw["kind"]), str(raw["role"]), str(raw.get("language") or ""),
                             str(raw["base_fingerprint"]), below.get("kind")))  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return out


def default_stack(lang: str | None, fingerprint: str, home: str | os.PathLike | None = None) -> tuple[Path, ...]:
    """The shipped modules stacked for queries in ``lang`` on the backbone ``fingerprint``: (language
    module, task module), or () when no task module is made for this backbone."""
    from rerank import languages

    mine = [e for e in catalog(home) if e.fingerprint == fingerprint]
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
        raw = json.loads((Path(task) / CONFIG_FILE).read_text(encoding="utf-8"))
        recipe = raw.get("recipe") or {}
        mine, bi = recipe.get("dev_mrr_composed"), recipe.get("dev_mrr_teacher")
    except (OSError, ValueError, AttributeError):
        return None  # unreadable: loading it reports what is wrong
    if mine is None or bi is None or float(mine) >= float(bi):
        return None
    return (f"{Path(task).name} is not used by --reranker auto: on its dev split the cross-encoder's MRR {mine} "
            f"is below the bi-encoder's {bi} (--reranker cross stacks it anyway)")
