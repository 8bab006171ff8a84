"""Pure builders: every object they make is valid Kubernetes, restricted, labelled and owned."""

from __future__ import annotations

import re
from typing import Any

import pytest

from kubediffusers.operator import names
from kubediffusers.operator.builders import build_children, build_claim, build_deployment, build_fetch_env, build_runner_env, build_service
from kubediffusers.operator.pipeline import Pipeline
from kubediffusers.operator.settings import OperatorSettings
from tests.operator.helpers import K8S_VERSIONS, example_docs, manifest, validate_object

SETTINGS = OperatorSettings(runner_image="registry.example/runner:1", hf_endpoint="https://hub.mirror.example")

SPECS: dict[str, dict[str, Any]] = {
    "minimal": {},
    "full": {
        "model": {"id": "stabilityai/sd-turbo", "revision": "v1.0", "variant": "fp16", "dtype": "bfloat16", "tokenSecretRef": {"name": "hf", "key": "token"}},
        "storage": {"size": 50, "storageClassName": "fast", "accessModes": ["ReadWriteMany"], "deletePolicy": "Retain"},
        "replicas": 3,
        "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "16Gi"}, "requests": {"cpu": "500m"}},
        "nodeSelector": {"gpu": "a100"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, {"operator": "Exists"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "In", "values": ["b"]}]}]
                }
            }
        },
        "runtimeClassName": "nvidia",
        "priorityClassName": "high",
        "runner": {
            "image": "mine/runner:2",
            "logLevel": "debug",
            "maxQueueSize": 8,
            "requestTimeoutSeconds": 30.5,
            "limits": {"maxPixels": 1048576, "maxSteps": 50, "maxImagesPerRequest": 2, "maxUploadBytes": 4096},
            "authSecretRef": {"name": "auth", "key": "bearer"},
            "env": [{"name": "KUBEDIFFUSERS_DEVICE", "value": "cuda:0"}, {"name": "EXTRA", "value": "1"}],
        },
        "service": {"type": "LoadBalancer", "port": 8080},
    },
    "existing-claim": {"storage": {"existingClaim": "shared"}, "replicas": 0},
    "image-to-video": {"task": "image-to-video", "model": {"id": "stabilityai/stable-video-diffusion-img2vid-xt"}},
}
CASES = [(k, manifest(**v)) for k, v in SPECS.items()] + [(n, {**d, "metadata": {**d["metadata"], "uid": "u-9"}}) for n, d in example_docs()]


def pipeline_of(doc: dict[str, Any]) -> Pipeline:
    return Pipeline.from_manifest(doc)


def env_map(env: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in env}


def assert_restricted(pod_spec: dict[str, Any]) -> None:
    """The 'restricted' Pod Security Standard, as the admission controller checks it."""
    pod_sc = pod_spec.get("securityContext", {})
    assert pod_sc.get("runAsNonRoot") is True and pod_sc.get("runAsUser", 1) != 0
    assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
    assert not pod_spec.get("hostNetwork") and not pod_spec.get("hostPID") and not pod_spec.get("hostIPC")
    for volume in pod_spec["volumes"]:
        assert set(volume) - {"name"} <= {"persistentVolumeClaim", "emptyDir", "configMap", "secret", "projected", "downwardAPI", "ephemeral", "csi"}
    for container in pod_spec["containers"] + pod_spec.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
        assert sc["runAsNonRoot"] is True and sc.get("privileged") is not True
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"
        assert sc["readOnlyRootFilesystem"] is True
        assert not any(p.get("hostPort") for p in container.get("ports", []))
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts == {"/models": "models", "/tmp": "tmp"}


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("case", "doc"), CASES, ids=[c for c, _ in CASES])
def test_children_are_valid_kubernetes_objects(case: str, doc: dict[str, Any], version: str) -> None:
    for obj in build_children(pipeline_of(doc), SETTINGS):
        validate_object(obj, version)  # KEDA's kinds (spec.autoscaling) against their CRDs


