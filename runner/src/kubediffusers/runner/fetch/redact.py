"""Secrets never leave the process: the Hugging Face token and credentials in ``HF_ENDPOINT``.

A mirror may be given as ``http://user:password@mirror.local``; its userinfo is
masked like ``HF_TOKEN`` in every log line, the termination message (the
pipeline's status) and the completion marker. Pure standard library.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, urlsplit, urlunsplit

MASK = "***"
# userinfo in any URL of a message, whatever produced it (httpx, huggingface_hub, our own lines)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@]+@")


def mask_url(url: str) -> str:
    """``http://user:pass@host/x`` -> ``http://***@host/x``; other URLs unchanged."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=MASK + "@" + parts.netloc.rsplit("@", 1)[1]))


def url_secrets(url: str) -> list[str]:
    """The userinfo of ``url`` (and its password alone), raw and percent-decoded/encoded, to mask wherever they appear."""
    netloc = urlsplit(url).netloc
    if "@" not in netloc:
        return []
    userinfo = netloc.rsplit("@", 1)[0]
    out = {userinfo, unquote(userinfo), quote(unquote(userinfo), safe=":")}
    if ":" in userinfo:
        password = userinfo.split(":", 1)[1]
        out |= {password, unquote(password), quote(unquote(password), safe="")}
    return sorted((s for s in out if len(s) >= 4), key=len, reverse=True)


class Redactor:
    """Masks the token, the endpoint's credentials and any URL userinfo in a text."""

    def __init__(self, *secrets: str | None) -> None:
        self.secrets: list[str] = []
        for s in secrets:
            self.add(s)

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= 4 and secret not in self.secrets:
            self.secrets.append(secret)
            self.secrets.sort(key=len, reverse=True)

    def add_url(self, url: str) -> None:
        for s in url_secrets(url):
            self.add(s)

    def __call__(self, text: str) -> str:
        text = _USERINFO.sub(r"\1" + MASK + "@", text)
        for s in self.secrets:
            text = text.replace(s, MASK)
        return text


#: The process's redactor: cli.main fills it before anything is printed.
REDACT = Redactor()
