"""The fetcher as the init container runs it (a subprocess), with huggingface_hub's real download code
against the local Hub stand-in."""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

from kubediffusers.runner.fetch import read_marker
from kubediffusers.runner.fetch.errors import (
    EXIT_INVALID_CONFIG,
    EXIT_NOT_FOUND,
    EXIT_UNAUTHORIZED,
    EXIT_UNREACHABLE,
)

from .fetch_standin import (
    DEFAULT_FILES,
    FP16_FILES,
    GOOD_TOKEN,
    UNGRANTED_TOKEN,
    Repo,
    closed_port,
    pipeline_files,
    rand,
    snapshot_files,
    start_fetch,
)

MODEL = "tiny-org/tiny-sd"
ARGS = ("--model-id", MODEL)


def assert_clean_text(text: str) -> None:
    assert "\r" not in text and "\x1b" not in text, repr(text[:500])


def assert_one_failure_line(run, reason: str) -> str:
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(reason + ": "), lines[0]
    assert run.termination == lines[0]
    return lines[0]


def test_first_download_takes_only_the_wanted_files_then_a_second_run_needs_no_network(hub, fetch_env, run, tmp_path):
    env = {**fetch_env, "HF_ENDPOINT": hub.url}
    hub.delay_per_chunk = 0.1  # 16 kB chunks: slow enough for a few progress lines at 0.2 s
    first = run(env, *ARGS, "--variant", "fp16", "--task", "text-to-image")
    assert first.returncode == 0, first.output
    sha = hub.repos[MODEL].sha
    assert first.termination == f"resolved {sha}"
    assert first.stderr == ""
    assert_clean_text(first.output)
    assert "progress: " in first.stdout and " files" in first.stdout and "/s" in first.stdout
    assert first.stdout.splitlines()[-1].startswith(f"done: {MODEL}@main is commit {sha}")

    model_dir = tmp_path / "models"
    files = snapshot_files(model_dir, MODEL, sha)
    assert set(files) == FP16_FILES
    source = pipeline_files()
    assert all(files[p] == source[p] for p in files)
    # nothing else was even requested
    downloaded = {r.path.split(f"/resolve/{sha}/", 1)[1] for r in hub.seen("GET", "/resolve/")}
    assert downloaded == FP16_FILES
    repo_dir = model_dir / "models--tiny-org--tiny-sd"
    assert (repo_dir / "refs" / "main").read_text() == sha

    marker = read_marker(model_dir, MODEL, "main", "fp16")
    assert marker is not None and marker.resolved_commit == sha
    assert marker.snapshot_path == repo_dir / "snapshots" / sha
    data = json.loads((repo_dir / "kubediffusers-complete-main-fp16.json").read_text())
    assert data["task"] == "text-to-image" and data["endpoint"] == hub.url
    assert {f["path"] for f in data["files"]} == FP16_FILES
    assert data["total_bytes"] == sum(len(source[p]) for p in FP16_FILES)

    hub.stop()  # from now on any request would fail
    second = run(env, *ARGS, "--variant", "fp16")
    assert second.returncode == 0, second.output
    assert "already complete" in second.stdout
    assert second.termination == f"resolved {sha}"

    # other inputs (no variant) are another fetch, which needs the Hub and says so in one line
    third = run(env, *ARGS, "--retries", "0")
    assert third.returncode == EXIT_UNREACHABLE
    assert_one_failure_line(third, "HubUnreachable")


def test_default_weights_without_variant_and_pattern_overrides(hub, fetch_env, run, tmp_path):
    env = {**fetch_env, "HF_ENDPOINT": hub.url}
    sha = hub.repos[MODEL].sha
    plain = run(env, *ARGS)
    assert plain.returncode == 0, plain.output
    assert set(snapshot_files(tmp_path / "models", MODEL, sha)) == DEFAULT_FILES

    # overrides are part of the inputs: a marker made with other patterns does not count
    other = tmp_path / "other"
    custom = run(env, *ARGS, "--model-dir", str(other), "--allow-pattern", "unet/*", "--allow-pattern", "model_index.json")
    assert custom.returncode == 0, custom.output
    assert set(snapshot_files(other, MODEL, sha)) == {
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
    }  # .bin/.msgpack stay ignored
    again = run(env, *ARGS, "--model-dir", str(other))
    assert again.returncode == 0 and "already complete" not in again.stdout
    assert set(snapshot_files(other, MODEL, sha)) == DEFAULT_FILES | {"unet/diffusion_pytorch_model.fp16.safetensors"}


