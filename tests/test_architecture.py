"""The import graph of monitor/: no cycle (not even a type-only one) and the one-way flow.

Read with `ast` from the sources, so every import counts: module level, inside a function,
and under `if TYPE_CHECKING:`. An edge goes to the module an import names (`from a.b import
c` is `a.b.c` when that is a module, else `a.b`). The flow it holds:
config -> scheduler -> scenario -> result -> enrichers -> sinks, with plug-ins at the side.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

Graph = dict[str, set[str]]


def _modules(root: Path, package: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in root.rglob("*.py"):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_graph(root: Path, package: str = "monitor") -> Graph:
    """Module -> the package's modules it imports (anywhere in its source)."""
    modules = _modules(root, package)
    graph: Graph = {name: set() for name in modules}
    for name, path in modules.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    stem = here[: len(here) - node.level + 1]
                    base = ".".join([*stem, base] if base else stem)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
                elif target == name and isinstance(node, ast.ImportFrom) and node.level == 0:
                    graph[name].add(target)  # a module importing itself is a cycle too
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected groups of more than one module, or a module importing itself (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph[v]:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


GRAPH = import_graph(REPO / "monitor")


def _inside(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _violations(
    sources: tuple[str, ...], forbidden: tuple[str, ...], allowed: frozenset[str] = frozenset()
) -> list[str]:
    return sorted(
        f"{m} imports {t}"
        for m, targets in GRAPH.items()
        if _inside(m, *sources)
        for t in targets
        if _inside(t, *forbidden) and (m, t) not in {tuple(a.split(" -> ")) for a in allowed}
    )


def test_the_graph_is_read_from_every_module() -> None:
    """Guards the guard: the reader sees the package and the edges the design rests on."""
    assert len(GRAPH) > 60
    assert "monitor.probes" in GRAPH["monitor.scenario.registry"]
    assert "monitor.scenario.registry" in GRAPH["monitor.sinks.metrics"]
    assert "monitor.results" in GRAPH["monitor.scenario.base"]


def test_no_import_cycle_among_monitor_modules() -> None:
    assert cycles(GRAPH) == []


def test_a_type_only_cycle_counts(tmp_path: Path) -> None:
    """A cycle hidden under TYPE_CHECKING or inside a function is still found."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import B\n")
    (package / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.c import C\nclass B: ...\n"
    )
    (package / "c.py").write_text("def f():\n    from . import a\n")
    (package / "d.py").write_text("import pkg.a\n")
    assert cycles(import_graph(package, "pkg")) == [["pkg.a", "pkg.b", "pkg.c"]]


RUNTIME = ("monitor.daemon", "monitor.jobs", "monitor.scheduler", "monitor.pipeline", "monitor.cli", "monitor.clients")


@pytest.mark.parametrize(
    ("sources", "forbidden", "allowed", "why"),
    [
        (
            ("monitor.sinks",),
            ("monitor.http", "monitor.alerting", "monitor.web", "monitor.probes", "monitor.scenario.runner", *RUNTIME),
            frozenset(),
            "a sink reads results: it never calls a monitored service, never feeds another part",
        ),
        (
            ("monitor.scenario",),
            ("monitor.probes", "monitor.sinks", "monitor.alerting", "monitor.web", "monitor.config", *RUNTIME),
            frozenset({"monitor.scenario.registry -> monitor.probes"}),
            "the machinery names no plug-in: only the registry reads the plug-in list",
        ),
        (
            ("monitor.probes",),
            (
                "monitor.sinks",
                "monitor.alerting",
                "monitor.web",
                "monitor.config",
                "monitor.scenario.registry",
                "monitor.scenario.runner",
                *RUNTIME,
            ),
            frozenset(),
            "a plug-in returns results: it never touches sinks, alerting, the web or the config",
        ),
        (
            ("monitor.http",),
            (
                "monitor.scenario",
                "monitor.probes",
                "monitor.sinks",
                "monitor.alerting",
                "monitor.web",
                "monitor.config",
            ),
            frozenset(),
            "the HTTP client knows no scenario and no service",
        ),
        (
            ("monitor.results", "monitor.events", "monitor.diagnosis"),
            (
                "monitor.probes",
                "monitor.scenario.registry",
                "monitor.sinks",
                "monitor.alerting",
                "monitor.http",
                *RUNTIME,
            ),
            frozenset(),
            "results and the generic diagnosis are data: they know no plug-in and no I/O",
        ),
        (
            ("monitor.web",),
            ("monitor.http", "monitor.probes", "monitor.scenario"),
            frozenset(),
            "the web endpoints show history: they never probe",
        ),
    ],
)
def test_one_way_flow(sources: tuple[str, ...], forbidden: tuple[str, ...], allowed: frozenset[str], why: str) -> None:
    assert _violations(sources, forbidden, allowed) == [], why
