"""Security points of docs/security.md that no other test module covers whole:
every pod the operator builds (from every example and from a spec using every
option) and every pod the chart renders meets the "restricted" Pod Security
Standard, by the chart tests' checker; no binding anywhere grants cluster-admin
(or admin/edit), in rendered charts or in any manifest or script of the repository."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubediffusers.operator.builders import build_children
from kubediffusers.operator.pipeline import Pipeline
from kubediffusers.operator.settings import OperatorSettings
from tests.chart.helpers import NON_DEFAULT, render, restricted_violations

ROOT = Path(__file__).resolve().parents[2]
BROAD_ROLES = {"cluster-admin", "admin", "edit", "system:masters"}

EVERYTHING: dict[str, Any] = {
    "task": "image-to-video",
    "model": {"id": "stabilityai/stable-video-diffusion-img2vid-xt", "variant": "fp16", "dtype": "float16", "tokenSecretRef": {"name": "hf", "key": "token"}},
    "storage": {"existingClaim": "shared", "accessModes": ["ReadWriteMany"]},
    "replicas": 3,
    "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "32Gi"}, "requests": {"cpu": 4}},
    "nodeSelector": {"gpu": "h100"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {"podAntiAffinity": {}},
    "runtimeClassName": "nvidia",
    "priorityClassName": "high",
    "runner": {
        "image": "registry.example.com/runner:1",
        "logLevel": "debug",
        "maxQueueSize": 4,
        "maxBatchSize": 4,
        "optimizations": {"compile": {"unet": True, "mode": "max-autotune"}, "tinyVaeId": "madebyollin/taesd", "deepcacheInterval": 2},
        "authSecretRef": {"name": "api", "key": "token"},
        "env": [{"name": "PYTORCH_CUDA_ALLOC_CONF", "value": "expandable_segments:True"}],
    },
    "service": {"type": "LoadBalancer", "port": 8080},
    "networkPolicy": {"enabled": True, "allowedNamespaces": ["gateway"]},
}


def example_pipelines() -> list[tuple[str, dict[str, Any]]]:
    docs = [
        (f"{p.relative_to(ROOT)}#{i}", d) for p in sorted((ROOT / "examples").rglob("*.yaml")) for i, d in enumerate(yaml.safe_load_all(p.read_text())) if d
    ]
    found = [(name, d) for name, d in docs if d.get("kind") == "InferencePipeline"]
    everything = {
        "apiVersion": "kubediffusers.io/v1alpha1",
        "kind": "InferencePipeline",
        "metadata": {"name": "all", "namespace": "ns", "uid": "u"},
        "spec": EVERYTHING,
    }
    return [*found, ("every option", everything)]


@pytest.mark.parametrize(("name", "doc"), example_pipelines(), ids=[n for n, _ in example_pipelines()])
@pytest.mark.parametrize("run_as_user", [1000, 65532])
def test_every_pod_the_operator_builds_is_restricted(name: str, doc: dict[str, Any], run_as_user: int) -> None:
    children = build_children(Pipeline.from_manifest(doc), OperatorSettings(run_as_user=run_as_user))
    pods = [c["spec"]["template"]["spec"] for c in children if c["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet")]
    assert pods
    for pod in pods:
        assert restricted_violations(pod) == []
        # And explicitly, beyond the standard: no service account token, read-only root filesystems.
        assert pod.get("automountServiceAccountToken") is False
        for container in pod.get("initContainers", []) + pod["containers"]:
            assert container["securityContext"].get("readOnlyRootFilesystem") is True, container["name"]


@pytest.mark.parametrize("values", [{}, NON_DEFAULT, {**NON_DEFAULT, "networkPolicy": {"enabled": True}}], ids=["default", "non-default", "network-policy"])
def test_every_pod_the_chart_renders_is_restricted_and_nothing_is_broad(values: dict[str, Any]) -> None:
    objects = render(values)
    pods = [o["spec"]["template"]["spec"] for o in objects if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]
    pods += [o["spec"] for o in objects if o["kind"] == "Pod"]
    assert pods
    for pod in pods:
        assert restricted_violations(pod) == []
    for obj in objects:
        if obj["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            assert obj["roleRef"]["name"] not in BROAD_ROLES
        if obj["kind"] in ("ClusterRole", "Role"):
            for rule in obj["rules"]:
                assert "*" not in rule.get("verbs", []) + rule.get("resources", []) + rule.get("apiGroups", []), rule
            assert not obj.get("aggregationRule")


def test_no_manifest_or_script_in_the_repository_binds_a_broad_role() -> None:
    offenders = []
    for path in [
        *ROOT.glob("examples/**/*.yaml"),
        *ROOT.glob("charts/**/*.yaml"),
        *ROOT.glob("crds/*.yaml"),
        *ROOT.glob("hack/*"),
        *ROOT.glob("docs/*.md"),
        ROOT / "README.md",
    ]:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        # kubectl create clusterrolebinding ... --clusterrole=cluster-admin, or a roleRef to one.
        for match in re.finditer(r"(--clusterrole[= ]|name:\s*)(cluster-admin|admin|edit)\b", text):
            line = text[: match.start()].count("\n") + 1
            context = text[max(0, match.start() - 200) : match.end()]
            if "roleRef" in context or "clusterrole" in match.group(1):
                offenders.append(f"{path.relative_to(ROOT)}:{line}")
    assert not offenders, offenders
