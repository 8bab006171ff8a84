"""Reading InferencePipeline manifests from files, with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .pipeline import Pipeline
from .spec import KIND, SpecError


def load_pipelines(path: str | Path, namespace: str = "default") -> list[Pipeline]:
    """Every InferencePipeline in a YAML file (other kinds are skipped)."""
    try:
        text = Path(path).read_text() if str(path) != "-" else __import__("sys").stdin.read()
        docs = [d for d in yaml.safe_load_all(text) if d]
    except OSError as exc:
        raise SpecError(f"{path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    pipelines = []
    for doc in docs:
        if not isinstance(doc, dict):
            raise SpecError(f"{path}: each YAML document must be a mapping")
        if doc.get("kind") != KIND:
            continue
        try:
            pipelines.append(Pipeline.from_manifest(doc, default_namespace=namespace))
        except SpecError as exc:
            raise SpecError(f"{path}: {(doc.get('metadata') or {}).get('name', '?')}: {exc}") from None
    if not pipelines:
        raise SpecError(f"{path}: no InferencePipeline in it")
    return pipelines


def dump_all(objects: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False)
