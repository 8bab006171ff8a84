"""Rendering the chart with the real Helm engine (helm-python-sdk: Helm's Go SDK as a
shared library, bundled in the wheel; no helm binary, no network), and the checks
the tests share: Kubernetes schemas and the restricted Pod Security Standard."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubediffusers"
RELEASE = "kd"
NAMESPACE = "kubediffusers-system"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and a current one.
K8S_VERSIONS = ("1.28", "1.33")

# Values that differ from every default the tests look at.
NON_DEFAULT: dict[str, Any] = {
    "image": {"repository": "registry.example.com/kd/operator", "tag": "1.2.3", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "runner": {
        "image": {"repository": "registry.example.com/kd/runner", "tag": "1.2.3-cuda12"},
        "imagePullPolicy": "Always",
        "runAsUser": 2000,
        "startupTimeoutSeconds": 7200,
        "hfEndpoint": "https://hf-mirror.example.com",
    },
    "watch": {"scope": "namespaced", "namespaces": ["team-a", "team-b"]},
    "peering": {"enabled": True, "name": "kd-teams"},
    "logLevel": "debug",
    "logFormat": "json",
    "resyncSeconds": 30,
    "serviceAccount": {"create": True, "name": "diffusers-operator", "annotations": {"iam.example.com/role": "kd"}},
    "liveness": {"port": 9090, "initialDelaySeconds": 5, "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 6},
    "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy.example.com:3128"}, {"name": "NO_PROXY", "value": "10.0.0.0/8,.svc"}],
    "podAnnotations": {"prometheus.io/scrape": "false"},
    "podLabels": {"team": "ml"},
    "priorityClassName": "system-cluster-critical",
    "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "control", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "node-role", "operator": "In", "values": ["infra"]}]}]
            }
        }
    },
}


def render(values: Mapping[str, Any] | None = None, *, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """The chart's objects (templates only; Helm installs crds/ itself), as dicts."""
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(dict(values or {}))  # what `helm install` does first
        manifests = chart.render(dict(values or {}), name=RELEASE, namespace=namespace, is_install=True)
    return [doc for path, text in sorted(manifests.items()) if path.endswith(".yaml") for doc in yaml.safe_load_all(text) if doc]


def notes(values: Mapping[str, Any] | None = None) -> str:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(dict(values or {}), name=RELEASE, namespace=NAMESPACE, is_install=True)
    return manifests["kubediffusers/templates/NOTES.txt"]


def validate(obj: Mapping[str, Any], version: str) -> None:
    """Against Kubernetes' schemas, or for kopf's peering objects against their CRD in crds/."""
    if obj["apiVersion"].startswith("kopf.dev/"):
        import jsonschema

        crds = [d for d in yaml.safe_load_all((ROOT / "crds" / "kopf-peering.yaml").read_text()) if d]
        crd = next(c for c in crds if c["spec"]["names"]["kind"] == obj["kind"])
        assert obj["apiVersion"] == f"{crd['spec']['group']}/{crd['spec']['versions'][0]['name']}"
        assert ("namespace" in obj["metadata"]) == (crd["spec"]["scope"] == "Namespaced")
        jsonschema.validate(obj, crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        return
    import kubernetes_validate

    kubernetes_validate.validate(obj, version, strict=True)


def one(objects: list[dict[str, Any]], kind: str, namespace: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (namespace is None or o["metadata"].get("namespace") == namespace)]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def env_of(container: Mapping[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env") or []}


def restricted_violations(pod_spec: Mapping[str, Any]) -> list[str]:
    """Where a pod spec breaks the "restricted" Pod Security Standard (baseline included).

    https://kubernetes.io/docs/concepts/security/pod-security-standards/ (v1.33 policy).
    """
    problems: list[str] = []
    pod_sc = pod_spec.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(key):
            problems.append(f"spec.{key} is set")
    allowed_volumes = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
    for volume in pod_spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= allowed_volumes:
            problems.append(f"volume {volume['name']} is of a disallowed type {sorted(kinds - allowed_volumes)}")
    if pod_sc.get("runAsUser") == 0:
        problems.append("pod runAsUser is 0")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in ("RuntimeDefault", "Localhost"):
        problems.append(f"pod seccompProfile {pod_seccomp}")
    for field in ("containers", "initContainers", "ephemeralContainers"):
        for container in pod_spec.get(field) or []:
            name = f"{field}[{container['name']}]"
            sc = container.get("securityContext") or {}
            if sc.get("privileged"):
                problems.append(f"{name} is privileged")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{name} allowPrivilegeEscalation is not false")
            caps = sc.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []):
                problems.append(f"{name} does not drop ALL capabilities")
            if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
                problems.append(f"{name} adds capabilities {caps.get('add')}")
            if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
                problems.append(f"{name} may run as root (runAsNonRoot not true)")
            if sc.get("runAsUser") == 0:
                problems.append(f"{name} runAsUser is 0")
            seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                problems.append(f"{name} seccompProfile is {seccomp}, not RuntimeDefault/Localhost")
            if any(port.get("hostPort") for port in container.get("ports") or []):
                problems.append(f"{name} uses a hostPort")
            if sc.get("procMount") not in (None, "Default"):
                problems.append(f"{name} procMount {sc.get('procMount')}")
    return problems


def walk_leaves(values: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of values.yaml's keys (maps that default to {} and all lists are leaves)."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        yield path
        if isinstance(value, Mapping) and value and not path.endswith(("SecurityContext", "securityContext", "resources")):
            yield from walk_leaves(value, path + ".")
