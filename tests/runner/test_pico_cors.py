"""CORS (PICO allowed any origin; browser clients of ours need it): off by
default, Starlette's CORSMiddleware with the origins from the settings (CR
spec.runner.corsAllowedOrigins), on a real server."""

from __future__ import annotations

from pathlib import Path

import httpx

from kubediffusers.runner.app import create_app
from tests.runner.helpers import ThreadedServer, settings_for

PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
BODY = {"prompt": "x", "height": 64, "width": 64, "num_inference_steps": 1}


def test_off_by_default(model_dir: Path) -> None:
    with ThreadedServer(create_app(settings_for(model_dir))) as server:
        r = httpx.options(server.url + "/text-to-image", headers={"Origin": "https://app.example", **PREFLIGHT})
        assert r.status_code == 405 and "access-control-allow-origin" not in r.headers
        r = httpx.post(server.url + "/text-to-image", json=BODY, headers={"Origin": "https://app.example"}, timeout=60)
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_allowed_origins_only(model_dir: Path) -> None:
    settings = settings_for(model_dir, cors_allowed_origins=["https://app.example"], auth_token="t")
    with ThreadedServer(create_app(settings)) as server:
        for path in ("/text-to-image", "/api/v1/stable-diffusion"):
            ok = httpx.options(server.url + path, headers={"Origin": "https://app.example", **PREFLIGHT})
            assert ok.status_code == 200, ok.text  # answered before the token is asked for
            assert ok.headers["access-control-allow-origin"] == "https://app.example"
            assert "POST" in ok.headers["access-control-allow-methods"]
            assert "authorization" in ok.headers["access-control-allow-headers"].lower()
            other = httpx.options(server.url + path, headers={"Origin": "https://evil.example", **PREFLIGHT})
            assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
        r = httpx.post(server.url + "/text-to-image", json=BODY, headers={"Origin": "https://app.example", "Authorization": "Bearer t"}, timeout=60)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        # Errors carry the header too, so the page can read why (and Retry-After).
        denied = httpx.post(server.url + "/text-to-image", json=BODY, headers={"Origin": "https://app.example"})
        assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == "https://app.example"
        assert "retry-after" in denied.headers["access-control-expose-headers"].lower()


def test_any_origin_as_pico_allowed(model_dir: Path) -> None:
    with ThreadedServer(create_app(settings_for(model_dir, cors_allowed_origins=["*"]))) as server:
        r = httpx.options(server.url + "/api/v1/stable-diffusion", headers={"Origin": "http://localhost:3000", **PREFLIGHT})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
        health = httpx.get(server.url + "/api/v1/health", headers={"Origin": "http://localhost:3000"})
        assert health.json()["Status"] in ("Idle", "Busy") and health.headers["access-control-allow-origin"] == "*"
