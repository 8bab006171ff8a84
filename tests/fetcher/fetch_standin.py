"""A local stand-in of the Hugging Face Hub's model endpoints, and helpers to run the fetcher.

The stand-in answers exactly what huggingface_hub (2.x) asks while downloading:

* ``GET /api/models/{org}/{name}/revision/{rev}[?blobs=True]`` -> sha, siblings (with size, blobId, lfs)
* ``GET /api/models/{org}/{name}/tree/{rev}?recursive=True`` -> file entries
* ``HEAD``/``GET /{org}/{name}/resolve/{rev}/{path}`` -> ``X-Repo-Commit``, ``ETag`` (git blob id, or
  ``X-Linked-Etag``/``X-Linked-Size`` with the sha256 for LFS files), ``Content-Length``; ``Range`` -> 206 with
  ``Content-Range``.
* errors the way the Hub spells them: ``X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound | GatedRepo``,
  401 for anonymous requests to missing/private repositories, 404 for authenticated ones, 401/403 for gated files.

It never advertises Xet (no ``X-Xet-Hash``), so huggingface_hub uses plain HTTP even with hf_xet installed.
Fault injection: ``cut_after[path] = n`` (first GET sends n bytes then drops the connection),
``fail_get[path] = k`` (the next k GETs answer 500), ``delay_per_chunk`` (slow transfer), ``slow[path]`` (one slow file), ``corrupt`` (a flipped byte in a body).
Hostile behaviours: ``hang`` (requests whose path contains one of these strings are read and never
answered, e.g. ``"/tree/"`` for a file listing that never comes), ``strip_ids`` (the revision listing
carries sizes but no ``blobId``/``lfs``, as some mirrors serve it; the tree keeps its ``oid``, which
huggingface_hub requires), and :class:`SilentServer` (accepts connections, never answers anything).

Strict where huggingface_hub and the fetcher rely on it: sizes and ids only with ``?blobs=True``, the
commit in ``X-Repo-Commit``, ``X-Linked-Etag``/``X-Linked-Size`` for LFS files, ``Range: bytes=<start>-``
(a start past the end is a 416, as on any HTTP server), 404 for unknown routes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

LFS_SUFFIXES = (".safetensors", ".bin", ".onnx", ".msgpack", ".ckpt", ".pt", ".pth", ".h5", ".model")
GOOD_TOKEN = "hf_goodTOKENabcdef0123456789goodtoken"
UNGRANTED_TOKEN = "hf_validButNotGrantedTOKEN0123456789xyz"


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    model_id: str
    files: dict[str, bytes]
    refs: dict[str, str] = field(default_factory=dict)  # branch/tag -> commit sha
    gated: bool = False
    private: bool = False
    granted: set[str] = field(default_factory=lambda: {GOOD_TOKEN})

    def __post_init__(self) -> None:
        if not self.refs:
            self.refs = {"main": hashlib.sha1(self.model_id.encode() + b"@main").hexdigest()}

    @property
    def sha(self) -> str:
        return self.refs["main"]

    def resolve(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        if revision in self.refs.values():
            return revision
        return None

    @staticmethod
    def is_lfs(path: str) -> bool:
        return path.endswith(LFS_SUFFIXES)

    def entry(self, path: str) -> dict:
        data = self.files[path]
        out = {"size": len(data), "oid": git_blob_id(data)}
        if self.is_lfs(path):
            out["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return out


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


class HubStandIn:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.valid_tokens = {GOOD_TOKEN, UNGRANTED_TOKEN}
        self.requests: list[Seen] = []
        self.cut_after: dict[str, int] = {}
        self.fail_get: dict[str, int] = {}
        self.delay_per_chunk = 0.0
        self.chunk_size = 16 * 1024
        self.slow: dict[str, float] = {}  # path -> seconds before each chunk of its body (overrides delay_per_chunk)
        self.hang: set[str] = set()
        self.corrupt: set[str] = set()  # files whose body has one byte flipped (the headers stay true)
        self.strip_ids = False
        self.released = threading.Event()  # set on stop: hanging handlers return
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def add(self, repo: Repo) -> Repo:
        self.repos[repo.model_id] = repo
        return repo

    # -- lifecycle
    def start(self) -> HubStandIn:
        hub = self

        class Handler(_Handler):
            standin = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- inspection
    def seen(self, method: str | None = None, contains: str = "") -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if (method is None or r.method == method) and contains in r.path]

    def downloads(self, path_suffix: str) -> list[Seen]:
        return [r for r in self.seen("GET", "/resolve/") if r.path.endswith("/" + path_suffix)]

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.requests.append(seen)


class _Handler(BaseHTTPRequestHandler):
    standin: HubStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet
        pass

    # -- helpers
    def _token(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        return auth[7:] if auth.startswith("Bearer ") else None

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, status: int, obj: object, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, code: str | None, message: str, extra: dict[str, str] | None = None) -> None:
        headers = {"X-Error-Message": message, **(extra or {})}
        if code:
            headers["X-Error-Code"] = code
        self._json(status, {"error": message}, headers)

    def _repo_or_error(self, model_id: str, *, file_access: bool) -> Repo | None:
        hub = self.standin
        token = self._token()
        if token is not None and token not in hub.valid_tokens:
            self._error(401, None, "Invalid credentials in Authorization header")
            return None
        repo = hub.repos.get(model_id)
        if repo is None or (repo.private and token not in repo.granted):
            # The Hub answers 401 to anonymous requests and 404 to authenticated ones
            self._error(401 if token is None else 404, "RepoNotFound", "Repository not found")
            return None
        if repo.gated and file_access and token not in repo.granted:
            if token is None:
                self._error(401, "GatedRepo", f"Access to model {model_id} is restricted. You must be authenticated.")
            else:
                self._error(403, "GatedRepo", f"Access to model {model_id} is restricted and you are not in the authorized list.")
            return None
        return repo

    # -- routes
    def do_HEAD(self) -> None:
        self._route()

    def do_GET(self) -> None:
        self._route()

    def _route(self) -> None:
        hub = self.standin
        parts = urlsplit(self.path)
        hub.record(Seen(self.command, parts.path, {k.lower(): v for k, v in self.headers.items()}))
        segs = [unquote(s) for s in parts.path.split("/")[1:]]
        query = parse_qs(parts.query)
        if any(h in parts.path for h in hub.hang):
            hub.released.wait()  # read the request, never answer
            self.close_connection = True
            return
        try:
            if segs[:2] == ["api", "models"] and len(segs) >= 6 and segs[4] in ("revision", "tree"):
                model_id = f"{segs[2]}/{segs[3]}"
                repo = self._repo_or_error(model_id, file_access=False)
                if repo is None:
                    return
                sha = repo.resolve(segs[5])
                if sha is None:
                    self._error(404, "RevisionNotFound", f"Invalid rev id: {segs[5]}")
                    return
                if segs[4] == "revision":
                    self._model_info(repo, sha, with_blobs="blobs" in query)
                else:
                    self._tree(repo)
                return
            if len(segs) >= 5 and segs[2] == "resolve":
                model_id = f"{segs[0]}/{segs[1]}"
                repo = self._repo_or_error(model_id, file_access=True)
                if repo is None:
                    return
                sha = repo.resolve(segs[3])
                if sha is None:
                    self._error(404, "RevisionNotFound", f"Invalid rev id: {segs[3]}")
                    return
                self._resolve(repo, sha, "/".join(segs[4:]))
                return
            self._error(404, None, "Not found")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _model_info(self, repo: Repo, sha: str, with_blobs: bool) -> None:
        siblings = []
        for path in sorted(repo.files):
            sib: dict = {"rfilename": path}
            if with_blobs and self.standin.strip_ids:
                sib["size"] = repo.entry(path)["size"]
            elif with_blobs:
                e = repo.entry(path)
                sib.update(size=e["size"], blobId=e["oid"])
                if "lfs" in e:
                    sib["lfs"] = {"size": e["lfs"]["size"], "sha256": e["lfs"]["oid"], "pointerSize": 134}
            siblings.append(sib)
        self._json(
            200,
            {
                "_id": "0" * 24,
                "id": repo.model_id,
                "modelId": repo.model_id,
                "sha": sha,
                "private": repo.private,
                "gated": "manual" if repo.gated else False,
                "disabled": False,
                "library_name": "diffusers",
                "tags": ["diffusers"],
                "siblings": siblings,
            },
        )

    def _tree(self, repo: Repo) -> None:
        entries, dirs = [], set()
        for path in sorted(repo.files):
            e = repo.entry(path)
            entries.append({"type": "file", "path": path, **e})
            parent = path.rsplit("/", 1)[0] if "/" in path else None
            if parent and parent not in dirs:
                dirs.add(parent)
                entries.append({"type": "directory", "path": parent, "oid": hashlib.sha1(parent.encode()).hexdigest(), "size": 0})
        self._json(200, entries)

    def _resolve(self, repo: Repo, sha: str, path: str) -> None:
        hub = self.standin
        if path not in repo.files:
            self._error(404, "EntryNotFound", f"{path} does not exist", {"X-Repo-Commit": sha})
            return
        data = repo.files[path]
        e = repo.entry(path)
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if "lfs" in e:
            headers["ETag"] = f'"{e["lfs"]["oid"]}"'
            headers["X-Linked-Etag"] = f'"{e["lfs"]["oid"]}"'
            headers["X-Linked-Size"] = str(len(data))
        else:
            headers["ETag"] = f'"{e["oid"]}"'
        if self.command == "HEAD":
            self.send_response(200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            return
        with hub._lock:
            failures = hub.fail_get.get(path, 0)
            if failures:
                hub.fail_get[path] = failures - 1
            cut = hub.cut_after.pop(path, None)
        if failures:
            self._error(500, None, "Internal Error (injected)")
            return
        start = 0
        status = 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            if int(rng[6:-1]) >= len(data):
                self._error(416, None, f"Range Not Satisfiable: {rng}")
                return
            start = int(rng[6:-1])
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        if path in hub.corrupt and body:
            body = bytes([body[0] ^ 0x01]) + body[1:]
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        delay = hub.slow.get(path, hub.delay_per_chunk)
        for i in range(0, len(body), hub.chunk_size):
            if delay:
                time.sleep(delay)
            self.wfile.write(body[i : i + hub.chunk_size])


class SilentServer:
    """A server that accepts every connection and never sends a byte (a stuck proxy, a black-holed mirror)."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def _accept(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._held.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self._held:
            conn.close()
        self._sock.close()


