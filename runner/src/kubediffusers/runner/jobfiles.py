"""Async jobs as files on a directory every replica mounts (setting ``shared_jobs``).

With several replicas behind one Service, a client polling ``GET /jobs/{id}``
reaches any of them. When the replicas share a ReadWriteMany claim, each job
lives there as files, so whichever replica answers reads the same job:

- ``<id>.json``: the state (status, progress, error, times, owner), written by
  the replica running the job (its owner) when it is queued, when its progress
  changes, every ``HEARTBEAT_SECONDS`` while unfinished, and when it finishes;
- ``<id>.result.json``: the finished job's body (what the synchronous call
  returns), written before the state says ``done``;
- ``<id>.mp4``: a video job's mp4, encoded by the first replica asked for it
  (``Accept: video/mp4``) and served as stored from then on: never encoded
  twice; it counts in the byte bound and goes with its job;
- ``<id>.cancel``: a cancel request from a replica that does not run the job;
  the owner looks for it every ``POLL_SECONDS`` and cancels the job;
- ``<id>.gone``: why a forgotten job was forgotten (its 404 says it), kept
  ``ttl_seconds`` and at most ``GONE_KEPT`` of them.

Every file is written whole under a temporary name in the same directory,
flushed to disk, then renamed over its final name (``os.replace``, atomic on
POSIX and on NFS): a reader sees the old file or the new one, never a part.
Temporary files left by a writer killed mid-write are removed after
``TMP_MAX_AGE_SECONDS``. A job whose owner stopped updating it for
``STALE_SECONDS`` (its pod was killed) reads as failed and expires like one.

Times in the files are wall-clock (``time.time``): replicas share no monotonic
clock. Job ids are checked (``valid_id``) before any path is made from one, so
no id names a file outside the directory. Bounds (count, bytes, age) hold for
the directory as a whole.

The count holds even for replicas admitting at the same instant: a job is
admitted only once it holds one of ``max_jobs`` slots, ``.slot-0`` to
``.slot-<max_jobs - 1>``, each taken by an exclusive create (``O_CREAT |
O_EXCL``), which the file server decides alone: atomic on a local file system,
on NFSv3 and v4 (the server's exclusive create; Linux since 2.6), CephFS and
SMB. No lock is used: ``flock`` on NFS becomes a byte-range lock that needs
the NLM lock service on NFSv3 (a ``nolock`` mount, common for NFS volumes in
Kubernetes, keeps it local to one node, silently), and a lock held by a killed
pod holds until its lease ends. A slot names its job; it is freed when the job
is forgotten, and a slot whose job never wrote a state (the admitting replica
died in between) after ``SLOT_GRACE_SECONDS``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubediffusers.runner.errors import QueueFull

log = logging.getLogger(__name__)

# What secrets.token_urlsafe makes, bounded: letters, digits, '-' and '_'. No dot, no separator.
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")

STATE, RESULT, CANCEL, GONE, MP4 = ".json", ".result.json", ".cancel", ".gone", ".mp4"
KEPT_WITH_JOB = (STATE, RESULT, CANCEL, MP4)  # what forgetting a job removes
TMP_PREFIX = ".tmp-"
SLOT_PREFIX = ".slot-"

POLL_SECONDS = 0.5  # the owner looks for cancel requests and writes progress this often
HEARTBEAT_SECONDS = 2.0  # an unfinished job's state is rewritten at least this often
STALE_SECONDS = 30.0  # no update for this long: the owner is gone, the job failed
CANCEL_WAIT_SECONDS = 5.0  # DELETE through another replica waits this long for the owner to confirm
SWEEP_SECONDS = 2.0  # a lookup sweeps the directory at most this often (a submission always does)
TMP_MAX_AGE_SECONDS = 300.0  # no write takes this long: an older temporary file is a killed writer's
GONE_KEPT = 1000
SLOT_GRACE_SECONDS = 60.0  # admission to the first state write takes milliseconds: an older slot without a state is a dead admitter's


def valid_id(job_id: str) -> bool:
    return ID_PATTERN.fullmatch(job_id) is not None


@dataclass
class StoredJob:
    """One job as read from the directory."""

    state: dict[str, Any]
    result: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.state.get("finished_at") is not None


class JobFiles:
    """The directory of shared jobs, with its bounds: ``ttl_seconds`` after a job
    finishes, ``max_jobs`` jobs and ``max_bytes`` of results; past a bound the
    oldest finished go first."""

    def __init__(self, root: Path, ttl_seconds: float, max_jobs: int, max_bytes: int | None = None, clock: Callable[[], float] = time.time) -> None:
        self.root = root
        self.ttl_seconds = ttl_seconds
        self.max_jobs = max_jobs
        self.max_bytes = max_bytes
        self.clock = clock
        self._last_sweep = float("-inf")
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=root, prefix=TMP_PREFIX)  # writable, or the runner does not start
        os.close(fd)
        os.unlink(probe)

    # ---- paths and whole-file writes

    def path(self, job_id: str, suffix: str) -> Path:
        if not valid_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / f"{job_id}{suffix}"

    def _write(self, path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=TMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # the bytes are on disk before the name points at them
            os.chmod(tmp, 0o660)  # replicas share a user (and the claim's fsGroup)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            loaded = json.loads(data)
        except ValueError:  # never written so (rename protocol): a damaged file system
            log.warning("unreadable job file %s", path)
            return None
        return loaded if isinstance(loaded, dict) else None

    def _unlink(self, *paths: Path) -> None:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    # ---- the owner's writes

    def write_state(self, state: dict[str, Any]) -> None:
        state = {**state, "updated_at": self.clock()}
        self._write(self.path(state["id"], STATE), json.dumps(state).encode())

    def write_result(self, job_id: str, body: dict[str, Any]) -> int:
        """Write the body; returns its size in bytes (what the byte bound counts)."""
        data = json.dumps(body).encode()
        self._write(self.path(job_id, RESULT), data)
        return len(data)

    # ---- a finished job's derived answer (an mp4), written by whichever replica makes it first

    def read_derived(self, job_id: str, suffix: str = MP4) -> bytes | None:
        try:
            return self.path(job_id, suffix).read_bytes()
        except FileNotFoundError:
            return None

    def write_derived(self, job_id: str, data: bytes, suffix: str = MP4) -> bool:
        """Keep ``data`` beside the job; False when the job was forgotten meanwhile (then nothing is kept).

        Two replicas making it at once both write the same bytes (the encoder is deterministic);
        the rename makes either whole file the one kept. Then the byte bound, which now counts it."""
        self._write(self.path(job_id, suffix), data)
        if not self.path(job_id, STATE).exists():  # forgotten between the read and this write: no orphan left
            self._unlink(self.path(job_id, suffix))
            return False
        self.sweep(keep=job_id)
        return True

    def cancel_requested(self, job_id: str) -> bool:
        return self.path(job_id, CANCEL).exists()

    # ---- anyone's reads and requests

    def read(self, job_id: str, *, with_result: bool = True) -> StoredJob | None:
        state = self._read(self.path(job_id, STATE))
        if state is None:
            return None
        state = self._settle(state)
        result = self._read(self.path(job_id, RESULT)) if with_result and state.get("status") == "done" else None
        if with_result and state.get("status") == "done" and result is None:
            return None  # forgotten between the two reads
        return StoredJob(state, result)

    def gone(self, job_id: str) -> str | None:
        """Why a forgotten job was forgotten, while that is remembered."""
        try:
            return self.path(job_id, GONE).read_text() or None
        except FileNotFoundError:
            return None

    def request_cancel(self, job_id: str) -> None:
        self._write(self.path(job_id, CANCEL), str(self.clock()).encode())

    def forget(self, job_id: str, why: str) -> None:
        """The reason first, then the job, then its slot: a reader in between sees one or the other."""
        state = self._read(self.path(job_id, STATE))
        self._write(self.path(job_id, GONE), why.encode())
        self._unlink(*(self.path(job_id, suffix) for suffix in KEPT_WITH_JOB))
        if state is not None and isinstance(state.get("slot"), int):
            self.release_slot(job_id, state["slot"])

    # ---- slots: the count bound, safe between replicas

    def _slot_path(self, slot: int) -> Path:
        return self.root / f"{SLOT_PREFIX}{int(slot)}"

    def _take_slot(self, job_id: str) -> int | None:
        """The first free slot, taken for ``job_id`` by an exclusive create; None when all are held."""
        for slot in range(self.max_jobs):
            try:
                fd = os.open(self._slot_path(slot), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o660)
            except FileExistsError:
                continue
            with os.fdopen(fd, "wb") as f:  # the create is the claim; the id says whose it is (an empty one is being written)
                f.write(job_id.encode())
                f.flush()
                os.fsync(f.fileno())
            return slot
        return None

    def release_slot(self, job_id: str, slot: int) -> None:
        """Free ``slot`` if ``job_id`` holds it (a job admitted but never published, or forgotten)."""
        path = self._slot_path(slot)
        try:
            holder = path.read_text()
        except FileNotFoundError:
            return
        if holder == job_id:
            self._unlink(path)

    def _free_stale_slots(self, slots: dict[int, tuple[str, float]], states: dict[str, dict[str, Any]]) -> int:
        """Free the slots whose job has no state past the grace; returns how many are still held."""
        now, held = self.clock(), 0
        for slot, (holder, mtime) in slots.items():
            if holder not in states and now - mtime > SLOT_GRACE_SECONDS:
                self.release_slot(holder, slot)
            else:
                held += 1
        return held

    def _settle(self, state: dict[str, Any]) -> dict[str, Any]:
        """An unfinished job not updated for STALE_SECONDS failed with its owner."""
        if state.get("finished_at") is not None:
            return state
        updated = float(state.get("updated_at") or 0)
        if self.clock() - updated <= STALE_SECONDS:
            return state
        msg = f"the runner replica running job {state['id']} stopped updating it (its pod was probably killed); submit it again"
        return {**state, "status": "failed", "finished_at": updated + STALE_SECONDS, "error": {"msg": msg, "status_code": 503}}

    # ---- bounds

    def _entries(self) -> tuple[dict[str, dict[str, Any]], list[tuple[float, str]], dict[str, int], dict[int, tuple[str, float]]]:
        """(state of each job, (mtime, id) of each reason kept, bytes of each job's derived files, (holder, mtime) of each slot),
        removing orphans on the way."""
        now = self.clock()
        states: dict[str, dict[str, Any]] = {}
        gone: list[tuple[float, str]] = []
        derived: dict[str, int] = {}
        slots: dict[int, tuple[str, float]] = {}
        others: list[tuple[str, Path]] = []
        with os.scandir(self.root) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith(SLOT_PREFIX):
                    with contextlib.suppress(FileNotFoundError, ValueError):
                        slots[int(name.removeprefix(SLOT_PREFIX))] = (Path(entry.path).read_text(), entry.stat().st_mtime)
                    continue
                if name.startswith(TMP_PREFIX):
                    with contextlib.suppress(FileNotFoundError):
                        if now - entry.stat().st_mtime > TMP_MAX_AGE_SECONDS:
                            self._unlink(Path(entry.path))
                    continue
                job_id, dot, rest = name.partition(".")
                if not dot or not valid_id(job_id):
                    continue  # not ours: left alone
                suffix = "." + rest
                if suffix == STATE:
                    state = self._read(Path(entry.path))
                    if state is not None:
                        states[job_id] = self._settle(state)
                elif suffix == GONE:
                    with contextlib.suppress(FileNotFoundError):
                        gone.append((entry.stat().st_mtime, job_id))
                else:
                    if suffix == MP4:
                        with contextlib.suppress(FileNotFoundError):
                            derived[job_id] = derived.get(job_id, 0) + entry.stat().st_size
                    others.append((job_id, Path(entry.path)))
        for job_id, path in others:  # a result or cancel request whose job is forgotten
            if job_id not in states:
                with contextlib.suppress(FileNotFoundError):
                    if now - path.stat().st_mtime > TMP_MAX_AGE_SECONDS:
                        self._unlink(path)
        return states, gone, {job_id: size for job_id, size in derived.items() if job_id in states}, slots

    def sweep_now_and_then(self) -> None:
        """``sweep``, at most every SWEEP_SECONDS (lookups call it: expiry needs no timer)."""
        if self.clock() - self._last_sweep >= SWEEP_SECONDS:
            self.sweep()

    def sweep(self, *, keep: str | None = None) -> dict[str, dict[str, Any]]:
        """Forget what the bounds no longer hold (never ``keep``, the job just finished);
        returns the jobs left (id -> state)."""
        now = self.clock()
        self._last_sweep = now
        states, gone, derived, slots = self._entries()
        for job_id, state in list(states.items()):
            finished_at = state.get("finished_at")
            if finished_at is not None and now - float(finished_at) > self.ttl_seconds:
                self.forget(job_id, f"it finished more than {self.ttl_seconds:g} seconds ago and expired")
                del states[job_id]
        gone.sort()
        for index, (mtime, job_id) in enumerate(gone):
            if now - mtime > self.ttl_seconds or index < len(gone) - GONE_KEPT:
                self._unlink(self.path(job_id, GONE))
        if self.max_bytes is not None:
            held = sum(int(s.get("size") or 0) for s in states.values()) + sum(derived.values())
            for job_id, state in self._oldest_finished(states):
                if held <= self.max_bytes:
                    break
                if job_id == keep:
                    continue
                self.forget(job_id, f"the runner keeps at most {self.max_bytes} bytes of job results and newer results needed the room")
                held -= int(state.get("size") or 0) + derived.get(job_id, 0)
                del states[job_id]
        self._free_stale_slots(slots, states)
        return states

    @staticmethod
    def _oldest_finished(states: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
        done = [(job_id, s) for job_id, s in states.items() if s.get("finished_at") is not None]
        return sorted(done, key=lambda item: float(item[1]["finished_at"]))

    def make_room(self, job_id: str) -> int:
        """Call before admitting job ``job_id``: frees room if need be, and returns the slot it now holds
        (its state names it), or refuses with 503. Counted both ways: the slots held (safe between replicas
        admitting at once) and the jobs in the directory (those of a runner that kept no slots count too)."""
        states = self.sweep()
        evictable = iter(self._oldest_finished(states))
        while True:
            if len(states) < self.max_jobs and (slot := self._take_slot(job_id)) is not None:
                return slot
            oldest = next(evictable, None)
            if oldest is None:
                raise QueueFull(f"{self.max_jobs} unfinished jobs are already kept; retry later", retry_after=5)
            self.forget(oldest[0], f"the runner keeps at most {self.max_jobs} jobs and newer ones needed the room")
            del states[oldest[0]]
