"""Fixtures shared by every test folder."""

from __future__ import annotations

import os

# Tests never reach the Hugging Face Hub: fail fast instead of hanging on DNS.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
