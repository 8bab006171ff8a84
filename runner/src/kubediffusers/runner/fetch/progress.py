"""Progress lines a person can follow in ``kubectl logs``.

Instead of hooking into huggingface_hub's progress bars (their internals change
between versions, and fast backends such as hf_xet report differently), a
background thread looks at the cache itself every few seconds: a file is done
when its entry ``snapshots/<sha>/<path>`` exists (a link to its complete blob),
and the bytes in flight are the sizes of the ``blobs/*.incomplete`` files. This
needs nothing from the listing but the sizes (some mirrors give no blob ids), and
the numbers are what is really on disk, whichever transfer backend wrote it, in
plain text without control characters::

    progress: 1.2 GB of 3.4 GB (35%), 45.6 MB/s, 5 of 21 files, about 48s left
    progress (final): 3.4 GB of 3.4 GB (100%), 44.9 MB/s, 21 of 21 files

Under the fetch lock every partial file of the repository is this fetcher's:
those of dead fetchers were removed before the download (see ``partials.py``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def human_seconds(s: float) -> str:
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


@dataclass(frozen=True)
class TrackedFile:
    path: str
    size: int
    etag: str | None  # the listing's id of the file (LFS sha256, else git blob id); some mirrors give none
    sha256: str | None = None  # the Hub's sha256 of an LFS file, from the listing


@dataclass(frozen=True)
class Snapshot:
    done_bytes: int
    done_files: int


class ProgressReporter:
    """Prints a progress line every ``interval`` seconds while a download runs, and a final one."""

    def __init__(
        self,
        repo_dir: Path,
        commit: str,
        files: list[TrackedFile],
        *,
        interval: float,
        say: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.blobs = Path(repo_dir) / "blobs"
        self.snapshot = Path(repo_dir) / "snapshots" / commit
        self.files = files
        self.total_bytes = sum(f.size for f in files)
        self.interval = interval
        self.say = say
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.start_bytes = 0
        self.started = clock()
        self.final: Snapshot | None = None

    def measure(self) -> Snapshot:
        done_bytes = done_files = 0
        for f in self.files:
            try:
                entry = self.snapshot / f.path
                if entry.is_file():  # follows the link to the complete blob
                    done_bytes += entry.stat().st_size
                    done_files += 1
            except OSError:  # a link being replaced
                pass
        partial = 0
        try:
            for tmp in self.blobs.glob("*.incomplete"):
                try:
                    partial += tmp.stat().st_size
                except OSError:  # renamed into place or removed meanwhile
                    pass
        except OSError:
            pass
        done = done_bytes + partial
        if self.total_bytes:
            done = min(done, self.total_bytes)
        return Snapshot(done, done_files)

    def line(self, snap: Snapshot) -> str:
        elapsed = max(self.clock() - self.started, 1e-6)
        rate = max(snap.done_bytes - self.start_bytes, 0) / elapsed
        if self.total_bytes:
            pct = 100.0 * snap.done_bytes / self.total_bytes
            amount = f"{human_bytes(snap.done_bytes)} of {human_bytes(self.total_bytes)} ({pct:.0f}%)"
        else:  # the listing gave no sizes
            amount = human_bytes(snap.done_bytes)
        text = f"progress: {amount}, {human_bytes(rate)}/s, {snap.done_files} of {len(self.files)} files"
        if rate > 0 and self.total_bytes and snap.done_bytes < self.total_bytes:
            text += f", about {human_seconds((self.total_bytes - snap.done_bytes) / rate)} left"
        return text

    def start(self) -> ProgressReporter:
        self.start_bytes = self.measure().done_bytes
        self.started = self.clock()
        if self.interval > 0:
            self._thread = threading.Thread(target=self._run, name="fetch-progress", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.say(self.line(self.measure()))
            except Exception:  # progress must never break the download
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def finish(self) -> Snapshot:
        """Stop, and print the final line: what is on disk now."""
        self.stop()
        self.final = self.measure()
        if self.interval > 0:
            self.say(self.line(self.final).replace("progress:", "progress (final):", 1))
        return self.final

    @property
    def downloaded_bytes(self) -> int:
        """Bytes this run added to the disk (files already cached are not counted)."""
        final = self.final if self.final is not None else self.measure()
        return max(final.done_bytes - self.start_bytes, 0)

    def __enter__(self) -> ProgressReporter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
