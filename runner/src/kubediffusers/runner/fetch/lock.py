"""One fetcher per model repository at a time, across pods sharing a volume.

huggingface_hub already locks each blob while downloading it; this lock is around
the whole fetch (resolve, download, marker) so that a second pod on the same
ReadWriteMany claim waits, then finds the marker and finishes without
downloading. It is an ``flock`` on ``<model_dir>/.locks/models--org--name/
kubediffusers-fetch.lock`` (the Hub cache's own lock folder): the kernel (or the
NFS lock manager) drops it when the holder dies, so a killed pod never leaves a
stale lock. Where the filesystem cannot lock at all, the fetcher warns and goes
on without it: huggingface_hub writes each file to a process-unique temporary
name and renames it into place, and the marker is written atomically, so
concurrent fetchers then only cost duplicated bandwidth.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from .errors import EXIT_LOCK_TIMEOUT, FetchError
from .marker import repo_folder

LOCK_NAME = "kubediffusers-fetch.lock"


def lock_path(model_dir: Path, model_id: str) -> Path:
    return Path(model_dir) / ".locks" / repo_folder(Path("."), model_id).name / LOCK_NAME


@contextmanager
def repo_lock(
    model_dir: Path,
    model_id: str,
    *,
    timeout: float | None,
    say: Callable[[str], None],
    report_every: float = 10.0,
) -> Iterator[bool]:
    """Hold the repository's fetch lock; yields whether a real lock is held."""
    path = lock_path(model_dir, model_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), fallback_to_soft=False, thread_local=False)
    started = time.monotonic()
    announced = False
    first = True
    while True:
        waited = time.monotonic() - started
        step = report_every if timeout is None else max(0.0, min(report_every, timeout - waited))
        if first:
            step, first = 0.0, False
        try:
            lock.acquire(timeout=step, poll_interval=0.2)
            break
        except Timeout:
            waited = time.monotonic() - started
            if timeout is not None and waited >= timeout:
                raise FetchError(
                    "LockTimeout",
                    f"another fetcher of {model_id} held {path} for more than {timeout:.0f}s",
                    EXIT_LOCK_TIMEOUT,
                ) from None
            say(f"waiting for another fetcher of {model_id} to finish ({waited:.0f}s so far; lock {path})")
            announced = True
        except OSError as exc:
            if exc.errno in (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                say(f"warning: this filesystem cannot lock {path} ({exc.strerror}); going on without the fetch lock")
                yield False
                return
            raise
    if announced:
        say(f"the other fetcher of {model_id} is done; continuing")
    try:
        yield True
    finally:
        lock.release()
