"""spec.autoscaling's pure builders: the ScaledObject and HTTPScaledObject are what KEDA's CRDs accept.

The schemas are the openAPIV3Schema of the CRDs of KEDA v2.20.1 and the HTTP add-on
v0.15.0 (tests/operator/data, commits in their headers), made as strict as the API
server (unknown fields refused) by tests.operator.helpers.to_jsonschema.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest
import yaml

from kubediffusers.operator.builders import build_children
from kubediffusers.operator.builders.autoscaling import (
    PAUSED_ANNOTATION,
    SKIP_SCALED_OBJECT_ANNOTATION,
    build_http_scaled_object,
    build_scaled_object,
    in_flight_query,
    queue_query,
    service_hosts,
)
from kubediffusers.operator.cli import main
from kubediffusers.operator.pipeline import Pipeline
from kubediffusers.operator.settings import OperatorSettings
from kubediffusers.operator.spec import SpecError
from tests.operator.helpers import K8S_VERSIONS, KEDA_SCHEMAS, manifest, validate_keda, validate_object

SETTINGS = OperatorSettings(runner_image="runner:test", prometheus_address="http://prometheus.monitoring:9090")
AUTO = {"minReplicas": 1, "maxReplicas": 4, "targetQueueDepth": 3}


def pipeline(**spec: Any) -> Pipeline:
    return Pipeline.from_manifest(manifest(**spec))


def test_the_stored_schemas_are_the_kedacore_crds_we_say() -> None:
    for (api_version, kind), path in KEDA_SCHEMAS.items():
        text = path.read_text()
        assert "github.com/kedacore/" in text and "commit " in text, path
        doc = yaml.safe_load(text)
        assert f"{doc['group']}/{doc['version']}" == api_version and doc["kind"] == kind
        assert doc["openAPIV3Schema"]["properties"]["spec"]["required"]  # the real schema, not an empty shell


def test_scaled_object_targets_the_pipeline_scale_subresource_and_scales_on_queue_depth() -> None:
    p = pipeline(autoscaling={**AUTO, "scaleDownStabilizationSeconds": 120, "pollingIntervalSeconds": 5})
    so = build_scaled_object(p, SETTINGS)
    validate_keda(so)
    spec = so["spec"]
    # The CR itself, not the Deployment: the HPA writes spec.replicas through /scale.
    assert spec["scaleTargetRef"] == {"apiVersion": "kubediffusers.io/v1alpha1", "kind": "InferencePipeline", "name": "sd"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"], spec["pollingInterval"]) == (1, 4, 5)
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 120
    assert spec["advanced"]["restoreToOriginalReplicaCount"] is False
    [trigger] = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert trigger["metadata"] == {
        "serverAddress": "http://prometheus.monitoring:9090",
        "query": 'sum(kubediffusers_queue_depth{namespace="ns1",pod=~"sd-[a-z0-9]+-[a-z0-9]+"}) or vector(0)',
        "threshold": "3",
    }
    assert so["metadata"]["ownerReferences"][0]["kind"] == "InferencePipeline"  # collected with the pipeline


def test_the_pod_pattern_matches_the_pipelines_pods_only() -> None:
    import re

    pattern = re.search(r'pod=~"([^"]+)"', queue_query(pipeline()))
    assert pattern is not None
    full = re.compile(pattern.group(1))  # PromQL regexes are anchored
    assert full.fullmatch("sd-7c9f8d6b5-x2k4q")
    assert not full.fullmatch("sd-xl-7c9f8d6b5-x2k4q")  # pipeline sd-xl's pods
    assert not full.fullmatch("sd-7c9f8d6b5")


def test_in_flight_trigger_and_spec_address_win() -> None:
    p = pipeline(autoscaling={**AUTO, "targetInFlight": 1.5, "prometheusAddress": "https://prom.example:9443"})
    so = build_scaled_object(p, SETTINGS)
    validate_keda(so)
    queue, in_flight = so["spec"]["triggers"]
    assert queue["metadata"]["serverAddress"] == in_flight["metadata"]["serverAddress"] == "https://prom.example:9443"
    assert in_flight["metadata"] == {**in_flight["metadata"], "query": in_flight_query(p), "threshold": "1.5"}
    assert "kubediffusers_in_flight" in in_flight["metadata"]["query"]


def test_no_prometheus_address_is_a_clear_error() -> None:
    p = pipeline(autoscaling=AUTO)
    with pytest.raises(SpecError, match="no Prometheus address"):
        build_scaled_object(p, OperatorSettings())


def test_scale_to_zero_builds_the_interceptor_route_with_the_service_name_kept() -> None:
    p = pipeline(autoscaling={**AUTO, "minReplicas": 0, "coldStartTimeoutSeconds": 900, "hosts": ["sd.example.com"]}, runner={"requestTimeoutSeconds": 120})
    children = build_children(p, SETTINGS)
    kinds = [(c["kind"], c["metadata"]["name"]) for c in children]
    assert kinds == [  # no shared claim: up to 4 replicas on ReadWriteOnce storage, a volume per pod
        ("Deployment", "sd"),
        ("Service", "sd-backend"),
        ("HTTPScaledObject", "sd"),
        ("ScaledObject", "sd"),
        ("Service", "sd"),  # last: it points at the interceptor only once the route exists
    ]
    for child in children:
        for version in K8S_VERSIONS:
            validate_object(child, version)
    by = {(c["kind"], c["metadata"]["name"]): c for c in children}
    front = by["Service", "sd"]["spec"]
    assert front["type"] == "ExternalName" and front["externalName"] == "keda-add-ons-http-interceptor-proxy.keda.svc.cluster.local"
    backend = by["Service", "sd-backend"]["spec"]
    assert backend["selector"] == {"app.kubernetes.io/name": "kubediffusers-runner", "app.kubernetes.io/instance": "sd"}
    httpso = by["HTTPScaledObject", "sd"]
    assert httpso["metadata"]["annotations"][SKIP_SCALED_OBJECT_ANNOTATION] == "true"
    assert httpso["spec"]["scaleTargetRef"] == {
        "apiVersion": "kubediffusers.io/v1alpha1",
        "kind": "InferencePipeline",
        "name": "sd",
        "service": "sd-backend",
        "port": 8000,
    }
    assert httpso["spec"]["hosts"] == ["sd", "sd.ns1", "sd.ns1.svc", "sd.ns1.svc.cluster.local", "sd.example.com"]
    assert httpso["spec"]["timeouts"] == {"conditionWait": "900s", "responseHeader": "125s"}
    assert httpso["spec"]["scalingMetric"] == {"concurrency": {"targetValue": 4}}  # targetQueueDepth 3 queued + 1 running
    triggers = {t["name"]: t for t in by["ScaledObject", "sd"]["spec"]["triggers"]}
    assert triggers["http-pending"] == {
        "type": "external-push",
        "name": "http-pending",
        "metadata": {"scalerAddress": "keda-add-ons-http-external-scaler.keda:9090", "httpScaledObject": "sd"},
    }
    assert by["ScaledObject", "sd"]["spec"]["minReplicaCount"] == 0


def test_without_keda_the_pipeline_is_built_as_without_autoscaling() -> None:
    p = pipeline(autoscaling={**AUTO, "minReplicas": 0})
    # (The layout still serves maxReplicas, so that installing KEDA later does not roll the pods.)
    plain = build_children(pipeline(replicas=4), SETTINGS)
    assert [c["kind"] for c in build_children(p, SETTINGS, keda=False)] == [c["kind"] for c in plain] == ["Deployment", "Service"]
    service = next(c for c in build_children(p, SETTINGS, keda=False) if c["kind"] == "Service")
    assert service["spec"]["type"] == "ClusterIP"


def test_paused_scaled_object_is_valid_and_paused() -> None:
    so = build_scaled_object(pipeline(), SETTINGS, paused=True)
    validate_keda(so)
    assert so["metadata"]["annotations"][PAUSED_ANNOTATION] == "true"


def test_the_validator_is_strict() -> None:
    """The checks above would mean little if the schema let anything through."""
    so = build_scaled_object(pipeline(autoscaling=AUTO), SETTINGS)
    for broken in (
        {"spec": {**so["spec"], "maxReplicaCount": 0}},  # minimum 1
        {"spec": {**so["spec"], "triggers": []}},  # minItems 1
        {"spec": {**so["spec"], "triggers": [{"type": "prometheus", "metadata": {"threshold": 3}}]}},  # metadata values are strings
        {"spec": {**so["spec"], "minReplicas": 1}},  # unknown field (HPA's name, not KEDA's)
    ):
        with pytest.raises(jsonschema.ValidationError):
            validate_keda({**copy.deepcopy(so), **broken})
    httpso = build_http_scaled_object(pipeline(autoscaling={**AUTO, "minReplicas": 0}))
    both = copy.deepcopy(httpso)
    both["spec"]["scaleTargetRef"]["portName"] = "http"  # CEL: port xor portName
    with pytest.raises(AssertionError, match="portName"):
        validate_keda(both)


def test_service_hosts_do_not_repeat() -> None:
    assert service_hosts(pipeline(autoscaling={**AUTO, "hosts": ["sd.ns1", "x.example"]}))[-2:] == ["sd.ns1.svc.cluster.local", "x.example"]


@pytest.mark.parametrize(
    ("autoscaling", "message"),
    [
        ({"maxReplicas": 2, "minReplicas": 3}, "must not exceed autoscaling.maxReplicas"),
        ({"minReplicas": 1}, "spec.autoscaling.maxReplicas: Field required"),
        ({"maxReplicas": 2, "targetQueueDepth": 0}, "spec.autoscaling.targetQueueDepth"),
        ({"maxReplicas": 2, "prometheusAddress": "prometheus:9090"}, "spec.autoscaling.prometheusAddress"),
        ({"maxReplicas": 2, "minReplicaCount": 0}, "spec.autoscaling.minReplicaCount: Extra inputs are not permitted"),
    ],
)
def test_bad_autoscaling_specs_are_refused_with_the_field(autoscaling: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message.replace(".", r"\.")):
        pipeline(autoscaling=autoscaling)


def test_scale_to_zero_needs_a_cluster_ip_service() -> None:
    with pytest.raises(SpecError, match=r"service\.type must be ClusterIP, not LoadBalancer"):
        pipeline(autoscaling={**AUTO, "minReplicas": 0}, service={"type": "LoadBalancer"})


def test_render_prints_the_keda_objects(tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEDIFFUSERS_OPERATOR_PROMETHEUS_ADDRESS", "http://prom:9090")
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(manifest(autoscaling={**AUTO, "minReplicas": 0})))
    assert main(["render", str(path)]) == 0
    objects = [o for o in yaml.safe_load_all(capsys.readouterr().out) if o]
    assert {o["kind"] for o in objects} >= {"ScaledObject", "HTTPScaledObject"}
    for obj in objects:
        validate_object(obj, K8S_VERSIONS[-1])
    monkeypatch.delenv("KUBEDIFFUSERS_OPERATOR_PROMETHEUS_ADDRESS")
    assert main(["render", str(path)]) == 2
    assert "no Prometheus address" in capsys.readouterr().err
