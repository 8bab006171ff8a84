"""The opt-in pre-upgrade hook Job that server-side applies the CRD (crdUpgrade.enabled).

Rendered by the real Helm engine; its command run for real against KMock (a
Kubernetes API emulator) with a pre-existing, older CRD, every request it makes
checked against the hook's rendered ClusterRole (KMock enforces no RBAC).
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml

from kubediffusers.operator import cli
from kubediffusers.operator.crd import build_crd

from .helpers import NAMESPACE, one, render, restricted_violations, validate

ON = {"crdUpgrade": {"enabled": True}}
CRDS = "apiextensions.k8s.io/v1/customresourcedefinitions"
HOOK_KINDS = ["ClusterRole", "ClusterRoleBinding", "Job", "ServiceAccount"]


def hook_objects(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [o for o in render(values) if "helm.sh/hook" in (o["metadata"].get("annotations") or {})]


def test_off_by_default() -> None:
    assert hook_objects({}) == []
    assert not [o for o in render({}) if o["kind"] == "Job"]


@pytest.mark.parametrize("version", ["1.28", "1.33"])
def test_the_hook_objects_are_valid_and_pre_upgrade_only(version: str) -> None:
    objects = hook_objects(ON)
    assert sorted(o["kind"] for o in objects) == HOOK_KINDS
    weights = {}
    for obj in objects:
        validate(obj, version)
        annotations = obj["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-upgrade"  # helm install installs crds/ itself
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        weights[obj["kind"]] = int(annotations["helm.sh/hook-weight"])
    # Helm creates hooks of lower weight first: the permissions exist before the Job runs.
    assert max(weights["ServiceAccount"], weights["ClusterRole"], weights["ClusterRoleBinding"]) < weights["Job"]


def test_the_job_runs_the_operator_images_crd_command_restricted() -> None:
    objects = hook_objects({**ON, "image": {"repository": "registry.example.com/kd/operator", "tag": "2.0.0"}, "imagePullSecrets": [{"name": "regcred"}]})
    job = one(objects, "Job")
    pod = job["spec"]["template"]["spec"]
    assert not restricted_violations(pod)
    container = pod["containers"][0]
    assert container["image"] == "registry.example.com/kd/operator:2.0.0"
    assert container["command"] == ["kubediffusers", "crd", "--apply"]
    args = cli.parser().parse_args(container["command"][1:])
    assert args.fn is cli._crd and args.apply is True
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] >= 1 and job["spec"]["activeDeadlineSeconds"] == 300
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["serviceAccountName"] == one(objects, "ServiceAccount")["metadata"]["name"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_least_privilege_patch_on_the_one_crd() -> None:
    objects = hook_objects(ON)
    role, binding, sa = one(objects, "ClusterRole"), one(objects, "ClusterRoleBinding"), one(objects, "ServiceAccount")
    assert role["rules"] == [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "resourceNames": [build_crd()["metadata"]["name"]],
            "verbs": ["patch"],
        }
    ]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}]
    # Not the operator's ServiceAccount or roles: they never get write access to CRDs.
    operator_objects = [o for o in render(ON) if "helm.sh/hook" not in (o["metadata"].get("annotations") or {})]
    operator_sa = one(operator_objects, "ServiceAccount")["metadata"]["name"]
    assert sa["metadata"]["name"] != operator_sa
    for obj in operator_objects:
        for rule in obj.get("rules") or []:
            if "customresourcedefinitions" in rule["resources"]:
                assert set(rule["verbs"]) <= {"list", "watch"}


def test_names_fit_with_a_long_release_name() -> None:
    objects = hook_objects({**ON, "fullnameOverride": "x" * 63})
    assert all(len(o["metadata"]["name"]) <= 63 for o in objects)


def allowed(role: dict[str, Any], request: kmock.Request) -> bool:
    verb = {"PATCH": "patch", "PUT": "update", "POST": "create", "DELETE": "delete"}.get(request.method.name, "get")
    if request.method.name == "GET" and not request.name:
        verb = "list"
    for rule in role["rules"]:
        group = request.resource.group if request.resource is not None else None
        if (
            group in rule["apiGroups"]
            and request.resource is not None
            and request.resource.plural in rule["resources"]
            and verb in rule["verbs"]
            and (not rule.get("resourceNames") or request.name in rule["resourceNames"])
        ):
            return True
    return False


@pytest.fixture
async def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    async with kmock.KubernetesEmulator() as fake, kmock.Server(fake):
        fake.resources.load_bundled()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": str(fake.url).rstrip("/")}}],
            "users": [{"name": "hook", "user": {"token": "hook-token"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "hook"}}],
            "current-context": "kmock",
        }
        (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        # The CRD as an older release installed it: one field less in the spec schema.
        old = copy.deepcopy(build_crd())
        del old["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["imagePullSecrets"]
        async with fake.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=old) as response:
            assert response.status < 400, await response.text()
        yield fake


async def test_the_command_applies_the_new_crd_with_only_the_hooks_permissions(api: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert await asyncio.to_thread(cli.main, ["crd", "--apply"]) == 0
    crd = build_crd()
    stored = api.objects[CRDS, None, crd["metadata"]["name"]].raw
    assert stored["spec"] == crd["spec"]
    assert "imagePullSecrets" in stored["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert capsys.readouterr().out.strip() == f"customresourcedefinition {crd['metadata']['name']} applied (server-side)"
    role = one(hook_objects(ON), "ClusterRole")
    made = [r for r in list(api._requests) if "hook-token" in r.headers.get("Authorization", "")]
    assert made, "no request carried the hook's credentials"
    for request in made:
        assert allowed(role, request), f"{request.method.name} {request.url} is not allowed by the hook's ClusterRole"
    patch = next(r for r in made if r.method.name == "PATCH")
    assert patch.headers["Content-Type"] == "application/apply-patch+yaml"  # server-side apply
    assert patch.params.get("fieldManager") == "kubediffusers-operator" and patch.params.get("force") == "true"


async def test_a_refusal_is_one_line_and_a_failed_job(api: Any, capsys: pytest.CaptureFixture[str]) -> None:
    api["patch", kmock.resource(CRDS)] << kmock.KubernetesError(status=403, reason="Forbidden", message="cannot patch resource")
    assert await asyncio.to_thread(cli.main, ["crd", "--apply"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "403 Forbidden" in err[0] and "customresourcedefinitions/inferencepipelines.kubediffusers.io" in err[0]


def test_without_credentials_it_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cli.main(["crd", "--apply"]) == 1
    assert "no Kubernetes credentials" in capsys.readouterr().err
