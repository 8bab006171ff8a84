"""The chart rendered by the real Helm engine: lint, Kubernetes schemas, restricted
Pod Security Standard, and values reaching the operator's settings."""

from __future__ import annotations

import copy
from typing import Any

import helm_python as helm
import pytest
import yaml

from kubediffusers.operator.settings import ENV_PREFIX, OperatorSettings

from .helpers import CHART, K8S_VERSIONS, NAMESPACE, NON_DEFAULT, env_of, notes, one, render, restricted_violations, validate

STANDALONE = {"peering": {"enabled": False}, "watch": {"scope": "namespaced"}}
VALUE_SETS = {"defaults": {}, "non-default": NON_DEFAULT, "standalone": STANDALONE}


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return containers[0]


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_lint_strict_passes(values: dict[str, Any]) -> None:
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version="v1.33.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors (strict: both fail)
    assert report["total_charts_linted"] == 1
    assert not problems and not report["errors"], report


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_rendered_objects_validate_against_kubernetes(values: dict[str, Any], version: str) -> None:
    objects = render(values)
    assert objects
    for obj in objects:
        validate(obj, version)


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_operator_pod_meets_the_restricted_pod_security_standard(values: dict[str, Any]) -> None:
    pod = one(render(values), "Deployment")["spec"]["template"]["spec"]
    assert restricted_violations(pod) == []
    sc, pod_sc = pod["containers"][0]["securityContext"], pod["securityContext"]
    # The fields the issue names, spelled out (the checker above covers the whole policy).
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] > 0
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True and sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_the_restricted_checker_catches_violations() -> None:
    pod = copy.deepcopy(one(render(), "Deployment")["spec"]["template"]["spec"])
    pod["containers"][0]["securityContext"].update(allowPrivilegeEscalation=True, capabilities={"add": ["SYS_ADMIN"]})
    pod["securityContext"] = {"runAsUser": 0}
    pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    found = "\n".join(restricted_violations(pod))
    for expected in ("allowPrivilegeEscalation", "drop ALL", "adds capabilities", "runAsUser is 0", "hostPath"):
        assert expected in found


def test_default_install_is_cluster_wide_with_the_default_images() -> None:
    objects = render()
    assert sorted(o["kind"] for o in objects) == ["ClusterKopfPeering", "ClusterRole", "ClusterRoleBinding", "Deployment", "ServiceAccount"]
    assert one(objects, "ClusterKopfPeering")["metadata"]["name"] == "kubediffusers"
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = operator_container(objects)
    assert container["image"] == "ghcr.io/kubediffusers/operator:0.1.0"
    assert container["command"] == ["kubediffusers", "operator"]
    env = env_of(container)
    assert "KUBEDIFFUSERS_OPERATOR_NAMESPACES" not in env  # empty: all namespaces
    assert env["KUBEDIFFUSERS_OPERATOR_STANDALONE"] == "false"
    assert env["KUBEDIFFUSERS_OPERATOR_PEERING_NAME"] == "kubediffusers"
    probe = container["livenessProbe"]["httpGet"]
    assert probe == {"path": "/healthz", "port": "health"}
    assert container["ports"] == [{"name": "health", "containerPort": 8080, "protocol": "TCP"}, {"name": "metrics", "containerPort": 8081, "protocol": "TCP"}]
    assert env["KUBEDIFFUSERS_OPERATOR_LIVENESS_ENDPOINT"] == "http://0.0.0.0:8080/healthz"
    for obj in objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"):
            assert obj["metadata"]["namespace"] == NAMESPACE