@pytest.mark.parametrize(("case", "doc"), CASES, ids=[c for c, _ in CASES])
def test_children_labels_owners_and_restricted_pods(case: str, doc: dict[str, Any]) -> None:
    pipeline = pipeline_of(doc)
    children = build_children(pipeline, SETTINGS)
    for obj in children:
        meta = obj["metadata"]
        assert meta["labels"] == {
            "app.kubernetes.io/name": "kubediffusers-runner",
            "app.kubernetes.io/instance": pipeline.name,
            "app.kubernetes.io/managed-by": "kubediffusers-operator",
            "kubediffusers.io/pipeline": pipeline.name,
        }
        assert meta["namespace"] == pipeline.namespace
        assert names.SPEC_HASH_ANNOTATION in meta["annotations"]
        retained = obj["kind"] == "PersistentVolumeClaim" and pipeline.spec.storage.delete_policy == "Retain"
        if retained:
            assert "ownerReferences" not in meta
        else:
            assert meta["ownerReferences"] == [
                {
                    "apiVersion": "kubediffusers.io/v1alpha1",
                    "kind": "InferencePipeline",
                    "name": pipeline.name,
                    "uid": pipeline.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
    deployment = next(c for c in children if c["kind"] == "Deployment")
    assert_restricted(deployment["spec"]["template"]["spec"])
    assert deployment["spec"]["template"]["metadata"]["labels"] == children[0]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_objects_and_names() -> None:
    p = pipeline_of(manifest())
    claim, deployment, service = build_children(p, SETTINGS)
    assert (claim["kind"], claim["metadata"]["name"]) == ("PersistentVolumeClaim", "sd-models")
    assert claim["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}}}
    assert (deployment["kind"], deployment["metadata"]["name"]) == ("Deployment", "sd")
    assert (service["kind"], service["metadata"]["name"]) == ("Service", "sd")
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    pod = deployment["spec"]["template"]["spec"]
    fetch, runner = pod["initContainers"][0], pod["containers"][0]
    assert (fetch["name"], fetch["command"], fetch["image"]) == ("fetch", ["kubediffusers-fetch"], "registry.example/runner:1")
    assert fetch["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert (runner["name"], runner["command"], runner["image"]) == ("runner", ["kubediffusers-runner"], "registry.example/runner:1")
    assert runner["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert runner["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert runner["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    startup = runner["startupProbe"]
    assert startup["httpGet"]["path"] == "/readyz" and startup["failureThreshold"] * startup["periodSeconds"] >= 3600
    assert pod["volumes"] == [{"name": "models", "persistentVolumeClaim": {"claimName": "sd-models"}}, {"name": "tmp", "emptyDir": {"sizeLimit": "4Gi"}}]
    assert pod["securityContext"]["fsGroup"] == 1000 and pod["automountServiceAccountToken"] is False
    # The operator's default requests (settings.runner_cpu_request/_memory_request): never BestEffort.
    assert runner["resources"] == {"requests": {"cpu": "1", "memory": "4Gi"}} and "nodeSelector" not in pod
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # a ReadWriteOnce claim cannot host two pods on two nodes


def test_full_spec_passes_through() -> None:
    p = pipeline_of(manifest(**SPECS["full"]))
    claim, deployment, service = build_children(p, SETTINGS)
    assert claim["spec"]["storageClassName"] == "fast" and claim["spec"]["resources"]["requests"]["storage"] == "50"
    pod = deployment["spec"]["template"]["spec"]
    runner = pod["containers"][0]
    assert runner["image"] == pod["initContainers"][0]["image"] == "mine/runner:2"
    assert runner["resources"] == {"limits": {"nvidia.com/gpu": "1", "memory": "16Gi"}, "requests": {"cpu": "500m"}}
    assert pod["nodeSelector"] == {"gpu": "a100"} and pod["runtimeClassName"] == "nvidia" and pod["priorityClassName"] == "high"
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, {"operator": "Exists"}]
    assert pod["affinity"] == SPECS["full"]["affinity"]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert service["spec"]["type"] == "LoadBalancer" and service["spec"]["ports"][0]["port"] == 8080


def test_existing_claim_means_no_claim_object() -> None:
    p = pipeline_of(manifest(storage={"existingClaim": "shared"}))
    assert build_claim(p) is None
    kinds = [c["kind"] for c in build_children(p, SETTINGS)]
    assert kinds == ["Deployment", "Service"]
    volumes = build_deployment(p, SETTINGS)["spec"]["template"]["spec"]["volumes"]
    assert volumes[0] == {"name": "models", "persistentVolumeClaim": {"claimName": "shared"}}


def test_replicas_override_and_offline_render_has_no_owner() -> None:
    doc = manifest(replicas=4)
    assert build_deployment(pipeline_of(doc), SETTINGS, replicas=1)["spec"]["replicas"] == 1
    del doc["metadata"]["uid"]
    assert all("ownerReferences" not in c["metadata"] for c in build_children(pipeline_of(doc), SETTINGS))


def test_runner_env_contract() -> None:
    env = env_map(build_runner_env(pipeline_of(manifest(**SPECS["full"])), SETTINGS))
    assert env == {
        "KUBEDIFFUSERS_TASK": "text-to-image",
        "KUBEDIFFUSERS_MODEL_ID": "stabilityai/sd-turbo",
        "KUBEDIFFUSERS_MODEL_REVISION": "v1.0",
        "KUBEDIFFUSERS_MODEL_VARIANT": "fp16",
        "KUBEDIFFUSERS_MODEL_DTYPE": "bfloat16",
        "KUBEDIFFUSERS_MODEL_DIR": "/models",
        "KUBEDIFFUSERS_DEVICE": "cuda:0",  # the spec's env override wins
        "KUBEDIFFUSERS_HOST": "0.0.0.0",
        "KUBEDIFFUSERS_PORT": "8000",
        "KUBEDIFFUSERS_LOG_LEVEL": "debug",
        "HF_HUB_OFFLINE": "1",
        "KUBEDIFFUSERS_MAX_QUEUE_SIZE": "8",
        "KUBEDIFFUSERS_REQUEST_TIMEOUT_SECONDS": "30.5",
        "KUBEDIFFUSERS_MAX_PIXELS": "1048576",
        "KUBEDIFFUSERS_MAX_STEPS": "50",
        "KUBEDIFFUSERS_MAX_IMAGES_PER_REQUEST": "2",
        "KUBEDIFFUSERS_MAX_UPLOAD_BYTES": "4096",
        "KUBEDIFFUSERS_AUTH_TOKEN": {"secretKeyRef": {"name": "auth", "key": "bearer"}},
        # Layout Shared on ReadWriteMany: every replica reads every async job (shared_jobs.py).
        "KUBEDIFFUSERS_SHARED_JOBS": "true",
        "KUBEDIFFUSERS_JOBS_DIR": ".kubediffusers-jobs/sd",
        "EXTRA": "1",
    }
    minimal = env_map(build_runner_env(pipeline_of(manifest()), SETTINGS))
    assert not {"KUBEDIFFUSERS_MODEL_DTYPE", "KUBEDIFFUSERS_MODEL_VARIANT"} & set(minimal)  # the runner's defaults apply
    assert not any(k.startswith("KUBEDIFFUSERS_MAX") or k == "KUBEDIFFUSERS_AUTH_TOKEN" for k in minimal)


def test_tokens_reach_only_their_container_and_only_as_secret_references() -> None:
    p = pipeline_of(manifest(**SPECS["full"]))
    fetch = env_map(build_fetch_env(p, SETTINGS))
    runner = env_map(build_runner_env(p, SETTINGS))
    assert fetch["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "token"}}
    assert fetch["HF_ENDPOINT"] == "https://hub.mirror.example"
    assert "HF_TOKEN" not in runner and "KUBEDIFFUSERS_AUTH_TOKEN" not in fetch
    assert set(fetch) == {
        "KUBEDIFFUSERS_TASK",
        "KUBEDIFFUSERS_MODEL_ID",
        "KUBEDIFFUSERS_MODEL_REVISION",
        "KUBEDIFFUSERS_MODEL_VARIANT",
        "KUBEDIFFUSERS_MODEL_DIR",
        "KUBEDIFFUSERS_LOG_LEVEL",
        "HF_TOKEN",
        "HF_ENDPOINT",
        "HF_HOME",
    }
    assert "HF_ENDPOINT" not in env_map(build_fetch_env(p, OperatorSettings()))


def test_runner_env_is_accepted_by_the_runner_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cross-check the contract with the runner's own settings model (read-only here)."""
    settings_mod = pytest.importorskip("kubediffusers.runner.settings")
    env = {k: v for k, v in env_map(build_runner_env(pipeline_of(manifest(**SPECS["full"])), SETTINGS)).items() if isinstance(v, str)}
    env["KUBEDIFFUSERS_AUTH_TOKEN"] = "t0ken"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    runner = settings_mod.load_settings()
    assert runner.task == "text-to-image" and runner.max_queue_size == 8 and runner.max_pixels == 1048576
    known = {f"KUBEDIFFUSERS_{name.upper()}" for name in settings_mod.RunnerSettings.model_fields}
    assert {k for k in env if k.startswith("KUBEDIFFUSERS_")} <= known


def test_hashes_follow_the_spec() -> None:
    a = build_deployment(pipeline_of(manifest()), SETTINGS)
    b = build_deployment(pipeline_of(manifest(model={"id": "stabilityai/sdxl-turbo"})), SETTINGS)
    c = build_deployment(pipeline_of(manifest(replicas=2, storage={"accessModes": ["ReadWriteMany"]})), SETTINGS)
    pod_hash = lambda d: d["spec"]["template"]["metadata"]["annotations"][names.POD_HASH_ANNOTATION]  # noqa: E731
    spec_hash = lambda d: d["metadata"]["annotations"][names.SPEC_HASH_ANNOTATION]  # noqa: E731
    assert pod_hash(a) != pod_hash(b) and spec_hash(a) != spec_hash(b)
    one = build_deployment(pipeline_of(manifest(storage={"accessModes": ["ReadWriteMany"]})), SETTINGS)
    assert pod_hash(one) == pod_hash(c) and spec_hash(one) != spec_hash(c)  # scaling does not roll the pods
    assert spec_hash(a) == spec_hash(build_deployment(pipeline_of(manifest()), SETTINGS))
    assert build_service(pipeline_of(manifest())) == build_service(pipeline_of(manifest()))


OPTIMIZED = {
    "runner": {
        "maxBatchSize": 8,
        "batchWindowMs": 20,
        "optimizations": {
            "attention": "default",
            "channelsLast": True,
            "fuseQkv": True,
            "compile": {"unet": True, "vae": True, "mode": "max-autotune"},
            "deepcacheInterval": 3,
            "tinyVaeId": "madebyollin/taesd",
            "vaeSlicing": True,
        },
    }
}


def test_batching_and_optimizations_reach_the_runner_and_the_tiny_vae_the_fetcher(monkeypatch: pytest.MonkeyPatch) -> None:
    p = pipeline_of(manifest(**OPTIMIZED))
    env = env_map(build_runner_env(p, SETTINGS))
    assert {
        k: env[k]
        for k in env
        if k.startswith("KUBEDIFFUSERS_")
        and k[14:]
        in {
            "MAX_BATCH_SIZE",
            "BATCH_WINDOW_MS",
            "ATTENTION",
            "CHANNELS_LAST",
            "FUSE_QKV",
            "COMPILE_UNET",
            "COMPILE_VAE",
            "COMPILE_MODE",
            "DEEPCACHE_INTERVAL",
            "TINY_VAE_ID",
            "VAE_SLICING",
        }
    } == {
        "KUBEDIFFUSERS_MAX_BATCH_SIZE": "8",
        "KUBEDIFFUSERS_BATCH_WINDOW_MS": "20.0",
        "KUBEDIFFUSERS_ATTENTION": "default",
        "KUBEDIFFUSERS_CHANNELS_LAST": "true",
        "KUBEDIFFUSERS_FUSE_QKV": "true",
        "KUBEDIFFUSERS_COMPILE_UNET": "true",
        "KUBEDIFFUSERS_COMPILE_VAE": "true",
        "KUBEDIFFUSERS_COMPILE_MODE": "max-autotune",
        "KUBEDIFFUSERS_DEEPCACHE_INTERVAL": "3",
        "KUBEDIFFUSERS_TINY_VAE_ID": "madebyollin/taesd",
        "KUBEDIFFUSERS_VAE_SLICING": "true",
    }
    assert env_map(build_fetch_env(p, SETTINGS))["KUBEDIFFUSERS_TINY_VAE_ID"] == "madebyollin/taesd"
    # Defaults add nothing: the runner's own defaults apply.
    plain = env_map(build_runner_env(pipeline_of(manifest()), SETTINGS))
    assert not {"KUBEDIFFUSERS_ATTENTION", "KUBEDIFFUSERS_COMPILE_UNET", "KUBEDIFFUSERS_MAX_BATCH_SIZE"} & set(plain)
    settings_mod = pytest.importorskip("kubediffusers.runner.settings")
    for key, value in env.items():
        if isinstance(value, str):
            monkeypatch.setenv(key, value)
    runner = settings_mod.load_settings()
    assert runner.max_batch_size == 8 and runner.compile_unet and runner.deepcache_interval == 3


def test_offload_with_compile_is_an_invalid_spec() -> None:
    from pydantic import ValidationError

    from kubediffusers.operator.spec import InferencePipelineSpec

    with pytest.raises(ValidationError, match="cpuOffload cannot be combined"):
        InferencePipelineSpec.model_validate(
            {"task": "text-to-image", "model": {"id": "a/b"}, "runner": {"optimizations": {"cpuOffload": "model", "compile": {"unet": True}}}}
        )
    with pytest.raises(ValidationError, match="cpuOffload cannot be combined"):
        InferencePipelineSpec.model_validate(
            {"task": "text-to-image", "model": {"id": "a/b"}, "runner": {"optimizations": {"cpuOffload": "model", "compile": {"textEncoder": True}}}}
        )
    with pytest.raises(ValidationError, match=r"compile\.textEncoder cannot be combined with optimizations\.textEncoderOffload"):
        InferencePipelineSpec.model_validate(
            {"task": "text-to-image", "model": {"id": "a/b"}, "runner": {"optimizations": {"textEncoderOffload": True, "compile": {"textEncoder": True}}}}
        )
    with pytest.raises(ValidationError, match=r"textEncoderOffload cannot be combined with optimizations\.cpuOffload"):
        InferencePipelineSpec.model_validate(
            {"task": "text-to-image", "model": {"id": "a/b"}, "runner": {"optimizations": {"cpuOffload": "model", "textEncoderOffload": True}}}
        )
    with pytest.raises(ValidationError, match="transformerCache"):
        InferencePipelineSpec.model_validate({"task": "text-to-image", "model": {"id": "a/b"}, "runner": {"optimizations": {"transformerCache": "teacache"}}})


@pytest.mark.parametrize(
    ("runner", "message"),
    [
        ({"optimizations": {"compile": {"vae": True, "batchSizes": [2, 1]}}}, "increasing without repeats"),
        ({"optimizations": {"compile": {"vae": True, "batchSizes": [1, 8]}}}, "8 is more images than one call ever has"),
        ({"optimizations": {"compile": {"vae": True, "batchSizes": [0]}}}, "greater than or equal to 1"),
    ],
)
def test_compile_batch_sizes_that_cannot_be_served_are_an_invalid_spec(runner: dict[str, Any], message: str) -> None:
    from pydantic import ValidationError

    from kubediffusers.operator.spec import InferencePipelineSpec

    with pytest.raises(ValidationError, match=message):
        InferencePipelineSpec.model_validate({"task": "text-to-image", "model": {"id": "a/b"}, "runner": runner})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"runner": {"optimizations": {"compile": {"vae": True, "sizes": ["512x512", "512x512"]}}}}, "must not repeat a size"),
        ({"runner": {"optimizations": {"compile": {"vae": True, "sizes": ["512x500"]}}}}, "512x500: sides must be multiples of 8 from 8 to 8192"),
        ({"runner": {"optimizations": {"compile": {"vae": True, "sizes": ["16384x8"]}}}}, "16384x8: sides must be multiples of 8"),
        ({"runner": {"optimizations": {"compile": {"vae": True, "sizes": ["2048x2048"]}}}}, "more than limits.maxPixels 2359296"),
        ({"runner": {"limits": {"maxPixels": 262144}, "optimizations": {"compile": {"vae": True, "sizes": ["768x512"]}}}}, "more than limits.maxPixels 262144"),
        ({"runner": {"optimizations": {"compile": {"vae": True, "sizes": ["512*512"]}}}}, "should match pattern"),
        ({"runner": {"optimizations": {"compile": {"vae": True, "sizes": [512]}}}}, "valid string"),
        ({"runner": {"optimizations": {"compile": {"vae": True, "sizes": []}}}}, "at least 1 item"),
        ({"task": "upscale", "runner": {"optimizations": {"compile": {"vae": True, "sizes": ["512x512"]}}}}, "compile.sizes applies to text-to-image"),
    ],
)
def test_compile_sizes_that_cannot_be_served_are_an_invalid_spec(spec: dict[str, Any], message: str) -> None:
    """A SpecError from Pipeline.from_manifest is what reconcile turns into Valid=False, reason InvalidSpec."""
    from kubediffusers.operator.spec import SpecError

    doc = manifest(**spec)
    with pytest.raises(SpecError, match=re.escape(message)) as caught:
        pipeline_of(doc)
    assert str(caught.value).startswith("spec") and "\n" not in str(caught.value)  # the condition's message: the field's path, one line


def test_compile_sizes_reach_the_runner_as_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = {"optimizations": {"compile": {"unet": True, "sizes": ["512x512", "768x512"]}}}
    env = env_map(build_runner_env(pipeline_of(manifest(runner=spec)), SETTINGS))
    assert env["KUBEDIFFUSERS_COMPILE_SIZES"] == '["512x512", "768x512"]'
    assert "KUBEDIFFUSERS_COMPILE_SIZES" not in env_map(build_runner_env(pipeline_of(manifest()), SETTINGS))
    settings_mod = pytest.importorskip("kubediffusers.runner.settings")
    for key, value in env.items():
        if isinstance(value, str):
            monkeypatch.setenv(key, value)
    assert settings_mod.load_settings().compile_sizes == ["512x512", "768x512"]


def test_compile_batch_sizes_reach_the_runner_as_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = {"maxBatchSize": 8, "optimizations": {"compile": {"unet": True, "batchSizes": [1, 4, 8]}}}
    env = env_map(build_runner_env(pipeline_of(manifest(runner=spec)), SETTINGS))
    assert env["KUBEDIFFUSERS_COMPILE_BATCH_SIZES"] == "[1, 4, 8]"
    settings_mod = pytest.importorskip("kubediffusers.runner.settings")
    for key, value in env.items():
        if isinstance(value, str):
            monkeypatch.setenv(key, value)
    assert settings_mod.load_settings().compile_batch_sizes == [1, 4, 8]


def test_tasks_agree_with_the_runner() -> None:
    """The operator cannot import the runner (no torch in its image), so the task
    list is written twice; this keeps the two in step."""
    runner_settings = pytest.importorskip("kubediffusers.runner.settings")
    from kubediffusers.operator.spec import Task

    assert [t.value for t in Task] == [t.value for t in runner_settings.Task]


@pytest.mark.parametrize(("name", "doc"), example_docs(), ids=[n for n, _ in example_docs()])
def test_every_example_container_requests_cpu_and_memory(name: str, doc: dict[str, Any]) -> None:
    """As a namespace with a cpu/memory ResourceQuota requires (requests default to limits, as the API server does)."""
    pod = build_deployment(pipeline_of(doc), SETTINGS)["spec"]["template"]["spec"]
    for container in pod["initContainers"] + pod["containers"]:
        resources = container.get("resources") or {}
        requested = set(resources.get("requests") or {}) | set(resources.get("limits") or {})
        assert {"cpu", "memory"} <= requested, (name, container["name"], resources)


ADD_ONS = {
    "loras": [{"name": "pixel", "id": "nerijs/pixel-art-xl", "weightName": "pixel-art-xl.safetensors", "scale": 0.8}],
    "runner": {"safetyChecker": {"enabled": True, "policy": "blank"}},
}


def test_add_ons_reach_the_fetch_init_container_and_the_runner() -> None:
    """spec.loras and spec.runner.safetyChecker: one name each from the CR to the environment of both containers."""
    deployment = build_deployment(pipeline_of(manifest(**ADD_ONS)), SETTINGS)
    pod = deployment["spec"]["template"]["spec"]
    fetch_env, runner_env = env_map(pod["initContainers"][0]["env"]), env_map(pod["containers"][0]["env"])
    loras = '[{"name": "pixel", "id": "nerijs/pixel-art-xl", "revision": "main", "weight_name": "pixel-art-xl.safetensors", "scale": 0.8}]'
    for env in (fetch_env, runner_env):
        assert env["KUBEDIFFUSERS_LORAS"] == loras
        assert env["KUBEDIFFUSERS_SAFETY_CHECKER_ENABLED"] == "true"
    assert runner_env["KUBEDIFFUSERS_SAFETY_CHECKER_POLICY"] == "blank"
    assert "KUBEDIFFUSERS_SAFETY_CHECKER_POLICY" not in fetch_env  # how flags are used is no concern of the fetcher
    assert "KUBEDIFFUSERS_SAFETY_CHECKER_MODEL_ID" not in runner_env  # at its default: the runner's own applies
    plain = env_map(build_runner_env(pipeline_of(manifest()), SETTINGS))
    assert not {k for k in plain if "LORAS" in k or "SAFETY" in k}


@pytest.mark.parametrize(
    "spec",
    [
        {"loras": [{"name": "x", "id": "a/b", "weightName": "x.ckpt"}]},
        {"loras": [{"name": "x", "id": "a/b"}, {"name": "x", "id": "a/c"}]},
        {"loras": [{"name": "x", "id": "a/b"}] * 17},
        {"runner": {"safetyChecker": {"policy": "delete"}}},
    ],
)
def test_bad_add_ons_are_an_invalid_spec(spec: dict[str, Any]) -> None:
    from pydantic import ValidationError

    from kubediffusers.operator.spec import InferencePipelineSpec

    with pytest.raises(ValidationError, match=r"loras|safetyChecker"):
        InferencePipelineSpec.model_validate({"task": "text-to-image", "model": {"id": "a/b"}, **spec})
