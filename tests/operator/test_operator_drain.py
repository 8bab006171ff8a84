"""The pod gives the runner the time its drain needs (issue 12, point 6): a
preStop pause for endpoint propagation, then terminationGracePeriodSeconds
covering the pause, the drain deadline and the last answers."""

from __future__ import annotations

import kubernetes_validate
import pytest

from kubediffusers.operator.builders import build_deployment
from kubediffusers.operator.builders.deployment import EXIT_MARGIN_SECONDS, PRESTOP_SECONDS, RUNNER_REQUEST_TIMEOUT_SECONDS
from kubediffusers.operator.pipeline import Pipeline
from kubediffusers.operator.settings import OperatorSettings
from tests.operator.helpers import K8S_VERSIONS, manifest

SETTINGS = OperatorSettings(runner_image="registry.example/runner:1")


def pod_of(**runner: object) -> dict:
    return build_deployment(Pipeline.from_manifest(manifest(runner=runner)), SETTINGS)["spec"]["template"]["spec"]


def env_of(pod: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}


@pytest.mark.parametrize(
    ("runner", "drain"),
    [({}, RUNNER_REQUEST_TIMEOUT_SECONDS), ({"requestTimeoutSeconds": 60}, 60), ({"drainSeconds": 900.5, "requestTimeoutSeconds": 60}, 901)],
)
def test_grace_period_covers_prestop_drain_and_exit(runner: dict, drain: float) -> None:
    pod = pod_of(**runner)
    assert pod["terminationGracePeriodSeconds"] == PRESTOP_SECONDS + drain + EXIT_MARGIN_SECONDS
    assert pod["containers"][0]["lifecycle"] == {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SECONDS)]}}}


def test_drain_seconds_reaches_the_runner() -> None:
    assert env_of(pod_of(drainSeconds=42))["KUBEDIFFUSERS_DRAIN_SECONDS"] == "42.0"
    assert "KUBEDIFFUSERS_DRAIN_SECONDS" not in env_of(pod_of())


def test_runner_default_request_timeout_is_the_operators_copy() -> None:
    from kubediffusers.runner.settings import RunnerSettings

    assert RunnerSettings.model_fields["request_timeout_seconds"].default == RUNNER_REQUEST_TIMEOUT_SECONDS
    assert RunnerSettings.model_fields["drain_seconds"].default is None  # the runner's drain defaults to the request timeout too


def test_tmp_is_size_limited() -> None:
    tmp = next(v for v in pod_of()["volumes"] if v["name"] == "tmp")
    assert tmp["emptyDir"]["sizeLimit"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_pod_with_a_drain_is_valid(version: str) -> None:
    doc = build_deployment(Pipeline.from_manifest(manifest(runner={"drainSeconds": 30})), SETTINGS)
    kubernetes_validate.validate(doc, version, strict=True)
