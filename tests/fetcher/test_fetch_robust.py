"""The fetcher never hangs and never leaves a mess: timeouts, the deadline, SIGTERM, SIGKILL, partial files,
progress from the disk, masked credentials and sha256 integrity. Each runs the real fetcher process
(``kubediffusers-fetch``) against the Hub stand-in or a server that never answers."""

from __future__ import annotations

import json
import signal
import time
from collections import namedtuple
from pathlib import Path

import pytest
from filelock import FileLock

from kubediffusers.runner.fetch import read_marker
from kubediffusers.runner.fetch.cli import main
from kubediffusers.runner.fetch.core import backoff
from kubediffusers.runner.fetch.errors import EXIT_DEADLINE, EXIT_DISK, EXIT_INTEGRITY, EXIT_UNAUTHORIZED, EXIT_UNREACHABLE
from kubediffusers.runner.fetch.guard import EXIT_TERMINATED
from kubediffusers.runner.fetch.redact import Redactor, mask_url

from .fetch_standin import DEFAULT_FILES, FP16_FILES, Repo, SilentServer, closed_port, pipeline_files, rand, snapshot_files, start_fetch
from .test_fetch_hub import assert_one_failure_line

MODEL = "tiny-org/tiny-sd"
ARGS = ("--model-id", MODEL)
BIG = "tiny-org/big"
BIG_FILE = "unet/diffusion_pytorch_model.safetensors"


def partials(model_dir: Path, model_id: str = MODEL) -> list[Path]:
    blobs = model_dir / ("models--" + model_id.replace("/", "--")) / "blobs"
    return sorted(blobs.glob("*.incomplete")) if blobs.is_dir() else []


@pytest.fixture
def silent():
    server = SilentServer()
    yield server
    server.close()


def add_big(hub, size: int = 3_000_000) -> Repo:
    """A repository with one weights file; huggingface_hub writes a body in 10 MiB chunks, so a partial file
    has bytes on disk only once a file is bigger than that."""
    files = {
        "model_index.json": json.dumps({"_class_name": "X", "unet": ["diffusers", "UNet2DConditionModel"]}).encode(),
        "unet/config.json": b"{}",
        BIG_FILE: rand(size, "big"),
    }
    return hub.add(Repo(BIG, files))


def wait_for_partial(model_dir: Path, proc, at_least: int = 1, timeout: float = 30, ignore: tuple[Path, ...] = ()) -> Path:
    """A new partial file of the big weights file (not model_index.json's) with at least this many bytes."""
    import hashlib

    etag = hashlib.sha256(proc.big).hexdigest() if hasattr(proc, "big") else ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for p in partials(model_dir, BIG):
            if p in ignore or not p.name.startswith(etag):
                continue
            try:
                if p.stat().st_size >= at_least:
                    return p
            except OSError:
                pass
        time.sleep(0.05)
    raise AssertionError("no partial file appeared")


# -- 1. never hangs


def test_a_server_that_accepts_and_never_answers_fails_on_the_read_timeout(silent, fetch_env, run):
    env = {**fetch_env, "HF_ENDPOINT": silent.url}
    result = run(env, *ARGS, "--retries", "0", "--read-timeout", "0.5", "--deadline", "120")
    assert result.returncode == EXIT_UNREACHABLE, result.output
    line = assert_one_failure_line(result, "HubUnreachable")
    assert "ReadTimeout" in line
    assert f"waiting for an answer to GET {silent.url}/api/models/{MODEL}/revision/main" in line and "(resolving the revision)" in line
    assert result.elapsed < 20 and silent.accepted >= 1


def test_the_deadline_ends_the_fetch_and_names_what_it_waited_for(silent, fetch_env, run):
    env = {**fetch_env, "HF_ENDPOINT": silent.url}
    result = run(env, *ARGS, "--read-timeout", "600", "--deadline", "1.5")
    assert result.returncode == EXIT_DEADLINE, result.output
    line = assert_one_failure_line(result, "DeadlineExceeded")
    assert "within 1.5s (KUBEDIFFUSERS_FETCH_DEADLINE_SECONDS)" in line
    assert f"resolving {MODEL}@main: waiting for an answer to GET {silent.url}/api/models/{MODEL}/revision/main" in line
    assert result.elapsed < 20


def test_a_listing_that_never_answers_hits_the_deadline(hub, fetch_env, run, tmp_path):
    hub.hang.add("/tree/")
    result = run({**fetch_env, "HF_ENDPOINT": hub.url}, *ARGS, "--read-timeout", "600", "--deadline", "3")
    assert result.returncode == EXIT_DEADLINE, result.output
    line = assert_one_failure_line(result, "DeadlineExceeded")
    assert f"/api/models/{MODEL}/tree/{hub.repos[MODEL].sha}" in line and "(the file listing)" in line
    assert hub.seen("GET", "/tree/") and result.elapsed < 20
    assert read_marker(tmp_path / "models", MODEL, "main", None) is None


