"""The package's import structure: no import cycles between pipeline modules (module-level and
function-level imports alike) and no module importing another module's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "pipeline"
PRIVATE_PACKAGE = "pipeline._engine"  # private as a whole: its modules may share private names


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted((root / PACKAGE).rglob("*.py"))}


def compiled_modules(root: Path = ROOT) -> set[str]:
    """Extension modules built from C sources in the package (e.g. _engine/_fastkernels.c)."""
    return {module_name(p, root) for p in (root / PACKAGE).rglob("*.c")}


def resolve(current: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute module name of a (possibly relative) import in module ``current``."""
    if level == 0:
        return name or ""
    base = current.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import anywhere in the file
    (module level, in functions, under ``if``/``try``), pipeline modules only. ``from X import y``
    counts as importing X and, when X.y is a module, X.y."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    found.append((alias.name, None, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            target = resolve(name, is_package, node.level, node.module)
            if target.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub, None, node.lineno) if sub in known else (target, alias.name, node.lineno))
    return found


def import_graph(root: Path = ROOT) -> tuple[dict[str, set[str]], list[str]]:
    """The graph of imports between pipeline modules (an import of a.b.c also runs a and a.b,
    so it depends on them too), and the private-name violations found on the way."""
    mods = modules(root)
    known = set(mods) | compiled_modules(root)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    private: list[str] = []
    for name, path in mods.items():
        module_aliases: dict[str, str] = {}
        for target, imported, line in imports(name, path, known):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # the packages on the way run first
                dep = ".".join(parts[:i])
                explicit = dep == target  # e.g. ``from .. import __version__``: the package itself
                if dep in known and dep != name and (explicit or not name.startswith(dep + ".")):
                    graph[name].add(dep)
            if imported and imported.startswith("_") and not imported.startswith("__"):
                if not _same_private_scope(name, target):
                    private.append(f"{path.relative_to(root)}:{line}: imports {target}.{imported}")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):  # module._name
            if isinstance(node, ast.ImportFrom) and node.level:
                target = resolve(name, path.name == "__init__.py", node.level, node.module)
                for alias in node.names:
                    if f"{target}.{alias.name}" in known:
                        module_aliases[alias.asname or alias.name] = f"{target}.{alias.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in known and alias.asname:
                        module_aliases[alias.asname] = alias.name
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in module_aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")
                    and not _same_private_scope(name, module_aliases[node.value.id])):
                private.append(f"{path.relative_to(root)}:{node.lineno}: uses {module_aliases[node.value.id]}.{node.attr}")
    return graph, private


def _same_private_scope(importer: str, target: str) -> bool:
    """Private names may be shared inside one module and inside pipeline._engine."""
    inside = lambda m: m == PRIVATE_PACKAGE or m.startswith(PRIVATE_PACKAGE + ".")  # noqa: E731
    return importer == target or (inside(importer) and inside(target))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycles():
    graph, _ = import_graph()
    assert len(graph) > 30 and "pipeline.core" in graph["pipeline.jobs.run"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_private_names_across_modules():
    _, private = import_graph()
    assert not private, "private names used across modules:\n" + "\n".join(private)


# --------------------------------------------------------- the checker finds what it must find
def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / PACKAGE / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")


@pytest.mark.parametrize("files, cycle", [
    ({"__init__.py": "", "a.py": "from .b import x\n", "b.py": "def f():\n    from .a import y\n"},
     {"pipeline.a", "pipeline.b"}),  # a function-level import closes the cycle
    ({"__init__.py": "", "jobs/__init__.py": "", "jobs/run.py": "from ..products import extras\n",
      "products/__init__.py": "", "products/extras.py": "from ..jobs.run import run\n"},
     {"pipeline.jobs.run", "pipeline.products.extras"}),  # the old extras <-> run cycle
    ({"__init__.py": "from . import api\n", "api.py": "import pipeline.core\n", "core.py": "from pipeline import x\n"},
     {"pipeline", "pipeline.api", "pipeline.core"}),  # through the package's __init__
])
def test_cycle_checker_finds_cycles(tmp_path, files, cycle):
    _write(tmp_path, files)
    graph, _ = import_graph(tmp_path)
    found = find_cycle(graph)
    assert found is not None and set(found) == cycle


def test_private_checker_finds_private_imports(tmp_path):
    _write(tmp_path, {
        "__init__.py": "", "stats.py": "def _reduce(): pass\n",
        "core.py": "from .stats import _reduce\nfrom . import stats\nstats._reduce()\n",
        "_engine/__init__.py": "", "_engine/a.py": "def _ok(): pass\n", "_engine/b.py": "from .a import _ok\n",
    })
    graph, private = import_graph(tmp_path)
    assert find_cycle(graph) is None
    assert private == ["pipeline/core.py:1: imports pipeline.stats._reduce", "pipeline/core.py:3: uses pipeline.stats._reduce"]
