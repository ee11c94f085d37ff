"""The package's layers run one way: read from the code's own imports (every ``import`` and ``from … import``,
at module level and inside functions), as text, so nothing is executed.

* no import cycle between the package's parts (``rerank.modules``, ``rerank.scoring``, …, and the top-level
  modules such as ``rerank.pipeline``);
* the lower floors (types, errors, files, languages, collections, backbone) import nothing from the stages
  above them (indexes, modules, scoring, training, pipeline, eval, cli);
* no private name (``_x``) is imported from another file, and a private module (``…/_x.py``) is imported only
  from its own folder.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rerank"
LOWER = {"types", "errors", "files", "languages", "collections", "backbone"}
STAGES = {"indexes", "modules", "scoring", "training", "pipeline", "eval", "cli"}


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _part(name: str) -> str:
    """rerank.modules.kinds.sparse -> modules; rerank.pipeline -> pipeline; rerank -> rerank."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "rerank"


def _imports() -> list[tuple[str, str, str | None]]:
    """(importing module, imported module, imported name or None) for every import of the package's own code."""
    subpackages = {p.name for p in PACKAGE.iterdir() if p.is_dir()} | {p.stem for p in PACKAGE.glob("*.py")}
    found = []
    for path in PACKAGE.rglob("*.py"):
        me = _module(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found += [(me, a.name, None) for a in node.names if a.name.split(".")[0] == "rerank"]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("rerank"):
                for a in node.names:
                    folder = PACKAGE.parent.joinpath(*node.module.split("."))
                    if (node.module == "rerank" and a.name in subpackages) or (folder / f"{a.name}.py").is_file():
                        found.append((me, f"{node.module}.{a.name}", None))  # a module: `from rerank import languages`
                    else:
                        found.append((me, node.module, a.name))
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for me, target, _ in _imports():
        a, b = _part(me), _part(target)
        if a != b and b != "rerank":  # the package itself only re-exports (rerank.__version__, lazily the API)
            graph.setdefault(a, set()).add(b)
    return graph


def test_there_is_no_import_cycle_between_the_parts():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join([*path, node, nxt])
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_the_lower_floors_import_nothing_from_the_stages():
    graph = _graph()
    bad = sorted((a, b) for a in LOWER for b in graph.get(a, ()) if b in STAGES)
    assert not bad, f"lower floors importing stages: {bad}"


def _private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def test_no_private_name_crosses_a_file():
    bad = []
    for me, target, name in _imports():
        parts = target.split(".")
        for i, p in enumerate(parts[1:], start=1):  # a private module: only its own folder imports it
            folder = ".".join(parts[:i])
            if _private(p) and not (me == folder or me.startswith(folder + ".")):
                bad.append(f"{me} imports the private module {'.'.join(parts[: i + 1])}")
        if name is not None and _private(name) and target != me:
            bad.append(f"{me} imports the private name {target}.{name}")
    assert not bad, "\n".join(sorted(set(bad)))
