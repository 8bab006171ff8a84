"""Tokens come only from Secrets and never show up anywhere else.

Each flow runs with a known sentinel token at its most verbose log level, and every
byte it produced is searched for the token (and for its base64 form, which is how a
Secret or a Basic auth header carries it): the fetcher (success, rejected token,
missing repository, no access), the runner process (right, wrong and malformed
credentials), the operator against KMock (logs, events, status and every object it
wrote), the chart and `kubediffusers render`.
"""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from kubediffusers.operator.settings import OperatorSettings
from tests.chart.helpers import NON_DEFAULT, render
from tests.fetcher.fetch_standin import HubStandIn, Repo, fetch_env, hub, pipeline_files, run_fetch  # noqa: F401  (fixtures)
from tests.reliability.operator_harness import NS, PIPELINES, OperatorThread, call, eventually, faulty_cluster, live
from tests.reliability.procs import RunnerProcess

HF_TOKEN = "hf_SentinelHubToken0123456789abcdefXYZ"
AUTH_TOKEN = "kd-SentinelAuthToken-0123456789-abcdef"


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def assert_no_token(text: str, *tokens: str, where: str) -> None:
    for token in tokens:
        for form in (token, token[3:20], b64(token)):
            assert form not in text, f"{form!r} ({token[:6]}...) appears in {where}"


# ---- fetcher


def test_the_fetcher_never_prints_the_hf_token(hub: HubStandIn, fetch_env: dict[str, str]) -> None:  # noqa: F811
    hub.valid_tokens.add(HF_TOKEN)
    hub.add(Repo("tiny-org/private", pipeline_files(), private=True, granted={HF_TOKEN}))
    hub.add(Repo("tiny-org/gated", pipeline_files(), gated=True, granted=set()))
    env = {**fetch_env, "HF_ENDPOINT": hub.url, "HF_TOKEN": HF_TOKEN}
    runs = {
        "private, granted": run_fetch(env, "--model-id", "tiny-org/private", "--progress-interval", "0.01"),
        "gated, not granted": run_fetch(env, "--model-id", "tiny-org/gated"),
        "missing repository": run_fetch(env, "--model-id", "tiny-org/missing"),
        "missing revision": run_fetch(env, "--model-id", "tiny-org/private", "--revision", "nope"),
        "rejected token": run_fetch({**env, "HF_TOKEN": HF_TOKEN + "x"}, "--model-id", "tiny-org/private", "--refresh"),
    }
    assert runs["private, granted"].returncode == 0, runs["private, granted"].output
    assert all(r.returncode != 0 for name, r in runs.items() if name != "private, granted")
    # It was really used: the stand-in saw it on the wire.
    assert any(HF_TOKEN in s.headers.get("authorization", s.headers.get("Authorization", "")) for s in hub.seen())
    for name, r in runs.items():
        assert_no_token(r.stdout + r.stderr + (r.termination or ""), HF_TOKEN, where=f"the fetcher's output ({name})")
    # Nor in the cache it wrote (markers, refs, metadata).
    for path in Path(fetch_env["KUBEDIFFUSERS_MODEL_DIR"]).rglob("*"):
        if path.is_file() and path.stat().st_size < 1_000_000:
            assert_no_token(path.read_bytes().decode(errors="replace"), HF_TOKEN, where=str(path))


# ---- runner


@pytest.mark.slow
def test_the_runner_never_echoes_the_auth_token(tmp_path: Path) -> None:
    env = {"KUBEDIFFUSERS_AUTH_TOKEN": AUTH_TOKEN, "HF_TOKEN": HF_TOKEN, "KUBEDIFFUSERS_LOG_LEVEL": "debug"}
    with RunnerProcess(tmp_path / "models", "text-to-image", env=env) as runner:
        seen = []
        headers = [
            {"Authorization": f"Bearer {AUTH_TOKEN}"},
            {"Authorization": f"Bearer {AUTH_TOKEN}x"},
            {"Authorization": f"Bearer {AUTH_TOKEN[:-1]}"},
            {"Authorization": f"Basic {b64('user:' + AUTH_TOKEN)}"},
            {"Authorization": AUTH_TOKEN},
            {"Authorization": f"bearer  {AUTH_TOKEN}"},
            {},
        ]
        statuses = []
        with httpx.Client(timeout=60) as client:
            for h in headers:
                r = runner.good_request(client, **h)
                statuses.append(r.status_code)
                seen.append(
                    json.dumps(dict(r.headers))
                    + (r.text if r.headers.get("content-type", "").startswith("application/json") and "images" not in r.text else "")
                )
                r = client.post(runner.url + "/text-to-image", json={"prompt": AUTH_TOKEN[:2] + "x", "height": 65}, headers=h)
                seen.append(r.text + json.dumps(dict(r.headers)))
            async_job = client.post(runner.url + "/text-to-image?async=true", json={"prompt": "x", "num_inference_steps": 1}, headers=headers[0])
            seen.append(async_job.text + json.dumps(dict(async_job.headers)))
            for path in ("/health", "/healthz", "/readyz", "/metrics", "/openapi.json", async_job.headers.get("location", "/jobs/x")):
                seen.append(client.get(runner.url + path, headers=headers[0]).text)
    # The scheme is case-insensitive (RFC 7235); everything else but the exact token is refused.
    assert statuses == [200, 401, 401, 401, 401, 200, 401], statuses
    assert_no_token("\n".join(seen), AUTH_TOKEN, HF_TOKEN, where="the runner's answers")
    log = runner.output()
    assert 'POST /text-to-image HTTP/1.1" 401' in log, log[-2000:]  # the access log saw the refused requests
    assert_no_token(log, AUTH_TOKEN, HF_TOKEN, where="the runner's debug log")


