"""The GPU machine's packages, for ``hack/gpu-check.sh --cpu`` (tests/runner/test_gpu_check.py).

That machine has Python, torch and torch's own dependencies, and nothing else
but what the check carries (hack/gpu-wheels.txt). Put on PYTHONPATH, this
makes every process the check starts (the bench, the runners) see only those:
importing a module of any other installed distribution fails as it would
there. Without it the check ran here with the whole development venv, and a
runner import the carried wheels lack (httptools, opentelemetry-api) would
only have shown on the GPU machine, in its one short window.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from packaging.requirements import Requirement


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_closure(roots: set[str], environment: dict[str, str] | None = None) -> set[str]:
    """``roots`` and what they require, transitively, as installed here, with the extras each
    requirement names; markers evaluated in ``environment`` (default: this Python's)."""
    seen: dict[str, set[str]] = {}
    todo: list[tuple[str, frozenset[str]]] = [(name, frozenset()) for name in roots]
    while todo:
        name, extras = todo.pop()
        key = _norm(name)
        if key in seen and extras <= seen[key]:
            continue
        seen[key] = seen.get(key, set()) | extras
        try:
            requires = importlib.metadata.requires(key) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here (another platform's): its own requirements are unknown
        for line in requires:
            requirement = Requirement(line)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({**(environment or {}), "extra": e}) for e in ("", *extras)):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return set(seen)


def allowed_distributions(listing: Path) -> set[str]:
    carried = {_norm(line.split()[0]) for line in listing.read_text().splitlines() if line.strip() and not line.startswith("#")}
    # The checkout itself is on PYTHONPATH there.
    return requirement_closure({"torch"}) | carried | {"kubediffusers-runner"}  # carried wheels install with --no-deps: the list itself must be complete


class GpuMachine(importlib.machinery.PathFinder):
    """The path finder, blind to the modules of distributions the GPU machine lacks: for them it
    finds nothing, as there (``importlib.util.find_spec`` says None, ``import`` raises)."""

    blocked: frozenset[str] = frozenset()

    @classmethod
    def find_spec(cls, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if name.partition(".")[0] in cls.blocked:
            return None
        return super().find_spec(name, path, target)


def blocked_modules(distributions: set[str]) -> frozenset[str]:
    owners = importlib.metadata.packages_distributions()
    return frozenset(module for module, dists in owners.items() if not {_norm(d) for d in dists} & distributions)


_listing = os.environ.get("GPU_MACHINE_WHEELS")
if _listing:
    GpuMachine.blocked = blocked_modules(allowed_distributions(Path(_listing)))
    sys.meta_path[:] = [GpuMachine if finder is importlib.machinery.PathFinder else finder for finder in sys.meta_path]
