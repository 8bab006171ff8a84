"""A small async Kubernetes API client: dicts in, dicts out.

It uses the credentials kopf logged in with (``ConnectionInfo``), so the operator
authenticates once, the same way for kopf's watches and for its own writes.
"""

from __future__ import annotations

import base64
import builtins
import json
import os
import ssl
import tempfile
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf

from .names import MANAGER

_PLURALS = {
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "Deployment": "deployments",
    "Service": "services",
    "Secret": "secrets",
    "Pod": "pods",
    "NetworkPolicy": "networkpolicies",
    "CustomResourceDefinition": "customresourcedefinitions",
    "Event": "events",
    "ScaledObject": "scaledobjects",
    "HTTPScaledObject": "httpscaledobjects",
}


class ApiError(Exception):
    """The API answered with an error status (or could not be reached: status 0)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message

    @property
    def transient(self) -> bool:
        """Worth retrying: server trouble, conflicts, throttling, lost connection."""
        return self.status in (0, 408, 409, 410, 429) or self.status >= 500


def object_path(api_version: str, kind_or_plural: str, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
    plural = _PLURALS.get(kind_or_plural, kind_or_plural)
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = base + (f"/namespaces/{namespace}" if namespace else "") + f"/{plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


def path_of(obj: Mapping[str, Any], collection: bool = False) -> str:
    meta = obj["metadata"]
    return object_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), None if collection else meta["name"])


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if not info.server.startswith("https"):
        return True  # plain http: aiohttp ignores it
    if info.insecure:
        return False
    context = ssl.create_default_context(cafile=str(info.ca_path) if info.ca_path else None)
    if info.ca_data:
        data = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
        context.load_verify_locations(cadata=data if "BEGIN" in data else base64.b64decode(data).decode())
    if info.certificate_data or info.private_key_data or info.certificate_path:
        # ssl loads a key pair only from files: in-memory data (kubeconfig client-certificate-data,
        # client-key-data) goes to a private directory that is removed as soon as it is loaded.
        with tempfile.TemporaryDirectory(prefix="kubediffusers-") as private:
            cert = _to_file(info.certificate_data, private, "client.crt") or info.certificate_path
            key = _to_file(info.private_key_data, private, "client.key") or info.private_key_path
            if cert:
                context.load_cert_chain(str(cert), str(key) if key else None)
    return context


def _to_file(data: str | bytes | None, directory: str, name: str) -> str | None:
    if not data:
        return None
    raw = data.encode() if isinstance(data, str) else data
    if b"BEGIN" not in raw:
        raw = base64.b64decode(raw)
    path = os.path.join(directory, name)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
        handle.write(raw)
    return path


class Kube:
    """One session against one API server."""

    def __init__(self, info: kopf.ConnectionInfo, timeout: float = 30.0) -> None:
        self.info = info
        headers = {"Accept": "application/json", "User-Agent": "kubediffusers-operator"}
        if info.token:
            headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        auth = aiohttp.BasicAuth(info.username, info.password or "") if info.username else None
        connector = aiohttp.TCPConnector(ssl=_ssl_context(info), limit=20)
        self._server = info.server.rstrip("/")  # may carry a path prefix (API proxies)
        self._session = aiohttp.ClientSession(headers=headers, auth=auth, connector=connector, timeout=aiohttp.ClientTimeout(total=timeout))

    async def close(self) -> None:
        await self._session.close()

    async def request(
        self, method: str, path: str, *, body: Any = None, params: Mapping[str, str] | None = None, content_type: str = "application/json"
    ) -> Any:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else {}
        try:
            async with self._session.request(method, self._server + path, data=data, params=params, headers=headers) as response:
                text = await response.text()
                if response.status >= 400:
                    raise _error(response.status, text)
                return json.loads(text) if text else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(0, type(exc).__name__, str(exc) or "connection failed") from None

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await self.request("GET", path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, path: str, label_selector: str | None = None, field_selector: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("labelSelector", label_selector), ("fieldSelector", field_selector)) if v}
        return list((await self.request("GET", path, params=params or None) or {}).get("items") or [])

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply: creates a missing object; sets the fields in ``obj``, drops fields this manager set before and no longer sets."""
        params = {"fieldManager": MANAGER, "force": "true"}
        return await self.request("PATCH", path_of(obj), body=obj, params=params, content_type="application/apply-patch+yaml")

    async def replace_managed_fields(self, path: str, current: Mapping[str, Any], managed_fields: builtins.list[dict[str, Any]]) -> dict[str, Any]:
        """Rewrite ``metadata.managedFields`` (the csaupgrade migration), only if the object is still the one read."""
        patch: list[dict[str, Any]] = [{"op": "replace", "path": "/metadata/managedFields", "value": managed_fields}]
        version = (current.get("metadata") or {}).get("resourceVersion")
        if version:
            patch.insert(0, {"op": "test", "path": "/metadata/resourceVersion", "value": version})
        return await self.request("PATCH", path, body=patch, content_type="application/json-patch+json")

    async def patch_status(self, path: str, status: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", path + "/status", body={"status": status}, content_type="application/merge-patch+json")


def _error(status: int, text: str) -> ApiError:
    try:
        payload = json.loads(text)
        return ApiError(status, str(payload.get("reason") or status), str(payload.get("message") or text)[:500])
    except (ValueError, AttributeError):
        return ApiError(status, str(status), text[:500] or "no details")
