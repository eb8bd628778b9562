"""The house's layers, read from the source: no import cycles between queuectl's
modules, each layer imports only those below it, and SQLAlchemy is the store's
alone (docs/design.md section 9)."""

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "queuectl"
# Lowest first; a module may import its own layer's modules and those below.
LAYERS = [
    ("errors", "timeutil", "states", "config", "jobspec", "cron", "rundir"),
    ("store",),
    ("worker", "status", "waiting", "following", "metrics"),
    ("cli", "__main__", "web"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module this file imports, at any depth of the file (lazy imports too)."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports(path) if m in modules and m != name} for name, path in modules.items()}


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    return -1  # queuectl/__init__.py: the version, below everything


def test_no_import_cycles():
    edges = graph()
    # A package's __init__ importing its own submodules is how a package re-exports
    # them, not a dependency of theirs on it.
    edges = {m: {d for d in deps if not (m.startswith(d + ".") and d != "queuectl")} for m, deps in edges.items()}
    visiting, done, cycles = set(), set(), []

    def visit(node, path):
        if node in visiting:
            cycles.append(path[path.index(node):] + [node])
            return
        if node in done:
            return
        visiting.add(node)
        for dep in sorted(edges[node]):
            visit(dep, path + [node])
        visiting.discard(node)
        done.add(node)

    for node in sorted(edges):
        visit(node, [])
    assert cycles == []


def test_each_layer_imports_only_its_own_and_those_below():
    upward = [
        f"{module} -> {dep}"
        for module, deps in graph().items()
        for dep in deps
        if layer_of(dep) > layer_of(module)
    ]
    assert upward == []


def test_only_the_store_imports_sqlalchemy_or_alembic():
    outside = [
        f"{module_name(path)} imports {name}"
        for path in PACKAGE.rglob("*.py")
        if not module_name(path).startswith("queuectl.store")
        for name in imports(path)
        if name.split(".")[0] in ("sqlalchemy", "alembic")
    ]
    assert outside == []