def test_a_stalled_body_still_times_out_and_names_the_file(hub, fetch_env, run):
    add_big(hub)
    hub.slow[BIG_FILE] = 3  # 3 s between 16 kB chunks: a stall longer than the read timeout
    result = run({**fetch_env, "HF_ENDPOINT": hub.url}, "--model-id", BIG, "--retries", "0", "--read-timeout", "0.5", timeout=120)
    assert result.returncode == EXIT_UNREACHABLE, result.output
    line = assert_one_failure_line(result, "HubUnreachable")
    assert "Timeout" in line and BIG_FILE in line


# -- 2. SIGTERM


@pytest.mark.parametrize("signum, code, reason", [(signal.SIGTERM, EXIT_TERMINATED, "Terminated"), (signal.SIGINT, 130, "Interrupted")])
def test_sigterm_mid_download_is_one_line_non_zero_and_leaves_no_partial_file(hub, fetch_env, tmp_path, signum, code, reason):
    big = add_big(hub)
    hub.slow[BIG_FILE] = 0.02
    env = {**fetch_env, "HF_ENDPOINT": hub.url}
    proc = start_fetch(env, "--model-id", BIG)
    proc.big = big.files[BIG_FILE]
    model_dir = tmp_path / "models"
    wait_for_partial(model_dir, proc, at_least=0)  # the download's temporary file is open
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == code, out + err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{reason}: ") and f"downloading {BIG}@" in lines[0], err
    assert (tmp_path / "termination-log").read_text() == lines[0]
    assert partials(model_dir, BIG) == []
    assert read_marker(model_dir, BIG, "main", None) is None


# -- 3. partial files of dead fetchers


def test_kill_9_then_a_rerun_removes_the_partial_and_completes(hub, fetch_env, run, tmp_path):
    from huggingface_hub.constants import DOWNLOAD_CHUNK_SIZE

    big = add_big(hub, DOWNLOAD_CHUNK_SIZE + 2_000_000)
    hub.chunk_size, hub.slow[BIG_FILE] = 256 * 1024, 0.05  # about 2 s to the first 10 MiB on disk
    env = {**fetch_env, "HF_ENDPOINT": hub.url}
    model_dir = tmp_path / "models"
    outs = []
    for _ in range(2):  # repeated kills: each run removes the partial file of the one before
        proc = start_fetch(env, "--model-id", BIG)
        proc.big = big.files[BIG_FILE]
        wait_for_partial(model_dir, proc, at_least=DOWNLOAD_CHUNK_SIZE, ignore=tuple(partials(model_dir, BIG)))
        proc.kill()
        outs.append(proc.communicate(timeout=20)[0])
    assert "removed 1 partial file (10.5 MB) left by a fetcher that was killed" in outs[1]
    left = partials(model_dir, BIG)
    assert len(left) == 1 and left[0].stat().st_size >= DOWNLOAD_CHUNK_SIZE

    hub.slow.clear()
    rerun = run(env, "--model-id", BIG)
    assert rerun.returncode == 0, rerun.output
    assert "removed 1 partial file (" in rerun.stdout
    assert partials(model_dir, BIG) == []
    assert snapshot_files(model_dir, BIG, hub.repos[BIG].sha)[BIG_FILE] == hub.repos[BIG].files[BIG_FILE]


def test_a_partial_file_of_a_live_fetcher_is_left_alone(hub, fetch_env, run, tmp_path):
    """huggingface_hub holds the blob's lock while it downloads: a held lock means a live owner (another pod)."""
    model_dir = tmp_path / "models"
    repo_dir = model_dir / "models--tiny-org--tiny-sd"
    (repo_dir / "blobs").mkdir(parents=True)
    live = repo_dir / "blobs" / ("e" * 64 + ".0badc0de.incomplete")
    live.write_bytes(b"x" * 5000)
    dead = repo_dir / "blobs" / ("d" * 64 + ".deadbeef.incomplete")
    dead.write_bytes(b"x" * 7000)
    lock = model_dir / ".locks" / repo_dir.name / ("e" * 64 + ".lock")
    lock.parent.mkdir(parents=True)
    with FileLock(str(lock)):
        result = run({**fetch_env, "HF_ENDPOINT": hub.url}, *ARGS)
    assert result.returncode == 0, result.output
    assert live.exists() and not dead.exists()
    assert "removed 1 partial file (7.0 kB)" in result.stdout


