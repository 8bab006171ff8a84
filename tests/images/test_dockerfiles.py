"""Static checks of Dockerfile.operator, Dockerfile.runner and .dockerignore.

No container engine runs on these machines, so the images are not built here
(hack/e2e-kind.sh builds them); what can be checked without building is checked
with a real Dockerfile parser (dockerfile-parse).
"""

from __future__ import annotations

import fnmatch
import io
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

from kubediffusers.operator import names
from kubediffusers.operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[2]
IMAGES = {"operator": ROOT / "Dockerfile.operator", "runner": ROOT / "Dockerfile.runner"}


def parse(path: Path) -> list[dict[str, Any]]:
    parser = DockerfileParser(fileobj=io.BytesIO(path.read_bytes()), env_replace=False)
    return parser.structure


def stages(instructions: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    out: list[list[dict[str, Any]]] = []
    for ins in instructions:
        if ins["instruction"] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def final(instructions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return stages(instructions)[-1]


def values(stage: list[dict[str, Any]], instruction: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == instruction]


def console_scripts(project: str) -> set[str]:
    data = tomllib.loads((ROOT / project / "pyproject.toml").read_text())
    return set(data["project"].get("scripts", {}))


def exec_form(value: str) -> list[str]:
    argv = json.loads(value)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), f"not exec form: {value}"
    return argv


def program(argv: list[str]) -> str:
    """The program an exec-form command runs (past `env VAR=value ...`)."""
    if argv and argv[0] == "env":
        argv = [a for a in argv[1:] if not re.match(r"^[A-Z_][A-Z0-9_]*=", a)]
    return argv[0]


@pytest.mark.parametrize("name", IMAGES)
def test_multi_stage_with_pinned_base_images(name: str) -> None:
    instructions = parse(IMAGES[name])
    froms = values(instructions, "FROM")
    assert len(froms) >= 2, "not a multi-stage build"
    stage_names = set()
    for value in froms:
        parts = value.split()
        image = parts[0]
        assert len(parts) == 3 and parts[1].upper() == "AS", f"unnamed stage: FROM {value}"
        stage_names.add(parts[2])
        if image in stage_names:
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and tag, f"{image}: no tag"
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{image}: not a versioned tag"
    copies = values(final(instructions), "COPY")
    assert any(c.startswith("--from=build ") for c in copies), "the final stage does not take the build stage's result"


@pytest.mark.parametrize("name", IMAGES)
def test_final_stage_runs_as_a_numeric_non_root_user(name: str) -> None:
    users = values(final(parse(IMAGES[name])), "USER")
    assert users, "no USER in the final stage: it would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, f"USER {users[-1]}: not a numeric non-root uid (runAsNonRoot needs a number)"
    assert not gid or (gid.isdigit() and int(gid) > 0)


@pytest.mark.parametrize("name", IMAGES)
def test_dependencies_are_pinned_by_the_constraints(name: str) -> None:
    runs = " ".join(values(parse(IMAGES[name]), "RUN"))
    installs = re.findall(r"pip install ([^&]+)", runs)
    assert installs, "no pip install"
    for args in installs:
        assert re.search(r"-c \S*constraints\.txt", args), f"unpinned install: pip install {args}"
    copies = values(parse(IMAGES[name]), "COPY")
    assert any("requirements/constraints.txt" in c for c in copies)


def test_operator_image_runs_kopf_through_the_operator_console_script_with_liveness() -> None:
    stage = final(parse(IMAGES["operator"]))
    entrypoint = exec_form(values(stage, "ENTRYPOINT")[-1])
    assert program(entrypoint) in console_scripts("operator")
    assert entrypoint == ["kubediffusers", "operator"]  # cli.py: kopf.run(..., liveness_endpoint=settings.liveness_endpoint)
    env = " ".join(values(stage, "ENV"))
    liveness = OperatorSettings().liveness_endpoint
    assert liveness and f"KUBEDIFFUSERS_OPERATOR_LIVENESS_ENDPOINT={liveness}" in env
    port = re.search(r":(\d+)/", liveness)
    assert port and values(stage, "EXPOSE") == [port.group(1)]


def test_operator_image_has_the_operator_project_only() -> None:
    instructions = parse(IMAGES["operator"])
    copied = " ".join(values(instructions, "COPY"))
    assert "runner" not in copied, "the operator image must not contain the runner project (torch)"
    runs = " ".join(values(instructions, "RUN"))
    assert "./operator" in runs and "torch" in runs  # installed, and checked not importable


def test_runner_image_serves_and_fetches_with_the_same_image() -> None:
    stage = final(parse(IMAGES["runner"]))
    scripts = console_scripts("runner")
    cmd = exec_form(values(stage, "CMD")[-1])
    assert program(cmd) == names.RUNNER_COMMAND and program(cmd) in scripts
    assert "HF_HUB_OFFLINE=1" in cmd  # the server never downloads
    assert not values(stage, "ENTRYPOINT"), "an ENTRYPOINT would stop `kubediffusers-fetch` from replacing the command"
    assert names.FETCH_COMMAND in scripts  # what the operator's init container runs in this image
    env = " ".join(values(stage, "ENV"))
    assert "HF_HUB_OFFLINE" not in env, "a global HF_HUB_OFFLINE would make the fetcher fail"


def test_runner_image_port_and_model_volume_match_the_runner_settings() -> None:
    from kubediffusers.runner.settings import RunnerSettings

    fields = RunnerSettings.model_fields
    stage = final(parse(IMAGES["runner"]))
    assert values(stage, "EXPOSE") == [str(fields["port"].default)] == [str(names.RUNNER_PORT)]
    assert str(fields["model_dir"].default) == names.MODEL_DIR
    assert any(names.MODEL_DIR in v for v in values(stage, "VOLUME"))
    assert f"KUBEDIFFUSERS_MODEL_DIR={names.MODEL_DIR}" in " ".join(values(stage, "ENV"))


def test_runner_image_bakes_in_no_weights_and_no_kopf() -> None:
    instructions = parse(IMAGES["runner"])
    text = " ".join(values(instructions, "RUN") + values(instructions, "COPY") + values(instructions, "ADD"))
    for forbidden in ("huggingface-cli", "hf download", "kubediffusers-fetch", "snapshot_download", ".safetensors", "kubediffusers-tiny-model"):
        assert forbidden not in text, forbidden
    assert "operator" not in " ".join(values(instructions, "COPY"))
    base = values(instructions, "FROM")[0].split()[0]
    assert base.startswith("pytorch/pytorch:") and "cuda" in base and "runtime" in base


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; '!' re-includes."""
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        hits = fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path, pat.replace("**/", "")) or path.startswith(pat + "/")
        if pat.startswith("**/"):
            tail = pat[3:]
            hits = hits or any(fnmatch.fnmatch(part, tail) for part in path.split("/"))
        if hits:
            excluded = not negate
    return excluded


def test_dockerignore_sends_what_the_dockerfiles_copy_and_nothing_heavy_or_secret() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    for name in IMAGES:
        for copy in values(parse(IMAGES[name]), "COPY"):
            if copy.startswith("--from="):
                continue
            source = copy.split()[0]
            assert not dockerignore_excludes(source, patterns), f"{name}: COPY {source} is excluded by .dockerignore"
    for path in (
        ".venv/bin/python",
        ".cache/models/x.safetensors",
        ".git/config",
        "tests/conftest.py",
        "runner/src/kubediffusers/runner/__pycache__/a.pyc",
        "operator/src/kubediffusers_operator.egg-info/PKG-INFO",
        "examples/sd-turbo.yaml",
    ):
        assert dockerignore_excludes(path, patterns), f"{path} would be sent to the build"
