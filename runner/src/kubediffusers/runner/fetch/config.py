"""Fetcher configuration: environment variables (``KUBEDIFFUSERS_`` prefix, the same
names as the runner's for the shared ones), overridable by command-line flags.

``HF_TOKEN`` and ``HF_ENDPOINT`` are the standard huggingface_hub variables and are
read from the environment as they are (never logged).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from kubediffusers.runner.addons import AddOn, add_ons
from kubediffusers.runner.settings import (  # pydantic only: cheap to import
    ENV_PREFIX,
    MODEL_ID_PATTERN,
    REVISION_PATTERN,
    SAFETY_CHECKER_ID,
    VARIANT_PATTERN,
    LoraAdapter,
    Task,
    describe_validation_error,
)

from .errors import ConfigError
from .patterns import exact_patterns
from .redact import mask_url

DEFAULT_ENDPOINT = "https://huggingface.co"

PatternList = Annotated[list[str] | None, NoDecode]


class FetchSettings(BaseSettings):
    """What to fetch and how."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    task: Task | None = Field(default=None, description="The task the runner will serve; recorded in the marker (the files are the same).")
    model_id: str = Field(
        min_length=1,
        pattern=MODEL_ID_PATTERN,
        description="Hugging Face repository id, e.g. stabilityai/sd-turbo.",
    )
    model_revision: str = Field(default="main", min_length=1, max_length=255, pattern=REVISION_PATTERN, description="Branch, tag or commit.")
    model_variant: str | None = Field(default=None, pattern=VARIANT_PATTERN, description="Weight variant, e.g. fp16; unset for the default.")
    model_dir: Path = Field(default=Path("/models"), description="Hugging Face cache directory (cache_dir).")

    tiny_vae_id: str | None = Field(
        default=None,
        pattern=MODEL_ID_PATTERN,
        description="Also fetch this tiny autoencoder repository (e.g. madebyollin/taesd) at main.",
    )
    loras: list[LoraAdapter] = Field(default=[], max_length=16, description="Also fetch these LoRA adapters (a JSON list, as the runner reads it).")
    safety_checker_enabled: bool = Field(default=False, description="Also fetch the safety checker repository (at main).")
    safety_checker_model_id: str = Field(default=SAFETY_CHECKER_ID, pattern=MODEL_ID_PATTERN, description="Repository of the safety checker.")

    fetch_allow_patterns: PatternList = Field(default=None, description="Replace the file selection: fnmatch patterns, comma-separated or a JSON list.")
    fetch_ignore_patterns: PatternList = Field(default=None, description="Replace the list of never-fetched formats (*.bin, *.ckpt, *.onnx, ...).")
    fetch_termination_log: Path = Field(default=Path("/dev/termination-log"), description="Where the one-line result goes (Kubernetes reads it).")
    fetch_progress_interval_seconds: float = Field(default=5.0, ge=0, le=3600, description="Seconds between progress lines; 0 disables them.")
    fetch_progress_bars: Literal["auto", "always", "never"] = Field(
        default="auto", description="huggingface_hub's tqdm bars: auto shows them only when stderr is a terminal."
    )
    fetch_retries: int = Field(default=5, ge=0, le=100, description="Retries of a step after network errors or 5xx.")
    fetch_retry_backoff_seconds: float = Field(default=2.0, ge=0, le=600, description="First wait before a retry; doubles each time.")
    fetch_retry_max_backoff_seconds: float = Field(default=60.0, ge=0, le=3600, description="Longest wait.")
    fetch_lock_timeout_seconds: float | None = Field(default=None, gt=0, description="Longest wait for another fetcher of the same model; unset waits forever.")
    fetch_max_workers: int = Field(default=8, ge=1, le=64, description="Files downloaded in parallel.")
    fetch_check_free_space: bool = Field(default=True, description="Fail early when the volume has less free space than the download needs.")
    fetch_refresh: bool = Field(default=False, description="Ignore an existing marker and resolve the revision again (e.g. a moved branch).")
    fetch_connect_timeout_seconds: float = Field(default=10.0, gt=0, le=600, description="Longest wait to connect to the Hub, per request.")
    fetch_read_timeout_seconds: float = Field(
        default=30.0, gt=0, le=3600, description="Longest wait for the Hub's next bytes (an answer, or more of a body), per request."
    )
    fetch_deadline_seconds: float | None = Field(
        default=21600.0, gt=0, description="The whole fetch (lock wait included) ends after this many seconds; unset or empty: no deadline."
    )
    fetch_checksums: bool = Field(default=True, description="Check every downloaded LFS file against the Hub's sha256 before marking the snapshot complete.")
    fetch_verify: bool = Field(default=False, description="With a marker: re-hash every file against the sha256 it records, and repair what differs.")

    def add_ons(self) -> list[AddOn]:
        """The add-on repositories, as the runner will look for them (``kubediffusers.runner.addons``)."""
        return add_ons(
            tiny_vae_id=self.tiny_vae_id,
            loras=self.loras,
            safety_checker_enabled=self.safety_checker_enabled,
            safety_checker_model_id=self.safety_checker_model_id,
        )

    def for_add_on(self, add_on: AddOn) -> FetchSettings:
        """The same fetch (cache, timeouts, retries) for an add-on repository: its revision, default weights."""
        return self.model_copy(
            update={
                "model_id": add_on.repo_id,
                "model_revision": add_on.revision,
                "model_variant": None,
                "fetch_allow_patterns": exact_patterns(add_on.files) if add_on.files is not None else None,
                "tiny_vae_id": None,
                "loras": [],
                "safety_checker_enabled": False,
            }
        )

    @field_validator("model_variant", "task", "fetch_lock_timeout_seconds", "fetch_deadline_seconds", "tiny_vae_id", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("fetch_allow_patterns", "fetch_ignore_patterns", mode="before")
    @classmethod
    def _split_patterns(cls, value: object) -> object:
        if value is None or isinstance(value, list):
            return value
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [p.strip() for p in text.split(",") if p.strip()]
        return value

    @property
    def endpoint(self) -> str:
        """``HF_ENDPOINT`` as given (it may carry credentials: print :attr:`endpoint_display` instead)."""
        return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")

    @property
    def endpoint_display(self) -> str:
        """The endpoint with any ``user:password@`` masked: for logs, messages and the marker."""
        return mask_url(self.endpoint)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="kubediffusers-fetch",
        description=(
            "Download a diffusers checkpoint from the Hugging Face Hub into the cache under the model directory:"
            " only configs, tokenizer and scheduler files and the safetensors of the chosen variant."
            " Every flag has a KUBEDIFFUSERS_* environment variable; flags win. HF_TOKEN and HF_ENDPOINT are honoured."
        ),
    )
    add = p.add_argument
    add("--model-id", dest="model_id", help="repository id (KUBEDIFFUSERS_MODEL_ID)")
    add("--revision", dest="model_revision", help="branch, tag or commit (KUBEDIFFUSERS_MODEL_REVISION, default main)")
    add("--variant", dest="model_variant", help="weight variant, e.g. fp16 (KUBEDIFFUSERS_MODEL_VARIANT)")
    add("--model-dir", dest="model_dir", help="cache directory (KUBEDIFFUSERS_MODEL_DIR, default /models)")
    add("--task", dest="task", help="task the runner serves (KUBEDIFFUSERS_TASK)")
    add("--allow-pattern", dest="fetch_allow_patterns", action="append", help="replace the selection (repeatable)")
    add("--ignore-pattern", dest="fetch_ignore_patterns", action="append", help="replace the ignored formats (repeatable)")
    add("--termination-log", dest="fetch_termination_log", help="result file (default /dev/termination-log)")
    add("--progress-interval", dest="fetch_progress_interval_seconds", type=float, help="seconds between progress lines")
    add("--retries", dest="fetch_retries", type=int, help="retries after network errors")
    add("--lock-timeout", dest="fetch_lock_timeout_seconds", type=float, help="longest wait for another fetcher")
    add("--max-workers", dest="fetch_max_workers", type=int, help="parallel file downloads")
    add("--refresh", dest="fetch_refresh", action="store_const", const=True, help="ignore an existing marker")
    add("--connect-timeout", dest="fetch_connect_timeout_seconds", type=float, help="seconds to connect, per request")
    add("--read-timeout", dest="fetch_read_timeout_seconds", type=float, help="seconds to wait for the Hub's next bytes, per request")
    add("--deadline", dest="fetch_deadline_seconds", type=float, help="seconds the whole fetch may take")
    add("--verify", dest="fetch_verify", action="store_const", const=True, help="re-check a complete snapshot's sha256 sums")
    add("--dry-run", action="store_true", help="print the files that would be fetched, download nothing")
    return p


def load(argv: list[str] | None = None) -> tuple[FetchSettings, argparse.Namespace]:
    """Settings from the environment with the command line on top; one-line ConfigError if invalid."""
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None and k != "dry_run"}
    try:
        return FetchSettings(**overrides), args
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
