"""The chart as a dependency of an umbrella chart (the usual Argo CD / Flux layout).

Helm copies the parent's ``global`` into every subchart's values and a parent may
switch a dependency with ``<name>.enabled``; a schema that rejects either makes the
umbrella fail to render even with empty values. The umbrella is built the way
``helm dependency update`` builds it (file:// repository, packaged into charts/),
and rendered and validated by the real Helm engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from .helpers import CHART, NAMESPACE, one, validate

CHART_META = yaml.safe_load((CHART / "Chart.yaml").read_text())


def umbrella(tmp_path: Path, *, condition: bool = True) -> Path:
    root = tmp_path / "platform"
    root.mkdir()
    dependency: dict[str, Any] = {"name": "kubediffusers", "version": CHART_META["version"], "repository": f"file://{CHART}"}
    if condition:
        dependency["condition"] = "kubediffusers.enabled"
    meta = {"apiVersion": "v2", "name": "platform", "version": "1.0.0", "dependencies": [dependency]}
    (root / "Chart.yaml").write_text(yaml.safe_dump(meta))
    (root / "values.yaml").write_text(yaml.safe_dump({"global": {"imageRegistry": "registry.example.com"}}))
    helm.dependency_update(root)
    assert list((root / "charts").glob("kubediffusers-*.tgz")), "the dependency was not packaged into charts/"
    return root


def render_umbrella(root: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(root) as chart:
        chart.validate_schema(values)  # what `helm install` does first, subcharts included
        manifests = chart.render(values, name="platform", namespace=NAMESPACE, is_install=True)
    return [doc for path, text in sorted(manifests.items()) if path.endswith(".yaml") for doc in yaml.safe_load_all(text) if doc]


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"global": {"imageRegistry": "registry.example.com", "imagePullSecrets": [{"name": "regcred"}]}},
        {"kubediffusers": {"enabled": True, "logLevel": "debug"}},
    ],
    ids=["empty", "globals", "enabled"],
)
def test_renders_as_a_subchart(tmp_path: Path, values: dict[str, Any]) -> None:
    objects = render_umbrella(umbrella(tmp_path), values)
    deployment = one(objects, "Deployment")
    assert deployment["metadata"]["name"] == "platform-kubediffusers"
    for obj in objects:
        validate(obj, "1.33")
    if values.get("kubediffusers", {}).get("logLevel"):
        env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["KUBEDIFFUSERS_OPERATOR_LOG_LEVEL"] == "debug"


def test_the_parent_can_switch_it_off(tmp_path: Path) -> None:
    assert render_umbrella(umbrella(tmp_path), {"kubediffusers": {"enabled": False}}) == []


def test_unknown_keys_are_still_rejected_inside_the_subchart(tmp_path: Path) -> None:
    with helm.Chart.load(umbrella(tmp_path)) as chart, pytest.raises(helm.HelmValuesError) as raised:
        chart.validate_schema({"kubediffusers": {"replicaCount": 2}})
    assert "replicaCount" in str(raised.value)


def test_enabled_and_global_have_types(tmp_path: Path) -> None:
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema({"enabled": True, "global": {"anything": {"nested": 1}}})
        with pytest.raises(helm.HelmValuesError, match="/enabled"):
            chart.validate_schema({"enabled": "yes"})
        with pytest.raises(helm.HelmValuesError, match="/global"):
            chart.validate_schema({"global": "registry.example.com"})