def test_dry_run_lists_the_selection_and_downloads_no_weights(hub, fetch_env, run, tmp_path):
    result = run({**fetch_env, "HF_ENDPOINT": hub.url}, *ARGS, "--variant", "fp16", "--dry-run")
    assert result.returncode == 0, result.output
    for path in FP16_FILES:
        assert f"would fetch {path} (" in result.stdout
    assert not any(r.path.endswith(".safetensors") for r in hub.seen("GET", "/resolve/"))
    assert read_marker(tmp_path / "models", MODEL, "main", "fp16") is None


def test_repository_not_found_404(hub, fetch_env, run):
    result = run({**fetch_env, "HF_ENDPOINT": hub.url, "HF_TOKEN": GOOD_TOKEN}, "--model-id", "tiny-org/missing")
    assert result.returncode == EXIT_NOT_FOUND
    line = assert_one_failure_line(result, "RepositoryNotFound")
    assert "tiny-org/missing" in line and "404" in line


def test_revision_not_found_404(hub, fetch_env, run):
    result = run({**fetch_env, "HF_ENDPOINT": hub.url}, *ARGS, "--revision", "no-such-branch")
    assert result.returncode == EXIT_NOT_FOUND
    line = assert_one_failure_line(result, "RevisionNotFound")
    assert "'no-such-branch'" in line


def test_private_repository_without_token_401_says_a_token_is_needed(hub, fetch_env, run):
    hub.add(Repo("tiny-org/private", pipeline_files(), private=True))
    result = run({**fetch_env, "HF_ENDPOINT": hub.url}, "--model-id", "tiny-org/private")
    assert result.returncode == EXIT_UNAUTHORIZED
    line = assert_one_failure_line(result, "Unauthorized")
    assert "needs a Hugging Face token (401)" in line and "HF_TOKEN" in line
    # with the token it works, and the token is what authenticated the requests
    hub.requests.clear()
    ok = run({**fetch_env, "HF_ENDPOINT": hub.url, "HF_TOKEN": GOOD_TOKEN}, "--model-id", "tiny-org/private")
    assert ok.returncode == 0, ok.output
    assert all(r.headers.get("authorization") == f"Bearer {GOOD_TOKEN}" for r in hub.seen(contains="tiny-org/private"))
    assert "with a Hugging Face token" in ok.stdout and GOOD_TOKEN not in ok.output


def test_gated_repository(hub, fetch_env, run):
    hub.add(Repo("tiny-org/gated", pipeline_files(), gated=True))
    env = {**fetch_env, "HF_ENDPOINT": hub.url}
    anonymous = run(env, "--model-id", "tiny-org/gated")
    assert anonymous.returncode == EXIT_UNAUTHORIZED
    assert "is gated: a Hugging Face token is needed" in assert_one_failure_line(anonymous, "Unauthorized")

    denied = run(env, "--model-id", "tiny-org/gated", HF_TOKEN=UNGRANTED_TOKEN)
    assert denied.returncode == EXIT_UNAUTHORIZED
    line = assert_one_failure_line(denied, "Unauthorized")
    assert "token lacks access" in line and "(403)" in line
    assert UNGRANTED_TOKEN not in denied.output + denied.termination

    rejected = run(env, "--model-id", "tiny-org/gated", HF_TOKEN="hf_expiredTOKEN000000000000000000000")
    assert rejected.returncode == EXIT_UNAUTHORIZED
    assert "token was rejected" in assert_one_failure_line(rejected, "Unauthorized")
    assert "hf_expiredTOKEN" not in rejected.output + rejected.termination

    granted = run(env, "--model-id", "tiny-org/gated", HF_TOKEN=GOOD_TOKEN)
    assert granted.returncode == 0, granted.output
    assert GOOD_TOKEN not in granted.output + granted.termination


def test_connection_cut_in_the_middle_of_a_file_is_resumed_with_a_range_request(hub, fetch_env, run, tmp_path):
    # huggingface_hub writes what it received in chunks of DOWNLOAD_CHUNK_SIZE (10 MiB) and, when the connection
    # drops, asks for the rest from there: so the file must be bigger than one chunk to see a resume.
    from huggingface_hub.constants import DOWNLOAD_CHUNK_SIZE

    path = "unet/diffusion_pytorch_model.safetensors"
    files = {
        "model_index.json": json.dumps({"_class_name": "X", "unet": ["diffusers", "UNet2DConditionModel"]}).encode(),
        "unet/config.json": b"{}",
        path: rand(DOWNLOAD_CHUNK_SIZE + 1_500_000, "big"),
    }
    hub.add(Repo("tiny-org/big", files))
    hub.cut_after[path] = DOWNLOAD_CHUNK_SIZE + 700_000
    result = run({**fetch_env, "HF_ENDPOINT": hub.url}, "--model-id", "tiny-org/big")
    assert result.returncode == 0, result.output
    gets = hub.downloads(path)
    assert [g.headers.get("range") for g in gets] == [None, f"bytes={DOWNLOAD_CHUNK_SIZE}-"]
    data = snapshot_files(tmp_path / "models", "tiny-org/big", hub.repos["tiny-org/big"].sha)[path]
    assert hashlib.sha256(data).digest() == hashlib.sha256(files[path]).digest()
    assert "attempt" not in result.stdout  # resumed inside huggingface_hub, no retry of the whole step


