"""Server-side apply for the emulator, after Kubernetes' structured-merge-diff (SMD).

The merge rules come from the real OpenAPI schemas that ``kubernetes-validate``
ships (the API server's own, as JSON Schema): ``x-kubernetes-list-type`` (map: items
merged by ``x-kubernetes-list-map-keys``; set; atomic, the default for a list
without one), ``x-kubernetes-map-type: atomic`` (replaced whole, e.g. nodeSelector,
LabelSelector), and granular structs and maps otherwise.

Field sets are kept as sets of paths and written to ``metadata.managedFields`` in
the real ``FieldsV1`` encoding (``f:name``, ``k:{"name":"x"}`` with ``.`` for the item
itself, ``v:<json>``), one entry per (manager, operation, subresource), as the API
server keys them. An apply sets what its configuration holds and removes a field it
applied before and no longer does only when no other entry owns that field (or
something under it); other writes (POST, PUT, merge and JSON patches) are ``Update``
operations that take over the fields they change.

What is simplified: the fields of ``metadata`` tracked are labels, annotations,
ownerReferences and finalizers; status (written through the status subresource) is
not tracked; versions are not converted (one apiVersion per kind).
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterable
from pathlib import Path as FilePath
from typing import Any

import kubernetes_validate
import yaml

Element = tuple[str, str]  # ("f", name) | ("k", key-json) | ("v", value-json)
Path = tuple[Element, ...]
Managers = dict[tuple[str, str, str], set[Path]]  # (manager, operation, subresource) -> paths

SCHEMA_VERSION = "1.37"
DEFINITIONS = {
    "Deployment": "io.k8s.api.apps.v1.Deployment",
    "Service": "io.k8s.api.core.v1.Service",
    "PersistentVolumeClaim": "io.k8s.api.core.v1.PersistentVolumeClaim",
    "NetworkPolicy": "io.k8s.api.networking.v1.NetworkPolicy",
    "Pod": "io.k8s.api.core.v1.Pod",
    "StorageClass": "io.k8s.api.storage.v1.StorageClass",
    "ResourceQuota": "io.k8s.api.core.v1.ResourceQuota",
}
TRACKED_METADATA = ("labels", "annotations", "ownerReferences", "finalizers")
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"


@functools.cache
def _defs() -> dict[str, Any]:
    base = FilePath(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    folder = next(p for p in sorted(base.iterdir()) if p.name == f"v{SCHEMA_VERSION}.0-local")
    defs: dict[str, Any] = json.loads((folder / "_definitions.json").read_text())["$defs"]
    return defs


def resolve(node: Any) -> dict[str, Any]:
    """The schema node with its $ref followed (``{}``: unknown, treated as atomic)."""
    while isinstance(node, dict) and "$ref" in node:
        node = _defs()[node["$ref"].rsplit("/", 1)[-1]]
    return node if isinstance(node, dict) else {}


def is_quantity(node: Any) -> bool:
    return isinstance(node, dict) and node.get("$ref", "").endswith("/" + QUANTITY)


# Kinds defined by CRDs: their openAPIV3Schema, copied from the kedacore repositories (see the files).
CRD_SCHEMAS = {
    "ScaledObject": "keda-scaledobjects.yaml",
    "HTTPScaledObject": "keda-http-httpscaledobjects.yaml",
}


@functools.cache
def _crd_schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = yaml.safe_load((FilePath(__file__).parent / "data" / CRD_SCHEMAS[kind]).read_text())["openAPIV3Schema"]
    # A CRD's schema says only "metadata: object"; the API server treats it as ObjectMeta.
    properties = dict(schema["properties"], metadata={"$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"})
    return dict(schema, properties=properties)


def schema_of(kind: str) -> dict[str, Any]:
    if kind in CRD_SCHEMAS:
        return _crd_schema(kind)
    return resolve({"$ref": "#/$defs/" + DEFINITIONS[kind]})


def child(node: dict[str, Any], key: str) -> Any:
    node = resolve(node)
    props = node.get("properties")
    if props is not None:
        return props.get(key, {})
    extra = node.get("additionalProperties")
    return extra if isinstance(extra, dict) else {}


def _shape(node: dict[str, Any]) -> str:
    """struct | map | atomic | list-map | list-set | scalar."""
    types = node.get("type") or []
    types = [types] if isinstance(types, str) else types
    if "array" in types:
        kind = node.get("x-kubernetes-list-type", "atomic")
        return {"map": "list-map", "set": "list-set"}.get(kind, "atomic")
    if "properties" in node or "additionalProperties" in node:
        if node.get("x-kubernetes-map-type") == "atomic":
            return "atomic"
        return "struct" if "properties" in node else "map"
    return "scalar"


def _key_json(item: dict[str, Any], keys: Iterable[str]) -> str:
    return json.dumps({k: item[k] for k in sorted(keys) if k in item}, separators=(",", ":"), sort_keys=True)


def _value_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


# ---- field sets


def field_set(obj: dict[str, Any], kind: str) -> set[Path]:
    """Every field ``obj`` sets, as SMD counts them (leaves, list-map items, set items)."""
    out: set[Path] = set()
    root = schema_of(kind)
    meta = obj.get("metadata") or {}
    for key in TRACKED_METADATA:
        if key in meta:
            _fields(meta[key], child(child(root, "metadata"), key), (("f", "metadata"), ("f", key)), out)
    if "spec" in obj:
        _fields(obj["spec"], child(root, "spec"), (("f", "spec"),), out)
    for key in ("data", "stringData", "type"):  # the few non-spec top-level fields of the kinds here
        if key in obj and "spec" not in obj:
            _fields(obj[key], child(root, key), (("f", key),), out)
    return out


def _fields(value: Any, node: Any, prefix: Path, out: set[Path]) -> None:
    node = resolve(node)
    shape = _shape(node)
    if shape in ("struct", "map") and isinstance(value, dict) and value:
        for key, sub in value.items():
            _fields(sub, child(node, key), (*prefix, ("f", key)), out)
    elif shape == "list-map" and isinstance(value, list) and value:
        keys = node.get("x-kubernetes-list-map-keys") or []
        for item in value:
            path = (*prefix, ("k", _key_json(item, keys)))
            out.add(path)
            if isinstance(item, dict):
                for key, sub in item.items():
                    _fields(sub, child(node["items"], key), (*path, ("f", key)), out)
    elif shape == "list-set" and isinstance(value, list) and value:
        for item in value:
            out.add((*prefix, ("v", _value_json(item))))
    else:
        out.add(prefix)


_MISSING = object()


def get(obj: Any, path: Path) -> Any:
    for kind, name in path:
        if kind == "f":
            if not isinstance(obj, dict) or name not in obj:
                return _MISSING
            obj = obj[name]
        else:
            match = _find(obj, kind, name)
            if match is None:
                return _MISSING
            obj = obj[match]
    return obj


def _find(items: Any, kind: str, name: str) -> int | None:
    if not isinstance(items, list):
        return None
    if kind == "v":
        wanted = json.loads(name)
        return next((i for i, item in enumerate(items) if item == wanted), None)
    key = json.loads(name)
    return next((i for i, item in enumerate(items) if isinstance(item, dict) and all(item.get(k) == v for k, v in key.items())), None)


def remove(obj: Any, path: Path) -> None:
    """Delete the field at ``path``, then any map the removal left empty."""
    parents: list[tuple[Any, Any]] = []
    node = obj
    for kind, name in path[:-1]:
        index: Any = name if kind == "f" else _find(node, kind, name)
        if index is None or (kind == "f" and (not isinstance(node, dict) or name not in node)):
            return
        parents.append((node, index))
        node = node[index]
    kind, name = path[-1]
    if kind == "f":
        if isinstance(node, dict):
            node.pop(name, None)
    else:
        found = _find(node, kind, name)
        if found is not None:
            del node[found]
    for parent, index in reversed(parents):
        if parent[index] in ({}, []):
            del parent[index]
        else:
            break


# ---- merging


def merge(live: Any, config: Any, node: Any) -> Any:
    node = resolve(node)
    shape = _shape(node)
    if shape in ("struct", "map") and isinstance(live, dict) and isinstance(config, dict):
        result = dict(live)
        for key, value in config.items():
            result[key] = merge(live[key], value, child(node, key)) if key in live else copy.deepcopy(value)
        return result
    if shape == "list-map" and isinstance(live, list) and isinstance(config, list):
        keys = node.get("x-kubernetes-list-map-keys") or []
        by_key = {_key_json(item, keys): item for item in live if isinstance(item, dict)}
        merged = [merge(by_key[k], item, node["items"]) if (k := _key_json(item, keys)) in by_key else copy.deepcopy(item) for item in config]
        applied = {_key_json(item, keys) for item in config}
        return merged + [item for item in live if _key_json(item, keys) not in applied]
    if shape == "list-set" and isinstance(live, list) and isinstance(config, list):
        return list(config) + [item for item in live if item not in config]
    return copy.deepcopy(config)


def merge_object(live: dict[str, Any], config: dict[str, Any], kind: str) -> dict[str, Any]:
    return merge(live, config, schema_of(kind))


# ---- managedFields encoding


def decode_managers(meta: dict[str, Any]) -> Managers:
    managers: Managers = {}
    for entry in meta.get("managedFields") or []:
        key = (entry.get("manager", ""), entry.get("operation", ""), entry.get("subresource", ""))
        managers.setdefault(key, set()).update(_decode(entry.get("fieldsV1") or {}, ()))
    return managers


def _decode(tree: dict[str, Any], prefix: Path) -> set[Path]:
    out: set[Path] = set()
    for key, sub in tree.items():
        if key == ".":
            out.add(prefix)
            continue
        kind, _, name = key.partition(":")
        path = (*prefix, (kind, name))
        if sub:
            out |= _decode(sub, path)
        else:
            out.add(path)
    return out


def encode_managers(managers: Managers, api_version: str, now: str) -> list[dict[str, Any]]:
    entries = []
    for (manager, operation, subresource), paths in managers.items():
        if not paths:
            continue
        entry = {"manager": manager, "operation": operation, "apiVersion": api_version, "time": now, "fieldsType": "FieldsV1", "fieldsV1": _encode(paths)}
        if subresource:
            entry["subresource"] = subresource
        entries.append(entry)
    return entries


def _encode(paths: set[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for kind, name in path:
            node = node.setdefault(f"{kind}:{name}", {})
        if path and path[-1][0] == "k":
            node["."] = {}
    return tree


def owners_of(managers: Managers, path: Path) -> list[str]:
    return [m for (m, _, _), paths in managers.items() if path in paths]


def describe(path: Path) -> str:
    return "".join(f".{name}" if kind == "f" else f"[{name}]" for kind, name in path)
