"""Chart values that shape the runner pods: from values.yaml through the operator's
environment and settings to the pod the operator builds (private registries,
default requests)."""

from __future__ import annotations

import os
from typing import Any

import helm_python as helm
import pytest

from kubediffusers.operator.builders import build_deployment
from kubediffusers.operator.pipeline import Pipeline
from kubediffusers.operator.settings import ENV_PREFIX, OperatorSettings

from .helpers import CHART, env_of, one, render, restricted_violations, validate


def settings_from_chart(values: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> OperatorSettings:
    """The settings the operator starts with under the chart's environment."""
    container = one(render(values), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    for key in list(os.environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    for key, value in env_of(container).items():
        if key.startswith(ENV_PREFIX):
            monkeypatch.setenv(key, value)
    return OperatorSettings()


def pipeline(**spec: Any) -> Pipeline:
    body = {"task": "text-to-image", "model": {"id": "stabilityai/sd-turbo"}, **spec}
    return Pipeline.from_manifest(
        {"apiVersion": "kubediffusers.io/v1alpha1", "kind": "InferencePipeline", "metadata": {"name": "sd", "namespace": "team-a", "uid": "u1"}, "spec": body}
    )


def pod_of(p: Pipeline, settings: OperatorSettings) -> dict[str, Any]:
    deployment = build_deployment(p, settings)
    validate(deployment, "1.33")
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    assert not restricted_violations(pod)
    return pod


def test_chart_pull_secrets_reach_every_runner_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from_chart({"runner": {"imagePullSecrets": [{"name": "regcred"}, {"name": "mirror.creds"}]}}, monkeypatch)
    assert settings.image_pull_secrets == ["regcred", "mirror.creds"]
    assert pod_of(pipeline(), settings)["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror.creds"}]


def test_a_pipelines_own_pull_secrets_replace_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from_chart({"runner": {"imagePullSecrets": [{"name": "regcred"}]}}, monkeypatch)
    assert pod_of(pipeline(imagePullSecrets=[{"name": "team-a-registry"}]), settings)["imagePullSecrets"] == [{"name": "team-a-registry"}]
    assert "imagePullSecrets" not in pod_of(pipeline(imagePullSecrets=[]), settings)  # [] opts out


def test_no_pull_secrets_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from_chart({}, monkeypatch)
    assert settings.image_pull_secrets == []
    assert "imagePullSecrets" not in pod_of(pipeline(), settings)


def test_runner_pods_get_default_requests_unless_the_spec_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from_chart({}, monkeypatch)
    runner = pod_of(pipeline(), settings)["containers"][0]
    assert runner["resources"] == {"requests": {"cpu": "1", "memory": "4Gi"}}
    # A GPU limit alone: CPU and memory still requested.
    runner = pod_of(pipeline(resources={"limits": {"nvidia.com/gpu": 1}}), settings)["containers"][0]
    assert runner["resources"] == {"limits": {"nvidia.com/gpu": "1"}, "requests": {"cpu": "1", "memory": "4Gi"}}
    # The spec's own request wins; a limit below the default gets no default request (it would be invalid).
    runner = pod_of(pipeline(resources={"requests": {"memory": "12Gi"}, "limits": {"cpu": "500m"}}), settings)["containers"][0]
    assert runner["resources"] == {"requests": {"memory": "12Gi"}, "limits": {"cpu": "500m"}}


def test_default_requests_are_configurable_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from_chart({"runner": {"defaultRequests": {"cpu": "4", "memory": "24Gi"}}}, monkeypatch)
    assert pod_of(pipeline(), settings)["containers"][0]["resources"] == {"requests": {"cpu": "4", "memory": "24Gi"}}
    settings = settings_from_chart({"runner": {"defaultRequests": {"cpu": "", "memory": ""}}}, monkeypatch)
    assert "resources" not in pod_of(pipeline(), settings)["containers"][0]


BAD = {
    "secret without name": ({"runner": {"imagePullSecrets": [{}]}}, "/runner/imagePullSecrets/0"),
    "secret as a string": ({"runner": {"imagePullSecrets": ["regcred"]}}, "/runner/imagePullSecrets/0"),
    "secret name": ({"runner": {"imagePullSecrets": [{"name": "Reg Cred"}]}}, "/runner/imagePullSecrets/0/name"),
    "request": ({"runner": {"defaultRequests": {"memory": "lots"}}}, "/runner/defaultRequests/memory"),
    "request key": ({"runner": {"defaultRequests": {"gpu": "1"}}}, "additional properties 'gpu' not allowed"),
}


@pytest.mark.parametrize(("values", "message"), BAD.values(), ids=BAD.keys())
def test_bad_runner_values_are_rejected(values: dict[str, Any], message: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError) as raised:
        chart.validate_schema(values)
    assert message in str(raised.value)


def test_bad_operator_settings_fail_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv(f"{ENV_PREFIX}RUNNER_MEMORY_REQUEST", "lots")
    with pytest.raises(ValidationError, match="runner_memory_request"):
        OperatorSettings()
    monkeypatch.delenv(f"{ENV_PREFIX}RUNNER_MEMORY_REQUEST")
    monkeypatch.setenv(f"{ENV_PREFIX}IMAGE_PULL_SECRETS", "ok,Not_OK")
    with pytest.raises(ValidationError, match="Not_OK"):
        OperatorSettings()


def test_a_bad_pull_secret_in_the_spec_is_an_invalid_spec() -> None:
    from kubediffusers.operator.spec import SpecError

    with pytest.raises(SpecError, match=r"spec\.imagePullSecrets\.0\.name"):
        pipeline(imagePullSecrets=[{"name": "Reg Cred"}])
    with pytest.raises(SpecError, match=r"spec\.imagePullSecrets\.0"):
        pipeline(imagePullSecrets=["regcred"])
