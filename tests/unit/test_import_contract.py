"""The import contract: the layers point one way and nothing imports in a circle.

    cli ─▶ bootstrap ─▶ api │ streams │ projections   (siblings: none imports another)
                      ─▶ runtime and the adapters (the rest of ``medialog``)
                      ─▶ domain                      (imports nothing of ours but itself)

Every import counts, at any depth of a module (function-level and ``TYPE_CHECKING`` ones too):
an arrow drawn only at run time is still an arrow. Read from the source, not by importing it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"medialog": ROOT / "src" / "medialog", "streams": ROOT / "streams",
            "projections": ROOT / "projections"}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imported(module: str, path: Path) -> Iterator[str]:
    """The modules of ours that ``module`` imports (a name imported from a package counts as
    its submodule when there is one)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                     for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                yield name


GRAPH = {m: set(_imported(m, p)) for m, p in MODULES.items()}


def layer(module: str) -> str:
    top, _, rest = module.partition(".")
    if top in ("streams", "projections"):
        return top
    head = rest.split(".", 1)[0]
    if head in ("cli", "__main__"):
        return "cli"
    if head in ("bootstrap", "api", "domain"):
        return head
    return "runtime"  # runtime/ and the adapters


MAY_IMPORT = {
    "cli": {"cli", "bootstrap", "runtime", "domain"},
    "bootstrap": {"bootstrap", "api", "streams", "projections", "runtime", "domain"},
    "api": {"api", "runtime", "domain"},
    "streams": {"streams", "runtime", "domain"},
    "projections": {"projections", "runtime", "domain"},
    "runtime": {"runtime", "domain"},
    "domain": {"domain"},
}


def test_every_import_points_down_the_layers() -> None:
    wrong = sorted(f"{m} ({layer(m)}) imports {d} ({layer(d)})"
                   for m, deps in GRAPH.items() for d in deps
                   if layer(d) not in MAY_IMPORT[layer(m)])
    assert not wrong, "\n".join(wrong)


def test_the_package_roots_of_medialog_are_not_a_shortcut() -> None:
    """``medialog/__init__`` and each package's ``__init__`` import nothing that would pull a
    higher layer in through the back door."""
    for module in ("medialog", "medialog.runtime", "medialog.domain", "streams", "projections"):
        assert all(layer(d) in MAY_IMPORT[layer(module)] for d in GRAPH[module]), module


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in GRAPH[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_in_a_circle() -> None:
    assert _cycles() == []


@pytest.mark.parametrize("module", ["medialog.api.app", "medialog.bootstrap", "streams.app"])
def test_the_graph_sees_the_imports_it_should(module: str) -> None:
    """The contract is only as good as the graph: known arrows are found."""
    expected = {"medialog.api.app": "medialog.api.routes", "medialog.bootstrap": "streams.app",
                "streams.app": "medialog.kafka"}[module]
    assert expected in GRAPH[module]
