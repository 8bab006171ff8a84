"""The configuration reference names every setting the runner reads."""

from __future__ import annotations

from pathlib import Path

from kubediffusers.runner.settings import ENV_PREFIX, RunnerSettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_runner_setting_is_documented() -> None:
    text = DOC.read_text()
    missing = [f"{ENV_PREFIX}{name.upper()}" for name in RunnerSettings.model_fields if f"`{ENV_PREFIX}{name.upper()}`" not in text]
    assert not missing, f"docs/configuration.md lacks {missing}"


def test_every_runner_setting_has_a_description() -> None:
    assert [n for n, f in RunnerSettings.model_fields.items() if not f.description] == []
