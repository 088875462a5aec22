"""The shipped introspection of each catalog model (`memplan/catalog/introspected/<org>/<name>.json.gz`, a ModelInfo
in memplan.model_info's dict form, written by scripts/catalog_introspection.py). With it the formula
engine answers for a catalog model without importing torch or transformers (a cold `memplan check` in well under a
second); tests/test_catalog.py checks every file against a fresh build on the meta device."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from memplan.catalog import CATALOG_DIR
from memplan.model_info import ModelInfo, config_hash, info_from_dict, info_to_dict

INTROSPECTED_DIR = CATALOG_DIR / "introspected"


def path_for(model_id: str) -> Path:
    return INTROSPECTED_DIR / f"{model_id}.json.gz"


def shipped(model_id: str, config: dict[str, Any], head: str, num_labels: int) -> ModelInfo | None:
    """The shipped introspection of a catalog model with the default head, when its file exists and was made
    from this very config; None otherwise (the caller builds on meta)."""
    if head != "auto" or num_labels != 2:
        return None
    path = path_for(model_id)
    if not path.is_file():
        return None
    stored = json.loads(gzip.decompress(path.read_bytes()))
    if stored.get("config_hash") != config_hash(config):
        return None
    return info_from_dict(stored["info"])


def write(model_id: str, info: ModelInfo, config: dict[str, Any], transformers_version: str) -> Path:
    path = path_for(model_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"model_id": model_id, "config_hash": config_hash(config),
                       "generated_with": f"transformers {transformers_version} (meta-device build)",
                       "info": info_to_dict(info)}, separators=(",", ":")) + "\n"
    path.write_bytes(gzip.compress(text.encode(), compresslevel=9, mtime=0))  # mtime 0: the same bytes each run
    return path