def test_the_chart_default_runner_image_is_the_operators_default() -> None:
    env = env_of(operator_container(render()))
    assert env["KUBEDIFFUSERS_OPERATOR_RUNNER_IMAGE"] == OperatorSettings().runner_image


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_operator_variable_is_a_setting_and_parses(values: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_of(operator_container(render(values)))
    fields = {f"{ENV_PREFIX}{name.upper()}" for name in OperatorSettings.model_fields}
    ours = {k for k in env if k.startswith(ENV_PREFIX)}
    assert ours <= fields, f"the chart sets variables the operator ignores: {sorted(ours - fields)}"
    for key in list(__import__("os").environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    for key in ours:
        monkeypatch.setenv(key, env[key])
    settings = OperatorSettings()  # raises on a value the operator would refuse at start
    assert settings.standalone is not values.get("peering", {}).get("enabled", True)
    assert settings.liveness_endpoint is not None


def test_non_default_values_reach_the_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render(NON_DEFAULT)
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]
    container = operator_container(objects)
    assert container["image"] == "registry.example.com/kd/operator:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["spec"]["serviceAccountName"] == "diffusers-operator"
    assert one(objects, "ServiceAccount")["metadata"] == {
        "name": "diffusers-operator",
        "namespace": NAMESPACE,
        "labels": one(objects, "ServiceAccount")["metadata"]["labels"],
        "annotations": {"iam.example.com/role": "kd"},
    }
    assert pod["metadata"]["annotations"] == {"prometheus.io/scrape": "false"}
    assert pod["metadata"]["labels"]["team"] == "ml"
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName"):
        assert pod["spec"][key] == NON_DEFAULT[key]
    assert container["resources"] == NON_DEFAULT["resources"]
    assert container["ports"][0]["containerPort"] == 9090
    assert container["livenessProbe"]["failureThreshold"] == 6
    env = env_of(container)
    assert env["HTTPS_PROXY"] == "http://proxy.example.com:3128" and env["NO_PROXY"] == "10.0.0.0/8,.svc"
    for key in list(__import__("os").environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith(ENV_PREFIX):
            monkeypatch.setenv(key, value)
    settings = OperatorSettings()
    assert settings.runner_image == "registry.example.com/kd/runner:1.2.3-cuda12"
    assert settings.image_pull_policy == "Always"
    assert settings.namespaces == ["team-a", "team-b"]
    assert settings.hf_endpoint == "https://hf-mirror.example.com"
    assert (settings.log_level, settings.log_format) == ("debug", "json")
    assert settings.resync_seconds == 30
    assert settings.run_as_user == 2000 and settings.startup_timeout_seconds == 7200
    assert settings.liveness_endpoint == "http://0.0.0.0:9090/healthz"
    assert settings.peering_name == "kd-teams" and settings.standalone is False
    peerings = [o for o in objects if o["kind"] == "KopfPeering"]
    assert sorted((o["metadata"]["namespace"], o["metadata"]["name"]) for o in peerings) == [("team-a", "kd-teams"), ("team-b", "kd-teams")]
    assert not [o for o in objects if o["kind"] == "ClusterKopfPeering"]


def test_standalone_has_no_peering_objects() -> None:
    objects = render(STANDALONE)
    assert not [o for o in objects if o["apiVersion"].startswith("kopf.dev/")]
    env = env_of(operator_container(objects))
    assert env["KUBEDIFFUSERS_OPERATOR_STANDALONE"] == "true" and "KUBEDIFFUSERS_OPERATOR_PEERING_NAME" not in env


def test_namespaced_mode_without_a_list_watches_the_release_namespace() -> None:
    objects = render({"watch": {"scope": "namespaced"}})
    assert env_of(operator_container(objects))["KUBEDIFFUSERS_OPERATOR_NAMESPACES"] == NAMESPACE
    assert one(objects, "Role")["metadata"]["namespace"] == NAMESPACE
    assert one(objects, "RoleBinding")["subjects"] == [{"kind": "ServiceAccount", "name": "kd-kubediffusers", "namespace": NAMESPACE}]


def test_an_existing_service_account_is_used_and_must_be_named() -> None:
    objects = render({"serviceAccount": {"create": False, "name": "mine"}})
    assert not [o for o in objects if o["kind"] == "ServiceAccount"]
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "mine"
    assert one(objects, "ClusterRoleBinding")["subjects"][0]["name"] == "mine"
    with pytest.raises(helm.HelmError, match=r"serviceAccount\.name is required"):
        render({"serviceAccount": {"create": False}})


def test_rbac_can_be_left_to_the_cluster_admin() -> None:
    kinds = {o["kind"] for o in render({"rbac": {"create": False}})}
    assert kinds == {"ServiceAccount", "Deployment", "ClusterKopfPeering"}


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_notes_tell_the_next_three_commands(values: dict[str, Any]) -> None:
    text = notes(values)
    namespace = {id(NON_DEFAULT): "team-a"}.get(id(values), NAMESPACE)
    assert f"kubectl apply -n {namespace} -f" in text and "examples/sd-turbo.yaml" in text
    # The example of the chart's own release, not of main (whose CRD may be newer than the installed one).
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    assert f"https://raw.githubusercontent.com/kubediffusers/kubediffusers/v{version}/examples/sd-turbo.yaml" in text
    assert "/main/" not in text
    assert f"kubectl get ipl -n {namespace} sd-turbo -w" in text
    assert f"kubectl port-forward -n {namespace} svc/sd-turbo 8080:80" in text and "curl -s localhost:8080/text-to-image" in text
