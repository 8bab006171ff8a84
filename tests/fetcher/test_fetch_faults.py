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

import pytest
from filelock import FileLock

from kubediffusers.runner.fetch import read_marker
from kubediffusers.runner.fetch.cli import main
from kubediffusers.runner.fetch.errors import EXIT_DISK, EXIT_LOCK_TIMEOUT
from kubediffusers.runner.fetch.lock import lock_path
from kubediffusers.runner.fetch.progress import ProgressReporter, TrackedFile, human_bytes

from .fetch_standin import DEFAULT_FILES, pipeline_files

MODEL = "tiny-org/tiny-sd"


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
        MODEL,
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


def test_progress_measures_what_is_on_disk(tmp_path):
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    (blobs / "aaa").write_bytes(b"x" * 1000)  # complete
    (blobs / "bbb.1234abcd.incomplete").write_bytes(b"x" * 300)  # in flight
    files = [TrackedFile("a", 1000, "aaa"), TrackedFile("b", 1000, "bbb"), TrackedFile("c", 2000, "ccc")]
    now = [0.0]
    lines: list[str] = []
    reporter = ProgressReporter(tmp_path, files, interval=0, say=lines.append, clock=lambda: now[0])
    reporter.start()
    assert reporter.measure().done_bytes == 1300 and reporter.measure().done_files == 1
    (blobs / "ccc.5678.incomplete").write_bytes(b"x" * 1000)
    now[0] = 2.0
    line = reporter.line(reporter.measure())
    assert line == "progress: 2.3 kB of 4.0 kB (58%), 500 B/s, 1 of 3 files, about 3s left"


def test_human_bytes():
    assert human_bytes(999) == "999 B" and human_bytes(1_500_000) == "1.5 MB" and human_bytes(2.5e12) == "2.5 TB"
