"""spec.runner.sharedJobs (issue 17, point 6): one name from the CR to the
runner, on by default only where every replica mounts one claim any node can
mount, and the pod it renders stays valid and restricted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kubediffusers.operator.builders import build_children, build_fetch_env
from kubediffusers.operator.checks import References, check
from kubediffusers.operator.pipeline import Pipeline
from kubediffusers.operator.settings import OperatorSettings
from kubediffusers.operator.status import storage_status
from tests.operator.fakecluster import normalize
from tests.operator.helpers import K8S_VERSIONS, manifest, validate_object

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = OperatorSettings(runner_image="registry.example/runner:1")
SHARED_VARS = {"KUBEDIFFUSERS_SHARED_JOBS", "KUBEDIFFUSERS_JOBS_DIR"}
RWX = {"accessModes": ["ReadWriteMany"]}


def deployment(doc: dict[str, Any], claim_modes: frozenset[str] | None = None) -> dict[str, Any]:
    children = build_children(Pipeline.from_manifest(doc), SETTINGS, claim_modes=claim_modes)
    return next(c for c in children if c["kind"] == "Deployment")


def runner_env(doc: dict[str, Any], claim_modes: frozenset[str] | None = None) -> dict[str, str]:
    pod = deployment(doc, claim_modes)["spec"]["template"]["spec"]
    return {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}


CASES: dict[str, tuple[dict[str, Any], frozenset[str] | None, bool]] = {
    # (spec, the existing claim's access modes as found, shared jobs?)
    "shared-rwx": ({"storage": RWX, "replicas": 3}, None, True),
    "shared-rwx-one-replica": ({"storage": RWX}, None, True),
    "existing-rwx": ({"storage": {"existingClaim": "cache"}, "replicas": 2}, frozenset({"ReadWriteMany"}), True),
    "existing-rwo": ({"storage": {"existingClaim": "cache"}}, frozenset({"ReadWriteOnce"}), False),
    "existing-unknown": ({"storage": {"existingClaim": "cache"}}, None, False),
    "default-rwo": ({}, None, False),
    "perpod-auto": ({"replicas": 3}, None, False),  # RWO with replicas: Auto picks PerPod
    "perpod-explicit": ({"storage": {"layout": "PerPod", **RWX}, "replicas": 2}, None, False),
    "off-on-rwx": ({"storage": RWX, "replicas": 2, "runner": {"sharedJobs": False}}, None, False),
    "on-on-shared-rwo": ({"storage": {"layout": "Shared"}, "runner": {"sharedJobs": True}}, None, True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_shared_jobs_follow_the_layout_and_the_claim_unless_the_spec_says(case: str) -> None:
    spec, modes, shared = CASES[case]
    env = runner_env(manifest(**spec), modes)
    if shared:
        assert env["KUBEDIFFUSERS_SHARED_JOBS"] == "true"
        assert env["KUBEDIFFUSERS_JOBS_DIR"] == ".kubediffusers-jobs/sd"  # under the model dir, one per pipeline
    else:
        assert not SHARED_VARS & set(env)  # the runner's default: jobs in memory


@pytest.mark.parametrize("case", list(CASES))
def test_the_status_says_whether_jobs_are_shared_as_the_runner_is_told(case: str, crd: dict[str, Any], crd_validator: Any) -> None:
    """status.storage.sharedJobs is what the Deployment's env says, and survives the real schema's pruning (kubectl get ipl -o yaml)."""
    spec, modes, shared = CASES[case]
    doc = manifest(**spec)
    status = storage_status(Pipeline.from_manifest(doc).spec, "sd", [], None, modes)
    assert status["sharedJobs"] is shared is (runner_env(doc, modes).get("KUBEDIFFUSERS_SHARED_JOBS") == "true")
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    stored = normalize({**doc, "status": {"storage": status}}, schema)  # what the API server keeps of it
    assert stored["status"]["storage"] == status
    crd_validator.validate(stored)
    bad = {**doc, "status": {"storage": {**status, "sharedJobs": "yes"}}}
    assert not crd_validator.is_valid(bad)  # the schema types it: a boolean, nothing else


def test_each_pipeline_on_one_existing_claim_has_its_own_jobs_dir() -> None:
    spec = {"storage": {"existingClaim": "cache"}}
    rwx = frozenset({"ReadWriteMany"})
    dirs = {runner_env(manifest(name, **spec), rwx)["KUBEDIFFUSERS_JOBS_DIR"] for name in ("a", "b")}
    assert dirs == {".kubediffusers-jobs/a", ".kubediffusers-jobs/b"}


def test_the_fetcher_never_sees_the_jobs_settings() -> None:
    fetch = {e["name"] for e in build_fetch_env(Pipeline.from_manifest(manifest(storage=RWX, replicas=2)), SETTINGS)}
    assert not SHARED_VARS & fetch


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("case", ["shared-rwx", "existing-rwx", "perpod-auto"])
def test_the_pods_are_valid_restricted_and_write_jobs_only_to_the_claim(case: str, version: str) -> None:
    spec, modes, shared = CASES[case]
    doc = manifest(**spec)
    obj = deployment(doc, modes)
    validate_object(obj, version)  # the real Kubernetes OpenAPI schema
    pod = obj["spec"]["template"]["spec"]
    runner = pod["containers"][0]
    assert runner["securityContext"]["readOnlyRootFilesystem"] is True and runner["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"] != 0
    # The jobs directory is on the models volume, mounted writable at the model dir: no new mount, no writable root.
    mounts = {m["mountPath"]: m for m in runner["volumeMounts"]}
    assert set(mounts) == {"/models", "/tmp"} and not mounts["/models"].get("readOnly")
    models = next(v for v in pod["volumes"] if v["name"] == "models")
    if shared:
        expected = spec["storage"].get("existingClaim", "sd-models")
        assert models == {"name": "models", "persistentVolumeClaim": {"claimName": expected}}  # the one claim all replicas mount
    else:
        assert "ephemeral" in models  # a volume per pod: jobs stay in memory


def test_shared_jobs_cannot_be_asked_for_on_volumes_per_pod() -> None:
    for storage in ({"layout": "PerPod"}, {}):  # explicit, and what Auto picks for RWO with replicas
        pipeline = Pipeline.from_manifest(manifest(storage=storage, replicas=3, runner={"sharedJobs": True}))
        problems = [p for p in check(pipeline, References()) if p.reason == "SharedJobsNeedSharedClaim"]
        assert len(problems) == 1 and problems[0].blocking and "layout PerPod" in problems[0].message
    fine = Pipeline.from_manifest(manifest(storage=RWX, replicas=3, runner={"sharedJobs": True}))
    assert not [p for p in check(fine, References()) if p.reason == "SharedJobsNeedSharedClaim"]


def test_the_crd_and_its_reference_carry_the_field() -> None:
    for path in (ROOT / "crds" / "inferencepipelines.yaml", ROOT / "charts" / "kubediffusers" / "crds" / "inferencepipelines.yaml"):
        crd = yaml.safe_load(path.read_text())
        runner = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["runner"]["properties"]
        assert runner["sharedJobs"]["type"] == "boolean" and "default" not in runner["sharedJobs"]  # unset means: decided by the layout
        storage = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["storage"]["properties"]
        assert storage["sharedJobs"]["type"] == "boolean"
    reference = (ROOT / "docs" / "crd.md").read_text()
    assert "| `spec.runner.sharedJobs` | boolean |" in reference and "| `status.storage.sharedJobs` | boolean |" in reference


def test_the_runner_reads_what_the_operator_writes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings_mod = pytest.importorskip("kubediffusers.runner.settings")
    for key, value in runner_env(manifest(storage=RWX, replicas=2)).items():
        if value is not None:
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("KUBEDIFFUSERS_MODEL_DIR", str(tmp_path))  # what `kubediffusers local` does
    runner = settings_mod.load_settings()
    assert runner.shared_jobs is True and runner.resolved_jobs_dir() == tmp_path / ".kubediffusers-jobs" / "sd"
