"""``kubediffusers local``: run a pipeline manifest on this machine, no cluster.

The runner's environment comes from the very function the operator uses
(``build_runner_env``), then a few entries are adapted to a laptop:

- KUBEDIFFUSERS_MODEL_DIR: ``--model-dir`` (default ./.cache/models) instead of /models;
- KUBEDIFFUSERS_HOST / KUBEDIFFUSERS_PORT: ``--host`` (127.0.0.1) and ``--port`` (8000);
- KUBEDIFFUSERS_DEVICE: ``--device`` when given;
- Secret references cannot be read without a cluster: the variable they fill must be
  set in the calling environment instead. spec.model.tokenSecretRef -> HF_TOKEN,
  spec.runner.authSecretRef -> KUBEDIFFUSERS_AUTH_TOKEN. When it is missing the
  command stops with one line saying which variable to export.

Then it runs ``kubediffusers-fetch`` (or, for ``kubediffusers/tiny-<task>`` models,
``kubediffusers-tiny-model``, which builds a tiny random model locally) and replaces
itself with ``kubediffusers-runner``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import names
from .builders import build_fetch_env, build_runner_env
from .builders.env import EnvVar
from .pipeline import Pipeline
from .settings import OperatorSettings

TINY_PREFIX = "kubediffusers/tiny-"


class LocalError(Exception):
    """Why the pipeline cannot run here, in one line."""


@dataclass
class Plan:
    fetch: list[str]
    fetch_env: dict[str, str]
    serve: list[str]
    serve_env: dict[str, str]
    notes: list[str] = field(default_factory=list)


def to_process_env(env: list[EnvVar], environ: Mapping[str, str], overrides: Mapping[str, str]) -> dict[str, str]:
    """A Kubernetes env list as process variables; secret references come from ``environ``."""
    result: dict[str, str] = {}
    for entry in env:
        name = entry["name"]
        if name in overrides:
            result[name] = overrides[name]
        elif "value" in entry:
            result[name] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            if not environ.get(name):
                raise LocalError(f"{name} comes from Secret {ref['name']!r} (key {ref['key']!r}) in the cluster: export {name} to run locally")
            result[name] = environ[name]
    return result


def plan(pipeline: Pipeline, *, model_dir: Path, host: str, port: int, device: str | None, environ: Mapping[str, str]) -> Plan:
    settings = OperatorSettings()
    overrides = {"KUBEDIFFUSERS_MODEL_DIR": str(model_dir), "KUBEDIFFUSERS_HOST": host, "KUBEDIFFUSERS_PORT": str(port)}
    if device:
        overrides["KUBEDIFFUSERS_DEVICE"] = device
    serve_env = to_process_env(build_runner_env(pipeline, settings), environ, overrides)
    fetch_env = to_process_env(build_fetch_env(pipeline, settings), environ, overrides)
    # HF_HOME points at the pod's writable tmp; on a laptop the user's own Hub home
    # (and the token `hf auth login` stored there) must stay in effect.
    fetch_env.pop("HF_HOME", None)
    model_id = pipeline.spec.model.id
    if model_id.startswith(TINY_PREFIX):
        fetch = ["kubediffusers-tiny-model", "--task", pipeline.spec.task.value, "--model-dir", str(model_dir)]
    else:
        fetch = [names.FETCH_COMMAND]
    return Plan(fetch=fetch, fetch_env=fetch_env, serve=[names.RUNNER_COMMAND], serve_env=serve_env)


def _resolve(command: str) -> str:
    """The runner's commands from this virtual environment first (a venv need not be on PATH), then PATH."""
    beside = Path(sys.executable).parent / command
    found = str(beside) if beside.is_file() else shutil.which(command)
    if found is None:
        raise LocalError(f"{command} not found on PATH: install the runner project (pip install -e runner)")
    return found


def run(p: Plan, environ: Mapping[str, str]) -> int:
    """Fetch, then become the runner (exec), so signals and the exit code are the runner's."""
    fetch, serve = [_resolve(p.fetch[0]), *p.fetch[1:]], [_resolve(p.serve[0]), *p.serve[1:]]
    base = {k: v for k, v in environ.items() if not k.startswith("KUBEDIFFUSERS_")}
    fetched = subprocess.run(fetch, env={**base, **p.fetch_env}, check=False)
    if fetched.returncode != 0:
        raise LocalError(f"{p.fetch[0]} failed with exit code {fetched.returncode}")
    os.execve(serve[0], serve, {**base, **p.serve_env})
    return 0  # not reached
