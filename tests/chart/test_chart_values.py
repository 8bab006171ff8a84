"""values.yaml, values.schema.json and docs/helm.md agree; bad values fail with a clear message."""

from __future__ import annotations

import json
import re
import typing
from typing import Any

import helm_python as helm
import pytest
import yaml

from kubediffusers.operator.settings import OperatorSettings

from .helpers import CHART, NAMESPACE, ROOT, render, walk_leaves

VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
DOCS = (ROOT / "docs" / "helm.md").read_text()


def schema_node(path: str) -> dict[str, Any]:
    node = SCHEMA
    for part in path.split("."):
        node = node["properties"][part]
    return node


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = SCHEMA
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


LEAVES = list(walk_leaves(VALUES))


def test_the_defaults_pass_the_schema() -> None:
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(VALUES)
        chart.validate_schema({})


@pytest.mark.parametrize("path", LEAVES)
def test_every_value_has_a_described_schema_entry(path: str) -> None:
    node = schema_node(path)
    assert node.get("description"), f"{path}: no description in values.schema.json"


@pytest.mark.parametrize("path", LEAVES)
def test_every_value_is_documented_in_docs_helm_md(path: str) -> None:
    assert f"`{path}`" in DOCS, f"{path} is not in docs/helm.md"


FREE_FORM = ("podSecurityContext", "securityContext", "resources")  # their defaults are Kubernetes objects


def test_every_value_has_a_comment_in_values_yaml() -> None:
    """Each key in values.yaml is directly preceded by a comment line, except inside free-form defaults."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing keys
    missing = []
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w.]*):", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        stack = [(n, k) for n, k in stack if n < indent]
        inside_free_form = any(k in FREE_FORM for _, k in stack)
        stack.append((indent, key))
        if not inside_free_form and not lines[i - 1].lstrip().startswith("#"):
            missing.append(f"values.yaml:{i + 1}: {line.strip()}")
    assert not missing, missing


def test_enums_match_the_operator_settings() -> None:
    fields = OperatorSettings.model_fields
    assert schema_node("logLevel")["enum"] == list(typing.get_args(fields["log_level"].annotation))
    assert schema_node("logFormat")["enum"] == list(typing.get_args(fields["log_format"].annotation))
    assert resolve(schema_node("runner.imagePullPolicy"))["enum"] == list(typing.get_args(fields["image_pull_policy"].annotation))
    assert schema_node("runner.startupTimeoutSeconds")["minimum"] == 60  # startup_timeout_seconds: ge=60
    assert schema_node("runner.runAsUser")["minimum"] == 1  # run_as_user: ge=1


BAD = {
    "unknown top-level key": ({"replicaCount": 3}, "additional properties 'replicaCount' not allowed"),
    "unknown scope": ({"watch": {"scope": "everywhere"}}, "/watch/scope"),
    "namespace glob": ({"watch": {"scope": "namespaced", "namespaces": ["team-*"]}}, "/watch/namespaces/0"),
    "log level": ({"logLevel": "verbose"}, "/logLevel"),
    "pull policy": ({"image": {"repository": "x", "pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    "empty repository": ({"runner": {"image": {"repository": ""}}}, "/runner/image/repository"),
    "root runner": ({"runner": {"runAsUser": 0}}, "/runner/runAsUser"),
    "short startup": ({"runner": {"startupTimeoutSeconds": 10}}, "/runner/startupTimeoutSeconds"),
    "privileged liveness port": ({"liveness": {"port": 80}}, "/liveness/port"),
    "env without name": ({"extraEnv": [{"value": "x"}]}, "/extraEnv/0"),
    "resync zero": ({"resyncSeconds": 0}, "/resyncSeconds"),
    "string map": ({"nodeSelector": {"gpu": True}}, "/nodeSelector/gpu"),
    "typo in nested key": ({"serviceAccount": {"crate": True}}, "additional properties 'crate' not allowed"),
    "peering name": ({"peering": {"name": "Kube Diffusers"}}, "/peering/name"),
    "hub endpoint": ({"runner": {"hfEndpoint": "hf-mirror"}}, "/runner/hfEndpoint"),
}


@pytest.mark.parametrize(("values", "message"), BAD.values(), ids=BAD.keys())
def test_bad_values_are_rejected_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError) as raised:
        chart.validate_schema(values)
    assert message in str(raised.value)


def test_a_bad_values_file_fails_lint(tmp_path: Any) -> None:
    """What `helm install -f bad.yaml` and `helm lint -f bad.yaml` report."""
    bad = yaml.safe_load("watch:\n  scope: everywhere\nlogLevel: loud\n")
    report = helm.lint(CHART, bad, strict=True, namespace=NAMESPACE)
    text = json.dumps(report)
    assert report["errors"] or any(m["severity"] == 3 for m in report["messages"])
    assert "/watch/scope" in text and "value must be one of 'cluster', 'namespaced'" in text
    assert "/logLevel" in text
    with pytest.raises(helm.HelmValuesError):
        render(bad)
