"""Optional: fetch a model's config.json from the Hugging Face Hub when the id is not in the bundled catalog.

Off unless the caller turns it on (`MEMPLAN_HUB_ACCESS=1` for the service). One GET with a short timeout and no
retries, so that an offline machine gets a clear error at once (huggingface_hub's own download retries for about
25 s). Only config.json is read: no weights, no code; a config that needs remote code is refused later by
`memplan.architecture`, as any other.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from typing import Any

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


class HubError(Exception):
    """The Hub could not give a config.json (offline, unreachable, not found, gated, not JSON)."""

    def __init__(self, message: str, not_found: bool = False):
        self.not_found = not_found
        super().__init__(message)


def fetch_config(repo_id: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """config.json of `repo_id` on the Hub (HF_ENDPOINT and HF_TOKEN honoured); raises HubError."""
    if not REPO_ID.match(repo_id):
        raise HubError(f"'{repo_id}' is not a Hugging Face repo id (ORG/NAME)", not_found=True)
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise HubError(f"cannot fetch config.json of '{repo_id}': HF_HUB_OFFLINE is set (this machine is offline)")
    return dict(_fetch(repo_id, timeout_s))


@lru_cache(maxsize=128)
def _fetch(repo_id: str, timeout_s: float) -> dict[str, Any]:
    import httpx

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    token = os.environ.get("HF_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{endpoint}/{repo_id}/resolve/main/config.json"
    try:
        resp = httpx.get(url, headers=headers, timeout=timeout_s, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise HubError(f"cannot reach the Hugging Face Hub for '{repo_id}' ({type(exc).__name__}: {exc}); "
                       "pick a catalog model or paste its config.json") from None
    if resp.status_code in (401, 403):
        raise HubError(f"'{repo_id}' is gated or private on the Hub (HTTP {resp.status_code}): set HF_TOKEN, or "
                       "paste its config.json")
    if resp.status_code == 404:
        raise HubError(f"'{repo_id}' has no config.json on the Hub", not_found=True)
    if resp.status_code != 200:
        raise HubError(f"the Hub answered HTTP {resp.status_code} for '{repo_id}'")
    try:
        config = resp.json()
    except ValueError:
        raise HubError(f"config.json of '{repo_id}' is not JSON") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise HubError(f"config.json of '{repo_id}' has no model_type")
    return {**config, "_name_or_path": repo_id}