def test_the_space_check_counts_the_partials_it_removes(in_process, monkeypatch, capsys, tmp_path):
    argv, _ = in_process
    from kubediffusers.runner.fetch import core

    needed = sum(len(pipeline_files()[p]) for p in DEFAULT_FILES - {"model_index.json"})
    usage = namedtuple("usage", "total used free")
    # the filesystem does not show the freed space yet (as on NFS): the removed partial must count
    monkeypatch.setattr(core.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - needed + 50_000, needed - 50_000))
    blobs = tmp_path / "models" / "models--tiny-org--tiny-sd" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / ("d" * 64 + ".deadbeef.incomplete")).write_bytes(b"x" * 60_000)
    assert main(argv) == 0, capsys.readouterr()
    assert "removed 1 partial file (60.0 kB)" in capsys.readouterr().out

    # without a partial to reclaim the same free space is too little
    (tmp_path / "models2").mkdir()
    argv2 = [a if a != str(tmp_path / "models") else str(tmp_path / "models2") for a in argv]
    assert main(argv2) == EXIT_DISK
    assert capsys.readouterr().err.startswith("DiskFull: not enough space")


# -- 4. progress from the disk


def test_progress_advances_without_per_file_ids_and_the_summary_counts_only_new_bytes(hub, fetch_env, run, tmp_path):
    hub.strip_ids = True  # a mirror whose listing has sizes but no blob ids / lfs sha256
    hub.delay_per_chunk = 0.05
    env = {**fetch_env, "HF_ENDPOINT": hub.url}
    first = run(env, *ARGS)
    assert first.returncode == 0, first.output
    source = pipeline_files()
    total = sum(len(source[p]) for p in DEFAULT_FILES)
    progress = [line for line in first.stdout.splitlines() if line.startswith("progress: ")]
    done = [float(line.split()[1]) for line in progress]  # "progress: 123.4 kB of ..."
    assert any(d > 0 for d in done), progress
    final = [line for line in first.stdout.splitlines() if line.startswith("progress (final): ")]
    assert len(final) == 1 and "(100%)" in final[0] and f"{len(DEFAULT_FILES)} of {len(DEFAULT_FILES)} files" in final[0]
    assert f"downloaded {human(total - len(source['model_index.json']))} in " in first.stdout

    # the fp16 selection shares most files with the default one: only the two fp16 weights are new
    hub.delay_per_chunk = 0
    second = run(env, *ARGS, "--variant", "fp16")
    assert second.returncode == 0, second.output
    new = sum(len(source[p]) for p in FP16_FILES - DEFAULT_FILES)
    assert f"downloaded {human(new)} in " in second.stdout, second.stdout
    marker = read_marker(tmp_path / "models", MODEL, "main", "fp16")
    import hashlib

    sums = {f.path: f.sha256 for f in marker.files}
    assert sums["unet/diffusion_pytorch_model.fp16.safetensors"] == hashlib.sha256(source["unet/diffusion_pytorch_model.fp16.safetensors"]).hexdigest()
    assert sums["unet/config.json"] is None  # not an LFS file: no sha256 from the Hub


def human(n: int) -> str:
    from kubediffusers.runner.fetch.progress import human_bytes

    return human_bytes(n)


# -- 5. the smaller ones


def test_http_500_on_one_file_names_the_file(hub, fetch_env, run):
    hub.fail_get["vae/diffusion_pytorch_model.safetensors"] = 10
    result = run({**fetch_env, "HF_ENDPOINT": hub.url}, *ARGS, "--retries", "0", "--max-workers", "1")
    assert result.returncode == EXIT_UNREACHABLE
    assert "HTTP 500 on vae/diffusion_pytorch_model.safetensors" in assert_one_failure_line(result, "HubUnreachable")


def test_credentials_in_hf_endpoint_are_masked_in_logs_termination_message_and_marker(hub, fetch_env, run, tmp_path):
    user, password = "mirroruser", "s3cretPassw0rd"
    endpoint = hub.url.replace("http://", f"http://{user}:{password}@")
    env = {**fetch_env, "HF_ENDPOINT": endpoint}
    ok = run(env, *ARGS, "--progress-interval", "0.05")
    assert ok.returncode == 0, ok.output
    assert any(r.headers.get("authorization", "").startswith("Basic ") for r in hub.seen())  # the credentials were used
    masked = hub.url.replace("http://", "http://***@")
    assert f"from {masked} " in ok.stdout
    marker_text = (tmp_path / "models" / "models--tiny-org--tiny-sd" / "kubediffusers-complete-main.json").read_text()
    assert json.loads(marker_text)["endpoint"] == masked
    failures = [
        run(env, "--model-id", "tiny-org/missing"),
        run({**env, "HF_ENDPOINT": f"http://{user}:{password}@127.0.0.1:{closed_port()}"}, *ARGS, "--refresh", "--retries", "0"),
    ]
    assert failures[0].returncode == EXIT_UNAUTHORIZED and failures[1].returncode == EXIT_UNREACHABLE  # anonymous: 401
    assert "http://***@127.0.0.1:" in assert_one_failure_line(failures[1], "HubUnreachable")
    for text in [ok.stdout, ok.stderr, ok.termination or "", marker_text] + [r.output + (r.termination or "") for r in failures]:
        assert password not in text and f"{user}:" not in text


