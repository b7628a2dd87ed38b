"""The house's rules, read from the code: imports run downwards, only pipelines/ and assets/ import Dagster, the
packages below the training code import no torch, and no module imports itself through others (function-level
imports count: a lazy import hides a cycle, it does not remove it), and no function in product code is longer
than MAX_LINES."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipelines", "cli", "assets", "ingest", "critic", "nima_train", "warehouse", "common")
# What each package may import of the others (docs/architecture.md, "Layers"); nothing imports cli but tests.
MAY_IMPORT = {
    "pipelines": {"assets", "ingest", "critic", "warehouse", "nima_train", "common"},
    "cli": {"critic", "ingest", "nima_train", "warehouse", "common"},
    "assets": {"ingest", "critic", "warehouse", "nima_train", "common"},
    "ingest": {"warehouse", "common"},
    "critic": {"nima_train", "warehouse", "common"},
    "nima_train": {"common"},
    "warehouse": set(),
    "common": set(),
}
DAGSTER_FREE = ("cli", "ingest", "critic", "nima_train", "warehouse", "common")
# Data stages and their helpers run where no GPU stack is installed: not even a function here imports torch.
TORCH_FREE = ("ingest", "warehouse", "common")
TORCH = ("torch", "torchvision")
MAX_LINES = 60


def _imports() -> dict[str, set[str]]:
    """Module name -> the project modules it imports anywhere in its body."""
    graph = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            names = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module)
                    names.update(f"{node.module}.{a.name}" for a in node.names)
            graph[module] = names
    return graph


def test_packages_import_only_the_layers_below_them():
    wrong = []
    for module, names in _imports().items():
        package = module.split(".")[0]
        for name in names:
            top = name.split(".")[0]
            if top in PACKAGES and top != package and top not in MAY_IMPORT[package]:
                wrong.append(f"{module} imports {name}")
            if package in DAGSTER_FREE and top in ("dagster", "dagster_graphql", "dagster_webserver"):
                wrong.append(f"{module} imports {name}")
    assert not wrong, "\n".join(sorted(wrong))


def test_data_stages_and_shared_helpers_never_import_torch():
    wrong = [f"{module} imports {name}" for module, names in _imports().items() for name in names
             if module.split(".")[0] in TORCH_FREE and name.split(".")[0] in TORCH]
    assert not wrong, "\n".join(sorted(wrong))


def test_no_module_imports_itself_through_others():
    graph = _imports()
    edges = {m: {n for n in names if n in graph and n != m} for m, names in graph.items()}
    cycles = []

    def visit(module: str, path: list[str], done: set[str]) -> None:
        for nxt in sorted(edges[module]):
            if nxt in path:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in done:
                visit(nxt, path + [nxt], done)
        done.add(module)

    done: set[str] = set()
    for module in sorted(edges):
        if module not in done:
            visit(module, [module], done)
    assert not cycles, "\n".join(sorted(set(cycles)))


def _long_functions() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_LINES:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_in_product_code_is_longer_than_60_lines():
    assert _long_functions() == []
