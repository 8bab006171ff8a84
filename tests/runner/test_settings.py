"""Configuration from the environment, and one clear line when it is wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubediffusers.runner.settings import ConfigurationError, DType, RunnerSettings, Task, load_settings

RUNNER = Path(sys.executable).parent / "kubediffusers-runner"


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEDIFFUSERS_TASK", "image-to-image")
    monkeypatch.setenv("KUBEDIFFUSERS_MODEL_ID", "stabilityai/sd-turbo")
    monkeypatch.setenv("KUBEDIFFUSERS_MODEL_VARIANT", "fp16")
    monkeypatch.setenv("KUBEDIFFUSERS_MODEL_DTYPE", "bfloat16")
    monkeypatch.setenv("KUBEDIFFUSERS_MAX_QUEUE_SIZE", "3")
    monkeypatch.setenv("KUBEDIFFUSERS_AUTH_TOKEN", "p4ss-w0rd")
    s = load_settings()
    assert s.task is Task.IMAGE_TO_IMAGE and s.model_variant == "fp16" and s.model_dtype is DType.BFLOAT16
    assert s.max_queue_size == 3 and s.auth_token is not None and s.auth_token.get_secret_value() == "p4ss-w0rd"
    assert s.model_dir == Path("/models") and s.port == 8000 and s.model_revision == "main"
    assert "p4ss-w0rd" not in repr(s)  # secrets never printed


def test_empty_optional_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEDIFFUSERS_MODEL_VARIANT", "")
    monkeypatch.setenv("KUBEDIFFUSERS_AUTH_TOKEN", "")
    s = load_settings(task="text-to-image", model_id="a/b")
    assert s.model_variant is None and s.auth_token is None


def test_device_auto_resolves_to_cpu_here() -> None:
    assert RunnerSettings(task="text-to-image", model_id="a/b").resolved_device() == "cpu"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({}, "KUBEDIFFUSERS_TASK: Field required"),
        ({"KUBEDIFFUSERS_TASK": "paint-a-house", "KUBEDIFFUSERS_MODEL_ID": "a/b"}, "KUBEDIFFUSERS_TASK"),
        ({"KUBEDIFFUSERS_TASK": "text-to-image", "KUBEDIFFUSERS_MODEL_ID": "../../etc"}, "KUBEDIFFUSERS_MODEL_ID"),
        ({"KUBEDIFFUSERS_TASK": "text-to-image", "KUBEDIFFUSERS_MODEL_ID": "a/b", "KUBEDIFFUSERS_PORT": "99999"}, "KUBEDIFFUSERS_PORT"),
        ({"KUBEDIFFUSERS_TASK": "text-to-image", "KUBEDIFFUSERS_MODEL_ID": "a/b", "KUBEDIFFUSERS_DEVICE": "tpu"}, "KUBEDIFFUSERS_DEVICE"),
        ({"KUBEDIFFUSERS_TASK": "text-to-image", "KUBEDIFFUSERS_MODEL_ID": "a/b", "KUBEDIFFUSERS_MAX_QUEUE_SIZE": "0"}, "KUBEDIFFUSERS_MAX_QUEUE_SIZE"),
    ],
)
def test_invalid_configuration_is_one_line(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], fragment: str) -> None:
    for key in list(os.environ):
        if key.startswith("KUBEDIFFUSERS_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    message = str(info.value)
    assert fragment in message and "\n" not in message and message.startswith("invalid configuration")


def test_runner_command_exits_2_with_one_line_on_bad_config() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBEDIFFUSERS_")}
    env.update(KUBEDIFFUSERS_TASK="text-to-image", KUBEDIFFUSERS_MODEL_ID="a/b", KUBEDIFFUSERS_MODEL_DTYPE="float8")
    done = subprocess.run([str(RUNNER)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "KUBEDIFFUSERS_MODEL_DTYPE" in lines[0], done.stderr