# ---- operator


@pytest.mark.slow
async def test_the_operator_keeps_secret_values_out_of_logs_events_status_and_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = OperatorSettings(standalone=True, resync_seconds=0.5, retry_seconds=0.1, liveness_endpoint=None, runner_image="runner:test", log_level="debug")
    async with faulty_cluster(tmp_path, monkeypatch) as cluster:
        for name, key, value in (("hf", "token", HF_TOKEN), ("api", "bearer", AUTH_TOKEN)):
            secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS}, "data": {key: b64(value)}}
            await call(cluster, "POST", f"/api/v1/namespaces/{NS}/secrets", secret)
        spec = {
            "task": "text-to-image",
            "model": {"id": "org/gated", "tokenSecretRef": {"name": "hf", "key": "token"}},
            "runner": {"authSecretRef": {"name": "api", "key": "bearer"}},
        }
        operator = OperatorThread(settings)
        await operator.start()
        try:
            await call(
                cluster,
                "POST",
                PIPELINES,
                {"apiVersion": "kubediffusers.io/v1alpha1", "kind": "InferencePipeline", "metadata": {"name": "sd", "namespace": NS}, "spec": spec},
            )
            # A reference to a key the Secret lacks: the error message names the key, never a value.
            wrong = {**spec, "runner": {"authSecretRef": {"name": "api", "key": "missing"}}}
            await call(
                cluster,
                "POST",
                PIPELINES,
                {"apiVersion": "kubediffusers.io/v1alpha1", "kind": "InferencePipeline", "metadata": {"name": "wrong", "namespace": NS}, "spec": wrong},
            )
            await eventually(
                lambda: (
                    "sd" in live(cluster, "apps/v1/deployments")
                    and (live(cluster, "kubediffusers.io/v1alpha1/inferencepipelines")["wrong"].get("status") or {}).get("phase") == "Failed"
                ),
                15,
                "reconciled",
            )
            await eventually(lambda: live(cluster, "v1/events"), 15, "events")
        finally:
            await operator.stop()
        kinds = {"/".join(filter(None, (r.group, r.version, r.plural))) for (r, _, _) in list(cluster.objects)}
        assert {"v1/events", "apps/v1/deployments", "kubediffusers.io/v1alpha1/inferencepipelines"} <= kinds, kinds
        everything = {kind: live(cluster, kind) for kind in kinds - {"v1/secrets"}}
    dep = everything["apps/v1/deployments"]["sd"]["spec"]["template"]["spec"]
    env = {e["name"]: e for c in dep["initContainers"] + dep["containers"] for e in c.get("env") or []}
    # The tokens reach the pods only as references to the Secrets.
    assert env["HF_TOKEN"] == {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}
    assert env["KUBEDIFFUSERS_AUTH_TOKEN"] == {"name": "KUBEDIFFUSERS_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "bearer"}}}
    logs = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert any("sd" in r.getMessage() for r in caplog.records)  # the logs were captured
    assert_no_token(json.dumps(everything), HF_TOKEN, AUTH_TOKEN, where="objects the operator wrote (children, status, events)")
    assert_no_token(logs, HF_TOKEN, AUTH_TOKEN, where="the operator's logs")


# ---- chart and render


def test_rendered_manifests_hold_no_secret_values(tmp_path: Path) -> None:
    rendered = yaml.safe_dump_all(render(NON_DEFAULT)) + yaml.safe_dump_all(render())
    assert "kind: Secret" not in rendered  # the chart never carries a token
    manifest = tmp_path / "pipeline.yaml"
    manifest.write_text(
        yaml.safe_dump_all(
            [
                {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf"}, "stringData": {"token": HF_TOKEN}},
                {
                    "apiVersion": "kubediffusers.io/v1alpha1",
                    "kind": "InferencePipeline",
                    "metadata": {"name": "sd"},
                    "spec": {
                        "task": "text-to-image",
                        "model": {"id": "org/gated", "tokenSecretRef": {"name": "hf", "key": "token"}},
                        "runner": {"authSecretRef": {"name": "api", "key": "bearer"}},
                    },
                },
            ]
        )
    )
    cli = Path(sys.executable).parent / "kubediffusers"
    out = subprocess.run(
        [str(cli), "render", str(manifest)],
        capture_output=True,
        text=True,
        env={"HF_TOKEN": HF_TOKEN, "KUBEDIFFUSERS_AUTH_TOKEN": AUTH_TOKEN, "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "secretKeyRef" in out.stdout
    assert_no_token(rendered + out.stdout + out.stderr, HF_TOKEN, AUTH_TOKEN, where="rendered manifests")
