"""The fetch itself: resolve, select, download with huggingface_hub, verify, mark.

Network calls, in order (all through huggingface_hub, against ``HF_ENDPOINT``):

1. ``GET /api/models/{id}/revision/{revision}?blobs=true`` (``HfApi.model_info``):
   the commit sha the revision points to and the file listing with sizes.
2. ``HEAD``/``GET /{id}/resolve/{sha}/model_index.json`` (``hf_hub_download``):
   which component folders the pipeline has.
3. ``snapshot_download(revision=<sha>, allow_patterns=<the selected files>)``:
   ``GET /api/models/{id}/tree/{sha}?recursive=true`` then per file ``HEAD`` and
   ``GET /{id}/resolve/{sha}/{file}`` (or hf_xet when the Hub offers it).

Every request carries the fetcher's connect/read timeouts (``http.py``) and the
whole run has a deadline (``guard.py``). Everything is pinned to the sha from step 1, so a branch moving meanwhile cannot
mix two commits. Each step is retried (bounded, exponential backoff) on
connection errors and 5xx; huggingface_hub itself resumes a file whose transfer
is cut (``Range`` request) and keeps completed files, so a retry or a rerun only
fetches what is missing.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from .config import FetchSettings
from .errors import (
    EXIT_DISK,
    EXIT_FAILED,
    EXIT_INTEGRITY,
    EXIT_NOT_FOUND,
    EXIT_UNAUTHORIZED,
    EXIT_UNREACHABLE,
    FetchError,
    causes,
    find_errno,
    http_status,
    is_transient,
    one_line,
)
from .guard import GUARD
from .http import describe_call, file_of
from .lock import repo_lock
from .marker import Marker, MarkerFile, corrupted_files, file_sha256, marker_path, now_iso, read_marker, repo_folder, write_marker
from .partials import Cleanup, remove_dead_partials
from .patterns import MODEL_INDEX, Selection, exact_patterns, select_files
from .progress import ProgressReporter, TrackedFile, human_bytes, human_seconds
from .redact import REDACT

T = TypeVar("T")


class Console:
    """Plain lines on stdout, flushed at once, with the token and the endpoint's credentials masked."""

    def __init__(self, secret: str | None = None, write: Callable[[str], None] | None = None) -> None:
        self.secret = secret
        REDACT.add(secret)
        self._lock = threading.Lock()
        self._write = write

    def redact(self, text: str) -> str:
        return REDACT(text)

    def say(self, text: str) -> None:
        line = self.redact(one_line(text, limit=4000))
        with self._lock:
            if self._write is not None:
                self._write(line)
            else:
                print(line, flush=True)


@dataclass
class Result:
    marker: Marker
    downloaded: bool  # False when an existing marker made this a no-op


@dataclass
class _Context:
    settings: FetchSettings
    token: str | None
    gated: object = None
    needed_bytes: int | None = None


def fetch(settings: FetchSettings, console: Console, *, token: str | None, dry_run: bool = False) -> Result | None:
    """Make ``settings.model_id@model_revision`` complete in the cache; returns the marker."""
    ctx = _Context(settings=settings, token=token)
    try:
        return _fetch(ctx, console, dry_run=dry_run)
    except FetchError:
        raise
    except Exception as exc:
        raise explain(exc, ctx) from exc


def _matching_marker(s: FetchSettings) -> Marker | None:
    marker = read_marker(s.model_dir, s.model_id, s.model_revision, s.model_variant)
    if marker is None:
        return None
    if marker.allow_patterns != _tuple(s.fetch_allow_patterns) or marker.ignore_patterns != _tuple(s.fetch_ignore_patterns):
        return None  # fetched with other pattern overrides: select again
    return marker


def _tuple(value: list[str] | None) -> tuple[str, ...] | None:
    return tuple(value) if value is not None else None


