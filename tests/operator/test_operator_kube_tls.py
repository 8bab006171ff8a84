"""Client certificates from a kubeconfig's *-data fields: the operator's API client
authenticates with them against a real TLS server that requires a client
certificate, and leaves no key material on disk (the temporary files are removed
once ssl has loaded them)."""

from __future__ import annotations

import base64
import os
import ssl
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp.web
import kopf
import pytest

from kubediffusers.operator.kube import Kube


def make_pair(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
         "-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[str, Path, Path, Path]]:
    """An HTTPS server that answers only clients presenting the 'operator' certificate."""
    pki = tmp_path / "pki"
    pki.mkdir()
    server_cert, server_key = make_pair(pki, "server")
    client_cert, client_key = make_pair(pki, "operator")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server_cert, server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(client_cert))

    async def handler(request: aiohttp.web.Request) -> aiohttp.web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        return aiohttp.web.json_response({"cn": dict(x[0] for x in peer["subject"])["commonName"] if peer else None})

    app = aiohttp.web.Application()
    app.router.add_get("/api", handler)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"https://127.0.0.1:{port}", server_cert, client_cert, client_key
    await runner.cleanup()


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary directory the client writes to (the operator pod's /tmp)."""
    directory = tmp_path / "scratch"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


def everything_under(directory: Path) -> list[str]:
    return [os.path.join(root, name) for root, dirs, files in os.walk(directory) for name in dirs + files]


async def test_key_data_authenticates_and_leaves_nothing_on_disk(tls_server: tuple[str, Path, Path, Path], scratch: Path) -> None:
    url, server_cert, client_cert, client_key = tls_server
    info = kopf.ConnectionInfo(
        server=url,
        ca_data=base64.b64encode(server_cert.read_bytes()).decode(),
        certificate_data=base64.b64encode(client_cert.read_bytes()).decode(),  # as in a kubeconfig
        private_key_data=client_key.read_text(),  # PEM as is works too
    )
    kube = Kube(info)
    try:
        assert everything_under(scratch) == [], "key material left in the temporary directory"
        assert await kube.request("GET", "/api") == {"cn": "operator"}
        assert everything_under(scratch) == []
    finally:
        await kube.close()


async def test_a_mismatched_key_fails_and_still_leaves_nothing(tls_server: tuple[str, Path, Path, Path], scratch: Path, tmp_path: Path) -> None:
    url, server_cert, client_cert, _ = tls_server
    _, other_key = make_pair(tmp_path, "other")
    info = kopf.ConnectionInfo(server=url, ca_path=str(server_cert), certificate_data=client_cert.read_bytes(), private_key_data=other_key.read_bytes())
    with pytest.raises(ssl.SSLError):
        Kube(info)
    assert everything_under(scratch) == []


async def test_key_files_named_in_the_kubeconfig_are_used_in_place(tls_server: tuple[str, Path, Path, Path], scratch: Path) -> None:
    url, server_cert, client_cert, client_key = tls_server
    kube = Kube(kopf.ConnectionInfo(server=url, ca_path=str(server_cert), certificate_path=str(client_cert), private_key_path=str(client_key)))
    try:
        assert await kube.request("GET", "/api") == {"cn": "operator"}
    finally:
        await kube.close()
    assert client_key.exists() and everything_under(scratch) == []
