"""The kubediffusers command: render (offline), local (same env function as the operator), crd."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubediffusers.operator import local
from kubediffusers.operator.builders import build_runner_env
from kubediffusers.operator.cli import main
from kubediffusers.operator.crd import build_crd
from kubediffusers.operator.pipeline import Pipeline
from kubediffusers.operator.settings import OperatorSettings
from tests.operator.helpers import EXAMPLES, K8S_VERSIONS, manifest, validate_object


def write(tmp_path: Path, *docs: dict[str, Any]) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_render_of_every_example_validates(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(example), "-n", "team-a"]) == 0
    objects = [o for o in yaml.safe_load_all(capsys.readouterr().out) if o]
    assert {o["kind"] for o in objects} >= {"Deployment", "Service"}
    for obj in objects:
        assert obj["metadata"]["namespace"] == "team-a" and "ownerReferences" not in obj["metadata"]
        for version in K8S_VERSIONS:
            validate_object(obj, version)  # KEDA's kinds (spec.autoscaling) against their CRDs


def test_bad_manifest_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    bad = manifest(task="painting", replica=2)
    result = subprocess.run([sys.executable, "-m", "kubediffusers.operator", "render", str(write(tmp_path, bad))], capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "invalid manifest" in lines[0] and "spec.task" in lines[0] and "spec.replica" in lines[0]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("kind: [", "not valid YAML"),
        ("apiVersion: v1\nkind: ConfigMap\n", "no InferencePipeline"),
        ("apiVersion: kubediffusers.io/v1alpha1\nkind: InferencePipeline\nspec: {}\n", "metadata.name is required"),
    ],
)
def test_other_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(content)
    assert main(["render", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1
    assert main(["render", str(tmp_path / "missing.yaml")]) == 2


def test_local_env_is_the_operator_env_adapted_to_this_machine(tmp_path: Path) -> None:
    pipeline = Pipeline.from_manifest(
        manifest(
            model={"id": "stabilityai/sd-turbo", "variant": "fp16", "tokenSecretRef": {"name": "hf", "key": "t"}},
            runner={"authSecretRef": {"name": "a", "key": "k"}, "maxQueueSize": 3},
        )
    )
    environ = {"HF_TOKEN": "hf_local", "KUBEDIFFUSERS_AUTH_TOKEN": "sekret"}
    plan = local.plan(pipeline, model_dir=tmp_path, host="127.0.0.1", port=9000, device="cpu", environ=environ)
    cluster_env = {e["name"]: e.get("value") for e in build_runner_env(pipeline, OperatorSettings())}
    adapted = {
        "KUBEDIFFUSERS_MODEL_DIR": str(tmp_path),
        "KUBEDIFFUSERS_HOST": "127.0.0.1",
        "KUBEDIFFUSERS_PORT": "9000",
        "KUBEDIFFUSERS_DEVICE": "cpu",
        "KUBEDIFFUSERS_AUTH_TOKEN": "sekret",
    }
    assert plan.serve_env == {**cluster_env, **adapted}
    assert plan.fetch == ["kubediffusers-fetch"] and plan.serve == ["kubediffusers-runner"]
    assert plan.fetch_env["HF_TOKEN"] == "hf_local" and plan.fetch_env["KUBEDIFFUSERS_MODEL_DIR"] == str(tmp_path)
    assert "HF_TOKEN" not in plan.serve_env
    assert "HF_HOME" not in plan.fetch_env  # the laptop keeps its own Hub home and stored token


def test_local_needs_secret_backed_variables(tmp_path: Path) -> None:
    pipeline = Pipeline.from_manifest(manifest(runner={"authSecretRef": {"name": "a", "key": "k"}}))
    with pytest.raises(local.LocalError, match="export KUBEDIFFUSERS_AUTH_TOKEN"):
        local.plan(pipeline, model_dir=tmp_path, host="127.0.0.1", port=8000, device=None, environ={})


def test_local_builds_the_tiny_model_instead_of_fetching(tmp_path: Path) -> None:
    pipeline = Pipeline.from_manifest(manifest(task="image-to-image", model={"id": "kubediffusers/tiny-image-to-image"}))
    plan = local.plan(pipeline, model_dir=tmp_path, host="127.0.0.1", port=8000, device=None, environ={})
    assert plan.fetch == ["kubediffusers-tiny-model", "--task", "image-to-image", "--model-dir", str(tmp_path)]


def test_local_dry_run_masks_tokens(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEDIFFUSERS_AUTH_TOKEN", "sekret-value")
    path = write(tmp_path, manifest(runner={"authSecretRef": {"name": "a", "key": "k"}}))
    assert main(["local", "-f", str(path), "--dry-run", "--port", "9123", "--model-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "KUBEDIFFUSERS_PORT=9123" in out and "KUBEDIFFUSERS_AUTH_TOKEN=***" in out and "sekret-value" not in out
    monkeypatch.delenv("KUBEDIFFUSERS_AUTH_TOKEN")
    assert main(["local", str(path), "--dry-run"]) == 2
    assert "export KUBEDIFFUSERS_AUTH_TOKEN" in capsys.readouterr().err


def test_local_runs_fetch_then_execs_the_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr(local.sys, "executable", str(tmp_path / "no-venv" / "python"))  # nothing beside it
    monkeypatch.setattr(local.shutil, "which", lambda name: f"/bin/{name}")
    monkeypatch.setattr(local.subprocess, "run", lambda cmd, env, check: calls.append(("run", cmd, env)) or subprocess.CompletedProcess(cmd, 0))
    monkeypatch.setattr(local.os, "execve", lambda file, args, env: calls.append(("exec", args, env)))
    pipeline = Pipeline.from_manifest(manifest())
    plan = local.plan(pipeline, model_dir=tmp_path, host="127.0.0.1", port=8000, device=None, environ={})
    local.run(plan, {"PATH": "/bin", "KUBEDIFFUSERS_STRAY": "x"})
    assert [c[0] for c in calls] == ["run", "exec"]
    assert calls[0][1] == ["/bin/kubediffusers-fetch"] and calls[1][1] == ["/bin/kubediffusers-runner"]
    assert calls[1][2]["PATH"] == "/bin" and "KUBEDIFFUSERS_STRAY" not in calls[1][2]  # the manifest is the whole configuration
    monkeypatch.setattr(local.subprocess, "run", lambda cmd, env, check: subprocess.CompletedProcess(cmd, 3))
    with pytest.raises(local.LocalError, match="exit code 3"):
        local.run(plan, {})


def test_local_prefers_the_commands_of_its_own_virtual_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv_bin = tmp_path / "bin"
    venv_bin.mkdir()
    (venv_bin / "kubediffusers-runner").write_text("#!/bin/sh\n")
    monkeypatch.setattr(local.sys, "executable", str(venv_bin / "python"))
    monkeypatch.setattr(local.shutil, "which", lambda name: None)
    assert local._resolve("kubediffusers-runner") == str(venv_bin / "kubediffusers-runner")
    with pytest.raises(local.LocalError, match="kubediffusers-fetch not found"):
        local._resolve("kubediffusers-fetch")


def test_crd_command_prints_the_generated_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == build_crd()


def test_console_script_is_declared() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "operator" / "pyproject.toml").read_text()
    assert 'kubediffusers = "kubediffusers.operator.cli:main"' in pyproject


def test_operator_never_imports_torch_or_the_runner() -> None:
    code = (
        "import sys, kubediffusers.operator.cli, kubediffusers.operator.handlers, kubediffusers.operator.local;"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('kubediffusers.runner')]; print(bad); sys.exit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_operator_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEDIFFUSERS_OPERATOR_RUNNER_IMAGE", "reg/runner:9")
    monkeypatch.setenv("KUBEDIFFUSERS_OPERATOR_NAMESPACES", "team-a, team-b")
    monkeypatch.setenv("KUBEDIFFUSERS_OPERATOR_HF_ENDPOINT", "")
    monkeypatch.setenv("KUBEDIFFUSERS_OPERATOR_STANDALONE", "true")
    settings = OperatorSettings()
    assert settings.runner_image == "reg/runner:9" and settings.namespaces == ["team-a", "team-b"]
    assert settings.hf_endpoint is None and settings.standalone is True


def test_kopf_is_configured_for_peering_and_our_annotations() -> None:
    import kopf

    from kubediffusers.operator.runtime import Runtime

    settings = kopf.OperatorSettings()
    Runtime(OperatorSettings(peering_name="kd", standalone=False)).configure(settings)
    assert (settings.peering.name, settings.peering.mandatory, settings.peering.standalone) == ("kd", True, False)
    assert settings.persistence.finalizer == "kubediffusers.io/finalizer"
    standalone = kopf.OperatorSettings()
    Runtime(OperatorSettings(standalone=True)).configure(standalone)
    assert standalone.peering.standalone is True and standalone.peering.mandatory is False


def test_every_setting_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "operator.md").read_text()
    for name in OperatorSettings.model_fields:
        assert f"KUBEDIFFUSERS_OPERATOR_{name.upper()}" in doc, name