def rand(n: int, seed: str) -> bytes:
    return random.Random(seed).randbytes(n)


def pipeline_files() -> dict[str, bytes]:
    """A tiny SD-1.x-shaped repository with every kind of file the fetcher must take or leave."""
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.30.0",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    j = lambda obj: json.dumps(obj).encode()  # noqa: E731
    return {
        "model_index.json": j(index),
        "README.md": b"# tiny\n",
        ".gitattributes": b"*.safetensors filter=lfs\n",
        "v1-5-pruned.safetensors": rand(20_000, "single-file"),
        "v1-5-pruned.ckpt": rand(20_000, "ckpt"),
        "unet/config.json": j({"_class_name": "UNet2DConditionModel"}),
        "unet/diffusion_pytorch_model.safetensors": rand(200_000, "unet"),
        "unet/diffusion_pytorch_model.fp16.safetensors": rand(100_000, "unet16"),
        "unet/diffusion_pytorch_model.bin": rand(30_000, "unetbin"),
        "unet/diffusion_pytorch_model.fp16.bin": rand(30_000, "unetbin16"),
        "unet/diffusion_flax_model.msgpack": rand(30_000, "unetflax"),
        "vae/config.json": j({"_class_name": "AutoencoderKL"}),
        "vae/diffusion_pytorch_model.safetensors": rand(60_000, "vae"),
        "vae/diffusion_pytorch_model.bin": rand(10_000, "vaebin"),
        "text_encoder/config.json": j({"architectures": ["CLIPTextModel"]}),
        "text_encoder/model.safetensors": rand(80_000, "te"),
        "text_encoder/model.fp16.safetensors": rand(40_000, "te16"),
        "text_encoder/model.onnx": rand(10_000, "teonnx"),
        "text_encoder/pytorch_model.bin": rand(10_000, "tebin"),
        "text_encoder/flax_model.msgpack": rand(10_000, "teflax"),
        "text_encoder/tf_model.h5": rand(10_000, "teh5"),
        "tokenizer/vocab.json": j({"a": 0, "b": 1}),
        "tokenizer/merges.txt": b"#version: 0.2\na b\n",
        "tokenizer/special_tokens_map.json": j({"bos_token": "<s>"}),
        "tokenizer/tokenizer_config.json": j({"model_max_length": 77}),
        "scheduler/scheduler_config.json": j({"_class_name": "PNDMScheduler"}),
        # model_index.json says [null, null]: diffusers never loads it, so it is never fetched
        "safety_checker/config.json": j({"_class_name": "StableDiffusionSafetyChecker"}),
        "safety_checker/model.safetensors": rand(30_000, "safety"),
        "vae_old/diffusion_pytorch_model.safetensors": rand(10_000, "vaeold"),
    }


