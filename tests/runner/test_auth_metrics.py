"""Bearer-token auth on inference routes, open health and metrics."""

from __future__ import annotations

from tests.runner.helpers import metric

BODY = {"prompt": "a cat", "num_inference_steps": 1}


def test_auth_off_by_default(t2i) -> None:  # type: ignore[no-untyped-def]
    assert t2i.post("/text-to-image", json=BODY).status_code == 200


def test_auth_on_requires_the_token_but_health_and_metrics_stay_open(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(auth_token="s3cret-token")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
        r = client.post("/text-to-image", json=BODY, headers=headers)
        assert r.status_code == 401, headers
        assert "Bearer" in r.json()["detail"]["msg"]
        assert "s3cret-token" not in r.text
    ok = client.post("/text-to-image", json=BODY, headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status_code == 200
    for path in ("/health", "/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200, path


def test_metrics_after_requests(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client()
    client.post("/text-to-image", json={**BODY, "num_images_per_prompt": 2})
    client.post("/text-to-image", json={})
    client.get("/no/such/path/12345")
    text = client.get("/metrics").text
    assert metric(text, "kubediffusers_requests_total", route="/text-to-image", method="POST", status="200") == 1
    assert metric(text, "kubediffusers_requests_total", route="/text-to-image", method="POST", status="422") == 1
    assert metric(text, "kubediffusers_requests_total", route="unmatched", method="GET", status="404") == 1
    assert "12345" not in text
    assert metric(text, "kubediffusers_images_generated_total", task="text-to-image") == 2
    assert metric(text, "kubediffusers_queue_wait_seconds_count", task="text-to-image") == 1
    assert metric(text, "kubediffusers_inference_duration_seconds_count", task="text-to-image") == 1
    assert metric(text, "kubediffusers_request_duration_seconds_count", route="/text-to-image") == 2
    assert metric(text, "kubediffusers_queue_depth") == 0
    assert metric(text, "kubediffusers_ready") == 1
    assert metric(text, "kubediffusers_model_load_seconds") > 0
