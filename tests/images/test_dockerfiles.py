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
import shlex
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


def global_args(instructions: list[dict[str, Any]]) -> dict[str, str]:
    """ARG defaults declared before the first FROM (the only ones a FROM can use)."""
    args: dict[str, str] = {}
    for ins in instructions:
        if ins["instruction"] == "FROM":
            break
        if ins["instruction"] == "ARG":
            name, _, default = ins["value"].partition("=")
            args[name.strip()] = default.strip().strip('"')
    return args


def expand(value: str, args: dict[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in args, f"${name} has no default"
        return args[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, value)


DIGEST = re.compile(r"^(?P<repository>[\w./-]+):(?P<tag>[\w.-]+)@sha256:[0-9a-f]{64}$")


@pytest.mark.parametrize("name", IMAGES)
def test_multi_stage_with_bases_pinned_by_digest(name: str) -> None:
    instructions = parse(IMAGES[name])
    args = global_args(instructions)
    froms = values(instructions, "FROM")
    assert len(froms) >= 2, "not a multi-stage build"
    stage_names = set()
    for value in froms:
        parts = value.split()
        assert len(parts) == 3 and parts[1].upper() == "AS", f"unnamed stage: FROM {value}"
        image = expand(parts[0], args)
        stage_names.add(parts[2])
        if image in stage_names:
            continue
        match = DIGEST.match(image)
        assert match, f"FROM {parts[0]} = {image}: not <repository>:<tag>@sha256:<64 hex digits> (a tag moves, a digest does not)"
        tag = match.group("tag")
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{image}: not a versioned tag"
        # Debian's current stable (trixie), not the frozen previous one (bookworm).
        assert "bookworm" not in tag and "bullseye" not in tag, f"{image}: an old Debian release"
    copies = values(final(instructions), "COPY")
    assert any(c.startswith("--from=build ") for c in copies), "the final stage does not take the build stage's result"


def test_both_images_share_one_base() -> None:
    bases = {name: global_args(parse(path))["PYTHON_IMAGE"] for name, path in IMAGES.items()}
    assert len(set(bases.values())) == 1, bases


def test_the_tests_run_the_images_python_minor_version() -> None:
    import sys

    tag = DIGEST.match(global_args(parse(IMAGES["runner"]))["PYTHON_IMAGE"])
    assert tag and tag.group("tag").startswith(f"{sys.version_info.major}.{sys.version_info.minor}-"), tag


@pytest.mark.parametrize("name", IMAGES)
def test_final_stage_runs_as_a_numeric_non_root_user(name: str) -> None:
    users = values(final(parse(IMAGES[name])), "USER")
    assert users, "no USER in the final stage: it would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0, f"USER {users[-1]}: not a numeric non-root uid (runAsNonRoot needs a number)"
    assert not gid or (gid.isdigit() and int(gid) > 0)


CONSTRAINTS = ROOT / "requirements" / "constraints.txt"


def pins() -> dict[str, str]:
    out = {}
    for line in CONSTRAINTS.read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            out[re.sub(r"[-_.]+", "-", name).lower()] = version
    return out


def pip_installs(name: str) -> list[list[str]]:
    """The argument lists of every `pip install` in the Dockerfile, with ARG defaults expanded."""
    instructions = parse(IMAGES[name])
    args = global_args(instructions)
    runs = " ".join(values(instructions, "RUN"))
    return [shlex.split(expand(m, args)) for m in re.findall(r"pip install ([^&]+)", runs)]


@pytest.mark.parametrize("name", IMAGES)
def test_dependencies_are_pinned_by_the_constraints(name: str) -> None:
    installs = pip_installs(name)
    assert installs, "no pip install"
    for argv in installs:
        # The whole constraints file as copied (no filtered copy that drops pins).
        assert argv[argv.index("-c") + 1] == "requirements/constraints.txt", f"unpinned install: pip install {argv}"
        for requirement in argv:
            assert "==" not in requirement and not re.search(r"[<>~]=?", requirement), f"a version outside the constraints: {requirement}"
    # The project is built with the pinned backend (an isolated build would fetch any setuptools).
    assert installs[0][-1] == "setuptools" and pins()["setuptools"]
    project = installs[-1]
    assert project[-1] in ("./runner", "./operator") and "--no-build-isolation" in project
    copies = values(parse(IMAGES[name]), "COPY")
    assert any(c.split()[0] == "requirements/constraints.txt" for c in copies)
    assert not re.search(r"grep[^&]*constraints", " ".join(values(parse(IMAGES[name]), "RUN"))), "the constraints are filtered"


def test_every_runtime_dependency_and_the_build_backend_are_pinned() -> None:
    """Everything the images install that pip would otherwise pick freely."""
    pinned = pins()
    for project in ("runner", "operator"):
        data = tomllib.loads((ROOT / project / "pyproject.toml").read_text())
        requirements = [*data["project"]["dependencies"], *data["build-system"]["requires"]]
        for requirement in requirements:
            dist = re.split(r"[\s\[<>=~!;]", requirement, maxsplit=1)[0]
            assert re.sub(r"[-_.]+", "-", dist).lower() in pinned, f"{project}: {requirement} is not pinned in constraints.txt"
    # uvicorn[standard]'s extras, which its own metadata leaves unpinned.
    for extra in ("httptools", "uvloop", "watchfiles", "websockets", "python-dotenv", "pyyaml"):
        assert extra in pinned, extra


def test_runner_image_installs_exactly_the_constraints_torch() -> None:
    """The torch that runs in the image is the torch the tests run (up to the build's local label)."""
    pin = pins()["torch"]
    import torch

    assert torch.__version__.split("+")[0] == pin, f"the tests run torch {torch.__version__}, the constraints pin {pin}"
    instructions = parse(IMAGES["runner"])
    args = global_args(instructions)
    # Not a torch image: its torch would win over (or clash with) the pinned one.
    assert not any("torch" in expand(v.split()[0], args) for v in values(instructions, "FROM"))
    torch_installs = [argv for argv in pip_installs("runner") if "torch" in argv]
    assert len(torch_installs) == 1, torch_installs
    argv = torch_installs[0]
    assert argv[argv.index("-c") + 1] == "requirements/constraints.txt"  # so torch==<pin>, and only that
    # The index is a build argument, PyPI (whose Linux wheel bundles CUDA) by default.
    assert "--index-url" in argv and args["TORCH_INDEX_URL"] == "https://pypi.org/simple"
    assert "${TORCH_INDEX_URL}" in " ".join(values(instructions, "RUN"))
    assert "TORCH_INDEX_URL" in values(stages(instructions)[0], "ARG")  # re-declared in the build stage
    # The build fails unless the installed torch is the constraints' one.
    check = next(run for run in values(instructions, "RUN") if "torch.__version__" in run)
    assert "requirements/constraints.txt" in check and "assert torch.__version__.split('+')[0] == pin" in check
    # torch pins its CUDA wheels (cuda-toolkit, nvidia-*) with ==; what it leaves open is pinned here.
    assert {"triton", "cuda-bindings", "cuda-pathfinder"} <= set(pins())


def test_runner_image_has_a_c_compiler_for_triton() -> None:
    """torch.compile's Triton kernels compile a C launcher at run time (pytorch#116696)."""
    stage = final(parse(IMAGES["runner"]))
    runs = " ".join(values(stage, "RUN"))
    assert re.search(r"apt-get install -y --no-install-recommends [^&]*\bgcc\b", runs)
    assert "libc6-dev" in runs and "rm -rf /var/lib/apt/lists" in runs
    assert "CC=/usr/bin/gcc" in " ".join(values(stage, "ENV"))


def test_operator_image_leaves_the_kubernetes_client_out() -> None:
    data = tomllib.loads((ROOT / "operator" / "pyproject.toml").read_text())
    assert not any(d.startswith("kubernetes") for d in data["project"]["dependencies"])
    assert any(d.startswith("kubernetes") for d in data["project"]["optional-dependencies"]["kubeconfig"])
    runs = " ".join(values(parse(IMAGES["operator"]), "RUN"))
    assert '! /opt/kubediffusers/bin/python -c "import kubernetes"' in runs
    assert not any("[" in argv[-1] for argv in pip_installs("operator")), "an extra would bring the client back"
    # The operator's own code never imports it (kopf's login_via_client is optional, see runtime.login).
    for path in (ROOT / "operator" / "src").rglob("*.py"):
        assert not re.search(r"^\s*(import|from) kubernetes\b", path.read_text(), re.M), path


def test_runner_image_licence_label_names_the_bundled_gpl_encoder() -> None:
    labels = " ".join(values(final(parse(IMAGES["runner"])), "LABEL"))
    assert "GPL-2.0-or-later" in labels and "Apache-2.0" in labels
    docs = (ROOT / "docs" / "security.md").read_text()
    assert "libx264" in docs and "GPL-2.0-or-later" in docs


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
