"""spec.runner.compatibility and spec.runner.corsAllowedOrigins: validated by the
CRD and the spec model, and reaching the runner's settings of the same names."""

from __future__ import annotations

from typing import Any

import pytest

from kubediffusers.operator.builders import build_runner_env
from kubediffusers.operator.pipeline import Pipeline
from kubediffusers.operator.settings import OperatorSettings
from kubediffusers.operator.spec import SpecError
from tests.operator.helpers import manifest

SETTINGS = OperatorSettings(runner_image="registry.example/runner:1")


def runner_env(**runner: Any) -> dict[str, str]:
    env = build_runner_env(Pipeline.from_manifest(manifest(runner=runner)), SETTINGS)
    return {e["name"]: e["value"] for e in env if "value" in e}


def test_defaults_set_nothing() -> None:
    env = runner_env()
    assert "KUBEDIFFUSERS_COMPATIBILITY" not in env and "KUBEDIFFUSERS_CORS_ALLOWED_ORIGINS" not in env


def test_fields_reach_the_runner_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubediffusers.runner.settings import Compatibility, load_settings

    env = runner_env(compatibility="livepeer", corsAllowedOrigins=["https://app.example", "http://localhost:3000"])
    assert env["KUBEDIFFUSERS_COMPATIBILITY"] == "livepeer"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.compatibility is Compatibility.LIVEPEER
    assert settings.cors_allowed_origins == ["https://app.example", "http://localhost:3000"]


@pytest.mark.parametrize(
    "runner",
    [
        {"compatibility": "pico"},
        {"corsAllowedOrigins": ["https://app.example/path"]},
        {"corsAllowedOrigins": ["app.example"]},
        {"corsAllowedOrigins": "*"},
    ],
)
def test_bad_values_are_refused_by_the_crd_and_the_spec(crd_validator: Any, runner: dict[str, Any]) -> None:
    doc = manifest(runner=runner)
    assert not crd_validator.is_valid(doc)
    with pytest.raises(SpecError):
        Pipeline.from_manifest(doc)


def test_good_values_pass_the_crd(crd_validator: Any) -> None:
    assert crd_validator.is_valid(manifest(runner={"compatibility": "livepeer", "corsAllowedOrigins": ["*", "https://a.example:8443"]}))
