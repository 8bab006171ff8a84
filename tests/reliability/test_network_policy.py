"""NetworkPolicies: the chart's (operator pod, all runner pods of a namespace) and
each pipeline's own (spec.networkPolicy), as rendered, built and applied by the
real operator against KMock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from kubediffusers.operator import names
from kubediffusers.operator.builders import build_children, build_deployment, build_network_policy
from kubediffusers.operator.pipeline import Pipeline
from kubediffusers.operator.settings import OperatorSettings
from tests.chart.helpers import K8S_VERSIONS, NAMESPACE, one, render
from tests.reliability.operator_harness import NS, PIPELINES, OperatorThread, call, eventually, faulty_cluster, live

NETPOLS = "networking.k8s.io/v1/networkpolicies"


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a LabelSelector matches these labels (matchLabels and In/NotIn/Exists/DoesNotExist)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def pipeline(**spec: Any) -> Pipeline:
    body = {"task": "text-to-image", "model": {"id": "stabilityai/sd-turbo"}, **spec}
    return Pipeline.from_manifest(
        {"apiVersion": "kubediffusers.io/v1alpha1", "kind": "InferencePipeline", "metadata": {"name": "sd", "namespace": "team", "uid": "u-1"}, "spec": body}
    )


# ---- the chart


def test_the_chart_has_no_network_policy_by_default() -> None:
    assert not [o for o in render() if o["kind"] == "NetworkPolicy"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_charts_policies_fence_the_operator_and_the_runners(version: str) -> None:
    values = {"networkPolicy": {"enabled": True, "allowedNamespaces": ["gateway", "monitoring"], "allowedPodLabels": {"app": "gw"}}}
    objects = render(values)
    for obj in objects:
        if obj["kind"] == "NetworkPolicy":
            kubernetes_validate.validate(obj, version, strict=True)
    policies = {o["metadata"]["name"]: o for o in objects if o["kind"] == "NetworkPolicy"}
    operator_policy, runners = policies["kd-kubediffusers-operator"], policies["kd-kubediffusers-runners"]
    # The operator's policy selects the operator pod and lets in only its liveness and metrics ports.
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selects(operator_policy["spec"]["podSelector"], pod_labels)
    assert operator_policy["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8080}, {"protocol": "TCP", "port": 8081}]}]
    # The runners' policy selects the pods the operator builds, and nothing of the chart's own.
    runner_pod = build_deployment(pipeline(), OperatorSettings())["spec"]["template"]["metadata"]["labels"]
    assert selects(runners["spec"]["podSelector"], runner_pod) and not selects(runners["spec"]["podSelector"], pod_labels)
    assert runners["metadata"]["namespace"] == NAMESPACE
    (rule,) = runners["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": names.RUNNER_PORT}]
    assert [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in rule["from"]] == ["gateway", "monitoring"]
    assert all(p["podSelector"] == {"matchLabels": {"app": "gw"}} for p in rule["from"])


def test_the_runner_policy_goes_to_each_watched_namespace() -> None:
    objects = render({"networkPolicy": {"enabled": True}, "watch": {"scope": "namespaced", "namespaces": ["a", "b"]}})
    runners = [o for o in objects if o["metadata"]["name"] == "kd-kubediffusers-runners"]
    assert sorted(o["metadata"]["namespace"] for o in runners) == ["a", "b"]
    for obj in runners:  # default: only the namespace itself
        (peer,) = obj["spec"]["ingress"][0]["from"]
        assert peer == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": obj["metadata"]["namespace"]}}}
    explicit = render({"networkPolicy": {"enabled": True, "namespaces": ["ml"]}})
    assert [o["metadata"]["namespace"] for o in explicit if o["metadata"]["name"] == "kd-kubediffusers-runners"] == ["ml"]


# ---- per pipeline: the builder


def test_a_pipeline_has_no_policy_unless_asked() -> None:
    assert "NetworkPolicy" not in {c["kind"] for c in build_children(pipeline(), OperatorSettings())}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_pipeline_policy_admits_only_the_chosen_namespaces_to_the_runner_port(version: str) -> None:
    p = pipeline(networkPolicy={"enabled": True, "allowedNamespaces": ["gateway"], "allowedPodLabels": {"role": "frontend"}})
    children = build_children(p, OperatorSettings())
    policy = next(c for c in children if c["kind"] == "NetworkPolicy")
    kubernetes_validate.validate(policy, version, strict=True)
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    pod = next(c for c in children if c["kind"] == "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert selects(policy["spec"]["podSelector"], pod)
    assert not selects(policy["spec"]["podSelector"], {**pod, "app.kubernetes.io/instance": "other"})  # another pipeline's pods
    assert policy["spec"]["ingress"] == [
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}, "podSelector": {"matchLabels": {"role": "frontend"}}}],
            "ports": [{"protocol": "TCP", "port": 8000}],
        }
    ]
    # Default: the pipeline's own namespace only.
    own = build_network_policy(pipeline(networkPolicy={"enabled": True}))
    assert own["spec"]["ingress"][0]["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "team"}}}]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_a_turned_off_policy_selects_no_pod(version: str) -> None:
    inert = build_network_policy(pipeline(), inert=True)
    kubernetes_validate.validate(inert, version, strict=True)
    pod = build_deployment(pipeline(), OperatorSettings())["spec"]["template"]["metadata"]["labels"]
    for labels in (pod, {}, {"app.kubernetes.io/instance": "x"}):
        assert not selects(inert["spec"]["podSelector"], labels)


# ---- per pipeline: the real operator


@pytest.mark.slow
async def test_the_operator_applies_changes_and_neutralises_the_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = OperatorSettings(standalone=True, resync_seconds=1.0, retry_seconds=0.1, liveness_endpoint=None, runner_image="runner:test")
    spec = {"task": "text-to-image", "model": {"id": "stabilityai/sd-turbo"}, "networkPolicy": {"enabled": True, "allowedNamespaces": ["gateway"]}}

    def policy() -> dict[str, Any] | None:
        return live(cluster, NETPOLS).get("sd")

    def allowed() -> list[str]:
        rules = (policy() or {}).get("spec", {}).get("ingress") or []
        return [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for r in rules for p in r["from"]]

    async with faulty_cluster(tmp_path, monkeypatch) as cluster:
        operator = OperatorThread(settings)
        await operator.start()
        try:
            created = await call(
                cluster,
                "POST",
                PIPELINES,
                {"apiVersion": "kubediffusers.io/v1alpha1", "kind": "InferencePipeline", "metadata": {"name": "sd", "namespace": NS}, "spec": spec},
            )
            await eventually(lambda: allowed() == ["gateway"], 15, "the policy")
            assert policy()["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]  # type: ignore[index]
            await call(cluster, "PATCH", f"{PIPELINES}/sd", {"spec": {"networkPolicy": {"allowedNamespaces": ["gateway", "monitoring"]}}})
            await eventually(lambda: allowed() == ["gateway", "monitoring"], 15, "the updated policy")
            await call(cluster, "PATCH", f"{PIPELINES}/sd", {"spec": {"networkPolicy": {"enabled": False}}})
            await eventually(lambda: "matchExpressions" in (policy() or {}).get("spec", {}).get("podSelector", {}), 15, "the inert policy")
            assert policy()["spec"].get("ingress", []) == []  # type: ignore[index]  # the API server omits the empty list: no ingress allowed
            await call(cluster, "PATCH", f"{PIPELINES}/sd", {"spec": {"networkPolicy": {"enabled": True}}})
            await eventually(lambda: allowed() == ["gateway", "monitoring"], 15, "the policy back")
            assert cluster.log.created[f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies", "sd"] == 1
        finally:
            await operator.stop()
