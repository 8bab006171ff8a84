"""KMock's Kubernetes emulator made as strict as a real API server where the operator relies on it.

KMock stores, merges, serves and streams objects. On top of that, for the kinds the
operator writes (Deployment, Service, PersistentVolumeClaim, NetworkPolicy, and KEDA's
ScaledObject and HTTPScaledObject once ``register_keda`` installs their CRDs) and for
Pods, this emulator does what a real API server does (see docs/operator.md, "The
emulator"):

* 404 for resources nobody installed (bare KMock stores whatever is posted), e.g.
  KEDA's until ``register_keda`` adds them;
* server-side apply with field managers keyed by (manager, operation), list-map merge
  keys and atomic maps from the real OpenAPI schemas (``smd.py``; for KEDA's kinds,
  the schemas of their CRDs from the kedacore repositories); POST, merge and
  JSON patches are recorded as ``Update`` managers; an apply patch creates a missing
  object; ``metadata.managedFields`` set by a request are taken as given (what
  kubectl's client-to-server-side migration relies on);
* defaulting of the fields that matter here (Deployment strategy and progress
  deadline, ports' protocol, the default StorageClass), pruning of unknown fields,
  canonical quantities (``1024Mi`` -> ``1Gi``) and no empty strings, lists or maps
  when read back, as the API server's Go types serialise them;
* validation: Deployment ``spec.selector`` is immutable and must match the template,
  ``rollingUpdate`` is forbidden with ``Recreate``, Service ports are unique, an
  ExternalName Service has no cluster IP (a type change drops or allocates it); a claim's
  spec is immutable except a storage increase on a bound claim whose StorageClass
  allows expansion (422/403 with the real messages);
* admission: ResourceQuota (pods whose containers lack the requests or limits a quota
  in the namespace counts are rejected; for a Deployment this is reported in its
  status the way the ReplicaSet controller does, ``ReplicaFailure``/``FailedCreate``);
  with ``rbac`` set, the operator's requests (those carrying ``operator_token``) are
  authorised against those rules, including OwnerReferencesPermissionEnforcement;
* uid/generation/creationTimestamp stamping, generateName, and a garbage collector
  that deletes objects whose owners are all gone.

What stays out: optimistic concurrency (resourceVersion stays "1"), CRD schema
validation, and the controllers and kubelet (tests write pods and statuses through
the API in their place).
"""

from __future__ import annotations

import copy
import datetime
import json
import re
import uuid
from collections.abc import Mapping
from decimal import ROUND_CEILING, Decimal
from typing import Any

import jsonpatch
import kmock
import yaml
from kmock._internal import dicts, enums
from kubernetes.utils.quantity import parse_quantity

from tests.operator import smd

CRD_RESOURCE = "kubediffusers.io/v1alpha1/inferencepipelines"
# plural -> (kind, apiVersion) of the kinds emulated strictly
STRICT = {
    "deployments": ("Deployment", "apps/v1"),
    "services": ("Service", "v1"),
    "persistentvolumeclaims": ("PersistentVolumeClaim", "v1"),
    "networkpolicies": ("NetworkPolicy", "networking.k8s.io/v1"),
    "pods": ("Pod", "v1"),
    # Served only once register_keda installs their CRDs (404 before, like any unserved resource).
    "scaledobjects": ("ScaledObject", "keda.sh/v1alpha1"),
    "httpscaledobjects": ("HTTPScaledObject", "http.keda.sh/v1alpha1"),
}
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
OWNER_PLURALS = {"InferencePipeline": ("kubediffusers.io", "inferencepipelines")}