FP16_FILES = {
    "model_index.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.fp16.safetensors",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "scheduler/scheduler_config.json",
}
DEFAULT_FILES = (FP16_FILES - {"unet/diffusion_pytorch_model.fp16.safetensors", "text_encoder/model.fp16.safetensors"}) | {
    "unet/diffusion_pytorch_model.safetensors",
    "text_encoder/model.safetensors",
}


@pytest.fixture
def hub():
    standin = HubStandIn().start()
    standin.add(Repo("tiny-org/tiny-sd", pipeline_files()))
    try:
        yield standin
    finally:
        standin.stop()


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    termination: str | None
    elapsed: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def fetch_env(tmp_path):
    """Environment for a fetcher subprocess: isolated HF home, no inherited token or Hub settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING_FACE", "KUBEDIFFUSERS_"))}
    env.update(
        HF_HOME=str(tmp_path / "hf-home"),
        HF_HUB_DISABLE_TELEMETRY="1",
        KUBEDIFFUSERS_MODEL_DIR=str(tmp_path / "models"),
        KUBEDIFFUSERS_FETCH_TERMINATION_LOG=str(tmp_path / "termination-log"),
        KUBEDIFFUSERS_FETCH_RETRY_BACKOFF_SECONDS="0.05",
        KUBEDIFFUSERS_FETCH_PROGRESS_INTERVAL_SECONDS="0.2",
        PYTHONUNBUFFERED="1",
    )
    return env


def run_fetch(env: dict[str, str], *args: str, timeout: float = 60, **extra_env: str) -> Run:
    """Run ``kubediffusers-fetch`` (as the console script's module) in a subprocess."""
    full_env = {**env, **extra_env}
    term = Path(full_env["KUBEDIFFUSERS_FETCH_TERMINATION_LOG"])
    term.unlink(missing_ok=True)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "kubediffusers.runner.fetch.cli", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Run(
        proc.returncode,
        proc.stdout,
        proc.stderr,
        term.read_text() if term.exists() else None,
        time.monotonic() - started,
    )


def start_fetch(env: dict[str, str], *args: str, **extra_env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "kubediffusers.runner.fetch.cli", *args],
        env={**env, **extra_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def in_process(hub, tmp_path, monkeypatch):
    """Run main() in this process against the stand-in (tests/conftest.py sets HF_HUB_OFFLINE for the suite)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for key in [k for k in os.environ if k.startswith(("KUBEDIFFUSERS_", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    term = tmp_path / "termination-log"
    argv = [
        "--model-id",
        "tiny-org/tiny-sd",
        "--model-dir",
        str(tmp_path / "models"),
        "--termination-log",
        str(term),
        "--retries",
        "0",
        "--max-workers",
        "1",
        "--progress-interval",
        "0",
    ]
    # main() quiets huggingface_hub's logging and bars for the process: put them back afterwards
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
    from huggingface_hub.utils import logging as hf_logging

    bars_were_disabled, verbosity = are_progress_bars_disabled(), hf_logging.get_verbosity()
    yield argv, term
    hf_logging.set_verbosity(verbosity)
    if not bars_were_disabled:
        enable_progress_bars()


@pytest.fixture
def run():
    return run_fetch


def snapshot_files(model_dir: Path, model_id: str, sha: str) -> dict[str, bytes]:
    snap = model_dir / ("models--" + model_id.replace("/", "--")) / "snapshots" / sha
    return {str(p.relative_to(snap)): p.read_bytes() for p in snap.rglob("*") if p.is_file()}


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
