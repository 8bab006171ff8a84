"""Prometheus Operator monitors, the operator's metrics port and the Grafana dashboard.

The PodMonitor/ServiceMonitor objects are validated against the Prometheus Operator's
own CRD schemas (prometheus_operator_crds.json: the v1 openAPIV3Schema of
monitoring.coreos.com_podmonitors.yaml and _servicemonitors.yaml from
prometheus-operator/prometheus-operator, operator version 0.93.0, cut to the fields
the chart may set; see its _source), made stricter than the API server: unknown
fields are errors instead of being pruned. Their selectors are checked against the
pods and Services the operator really builds, and every metric the dashboard's
queries name against what the runner (runner/metrics.py) and the operator
(operator/metrics.py) export.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import pytest

from kubediffusers.operator.builders import build_deployment, build_service
from kubediffusers.operator.metrics import OperatorMetrics
from kubediffusers.operator.pipeline import Pipeline
from kubediffusers.operator.settings import OperatorSettings

from .helpers import CHART, NAMESPACE, one, render, validate

CRDS = json.loads((Path(__file__).with_name("prometheus_operator_crds.json")).read_text())
DASHBOARD = CHART / "dashboards" / "kubediffusers.json"
ON = {
    "metrics": {
        "podMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "serviceMonitor": {"enabled": True},
        "dashboard": {"enabled": True, "labels": {"team": "ml"}},
    }
}
NAMESPACED = {**ON, "watch": {"scope": "namespaced", "namespaces": ["team-a", "team-b"]}}


def strict(node: Any) -> Any:
    """A structural CRD schema as JSON Schema that rejects unknown fields (kubectl --validate=strict)."""
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict(v) for k, v in node.items() if not k.startswith("x-kubernetes") and k not in ("nullable", "format", "default")}
    if "properties" in out and "additionalProperties" not in out and out.get("type") == "object":
        out["additionalProperties"] = False
    if node.get("x-kubernetes-int-or-string"):
        out = {k: v for k, v in out.items() if k != "type"}
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable"):
        out = {"anyOf": [out, {"type": "null"}]}
    return out


def validate_monitor(obj: dict[str, Any]) -> None:
    crd = CRDS["schemas"][obj["kind"]]
    assert obj["apiVersion"] == f"{crd['group']}/{crd['version']}" == "monitoring.coreos.com/v1"
    assert crd["scope"] == "Namespaced" and obj["metadata"]["namespace"]
    schema = strict(crd["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}
    jsonschema.validate(obj, schema)


def monitors(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["apiVersion"].startswith("monitoring.coreos.com/")]


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels", "matchExpressions"} and not selector.get("matchExpressions")
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def runner_children() -> tuple[dict[str, Any], dict[str, Any]]:
    p = Pipeline.from_manifest(
        {
            "apiVersion": "kubediffusers.io/v1alpha1",
            "kind": "InferencePipeline",
            "metadata": {"name": "sd", "namespace": "team-a", "uid": "u"},
            "spec": {"task": "text-to-image", "model": {"id": "a/b"}},
        }
    )
    return build_deployment(p, OperatorSettings())["spec"]["template"], build_service(p)


def test_nothing_is_rendered_by_default() -> None:
    objects = render()
    assert not monitors(objects)
    assert not [o for o in objects if o["kind"] in ("ConfigMap", "Service")]
    # The operator still serves /metrics on its own port.
    container = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "metrics", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBEDIFFUSERS_OPERATOR_METRICS_PORT"] == "8081"


@pytest.mark.parametrize("values", [ON, NAMESPACED], ids=["cluster", "namespaced"])
def test_monitors_are_valid_prometheus_operator_objects(values: dict[str, Any]) -> None:
    objects = render(values)
    found = monitors(objects)
    assert sorted((o["kind"], o["metadata"]["name"]) for o in found) == [
        ("PodMonitor", "kd-kubediffusers-operator"),
        ("PodMonitor", "kd-kubediffusers-runners"),
        ("ServiceMonitor", "kd-kubediffusers-operator"),
        ("ServiceMonitor", "kd-kubediffusers-runners"),
    ]
    for obj in found:
        validate_monitor(obj)
        assert obj["metadata"]["namespace"] == NAMESPACE
    for obj in objects:
        if not obj["apiVersion"].startswith("monitoring.coreos.com/"):
            validate(obj, "1.33")
    assert all(o["metadata"]["labels"]["release"] == "kube-prometheus-stack" for o in found if o["kind"] == "PodMonitor")
    runners = [o for o in found if o["metadata"]["name"].endswith("-runners")]
    for obj in runners:
        expected = {"any": True} if values is ON else {"matchNames": ["team-a", "team-b"]}
        assert obj["spec"]["namespaceSelector"] == expected


def test_monitors_select_what_the_operator_and_the_chart_really_make() -> None:
    objects = render(ON)
    pod_template, service = runner_children()
    runner_ports = {p["name"] for p in pod_template["spec"]["containers"][0]["ports"]}
    operator_pod = one(objects, "Deployment")["spec"]["template"]
    operator_ports = {p["name"] for p in operator_pod["spec"]["containers"][0]["ports"]}
    metrics_service = one(objects, "Service")
    for obj in monitors(objects):
        spec = obj["spec"]
        runner = obj["metadata"]["name"].endswith("-runners")
        if obj["kind"] == "PodMonitor":
            labels = pod_template["metadata"]["labels"] if runner else operator_pod["metadata"]["labels"]
            assert matches(spec["selector"], labels)
            assert {e["port"] for e in spec["podMetricsEndpoints"]} <= (runner_ports if runner else operator_ports)
            for label in spec.get("podTargetLabels", []):
                assert label in labels
        else:
            target = service if runner else metrics_service
            assert matches(spec["selector"], target["metadata"]["labels"])
            assert {e["port"] for e in spec["endpoints"]} <= {p["name"] for p in target["spec"]["ports"]}
            for label in spec.get("targetLabels", []):
                assert label in target["metadata"]["labels"]
        endpoints = spec.get("podMetricsEndpoints") or spec["endpoints"]
        assert all(e["path"] == "/metrics" and e["interval"] == "30s" for e in endpoints)
    # The operator's metrics Service reaches the operator pod's metrics port.
    assert matches({"matchLabels": metrics_service["spec"]["selector"]}, operator_pod["metadata"]["labels"])
    assert metrics_service["spec"]["ports"][0]["targetPort"] == "metrics"
    # The runner's selector labels are the ones the operator sets (names.py).
    assert not matches(
        {"matchLabels": {"app.kubernetes.io/name": "kubediffusers-runner", "app.kubernetes.io/managed-by": "other"}}, pod_template["metadata"]["labels"]
    )


def test_the_operator_network_policy_admits_the_metrics_port() -> None:
    objects = render({**ON, "networkPolicy": {"enabled": True}, "metrics": {"port": 9100}})
    policy = next(o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"].endswith("-operator"))
    assert {p["port"] for p in policy["spec"]["ingress"][0]["ports"]} == {8080, 9100}


def test_metrics_and_liveness_ports_must_differ() -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError, match=r"metrics\.port and liveness\.port are both 9090"):
        chart.render({"metrics": {"port": 9090}, "liveness": {"port": 9090}}, name="kd", namespace=NAMESPACE, is_install=True)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"metrics": {"podMonitor": {"interval": "30 seconds"}}}, "/metrics/podMonitor/interval"),
        ({"metrics": {"serviceMonitor": {"enabled": "yes"}}}, "/metrics/serviceMonitor/enabled"),
        ({"metrics": {"port": 80}}, "/metrics/port"),
        ({"metrics": {"dashboard": {"labels": {"grafana_dashboard": 1}}}}, "/metrics/dashboard/labels/grafana_dashboard"),
        ({"metrics": {"podMonitor": {"scheme": "https"}}}, "additional properties 'scheme' not allowed"),
    ],
)
def test_bad_metrics_values_are_rejected(values: dict[str, Any], message: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError) as raised:
        chart.validate_schema(values)
    assert message in str(raised.value)


def test_the_crd_schema_is_strict_enough_to_catch_mistakes() -> None:
    obj = next(o for o in monitors(render(ON)) if o["kind"] == "PodMonitor")
    for broken in (
        {**obj, "spec": {**obj["spec"], "podMetricsEndpoints": [{"port": "http", "interval": "30 seconds"}]}},
        {**obj, "spec": {**obj["spec"], "endpoints": [{"port": "http"}]}},  # a ServiceMonitor field
        {**obj, "spec": {k: v for k, v in obj["spec"].items() if k != "selector"}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            validate_monitor(broken)


# ---- the Grafana dashboard

PROMQL_WORDS = {
    "sum", "avg", "max", "min", "count", "by", "without", "rate", "irate", "increase", "histogram_quantile",
    "label_values", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "clamp_min", "topk",
}  # fmt: skip


def exported_metric_names(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Every series name the runner and the operator export, GPU gauges included (as on a GPU)."""
    import torch

    from kubediffusers.runner.metrics import Metrics

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for name in ("memory_allocated", "memory_reserved", "max_memory_allocated"):
        monkeypatch.setattr(torch.cuda, name, lambda index: 0)
    names = set()
    for registry in (Metrics("text-to-image").registry, OperatorMetrics().registry):
        for family in registry.collect():
            # By type, so that labelled series with no child yet count too (as after the first request).
            names |= {s.name for s in family.samples}
            names |= {
                "counter": {f"{family.name}_total"},
                "gauge": {family.name},
                "histogram": {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"},
            }.get(family.type, set())
    return names


def query_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label names, strings and ranges removed)."""
    text = re.sub(r'"[^"]*"', "", expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", text))
    return words - PROMQL_WORDS


def dashboard_queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    queries += [v["definition"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return queries


def test_every_metric_the_dashboard_queries_is_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    exported = exported_metric_names(monkeypatch)
    queries = dashboard_queries()
    assert len(queries) > 15
    for expr in queries:
        named = query_metric_names(expr.replace("label_values(", "(").split(",")[0] if expr.startswith("label_values") else expr)
        assert named, f"no metric in {expr}"
        assert named <= exported, f"{sorted(named - exported)} in {expr!r} are not exported"


def test_the_extractor_sees_a_wrong_name(monkeypatch: pytest.MonkeyPatch) -> None:
    exported = exported_metric_names(monkeypatch)
    assert not query_metric_names('sum by (kubediffusers_io_pipeline) (rate(kubediffusers_images_total{a="b"}[5m]))') <= exported
    assert query_metric_names('histogram_quantile(0.5, sum by (le) (rate(x_bucket{le="1"}[5m])))') == {"x_bucket"}


def test_the_dashboard_covers_what_operators_need() -> None:
    dash = json.loads(DASHBOARD.read_text())
    text = " ".join(dashboard_queries())
    for needle in (
        "kubediffusers_queue_depth",
        "histogram_quantile(0.95",
        "kubediffusers_images_generated_total",
        "kubediffusers_batch_images",
        "kubediffusers_gpu_memory_allocated_bytes",
        "by (kubediffusers_io_pipeline, reason)",
        "kubediffusers_operator_pipelines",
        "kubediffusers_operator_reconcile_errors_total",
    ):
        assert needle in text, needle
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and dash["uid"] == "kubediffusers"
    # The label the monitors attach (podTargetLabels/targetLabels kubediffusers.io/pipeline, sanitised).
    assert "kubediffusers_io_pipeline" in text


def test_the_dashboard_configmap_carries_the_file() -> None:
    cm = one(render(ON), "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1" and cm["metadata"]["labels"]["team"] == "ml"
    assert json.loads(cm["data"]["kubediffusers.json"]) == json.loads(DASHBOARD.read_text())
