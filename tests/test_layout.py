"""The package's shape: no import cycle, the ground layer imports nothing of muso, the loop is imported by the
commands that train only, and the parameterization core stays pure."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "muso_cli"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """muso module → the muso modules it imports (at module level or inside functions)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    root = ".".join(base + ([node.module] if node.module else []))
                else:
                    root = node.module or ""
                targets = [f"{root}.{a.name}" if f"{root}.{a.name}" in modules else root for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def test_the_import_graph_has_no_cycle():
    graph, state, cycles = import_graph(), {}, []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_the_ground_layer_and_the_core_import_no_machinery():
    graph = import_graph()
    assert graph["muso_cli.errors"] == set()
    assert graph["muso_cli.structure"] == set()  # roles and blocks from a model's structure: torch only
    assert graph["muso_cli.parametrize"] <= {"muso_cli.errors", "muso_cli.structure"}  # pure: no CLI, config, logging or launchers


def test_the_training_loop_is_imported_by_the_commands_that_train_only():
    importers = {m for m, deps in import_graph().items() if "muso_cli.train" in deps}
    assert importers == {"muso_cli.trainers.builtin"}, importers  # the built-in trainer, behind the trainer seam