def _fetch(ctx: _Context, console: Console, *, dry_run: bool) -> Result | None:
    s = ctx.settings
    say = console.say
    what = f"{s.model_id}@{s.model_revision}" + (f" (variant {s.model_variant})" if s.model_variant else "")

    if not s.fetch_refresh and not dry_run and not s.fetch_verify:
        marker = _matching_marker(s)
        if marker is not None:
            say(f"{what} is already complete in {s.model_dir}: commit {marker.resolved_commit} (marker found)")
            return Result(marker=marker, downloaded=False)

    s.model_dir.mkdir(parents=True, exist_ok=True)
    repo_dir = repo_folder(s.model_dir, s.model_id)
    GUARD.doing(f"waiting for the fetch lock of {s.model_id}")
    with repo_lock(s.model_dir, s.model_id, timeout=s.fetch_lock_timeout_seconds, say=say) as locked:
        if locked:
            GUARD.locked_repos.add(repo_dir)
        try:
            if not s.fetch_refresh and not dry_run:
                marker = _matching_marker(s)
                if marker is not None and s.fetch_verify:
                    return _verify(s, marker, say)
                if marker is not None:
                    say(f"{what} was completed by another fetcher: commit {marker.resolved_commit}")
                    return Result(marker=marker, downloaded=False)
            say(f"fetching {what} into {s.model_dir} from {s.endpoint_display} ({'with' if ctx.token else 'without'} a Hugging Face token)")
            cleanup = remove_dead_partials(s.model_dir, repo_dir) if locked and not dry_run else Cleanup()
            if cleanup.removed:
                say(
                    f"removed {cleanup.removed} partial file{'s' if cleanup.removed > 1 else ''} ({human_bytes(cleanup.removed_bytes)})"
                    " left by a fetcher that was killed"
                )
            return _download(ctx, console, dry_run=dry_run, reclaimed=cleanup.removed_bytes)
        finally:
            GUARD.locked_repos.discard(repo_dir)


def _verify(s: FetchSettings, marker: Marker, say: Callable[[str], None]) -> Result:
    """Re-hash a complete snapshot against the sha256 sums its marker records; repair what differs."""
    GUARD.doing(f"verifying {s.model_id}")
    checked = [f for f in marker.files if f.sha256]
    say(
        f"verifying {len(checked)} files of {s.model_id}@{marker.resolved_commit} against their sha256 ({len(marker.files) - len(checked)} without one: size only)"
    )
    bad = corrupted_files(marker)
    if not bad:
        say(f"verified: every file of {s.model_id}@{s.model_revision} matches its sha256")
        return Result(marker=marker, downloaded=False)
    for path, _, _ in bad:
        _remove_file(marker.snapshot_path, path)
    marker_path(s.model_dir, s.model_id, s.model_revision, s.model_variant).unlink(missing_ok=True)
    path, expected, found = bad[0]
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    raise FetchError(
        "IntegrityError",
        f"{path} of {s.model_id}@{marker.resolved_commit} has sha256 {found}, the Hub's is {expected}{more};"
        " removed it and the marker: the next fetch downloads it again",
        EXIT_INTEGRITY,
    )


def _remove_file(snapshot: Path, path: str) -> None:
    """Drop a file from the cache: its blob and the snapshot's link to it (huggingface_hub then downloads it again)."""
    entry = snapshot / path
    try:
        blob = entry.resolve(strict=False)
        if blob != entry:
            blob.unlink(missing_ok=True)
    except OSError:
        pass
    entry.unlink(missing_ok=True)


