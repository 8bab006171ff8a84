"""Disk full, the fetch lock and progress lines.

Disk full is simulated in-process: a real full volume needs a small tmpfs (root) and
RLIMIT_FSIZE gives EFBIG, not ENOSPC. So the test gives huggingface_hub's temporary
download files (``blobs/<etag>.<random>.incomplete``, opened with ``Path.open``) a
shared byte quota; past it, ``write`` raises ``OSError(ENOSPC)`` exactly as the kernel
would, inside huggingface_hub's real download path.
"""

from __future__ import annotations

import errno
import os
import pathlib
from collections import namedtuple

from filelock import FileLock

from kubediffusers.runner.fetch import read_marker
from kubediffusers.runner.fetch.cli import main
from kubediffusers.runner.fetch.errors import EXIT_DISK, EXIT_LOCK_TIMEOUT
from kubediffusers.runner.fetch.lock import lock_path
from kubediffusers.runner.fetch.progress import ProgressReporter, TrackedFile, human_bytes

from .fetch_standin import DEFAULT_FILES, pipeline_files

MODEL = "tiny-org/tiny-sd"


class _QuotaFile:
    def __init__(self, real, budget: list[int]) -> None:
        self._real, self._budget = real, budget

    def write(self, data: bytes) -> int:
        if len(data) > self._budget[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._budget[0] -= len(data)
        return self._real.write(data)

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._real.close()


def test_disk_full_while_writing_is_one_line_with_the_size_needed(in_process, monkeypatch, capsys, tmp_path):
    argv, term = in_process
    budget = [100_000]  # bytes left on the "volume"; the selection needs about 340 kB
    real_open = pathlib.Path.open

    def quota_open(self, mode="r", *args, **kwargs):
        f = real_open(self, mode, *args, **kwargs)
        return _QuotaFile(f, budget) if self.name.endswith(".incomplete") and "w" in mode else f

    monkeypatch.setattr(pathlib.Path, "open", quota_open)
    assert main(argv) == EXIT_DISK
    err = capsys.readouterr().err.splitlines()
    # model_index.json is already in the cache when the download starts
    needed = human_bytes(sum(len(pipeline_files()[p]) for p in DEFAULT_FILES - {"model_index.json"}))
    assert len(err) == 1 and err[0].startswith("DiskFull: no space left in ")
    assert f"the download needed {needed}" in err[0] and "spec.storage.size" in err[0]
    assert term.read_text() == err[0]
    assert read_marker(tmp_path / "models", MODEL, "main", None) is None
    blobs = tmp_path / "models" / "models--tiny-org--tiny-sd" / "blobs"
    assert not [b for b in blobs.iterdir() if b.name.endswith(".incomplete")]  # no half file left behind


def test_not_enough_free_space_fails_before_downloading(in_process, monkeypatch, capsys, hub):
    argv, term = in_process
    from kubediffusers.runner.fetch import core

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(core.shutil, "disk_usage", lambda path: usage(10_000, 9_000, 1_000))
    assert main(argv) == EXIT_DISK
    line = capsys.readouterr().err.strip()
    assert line.startswith("DiskFull: not enough space in ") and "only 1.0 kB free" in line
    assert term.read_text() == line
    assert not any(r.path.endswith(".safetensors") for r in hub.seen("GET", "/resolve/"))


def test_a_second_fetcher_waits_for_the_lock_and_times_out_when_asked(hub, fetch_env, run, tmp_path):
    model_dir = tmp_path / "models"
    path = lock_path(model_dir, MODEL)
    path.parent.mkdir(parents=True)
    with FileLock(str(path)):
        result = run({**fetch_env, "HF_ENDPOINT": hub.url}, "--model-id", MODEL, "--lock-timeout", "0.6")
    assert result.returncode == EXIT_LOCK_TIMEOUT
    assert "waiting for another fetcher of tiny-org/tiny-sd" in result.stdout
    assert result.stderr.startswith("LockTimeout: ")
    assert hub.seen() == []  # it never started on the Hub


def test_progress_measures_what_is_on_disk_without_any_id(tmp_path):
    """Done = the snapshot's entry exists; in flight = the partial files: no blob id or sha256 needed."""
    sha = "0" * 40
    blobs, snap = tmp_path / "blobs", tmp_path / "snapshots" / sha
    blobs.mkdir()
    snap.mkdir(parents=True)
    (blobs / "aaa").write_bytes(b"x" * 1000)  # complete, linked from the snapshot
    (snap / "a").symlink_to(blobs / "aaa")
    (blobs / "bbb.1234abcd.incomplete").write_bytes(b"x" * 300)  # in flight
    files = [TrackedFile("a", 1000, None), TrackedFile("b", 1000, None), TrackedFile("c", 2000, None)]
    now = [0.0]
    lines: list[str] = []
    reporter = ProgressReporter(tmp_path, sha, files, interval=1, say=lines.append, clock=lambda: now[0])
    reporter.start()
    reporter.stop()
    assert reporter.measure().done_bytes == 1300 and reporter.measure().done_files == 1
    (blobs / "ccc.5678.incomplete").write_bytes(b"x" * 1000)
    now[0] = 2.0
    line = reporter.line(reporter.measure())
    assert line == "progress: 2.3 kB of 4.0 kB (58%), 500 B/s, 1 of 3 files, about 3s left"
    for name, size in (("b", 1000), ("c", 2000)):
        (blobs / name).write_bytes(b"x" * size)
        (snap / name).symlink_to(blobs / name)
    for tmp in blobs.glob("*.incomplete"):
        tmp.unlink()
    now[0] = 4.0
    final = reporter.finish()
    assert lines[-1] == "progress (final): 4.0 kB of 4.0 kB (100%), 675 B/s, 3 of 3 files"
    assert final.done_files == 3 and reporter.downloaded_bytes == 4000 - 1300


def test_progress_without_sizes_prints_bytes_only(tmp_path):
    reporter = ProgressReporter(tmp_path, "0" * 40, [TrackedFile("a", 0, None)], interval=0, say=print, clock=lambda: 1.0)
    assert reporter.line(reporter.measure()).startswith("progress: 0 B, ")


def test_human_bytes():
    assert human_bytes(999) == "999 B" and human_bytes(1_500_000) == "1.5 MB" and human_bytes(2.5e12) == "2.5 TB"