def test_redactor_masks_userinfo_in_any_url_and_encoded_secrets():
    r = Redactor("hf_tokenTOKENtoken")
    r.add_url("https://me:p%40ss:word@mirror.local/")
    assert mask_url("https://me:pw@mirror.local:8080/x") == "https://***@mirror.local:8080/x"
    text = r("GET https://me:p%40ss:word@mirror.local/api token=hf_tokenTOKENtoken pw p@ss:word")
    assert "p%40ss" not in text and "p@ss:word" not in text and "hf_tokenTOKENtoken" not in text
    assert "https://***@mirror.local/api" in text


def test_retries_wait_exponentially_with_jitter():
    import random

    rng = random.Random(7)
    waits = [backoff(n, 2.0, 60.0, rng) for n in range(1, 8) for _ in range(50)]
    for n in range(1, 8):
        cap = min(2.0 * 2 ** (n - 1), 60.0)
        mine = waits[(n - 1) * 50 : n * 50]
        assert all(cap / 2 <= w <= cap for w in mine)
        assert len({round(w, 6) for w in mine}) > 40  # spread, not one instant


def test_a_corrupted_transfer_is_caught_by_the_sha256(hub, fetch_env, run, tmp_path):
    path = "unet/diffusion_pytorch_model.safetensors"
    hub.corrupt.add(path)
    env = {**fetch_env, "HF_ENDPOINT": hub.url}
    result = run(env, *ARGS)
    assert result.returncode == EXIT_INTEGRITY, result.output
    assert path in assert_one_failure_line(result, "IntegrityError")
    assert read_marker(tmp_path / "models", MODEL, "main", None) is None
    hub.corrupt.clear()
    again = run(env, *ARGS)  # the bad blob was removed: only it is downloaded again
    assert again.returncode == 0, again.output
    assert len(hub.downloads(path)) == 2 and len(hub.downloads("vae/diffusion_pytorch_model.safetensors")) == 1


def test_verify_mode_detects_a_flipped_byte_and_the_next_fetch_repairs_it(hub, fetch_env, run, tmp_path):
    env = {**fetch_env, "HF_ENDPOINT": hub.url}
    assert run(env, *ARGS).returncode == 0
    model_dir = tmp_path / "models"
    marker = read_marker(model_dir, MODEL, "main", None)
    assert {f.path for f in marker.files if f.sha256} == {p for p in DEFAULT_FILES if p.endswith(".safetensors")}
    ok = run(env, *ARGS, "--verify")
    assert ok.returncode == 0 and "verified: every file" in ok.stdout, ok.output

    weights = marker.snapshot_path / "text_encoder" / "model.safetensors"
    blob = weights.resolve()
    data = bytearray(blob.read_bytes())
    data[1234] ^= 0x10
    blob.write_bytes(bytes(data))  # same size: the marker's size check cannot see it
    assert read_marker(model_dir, MODEL, "main", None) is not None
    bad = run(env, *ARGS, "--verify")
    assert bad.returncode == EXIT_INTEGRITY, bad.output
    line = assert_one_failure_line(bad, "IntegrityError")
    assert "text_encoder/model.safetensors" in line and "the next fetch downloads it again" in line
    assert read_marker(model_dir, MODEL, "main", None) is None

    repaired = run({**env, "KUBEDIFFUSERS_FETCH_VERIFY": "true"}, *ARGS)
    assert repaired.returncode == 0, repaired.output
    assert snapshot_files(model_dir, MODEL, hub.repos[MODEL].sha)["text_encoder/model.safetensors"] == pipeline_files()["text_encoder/model.safetensors"]
    assert len(hub.downloads("text_encoder/model.safetensors")) == 2 and len(hub.downloads("unet/diffusion_pytorch_model.safetensors")) == 1


def test_checksums_off_records_no_sums(hub, fetch_env, run, tmp_path):
    """KUBEDIFFUSERS_FETCH_CHECKSUMS=false: sizes only, and the marker claims no sum it did not check."""
    hub.corrupt.add("vae/diffusion_pytorch_model.safetensors")
    result = run({**fetch_env, "HF_ENDPOINT": hub.url, "KUBEDIFFUSERS_FETCH_CHECKSUMS": "false"}, *ARGS)
    assert result.returncode == 0, result.output
    assert all(f.sha256 is None for f in read_marker(tmp_path / "models", MODEL, "main", None).files)
