"""Partial files (``blobs/<etag>.<random>.incomplete``) of fetchers that died.

huggingface_hub writes each file to a process-unique temporary name and deletes
it when the download fails, but a process killed with SIGKILL (OOM, a node lost,
``kubectl delete --force``) leaves it behind, and no later run reuses it: repeated
kills fill the claim. huggingface_hub holds the blob's lock
(``.locks/models--org--name/<etag>.lock``, an flock) for as long as it downloads
it, and the kernel drops the lock with the process: so a partial file whose blob
lock can be taken at once has no live owner and is removed. One whose lock is held
belongs to a live fetcher (another pod on a ReadWriteMany claim) and is left alone.
Where the filesystem cannot lock, nothing can tell, and nothing is removed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

PARTIAL_SUFFIX = ".incomplete"


@dataclass(frozen=True)
class Cleanup:
    removed: int = 0
    removed_bytes: int = 0
    live: int = 0  # partial files of live fetchers, left alone


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def remove_dead_partials(model_dir: Path, repo_dir: Path) -> Cleanup:
    blobs = repo_dir / "blobs"
    if not blobs.is_dir():
        return Cleanup()
    locks = Path(model_dir) / ".locks" / repo_dir.name
    removed = removed_bytes = live = 0
    for partial in sorted(blobs.glob("*" + PARTIAL_SUFFIX)):
        etag = partial.name.split(".", 1)[0]
        lock = FileLock(str(locks / f"{etag}.lock"), mode=0o664)
        try:
            locks.mkdir(parents=True, exist_ok=True)
            lock.acquire(timeout=0)
        except Timeout:
            live += 1
            continue
        except (OSError, NotImplementedError):
            continue  # cannot lock here: cannot tell whether its owner is alive
        try:
            size = _size(partial)
            partial.unlink(missing_ok=True)
            removed += 1
            removed_bytes += size
        except OSError:
            pass
        finally:
            lock.release()
    return Cleanup(removed, removed_bytes, live)


def _own_open_files() -> Iterable[Path]:
    """Files this process has open (Linux ``/proc``), the download threads' temporary files among them."""
    fd_dir = Path("/proc/self/fd")
    try:
        entries = list(fd_dir.iterdir())
    except OSError:
        return []
    out = []
    for entry in entries:
        try:
            out.append(Path(os.readlink(entry)))
        except OSError:
            pass
    return out


def remove_own_partials(locked_repos: Iterable[Path]) -> int:
    """On the way out: this process's temporary files; with the fetch lock held, every partial of that repository."""
    targets = {p for p in _own_open_files() if p.name.endswith(PARTIAL_SUFFIX) or p.name.startswith(".tmp-kubediffusers-complete-")}
    for repo_dir in list(locked_repos):
        blobs = repo_dir / "blobs"
        try:
            targets.update(blobs.glob("*" + PARTIAL_SUFFIX))
        except OSError:
            pass
    count = 0
    for path in targets:
        try:
            path.unlink()
            count += 1
        except OSError:
            pass
    return count
