"""Keep secrets (bearer tokens, passwords, API keys) out of everything kvbench writes or prints.

A `Redactor` knows the secret values of one run (collected from the scenario, the environment and the
CLI) and replaces every occurrence with `***`. It also masks values stored under secret-looking keys
and passwords inside URLs, so a secret that was never registered still does not leak through the
scenario echo. Invariant: after `redactor.text(s)`, no registered secret of 4+ characters occurs in s.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from typing import Any

MASK = "***"
_SECRET_WORDS = frozenset(
    {
        "token",
        "secret",
        "password",
        "passwd",
        "apikey",
        "authorization",
        "credential",
        "credentials",
        "bearer",
    }
)
_KEY_SPLIT = re.compile(r"[_\-.\s]+")
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@", re.I)
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{4,}")
# Shorter values would mask ordinary words ("1", "on") all over the output.
_MIN_SECRET_LEN = 4


def is_secret_key(key: str) -> bool:
    """Whether a mapping key (env var, header, field) names a secret by convention.

    Works on word segments, so `HF_TOKEN`, `api_key` and `Authorization` are secret while
    `max_tokens` and `..._CACHE_KEY_BUILDER` are not; `*_env` keys hold a variable's name, not its value.
    """
    words = [w for w in _KEY_SPLIT.split(key.lower()) if w]
    if not words or words[-1] == "env":
        return False
    if any(w in _SECRET_WORDS for w in words):
        return True
    return any(a == "api" and b == "key" for a, b in itertools.pairwise(words))


class Redactor:
    """Replaces known secret values, URL passwords and bearer tokens with `***`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        for s in secrets:
            self.add(s)

    def add(self, secret: str | None) -> None:
        """Register one secret value; a `Bearer xyz` value also registers `xyz`."""
        if not secret:
            return
        secret = str(secret)
        if len(secret) >= _MIN_SECRET_LEN:
            self._secrets.add(secret)
        parts = secret.split(None, 1)
        if len(parts) == 2 and parts[0].lower() == "bearer":
            self.add(parts[1])
        for m in _URL_PASSWORD.finditer(secret):
            self.add(m.group("pw"))

    def add_mapping(self, mapping: dict[str, Any] | None) -> None:
        """Register the values of secret-looking keys (env vars, headers) and URL passwords in values."""
        for key, value in (mapping or {}).items():
            if value is None:
                continue
            if is_secret_key(str(key)):
                self.add(str(value))
            for m in _URL_PASSWORD.finditer(str(value)):
                self.add(m.group("pw"))

    @property
    def secrets(self) -> frozenset[str]:
        return frozenset(self._secrets)

    def text(self, value: str) -> str:
        """Mask every registered secret, URL password and bearer token in a string."""
        # Longest first, so a secret containing another is masked whole.
        for s in sorted(self._secrets, key=len, reverse=True):
            value = value.replace(s, MASK)
        value = _URL_PASSWORD.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{MASK}@", value)
        return _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", value)

    def obj(self, value: Any) -> Any:
        """Deep copy of a JSON-like value with secrets masked; values under secret keys become `***`."""
        if isinstance(value, dict):
            out: dict[Any, Any] = {}
            for k, v in value.items():
                if isinstance(k, str) and is_secret_key(k) and isinstance(v, str | int | float) and v != "":
                    out[k] = MASK
                else:
                    out[k] = self.obj(v)
            return out
        if isinstance(value, list | tuple):
            return [self.obj(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value