def test_a_rerun_after_a_failure_fetches_only_what_is_missing(hub, fetch_env, run, tmp_path):
    env = {**fetch_env, "HF_ENDPOINT": hub.url}
    broken = "unet/diffusion_pytorch_model.safetensors"
    hub.fail_get[broken] = 1
    failed = run(env, *ARGS, "--retries", "0", "--max-workers", "1")
    assert failed.returncode == EXIT_UNREACHABLE
    assert f"HTTP 500 on {broken}" in assert_one_failure_line(failed, "HubUnreachable")
    assert read_marker(tmp_path / "models", MODEL, "main", None) is None
    before = {p: len(hub.downloads(p)) for p in DEFAULT_FILES}
    done_before = {p for p, n in before.items() if n and p != broken}
    assert done_before  # some files were complete before the failure

    rerun = run(env, *ARGS)
    assert rerun.returncode == 0, rerun.output
    for p in done_before:
        assert len(hub.downloads(p)) == before[p], f"{p} downloaded again"
    assert len(hub.downloads(broken)) == 2
    assert set(snapshot_files(tmp_path / "models", MODEL, hub.repos[MODEL].sha)) == DEFAULT_FILES


def test_transient_server_errors_are_retried_within_one_run(hub, fetch_env, run):
    hub.fail_get["vae/diffusion_pytorch_model.safetensors"] = 2
    result = run({**fetch_env, "HF_ENDPOINT": hub.url}, *ARGS, "--retries", "3")
    assert result.returncode == 0, result.output
    assert "downloading: attempt 1 of 4 failed (HTTP 500 on vae/diffusion_pytorch_model.safetensors); retrying in 0." in result.stdout


def test_two_concurrent_fetchers_into_one_directory(hub, fetch_env, tmp_path):
    env = {**fetch_env, "HF_ENDPOINT": hub.url}
    hub.delay_per_chunk = 0.1  # the first fetcher takes about a second: the second one starts meanwhile
    procs = [start_fetch(env, *ARGS, "--variant", "fp16") for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    sha = hub.repos[MODEL].sha
    files = snapshot_files(tmp_path / "models", MODEL, sha)
    assert set(files) == FP16_FILES
    source = pipeline_files()
    for p, data in files.items():
        assert hashlib.sha256(data).hexdigest() == hashlib.sha256(source[p]).hexdigest(), p
    # one of them waited on the lock and found the other's marker: every file was downloaded once
    assert all(len(hub.downloads(p)) == 1 for p in FP16_FILES)
    assert sum("waiting for another fetcher" in out for out, _ in outs) == 1
    assert sum("completed by another fetcher" in out for out, _ in outs) == 1
    blobs = tmp_path / "models" / "models--tiny-org--tiny-sd" / "blobs"
    assert not [b for b in blobs.iterdir() if b.name.endswith(".incomplete")]


def test_hub_unreachable_after_bounded_retries(fetch_env, run):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    result = run({**fetch_env, "HF_ENDPOINT": endpoint}, *ARGS, "--retries", "2")
    assert result.returncode == EXIT_UNREACHABLE
    line = assert_one_failure_line(result, "HubUnreachable")
    assert endpoint in line and "after 3 attempts" in line and "ConnectError" in line
    waits = [float(w) for w in re.findall(r"retrying in ([0-9.]+)s", result.stdout)]
    assert len(waits) == 2
    assert 0.025 <= waits[0] <= 0.05 and 0.05 <= waits[1] <= 0.1  # 0.05, 0.1: exponential, each with jitter
    assert result.elapsed < 20


def test_invalid_configuration_exit_2(fetch_env, run):
    result = run(fetch_env, "--model-id", "x/y", "--variant", "fp 16")
    assert result.returncode == EXIT_INVALID_CONFIG
    assert_one_failure_line(result, "InvalidConfiguration")


def test_token_never_appears_in_any_output(hub, fetch_env, run, tmp_path):
    secret = GOOD_TOKEN
    env = {**fetch_env, "HF_ENDPOINT": hub.url, "HF_TOKEN": secret}
    outputs = []
    for args in (ARGS, ("--model-id", "tiny-org/missing"), (*ARGS, "--revision", "nope")):
        r = run(env, *args, "--progress-interval", "0.05")
        outputs += [r.stdout, r.stderr, r.termination or ""]
    hub.stop()
    r = run(env, *ARGS, "--refresh", "--retries", "1")
    outputs += [r.stdout, r.stderr, r.termination or ""]
    assert r.returncode == EXIT_UNREACHABLE
    text = "\n".join(outputs)
    assert secret not in text and secret[3:15] not in text
    assert Path(tmp_path / "models").exists()


def test_fetcher_never_imports_torch_or_diffusers(hub, fetch_env, tmp_path):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from kubediffusers.runner.fetch.cli import main\n"
        "rc = main(['--model-id', 'tiny-org/tiny-sd', '--progress-interval', '0'])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'diffusers', 'transformers'})\n"
        "print('HEAVY', heavy)\n"
        "sys.exit(rc)\n"
    )
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], env={**fetch_env, "HF_ENDPOINT": hub.url}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "HEAVY []" in proc.stdout
    assert time.monotonic() - started < 30


