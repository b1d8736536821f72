"""The package's import structure, read from the source: no import cycle (module-level and lazy
imports alike), and the research-only code kept out of the runtime pipeline."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edgeprune"
# research/ may be used by the demo (it is built on Fashion-MNIST and the small source models)
RESEARCH_USERS = {"edgeprune.pipeline.demo"}


def _modules() -> dict[str, tuple[Path, bool]]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return mods


def import_graph() -> dict[str, set[str]]:
    """module -> the edgeprune modules it imports anywhere in its source (not its parent packages)."""
    mods = _modules()
    graph = {}
    for name, (path, is_package) in mods.items():
        package = name if is_package else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in mods else module for a in node.names]
            else:
                continue
            edges.update(t for t in targets if t in mods and t != name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, path)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [])):
            return found
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "edgeprune.pipeline.adapt" in graph["edgeprune.cli.adapt_command"]  # imported inside the command function
    assert "edgeprune.models.zoo" in graph["edgeprune.models.blocks"]  # from .zoo import ...


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_runtime_code_does_not_import_research():
    graph = import_graph()
    offenders = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                       if t.startswith("edgeprune.research") and not m.startswith("edgeprune.research")
                       and m not in RESEARCH_USERS)
    assert not offenders, offenders


# Sub-packages a lower layer must not import (the tree is the architecture): the model catalogue
# and the image reader know nothing of the pipeline; a scoring criterion nothing of distillation;
# the field loop (watch) sits above the pipeline and nothing below imports it.
FORBIDDEN = {
    "models": {"data", "pruning", "distill", "pipeline", "research", "latency", "watch"},
    "data": {"models", "pruning", "distill", "pipeline", "research", "latency", "deploy", "watch"},
    "pruning": {"distill", "pipeline", "research", "latency", "deploy", "watch"},
    "distill": {"pipeline", "research", "pruning", "watch"},
    "deploy": {"watch"},
    "latency": {"watch"},
    "pipeline": {"watch"},
}


def test_lower_layers_do_not_import_higher_ones():
    graph = import_graph()

    def layer(module: str) -> str:
        return module.split(".")[1] if module.count(".") else ""

    offenders = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                       if layer(t) in FORBIDDEN.get(layer(m), set()))
    assert not offenders, offenders
