"""Service settings from the environment, each `MEMPLAN_<NAME>`; a bad value or an unknown MEMPLAN_ name is an
error that names the variable (a typo never falls back to a default silently)."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

PREFIX = "MEMPLAN_"
#: MEMPLAN_ variables read by scripts/install.sh, not by the service
_INSTALL_VARIABLES = {"MEMPLAN_TORCH_INDEX_URL", "MEMPLAN_TORCH_VERSION"}


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    cors_origins: tuple[str, ...] = ()  # comma-separated origins allowed to call the API from a browser; '*' any
    body_limit: int = 1 << 20  # bytes; larger request bodies get 413
    hub_access: bool = False  # fetch config.json from the Hugging Face Hub for ids not in the catalog
    hub_timeout: float = 5.0  # seconds for that one request
    web_dir: str = ""  # the calculator page's folder; empty: the repository's web/
    warm: bool = True  # build one model at startup (a few seconds) so that the first request is fast
    # Host header values served (DNS rebinding protection); empty: the loopback names when bound to loopback,
    # any host otherwise; '*' any
    allowed_hosts: tuple[str, ...] = ()
    max_concurrent: int = 2  # estimates computed at once per worker (off the event loop); more wait for a slot
    request_timeout: float = 10.0  # seconds a request may wait and compute before it gets 504 (503 while waiting)
    header_timeout: float = 10.0  # seconds a connection may take to send a request's headers (slow clients)
    max_connections: int = 512  # open connections per worker; more get 503 (uvicorn limit_concurrency)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        names = {PREFIX + f.name.upper(): f for f in fields(cls)}
        values = {}
        for key, raw in env.items():
            if not key.startswith(PREFIX) or key in _INSTALL_VARIABLES:
                continue
            f = names.get(key)
            if f is None:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise SettingsError(f"unknown setting {key}{hint}; allowed: {', '.join(sorted(names))}")
            values[f.name] = _convert(key, f.type, raw)
        s = cls(**values)
        if not 0 < s.port < 65536:
            raise SettingsError(f"{PREFIX}PORT: must be 1..65535, got {s.port}")
        if s.body_limit < 1024:
            raise SettingsError(f"{PREFIX}BODY_LIMIT: must be at least 1024 bytes, got {s.body_limit}")
        if not 0 < s.hub_timeout <= 120:
            raise SettingsError(f"{PREFIX}HUB_TIMEOUT: must be in (0, 120] seconds, got {s.hub_timeout:g}")
        if not 1 <= s.max_concurrent <= 256:
            raise SettingsError(f"{PREFIX}MAX_CONCURRENT: must be 1..256, got {s.max_concurrent}")
        for name in ("request_timeout", "header_timeout"):
            if not 0 < getattr(s, name) <= 600:
                raise SettingsError(f"{PREFIX}{name.upper()}: must be in (0, 600] seconds, got {getattr(s, name):g}")
        if s.max_connections < 1:
            raise SettingsError(f"{PREFIX}MAX_CONNECTIONS: must be at least 1, got {s.max_connections}")
        return s

    def hosts(self) -> tuple[str, ...]:
        """The Host names served: as set, else the loopback names for a loopback bind, else any ('*')."""
        if self.allowed_hosts:
            return self.allowed_hosts
        if self.host in LOOPBACK_HOSTS:
            return LOOPBACK_HOSTS
        return ("*",)


def _convert(key: str, kind: str, raw: str):
    text = raw.strip()
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
    except ValueError:
        raise SettingsError(f"{key}: expected a number, got {raw!r}") from None
    if kind == "bool":
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
        raise SettingsError(f"{key}: expected true/false (1/0, yes/no, on/off), got {raw!r}")
    if kind.startswith("tuple"):
        return tuple(x.strip() for x in text.split(",") if x.strip())
    return text
