#!/usr/bin/env python3
"""Print the import graph's circles and the runner's upward imports.

Reads every module under runner/src and operator/src with ``ast`` (nothing is
imported), counting every import statement of the project's own modules,
lazy ones inside functions and ``TYPE_CHECKING`` ones included. A circle is
a strongly connected set of modules. An upward import is one from a runner
module to a module of a higher layer in ``RUNNER_LAYERS`` (docs/architecture.md
describes the layers). Exits 1 if there is a circle or an unlayered module.

    .venv/bin/python hack/import_graph.py
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "runner" / "src", ROOT / "operator" / "src"]
RUNNER = "kubediffusers.runner"

# Top to bottom; a module belongs to the first layer with a prefix of its name
# (relative to kubediffusers.runner). Importing down or sideways is fine.
RUNNER_LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("entry points and dev tools", ("cli", "server", "openapi", "app", "dev")),
    ("http: routes, middleware, drain", ("routes", "auth", "middleware", "drain")),
    ("other APIs' models, defaults and statuses", ("compat",)),
    ("context", ("context",)),
    ("serving: model holder, worker, jobs, hardware", ("model", "worker", "jobs", "jobfiles", "hardware")),
    ("pipelines (torch)", ("pipelines", "optimizations", "hotpath", "feature_reuse", "transformer_cache", "encoder_offload", "adapters", "safety")),
    ("registry, request models, input checks", ("tasks", "families", "params", "inputs", "loras", "schedulers")),
    (
        "base: settings, errors, shared types, codecs, metrics, fetch",
        ("types", "errors", "settings", "images", "encoding", "video", "metrics", "logs", "fetch", "addons", "snapshots", "__init__"),
    ),
]


def modules() -> dict[str, Path]:
    found = {}
    for src in SOURCES:
        for path in src.rglob("*.py"):
            parts = list(path.relative_to(src).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod when there is one.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
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
                result.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def layer_of(name: str) -> int | None:
    rest = name.removeprefix(RUNNER).lstrip(".") or "__init__"
    for rank, (_, prefixes) in enumerate(RUNNER_LAYERS):
        if any(rest == p or rest.startswith(p + ".") for p in prefixes):
            return rank
    return None


def main() -> int:
    known = modules()
    graph = {name: imports_of(name, path, known) for name, path in known.items()}
    found = circles(graph)
    print(f"{len(known)} modules, {sum(map(len, graph.values()))} imports")
    print(f"circles: {len(found)}")
    for component in found:
        print("  " + " <-> ".join(component))
    runner = sorted(n for n in known if n == RUNNER or n.startswith(RUNNER + "."))
    unlayered = [n for n in runner if layer_of(n) is None]
    upward = []
    for name in runner:
        for target in sorted(graph[name]):
            low, high = layer_of(name), layer_of(target)
            if target.startswith(RUNNER) and low is not None and high is not None and high < low:
                upward.append((name, target))
    print(f"runner upward imports: {len(upward)}")
    for name, target in upward:
        print(f"  {name} -> {target}")
    for name in unlayered:
        print(f"  not in a layer: {name}")
    return 1 if found or unlayered else 0


if __name__ == "__main__":
    sys.exit(main())