def test_offline_mode_is_explained(hub, fetch_env, run):
    result = run({**fetch_env, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "1"}, *ARGS)
    assert result.returncode == EXIT_UNREACHABLE
    assert "HF_HUB_OFFLINE is set" in assert_one_failure_line(result, "Offline")
    assert hub.seen() == []


def test_a_commit_sha_or_a_tag_as_revision(hub, fetch_env, run, tmp_path):
    repo = hub.repos[MODEL]
    repo.refs["v1.0"] = repo.sha
    env = {**fetch_env, "HF_ENDPOINT": hub.url}
    by_sha = run(env, *ARGS, "--revision", repo.sha)
    assert by_sha.returncode == 0, by_sha.output
    assert by_sha.termination == f"resolved {repo.sha}"
    repo_dir = tmp_path / "models" / "models--tiny-org--tiny-sd"
    assert not (repo_dir / "refs" / repo.sha).exists()
    weights_gets = len([r for r in hub.seen("GET", "/resolve/") if r.path.endswith(".safetensors")])
    by_tag = run(env, *ARGS, "--revision", "v1.0")
    assert by_tag.returncode == 0 and "nothing to download" not in by_tag.stdout  # its own marker...
    assert len([r for r in hub.seen("GET", "/resolve/") if r.path.endswith(".safetensors")]) == weights_gets
    assert (repo_dir / "refs" / "v1.0").read_text() == repo.sha  # ...but the files were already there
    assert read_marker(tmp_path / "models", MODEL, "v1.0", None).resolved_commit == repo.sha


def test_a_tiny_vae_is_fetched_alongside_the_model(hub, fetch_env, run, tmp_path):
    """runner.optimizations.tinyVaeId: a single-model repository fetched at main with the pipeline."""
    taesd = hub.add(
        Repo(
            "tiny-org/taesd",
            {
                "config.json": b'{"_class_name": "AutoencoderTiny"}',
                "diffusion_pytorch_model.safetensors": rand(3000, 1),
                "diffusion_pytorch_model.bin": rand(3000, 2),
            },
        )
    )
    env = {**fetch_env, "HF_ENDPOINT": hub.url, "KUBEDIFFUSERS_TINY_VAE_ID": taesd.model_id}
    result = run(env, *ARGS, "--variant", "fp16")
    assert result.returncode == 0, result.output
    assert result.termination == f"resolved {hub.repos[MODEL].sha}"  # the pipeline's commit, for the status
    assert set(snapshot_files(tmp_path / "models", taesd.model_id, taesd.sha)) == {"config.json", "diffusion_pytorch_model.safetensors"}
    assert read_marker(tmp_path / "models", taesd.model_id, "main", None) is not None
    hub.stop()
    again = run(env, *ARGS, "--variant", "fp16")
    assert again.returncode == 0 and again.stdout.count("already complete") == 2


def test_a_missing_tiny_vae_fails_the_fetch_with_one_line(hub, fetch_env, run):
    env = {**fetch_env, "HF_ENDPOINT": hub.url, "HF_TOKEN": GOOD_TOKEN, "KUBEDIFFUSERS_TINY_VAE_ID": "tiny-org/no-such-vae"}
    result = run(env, *ARGS, "--variant", "fp16")
    assert result.returncode == EXIT_NOT_FOUND
    assert "tiny-org/no-such-vae" in assert_one_failure_line(result, "RepositoryNotFound")