def clone(obj: Any) -> Any:
    """A deep copy of JSON data (several times faster than copy.deepcopy; the storm test writes thousands)."""
    return json.loads(json.dumps(obj))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiReject(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


def invalid(kind: str, name: str, detail: str) -> ApiReject:
    group = {"Deployment": ".apps", "NetworkPolicy": ".networking.k8s.io"}.get(kind, "")
    return ApiReject(422, "Invalid", f'{kind}{group} "{name}" is invalid: {detail}')


def forbidden(plural: str, name: str, detail: str) -> ApiReject:
    return ApiReject(403, "Forbidden", f'{plural} "{name}" is forbidden: {detail}')


# ---- quantities, as apimachinery's resource.Quantity prints them

_DECIMAL_SUFFIX = {-9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P", 18: "E"}
_BINARY_SUFFIX = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]


def canonical_quantity(raw: Any) -> str:
    text = str(raw).strip()
    value = Decimal(str(parse_quantity(text)))
    binary = re.search(r"[KMGTPE]i$", text) is not None
    exponent_form = re.search(r"[eE]", text) is not None
    if (binary and -1024 < value < 1024) or value != value.to_integral_value():
        binary = False  # apimachinery prints small and fractional binary values as decimal
    if binary:
        for power in range(len(_BINARY_SUFFIX) - 1, -1, -1):
            if value % (1024**power) == 0:
                return f"{int(value / (1024**power))}{_BINARY_SUFFIX[power]}"
    nanos = (value * 10**9).to_integral_value(rounding=ROUND_CEILING)  # rounded up to 1n, as the API server does
    if nanos == 0:
        return "0"
    exponent = 18
    while exponent > -9 and nanos % (10 ** (exponent + 9)) != 0:
        exponent -= 3
    mantissa = int(nanos / 10 ** (exponent + 9))
    if exponent_form:
        return f"{mantissa}e{exponent}" if exponent else str(mantissa)
    return f"{mantissa}{_DECIMAL_SUFFIX[exponent]}"


def quantity_value(raw: Any) -> Decimal:
    return Decimal(str(parse_quantity(str(raw))))


# ---- read-back form


def normalize(value: Any, node: Any) -> Any:
    """As the API server stores and returns it: unknown fields pruned, Go's omitempty, canonical quantities."""
    if smd.is_quantity(node) and not isinstance(value, dict | list) and value is not None:
        return canonical_quantity(value)
    node = smd.resolve(node)
    if isinstance(value, dict):
        props = node.get("properties")
        if props is None:
            extra = node.get("additionalProperties")
            return {k: normalize(v, extra) if isinstance(extra, dict) else v for k, v in value.items()}
        out = {}
        for key, sub in value.items():
            if key not in props:
                continue  # pruned
            sub = normalize(sub, props[key])
            sub_node = smd.resolve(props[key])
            if sub is None or sub == "" or sub == [] or (sub == {} and "properties" not in sub_node):
                continue  # omitempty: empty strings, lists and maps are not returned
            out[key] = sub
        return out
    if isinstance(value, list):
        return [normalize(item, node.get("items")) for item in value]
    return value


# ---- defaulting (the fields that matter here)


def _default_containers(pod_spec: dict[str, Any]) -> None:
    for container in (pod_spec.get("initContainers") or []) + (pod_spec.get("containers") or []):
        for port in container.get("ports") or []:
            port.setdefault("protocol", "TCP")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        image = str(container.get("image") or "")
        container.setdefault("imagePullPolicy", "Always" if image.endswith(":latest") or ":" not in image.rsplit("/", 1)[-1] else "IfNotPresent")
        resources = container.get("resources") or {}
        # Requests default to the limits where only limits are given.
        for key, value in (resources.get("limits") or {}).items():
            resources.setdefault("requests", {}).setdefault(key, value)
    pod_spec.setdefault("restartPolicy", "Always")
    pod_spec.setdefault("dnsPolicy", "ClusterFirst")
    pod_spec.setdefault("schedulerName", "default-scheduler")
    pod_spec.setdefault("terminationGracePeriodSeconds", 30)


def apply_defaults(kind: str, obj: dict[str, Any], storage_classes: list[dict[str, Any]]) -> None:
    spec = obj.setdefault("spec", {})
    if kind == "Deployment":
        spec.setdefault("replicas", 1)
        spec.setdefault("progressDeadlineSeconds", 600)
        spec.setdefault("revisionHistoryLimit", 10)
        strategy = spec.setdefault("strategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            rolling.setdefault("maxSurge", "25%")
            rolling.setdefault("maxUnavailable", "25%")
        _default_containers(((spec.get("template") or {}).get("spec")) or {})
    elif kind == "Pod":
        _default_containers(spec)
    elif kind == "Service":
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
    elif kind == "PersistentVolumeClaim":
        spec.setdefault("volumeMode", "Filesystem")


def default_on_create(kind: str, obj: dict[str, Any], storage_classes: list[dict[str, Any]]) -> None:
    spec = obj.setdefault("spec", {})
    if kind == "Service" and spec.get("type", "ClusterIP") != "ExternalName":
        spec.setdefault("clusterIP", f"10.96.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}")
    if kind == "PersistentVolumeClaim" and "storageClassName" not in spec:
        # The DefaultStorageClass admission plugin.
        default = next((c for c in storage_classes if ((c.get("metadata") or {}).get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"), None)
        if default is not None:
            spec["storageClassName"] = default["metadata"]["name"]


def change_service_type(new: dict[str, Any], live: dict[str, Any]) -> None:
    """What the API server does when an update changes a Service's type (its dropTypeDependentFields and IP allocator).

    To ExternalName: the cluster IP it allocated goes (unless the request set another one,
    which validation then refuses). From ExternalName: a cluster IP is allocated.
    """
    spec, old = new.setdefault("spec", {}), live.get("spec") or {}
    was_external, is_external = old.get("type") == "ExternalName", spec.get("type", "ClusterIP") == "ExternalName"
    if is_external and not was_external and spec.get("clusterIP") == old.get("clusterIP"):
        spec.pop("clusterIP", None)
        spec.pop("clusterIPs", None)
    elif was_external and not is_external and not spec.get("clusterIP"):
        spec["clusterIP"] = f"10.96.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"


# ---- validation


def validate(kind: str, new: dict[str, Any], old: dict[str, Any] | None, storage_classes: list[dict[str, Any]]) -> None:
    name = new["metadata"]["name"]
    spec = new.get("spec") or {}
    if kind == "Deployment":
        selector = spec.get("selector") or {}
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
            raise invalid(kind, name, "spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`")
        if old is not None and (old.get("spec") or {}).get("selector") != selector:
            raise invalid(kind, name, f"spec.selector: Invalid value: {json.dumps(selector)}: field is immutable")
        strategy = spec.get("strategy") or {}
        if strategy.get("type") == "Recreate" and "rollingUpdate" in strategy:
            raise invalid(kind, name, "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'")
    elif kind == "Service":
        seen_names: set[str] = set()
        seen_ports: set[tuple[Any, Any]] = set()
        for i, port in enumerate(spec.get("ports") or []):
            if port.get("name") in seen_names:
                raise invalid(kind, name, f'spec.ports[{i}].name: Duplicate value: "{port["name"]}"')
            if (port.get("port"), port.get("protocol")) in seen_ports:
                raise invalid(kind, name, f"spec.ports[{i}]: Duplicate value: {json.dumps({'port': port.get('port'), 'protocol': port.get('protocol')})}")
            seen_names.add(port.get("name"))
            seen_ports.add((port.get("port"), port.get("protocol")))
        if len(spec.get("ports") or []) > 1 and any(not p.get("name") for p in spec["ports"]):
            raise invalid(kind, name, "spec.ports[0].name: Required value")
        if spec.get("type") == "ExternalName":
            if spec.get("clusterIP") or spec.get("clusterIPs"):
                raise invalid(kind, name, "spec.clusterIPs: Forbidden: may not be set for ExternalName services")
            if not spec.get("externalName"):
                raise invalid(kind, name, "spec.externalName: Required value")
    elif kind == "PersistentVolumeClaim":
        for mode in spec.get("accessModes") or []:
            if mode == "ReadWriteOncePod" and len(spec["accessModes"]) > 1:
                raise invalid(kind, name, "spec.accessModes: Forbidden: may not use ReadWriteOncePod with other access modes")
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
        if storage is None:
            raise invalid(kind, name, "spec.resources[storage]: Required value")
        if old is not None:
            _validate_claim_update(name, new, old, storage_classes)


def _validate_claim_update(name: str, new: dict[str, Any], old: dict[str, Any], storage_classes: list[dict[str, Any]]) -> None:
    def without_storage(spec: Mapping[str, Any]) -> dict[str, Any]:
        spec = copy.deepcopy(dict(spec))
        spec.pop("volumeAttributesClassName", None)
        ((spec.get("resources") or {}).get("requests") or {}).pop("storage", None)
        return spec

    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    immutable = "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"
    if without_storage(old_spec) != without_storage(new_spec):
        raise invalid("PersistentVolumeClaim", name, immutable)
    before = quantity_value(old_spec["resources"]["requests"]["storage"])
    after = quantity_value(new_spec["resources"]["requests"]["storage"])
    if after == before:
        return
    if (old.get("status") or {}).get("phase") != "Bound":
        raise invalid("PersistentVolumeClaim", name, immutable)
    if after < before:
        raise invalid("PersistentVolumeClaim", name, "spec.resources.requests.storage: Forbidden: field can not be less than previous value")
    cls = next((c for c in storage_classes if c["metadata"]["name"] == old_spec.get("storageClassName")), None)
    if cls is None or not cls.get("allowVolumeExpansion"):
        # The PersistentVolumeClaimResize admission plugin.
        raise forbidden(
            "persistentvolumeclaims", name, "only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize"
        )


# ---- admission: ResourceQuota


def quota_violation(pod_spec: Mapping[str, Any], quotas: list[dict[str, Any]]) -> str | None:
    """The ResourceQuota admission plugin's complaint about a pod, or None."""
    for quota in quotas:
        hard = ((quota.get("spec") or {}).get("hard")) or {}
        needed = []
        for resource in ("cpu", "memory"):
            for scope, keys in (("requests", (resource, f"requests.{resource}")), ("limits", (f"limits.{resource}",))):
                if any(k in hard for k in keys):
                    missing = [
                        c["name"]
                        for c in (pod_spec.get("initContainers") or []) + (pod_spec.get("containers") or [])
                        if resource not in ((c.get("resources") or {}).get(scope) or {})
                    ]
                    if missing:
                        needed.append(f"{scope}.{resource} for: {','.join(missing)}")
        if needed:
            return f"failed quota: {quota['metadata']['name']}: must specify {'; '.join(sorted(needed))}"
    return None


# ---- authorisation


def allowed(rules: list[dict[str, Any]], verb: str, group: str, resource: str) -> bool:
    return any(group in r.get("apiGroups", []) and resource in r.get("resources", []) and verb in r.get("verbs", []) for r in rules)


def selects(selector: str | None, obj: Mapping[str, Any]) -> bool:
    """Whether a label selector (``a=b,c!=d,e in (f,g),h notin (i),j,!k``) selects ``obj``."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in re.findall(r"[^,(]+(?:\([^)]*\))?", selector or ""):
        term = term.strip()
        if not term:
            continue
        if match := re.fullmatch(r"([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)", term):
            key, op, values = match.group(1), match.group(2), {v.strip() for v in match.group(3).split(",")}
            if (op == "in") != (key in labels and labels[key] in values):
                return False
        elif "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class FakeCluster(kmock.KubernetesEmulator):
    """Set ``rbac`` (a list of PolicyRules) to authorise requests carrying ``operator_token`` against it."""

    operator_token: str = "test-token"
    rbac: list[dict[str, Any]] | None = None

    async def _handle(self, request: kmock.Request) -> Any:
        if request.resource is not None and request.resource.plural and request.resource not in self._resources:  # declared ones only
            # The API server's answer for a resource no CRD or built-in defines.
            return await self._render_error(kmock.KubernetesError(status=404, reason="NotFound", message="the server could not find the requested resource"))
        data = request.data
        plural = request.resource.plural if request.resource is not None else None
        if plural in STRICT and request.action in (enums.action.CREATE, enums.action.UPDATE) and request.subresource in (None, "status"):
            try:
                await self._strict_write(request, plural)
            except ApiReject as exc:
                return await self._render_error(kmock.KubernetesError(status=exc.status, reason=exc.reason, message=exc.message))
            return await super(kmock.KubernetesEmulator, self)._handle(request)
        if request.resource is not None and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if request.action == enums.action.CREATE:
                self._stamp(meta)
            elif request.action == enums.action.UPDATE and request.name:
                key = (request.resource, request.namespace, request.name)
                if key in self._objects and not self._objects[key].deleted:
                    current = self._objects[key].raw
                    merged = dicts.patch_dict(current, data)
                    if request.subresource != "status" and merged.get("spec") != current.get("spec"):
                        meta["generation"] = int((current.get("metadata") or {}).get("generation") or 1) + 1
        response = await super()._handle(request)
        if request.action in (enums.action.DELETE, enums.action.UPDATE):
            await self._collect_garbage()
        return response

    @staticmethod
    def _stamp(meta: dict[str, Any]) -> None:
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("generation", 1)
        # Constant: kopf's JSON patches "test" it; bumping it would need the full
        # optimistic-concurrency dance (409 + re-read) that KMock does not emulate.
        meta["resourceVersion"] = "1"
        meta.setdefault("creationTimestamp", _now())

    # ---- label selectors and paging on lists and watches, as the API server does them

    async def _serve_list(self, request: kmock.Request) -> Any:
        payload = await super()._serve_list(request)
        items = [o for o in payload["items"] if selects(request.params.get("labelSelector"), o)]
        limit = int(request.params.get("limit") or 0)
        offset = int(request.params.get("continue") or 0)
        if limit > 0:
            payload["metadata"] = dict(payload["metadata"], **({"continue": str(offset + limit)} if offset + limit < len(items) else {}))
            items = items[offset : offset + limit]
        payload["items"] = items
        return payload

    async def _serve_watch(self, request: kmock.Request) -> Any:
        selector = request.params.get("labelSelector")
        async for event in super()._serve_watch(request):
            if not isinstance(event, dict) or selects(selector, event.get("object") or {}):
                yield event

    def _live(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        group_version, _, plural = resource.rpartition("/")
        group = group_version.rpartition("/")[0] if "/" in group_version else ""
        return [
            o.raw
            for (res, ns, _), o in list(self._objects.items())
            if res.plural == plural and (res.group or "") == group and (namespace is None or ns == namespace) and not o.deleted
        ]

    # ---- the strict write path

    async def _strict_write(self, request: kmock.Request, plural: str) -> None:
        kind, api_version = STRICT[plural]
        content_type = request.headers.get("Content-Type", "")
        manager = request.params.get("fieldManager") or request.headers.get("User-Agent", "unknown").split("/")[0]
        body = request.data
        if content_type.startswith("application/apply-patch") and body is None:
            body = yaml.safe_load(request.text)
        async with self._lock:
            namespace = request.namespace or ((body or {}).get("metadata") or {}).get("namespace")
            name = request.name or ((body or {}).get("metadata") or {}).get("name")
            key = (request.resource, namespace, name)
            stored = self._objects[key] if key in self._objects else None  # noqa: SIM401  (ObjectsArray has no .get)
            live = None if stored is None or stored.deleted else clone(stored.raw)
            classes = self._live("storage.k8s.io/v1/storageclasses")
            if request.subresource == "status":
                if live is None:
                    raise ApiReject(404, "NotFound", f'{plural} "{name}" not found')
                new = copy.deepcopy(live)
                new["status"] = dicts.patch_dict(live.get("status") or {}, (body or {}).get("status") or {})
                await self._store(request, key, normalize(new, smd.schema_of(kind)), created=False)
                return
            if not isinstance(body, dict) and not (isinstance(body, list) and live is not None):
                raise ApiReject(400, "BadRequest", "the request body is not an object")
            if request.action == enums.action.CREATE and live is not None:
                raise ApiReject(409, "AlreadyExists", f'{plural} "{name}" already exists')
            if request.action == enums.action.UPDATE and live is None and not content_type.startswith("application/apply-patch"):
                raise ApiReject(404, "NotFound", f'{plural} "{name}" not found')
            managers = smd.decode_managers((live or {}).get("metadata") or {})
            if content_type.startswith("application/apply-patch"):
                assert isinstance(body, dict)
                if body.get("kind") != kind or body.get("apiVersion") != api_version:
                    raise ApiReject(400, "BadRequest", f"apply patch must carry apiVersion {api_version} and kind {kind}")
                if request.params.get("fieldManager") is None:
                    raise ApiReject(400, "BadRequest", "PATCH requests of type apply must have a fieldManager")
                new = self._apply(kind, live, body, manager, managers, force=request.params.get("force") == "true")
            else:
                if live is None:
                    new = copy.deepcopy(body)
                elif isinstance(body, list):
                    try:
                        new = jsonpatch.apply_patch(live, body)
                    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                        raise ApiReject(422, "Invalid", f"the JSON patch could not be applied: {exc}") from None
                else:
                    new = dict(dicts.patch_dict(live, body))
                if live is not None:
                    new["status"] = live.get("status")  # the main resource ignores status changes
            meta = new.setdefault("metadata", {})
            meta["name"], meta["namespace"] = name, namespace
            if live is None:
                self._stamp(meta)
                default_on_create(kind, new, classes)
            else:
                for field in ("uid", "creationTimestamp", "resourceVersion", "generation"):
                    if field in live["metadata"]:
                        meta[field] = live["metadata"][field]
            apply_defaults(kind, new, classes)
            if kind == "Service" and live is not None:
                change_service_type(new, live)
            new = normalize(new, smd.schema_of(kind))
            if not content_type.startswith("application/apply-patch"):
                given = new["metadata"].get("managedFields")
                if live is not None and given != live["metadata"].get("managedFields"):
                    managers = smd.decode_managers(new["metadata"])  # a request may set managedFields: taken as given
                self._record_update(kind, live, new, manager, managers)
            if live is not None and new.get("spec") != live.get("spec"):
                meta["generation"] = int(live["metadata"].get("generation") or 1) + 1
            new["metadata"]["managedFields"] = smd.encode_managers(managers, api_version, _now())
            validate(kind, new, live, classes)
            self._admit(request, kind, plural, new, live)
            if kind == "Deployment":
                self._replica_set_controller(new)
            await self._store(request, key, new, created=live is None)
            owners = {r.get("uid") for r in new["metadata"].get("ownerReferences") or []}
            changed_owners = owners != {r.get("uid") for r in ((live or {}).get("metadata") or {}).get("ownerReferences") or []}
            orphaned = changed_owners and bool(owners) and not any(o.raw["metadata"].get("uid") in owners for _, o in self._objects.items() if not o.deleted)
        if orphaned:
            await self._collect_garbage()

    def _apply(self, kind: str, live: dict[str, Any] | None, config: dict[str, Any], manager: str, managers: smd.Managers, *, force: bool) -> dict[str, Any]:
        applied = smd.field_set(config, kind)
        me = (manager, "Apply", "")
        if live is None:
            managers.clear()
            managers[me] = applied
            return copy.deepcopy(config)
        conflicts = []
        for owner, paths in managers.items():
            if owner == me or owner[2]:
                continue
            clash = {p for p in paths & applied if smd.get(live, p) != smd.get(config, p) and p[-1][0] == "f"}
            if clash and not force:
                conflicts += [f'conflict with "{owner[0]}" using {owner[1]}: {smd.describe(p)}' for p in sorted(clash)]
            paths -= clash
        if conflicts:
            raise ApiReject(409, "Conflict", f"Apply failed with {len(conflicts)} conflict(s): " + "; ".join(conflicts))
        new = smd.merge_object(clone(live), config, kind)  # removals below must not touch live
        others = set().union(*(paths for owner, paths in managers.items() if owner != me))
        removed: list[smd.Path] = []
        for path in sorted(managers.get(me, set()) - applied, key=len):  # a list item before its fields: it goes whole
            if path in others or any(o[: len(path)] == path for o in others):
                continue  # someone else owns it (or something under it): it stays
            if not any(path[: len(r)] == r for r in removed):
                smd.remove(new, path)
                removed.append(path)
        managers[me] = applied
        return new

    @staticmethod
    def _record_update(kind: str, live: dict[str, Any] | None, new: dict[str, Any], manager: str, managers: smd.Managers) -> None:
        after = smd.field_set(new, kind)
        if live is None:
            managers.clear()
            managers[(manager, "Update", "")] = after
            return
        before = smd.field_set(live, kind)
        changed = {p for p in after if p not in before or smd.get(live, p) != smd.get(new, p)}
        gone = before - after
        for paths in managers.values():
            paths -= changed | gone
        if changed:
            managers.setdefault((manager, "Update", ""), set()).update(changed)
        for owner in [o for o, paths in managers.items() if not paths]:
            del managers[owner]

    def _admit(self, request: kmock.Request, kind: str, plural: str, new: dict[str, Any], live: dict[str, Any] | None) -> None:
        name, namespace = new["metadata"]["name"], new["metadata"]["namespace"]
        if kind == "Pod" and live is None:
            complaint = quota_violation(new.get("spec") or {}, self._live("v1/resourcequotas", namespace))
            if complaint:
                raise forbidden(plural, name, complaint)
        if self.rbac is None or self.operator_token not in request.headers.get("Authorization", ""):
            return
        group = "" if "/" not in STRICT[plural][1] else STRICT[plural][1].split("/")[0]
        # A PATCH needs patch; one that creates the object (an apply) needs create as well.
        verbs = ({"patch"} if request.action == enums.action.UPDATE else set()) | ({"create"} if live is None else set())
        for verb in sorted(verbs):
            if not allowed(self.rbac, verb, group, plural):
                raise forbidden(plural, name, f'User "operator" cannot {verb} resource "{plural}" in API group "{group}" in the namespace "{namespace}"')
        # OwnerReferencesPermissionEnforcement (kubernetes plugin/pkg/admission/gc).
        old_refs = ((live or {}).get("metadata") or {}).get("ownerReferences") or []
        new_refs = new["metadata"].get("ownerReferences") or []
        if old_refs == new_refs:
            return
        if live is not None and not allowed(self.rbac, "delete", group, plural):
            raise forbidden(plural, name, "cannot set an ownerRef on a resource you can't delete")
        old_blocking = {r.get("uid") for r in old_refs if r.get("blockOwnerDeletion")}
        for ref in new_refs:
            if ref.get("blockOwnerDeletion") and ref.get("uid") not in old_blocking:
                owner_group, owner_plural = OWNER_PLURALS.get(ref.get("kind"), ("", ""))
                if not allowed(self.rbac, "update", owner_group, f"{owner_plural}/finalizers"):
                    raise forbidden(plural, name, "cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't set finalizers on")

    def _replica_set_controller(self, deployment: dict[str, Any]) -> None:
        """What the Deployment and ReplicaSet controllers report when pods cannot be created (quota)."""
        namespace = deployment["metadata"]["namespace"]
        template = (deployment.get("spec") or {}).get("template") or {}
        pod = {"spec": copy.deepcopy(template.get("spec") or {})}
        _default_containers(pod["spec"])
        complaint = quota_violation(pod["spec"], self._live("v1/resourcequotas", namespace))
        status = deployment.setdefault("status", {})
        conditions = [c for c in status.get("conditions") or [] if c.get("type") != "ReplicaFailure"]
        if complaint and (deployment.get("spec") or {}).get("replicas", 1) > 0:
            pod_name = f"{deployment['metadata']['name']}-{uuid.uuid5(uuid.NAMESPACE_OID, json.dumps(template, sort_keys=True)).hex[:10]}-"
            conditions.append(
                {
                    "type": "ReplicaFailure",
                    "status": "True",
                    "reason": "FailedCreate",
                    "message": f'pods "{pod_name}" is forbidden: {complaint}',
                    "lastUpdateTime": _now(),
                    "lastTransitionTime": _now(),
                }
            )
        status["conditions"] = conditions
        if not conditions:
            status.pop("conditions")

    async def _store(self, request: kmock.Request, key: Any, new: dict[str, Any], *, created: bool) -> None:
        if key in self._objects:
            stored = self._objects[key]
            if not stored.deleted:
                stored.delete()
            stored.create(new)
        else:
            self._objects[key] = new
        await self._buses[request.resource].put({"type": "ADDED" if created else "MODIFIED", "object": new})

    async def _collect_garbage(self) -> None:
        """Delete objects whose owners are all gone (cascading, like the real collector)."""
        while True:
            async with self._lock:
                live = {(obj.raw.get("metadata") or {}).get("uid") for _, obj in self._objects.items() if not obj.deleted}
                orphans = [
                    (key, obj)
                    for key, obj in self._objects.items()
                    if not obj.deleted and (refs := (obj.raw.get("metadata") or {}).get("ownerReferences")) and not any(ref.get("uid") in live for ref in refs)
                ]
                for (resource, _, _), obj in orphans:
                    raw = obj.raw
                    obj.delete()
                    await self._buses[resource].put({"type": "DELETED", "object": raw})
            if not orphans:
                return


def register_resources(cluster: FakeCluster) -> None:
    cluster.resources.load_bundled()
    cluster.resources[CRD_RESOURCE] = kmock.ResourceInfo(
        kind="InferencePipeline",
        singular="inferencepipeline",
        namespaced=True,
        shortnames={"ipl"},
        verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
        subresources={"status", "scale"},
    )


KEDA_RESOURCE = "keda.sh/v1alpha1/scaledobjects"
KEDA_HTTP_RESOURCE = "http.keda.sh/v1alpha1/httpscaledobjects"


def register_keda(cluster: FakeCluster, *, http_add_on: bool = True) -> None:
    """What installing KEDA (and its HTTP add-on) adds to the API: their CRDs' resources."""
    verbs = {"create", "delete", "get", "list", "patch", "update", "watch"}
    cluster.resources[KEDA_RESOURCE] = kmock.ResourceInfo(
        kind="ScaledObject", singular="scaledobject", namespaced=True, shortnames={"so"}, verbs=verbs, subresources={"status"}
    )
    if http_add_on:
        cluster.resources[KEDA_HTTP_RESOURCE] = kmock.ResourceInfo(
            kind="HTTPScaledObject", singular="httpscaledobject", namespaced=True, shortnames={"httpso"}, verbs=verbs, subresources={"status"}
        )