def _download(ctx: _Context, console: Console, *, dry_run: bool, reclaimed: int = 0) -> Result | None:
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    s = ctx.settings
    say = console.say
    endpoint = s.endpoint
    token: str | bool = ctx.token or False
    api = HfApi(endpoint=endpoint, token=token, library_name="kubediffusers-fetch")
    started = time.monotonic()

    # 1. Resolve the revision and list the files (with sizes and blob ids).
    GUARD.doing(f"resolving {s.model_id}@{s.model_revision}")
    info = _retry(
        "resolving the revision",
        lambda: api.model_info(s.model_id, revision=s.model_revision, files_metadata=True, token=token),
        s,
        say,
    )
    ctx.gated = getattr(info, "gated", None)
    sha = info.sha
    if not sha:
        raise FetchError("HubError", f"the Hub did not return a commit for {s.model_id}@{s.model_revision}")
    siblings = {sib.rfilename: sib for sib in (info.siblings or [])}
    say(f"{s.model_id}@{s.model_revision} is commit {sha}; the repository has {len(siblings)} files")

    # 2. Read model_index.json to know the pipeline's component folders.
    model_index = None
    if MODEL_INDEX in siblings and s.fetch_allow_patterns is None:
        GUARD.doing(f"reading model_index.json of {s.model_id}@{sha}")
        index_path = _retry(
            "reading model_index.json",
            lambda: hf_hub_download(s.model_id, MODEL_INDEX, revision=sha, cache_dir=s.model_dir, token=token, endpoint=endpoint),
            s,
            say,
        )
        try:
            model_index = json.loads(Path(index_path).read_text(encoding="utf-8"))
            if not isinstance(model_index, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            raise FetchError("InvalidModelIndex", f"model_index.json of {s.model_id}@{sha} is not valid: {exc}") from None

    # 3. Select.
    selection: Selection = select_files(
        siblings,
        model_index=model_index,
        variant=s.model_variant,
        allow_patterns=s.fetch_allow_patterns,
        ignore_patterns=s.fetch_ignore_patterns,
    )
    tracked = [_tracked(siblings[f]) for f in selection.files]
    total = sum(t.size for t in tracked)
    say(f"selected {len(selection.files)} of {len(siblings)} files, {human_bytes(total)}")
    if selection.fallback_components:
        say(f"no {s.model_variant} weights in {', '.join(selection.fallback_components)}: using their default safetensors there")
    if dry_run:
        for t in tracked:
            say(f"would fetch {t.path} ({human_bytes(t.size)})")
        return None

    repo_dir = repo_folder(s.model_dir, s.model_id)
    reporter = ProgressReporter(repo_dir, sha, tracked, interval=s.fetch_progress_interval_seconds, say=say)
    ctx.needed_bytes = max(total - reporter.measure().done_bytes, 0)
    if s.fetch_check_free_space:
        _check_free_space(s.model_dir, ctx.needed_bytes, reclaimed)

    # 4. Download (huggingface_hub: per-blob locks, temporary files renamed into place, Range resume).
    GUARD.doing(f"downloading {s.model_id}@{sha}")
    with reporter:
        snapshot = _retry(
            "downloading",
            lambda: snapshot_download(
                s.model_id,
                revision=sha,
                cache_dir=s.model_dir,
                allow_patterns=exact_patterns(selection.files),
                token=token,
                endpoint=endpoint,
                max_workers=s.fetch_max_workers,
            ),
            s,
            say,
        )
        reporter.finish()
    snapshot_path = Path(snapshot)
    _write_ref(repo_dir, s.model_revision, sha)

    # 5. Verify (sizes, and the Hub's sha256 of LFS files), then mark complete.
    GUARD.doing(f"checking the files of {s.model_id}@{sha}")
    files = []
    for t in tracked:
        p = snapshot_path / t.path
        size = p.stat().st_size if p.is_file() else -1  # follows the snapshot's symlink to the blob
        if size < 0 or (t.size and size != t.size):  # size 0: the Hub listed none (or an empty file)
            raise FetchError(
                "IncompleteDownload",
                f"{t.path} of {s.model_id}@{sha} has {max(size, 0)} bytes on disk, the Hub lists {t.size}; run the fetch again",
            )
        files.append(MarkerFile(path=t.path, size=size, sha256=_checked_sha256(s, sha, snapshot_path, t)))
    marker = Marker(
        model_id=s.model_id,
        revision=s.model_revision,
        variant=s.model_variant,
        resolved_commit=sha,
        files=tuple(files),
        completed_at=now_iso(),
        allow_patterns=_tuple(s.fetch_allow_patterns),
        ignore_patterns=_tuple(s.fetch_ignore_patterns),
        task=str(s.task) if s.task is not None else None,
        endpoint=s.endpoint_display,
        total_bytes=sum(f.size for f in files),
        model_dir=s.model_dir,
    )
    write_marker(marker)
    took = max(time.monotonic() - started, 1e-3)
    downloaded = reporter.downloaded_bytes  # measured on disk: files already cached are not counted
    say(
        f"downloaded {human_bytes(downloaded)} in {human_seconds(took)} ({human_bytes(downloaded / took)}/s);"
        f" the snapshot has {len(files)} files, {human_bytes(marker.total_bytes)}"
    )
    return Result(marker=marker, downloaded=True)


def _tracked(sib: object) -> TrackedFile:
    lfs = getattr(sib, "lfs", None)
    size = (lfs.size if lfs is not None else None) or getattr(sib, "size", None) or 0
    sha256 = lfs.sha256 if lfs is not None else None
    etag = sha256 or getattr(sib, "blob_id", None)
    return TrackedFile(path=sib.rfilename, size=int(size), etag=etag, sha256=sha256)  # type: ignore[attr-defined]


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _checked_sha256(s: FetchSettings, commit: str, snapshot: Path, t: TrackedFile) -> str | None:
    """The Hub's sha256 of the file (from the listing, else the blob's name: the ``X-Linked-Etag`` of an LFS file),
    checked against the bytes on disk when ``fetch_checksums`` is on; None when the Hub gives no sha256."""
    entry = snapshot / t.path
    expected = t.sha256
    if expected is None:
        blob = entry.resolve(strict=False).name
        expected = blob if _SHA256.fullmatch(blob) else None
    if expected is None or not s.fetch_checksums:
        return None  # the marker records only sums it checked
    found = file_sha256(entry)
    if found != expected:
        _remove_file(snapshot, t.path)
        raise FetchError(
            "IntegrityError",
            f"{t.path} of {s.model_id}@{commit} arrived with sha256 {found}, the Hub's is {expected}; removed it, run the fetch again",
            EXIT_INTEGRITY,
        )
    return expected


def _check_free_space(model_dir: Path, needed: int, reclaimed: int = 0) -> None:
    """``reclaimed``: bytes of dead fetchers' partial files just removed, which a lazy filesystem may not show as free yet."""
    try:
        free = shutil.disk_usage(model_dir).free + reclaimed
    except OSError:
        return
    if needed > free:
        freed = f", {human_bytes(reclaimed)} of it from removed partial files" if reclaimed else ""
        raise FetchError(
            "DiskFull",
            f"not enough space in {model_dir}: the download needs {human_bytes(needed)} more, only {human_bytes(free)} free{freed}; enlarge spec.storage.size",
            EXIT_DISK,
        )


def _write_ref(repo_dir: Path, revision: str, sha: str) -> None:
    """``refs/<revision>`` -> sha, as huggingface_hub writes it, so offline loads by branch name work."""
    if revision == sha:
        return
    ref = repo_dir / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    if ref.is_file() and ref.read_text() == sha:
        return
    tmp = ref.with_name(f"{ref.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(sha)
    os.replace(tmp, ref)


def backoff(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Wait before retry ``attempt`` (1, 2, ...): exponential up to ``cap``, with "equal jitter" (a random half of it),
    so that pods restarted together by one Hub outage do not all come back at the same instant."""
    delay = min(base * 2 ** (attempt - 1), cap)
    return delay / 2 + (rng or random).uniform(0, delay / 2)


def _retry(step: str, fn: Callable[[], T], s: FetchSettings, say: Callable[[str], None]) -> T:
    attempts = s.fetch_retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            reason = describe_transient(exc)
            if attempt == attempts:
                raise FetchError(
                    "HubUnreachable",
                    f"cannot reach the Hugging Face Hub at {s.endpoint_display} while {step}, after {attempts} attempt{'s' if attempts > 1 else ''}: {reason}",
                    EXIT_UNREACHABLE,
                ) from exc
            wait = backoff(attempt, s.fetch_retry_backoff_seconds, s.fetch_retry_max_backoff_seconds)
            say(f"{step}: attempt {attempt} of {attempts} failed ({reason}); retrying in {wait:.2f}s")
            time.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def describe_transient(exc: BaseException) -> str:
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    for e in causes(exc):
        if isinstance(e, HfHubHTTPError) and e.response is not None:
            url = str(e.response.request.url) if e.response.request is not None else ""
            path = file_of(url)
            return f"HTTP {e.response.status_code}" + (f" on {path}" if path else (f" on {describe_call(e.response.request.method, url)}" if url else ""))
        if isinstance(e, httpx2.TransportError):
            text = f"{type(e).__name__}: {one_line(str(e), 200) or 'no detail'}"
            try:
                request = e.request
            except RuntimeError:  # raised without a request
                return text
            timeout = isinstance(e, httpx2.TimeoutException)
            return text + (" waiting for an answer to " if timeout else " on ") + describe_call(request.method, str(request.url))
    return f"{type(exc).__name__}: {one_line(str(exc), 200)}"


def explain(exc: BaseException, ctx: _Context) -> FetchError:
    """Turn any failure into a FetchError with one clear line."""
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    s = ctx.settings
    repo = s.model_id
    chain = list(causes(exc))

    full = find_errno(exc, errno.ENOSPC, errno.EDQUOT)
    if full is not None:
        needed = ""
        if ctx.needed_bytes is not None:
            try:
                free = shutil.disk_usage(s.model_dir).free
                needed = f" (the download needed {human_bytes(ctx.needed_bytes)}; {human_bytes(free)} free now)"
            except OSError:
                needed = f" (the download needed {human_bytes(ctx.needed_bytes)})"
        return FetchError(
            "DiskFull",
            f"no space left in {s.model_dir} while downloading {repo}{needed}; enlarge spec.storage.size",
            EXIT_DISK,
        )
    denied = find_errno(exc, errno.EACCES, errno.EROFS, errno.EPERM)
    if denied is not None and http_status(exc) is None:
        return FetchError(
            "StorageNotWritable",
            f"cannot write to {s.model_dir}: {denied.strerror} ({getattr(denied, 'filename', '') or s.model_dir})",
            EXIT_DISK,
        )

    if any(isinstance(e, OfflineModeIsEnabled) for e in chain):
        return FetchError(
            "Offline",
            f"HF_HUB_OFFLINE is set, and {repo}@{s.model_revision} is not complete in {s.model_dir}; unset HF_HUB_OFFLINE to download it",
            EXIT_UNREACHABLE,
        )
    status = http_status(exc)
    token_hint = "set HF_TOKEN (spec.model.tokenSecretRef) to a token of an account that has access"
    if any(isinstance(e, RevisionNotFoundError) for e in chain):
        return FetchError(
            "RevisionNotFound",
            f"revision {s.model_revision!r} not found in {repo} (404); check spec.model.revision",
            EXIT_NOT_FOUND,
        )
    gated = any(isinstance(e, GatedRepoError) for e in chain) or bool(ctx.gated)
    if status == 403 or (status == 401 and gated):
        if not ctx.token:
            msg = f"{repo} is gated: a Hugging Face token is needed; {token_hint} and accepted its conditions"
        elif status == 401:
            msg = f"the Hugging Face token was rejected for {repo} (401): it is invalid or expired"
        else:
            msg = (
                f"the Hugging Face token lacks access to {repo} (403): accept the model's conditions on the Hub"
                " with the token's account, or use a token with read access"
            )
        return FetchError("Unauthorized", msg, EXIT_UNAUTHORIZED)
    if status == 401:
        if ctx.token:
            msg = f"the Hugging Face token was rejected for {repo} (401): it is invalid, expired or has no access"
        else:
            msg = f"{repo} needs a Hugging Face token (401): it is private or gated, or does not exist; {token_hint}"
        return FetchError("Unauthorized", msg, EXIT_UNAUTHORIZED)
    if any(isinstance(e, RepositoryNotFoundError) for e in chain) or (status == 404 and not any(isinstance(e, RemoteEntryNotFoundError) for e in chain)):
        return FetchError(
            "RepositoryNotFound",
            f"repository {repo} not found at {s.endpoint_display} (404); check spec.model.id"
            + ("" if ctx.token else " (a private repository also needs a token)"),
            EXIT_NOT_FOUND,
        )
    if any(isinstance(e, RemoteEntryNotFoundError) for e in chain):
        return FetchError("FileNotFound", f"a file listed by {repo} is missing on the Hub: {one_line(str(exc), 300)}", EXIT_NOT_FOUND)
    if is_transient(exc) or any(isinstance(e, LocalEntryNotFoundError) for e in chain):
        return FetchError(
            "HubUnreachable",
            f"cannot reach the Hugging Face Hub at {s.endpoint_display}: {describe_transient(exc)}",
            EXIT_UNREACHABLE,
        )
    first = one_line(str(exc), 300) or "no detail"
    return FetchError("FetchFailed", f"{type(exc).__name__}: {first}", EXIT_FAILED)
