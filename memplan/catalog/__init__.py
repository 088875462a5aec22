"""The bundled catalog: model config.json snapshots and GPU specs, one JSON file per thing, shipped in the wheel.

Models live at `models/<org>/<name>.json` (the Hugging Face repo id), GPUs at `gpus/<id>.json`.
Lookups are case-insensitive and accept each file's aliases; an unknown id gets the closest ids as suggestions.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from memplan.terms.dtypes import GIB

CATALOG_DIR = Path(__file__).parent
MODELS_DIR = CATALOG_DIR / "models"
GPUS_DIR = CATALOG_DIR / "gpus"
#: per engine and family of job, how far the stored CUDA runs landed from the estimate (`memplan validate` writes it)
CALIBRATION_PATH = CATALOG_DIR / "calibration.json"


class CatalogError(KeyError):
    """An id that is not in the catalog; `suggestions` holds the closest known ids."""

    def __init__(self, kind: str, key: str, suggestions: list[str]):
        self.kind, self.key, self.suggestions = kind, key, suggestions
        hint = f"; closest: {', '.join(suggestions)}" if suggestions else ""
        super().__init__(f"unknown {kind} '{key}'{hint} (list them with `memplan {kind}s`)")

    def __str__(self) -> str:  # KeyError would print the repr
        return self.args[0]


class AmbiguousIdError(CatalogError):
    """A name that several catalog entries share as a family ("A100": 40 or 80 GB, SXM or PCIe); `suggestions`
    holds every one of them."""

    def __init__(self, kind: str, key: str, choices: list[str]):
        self.kind, self.key, self.suggestions = kind, key, choices
        KeyError.__init__(self, f"'{key}' names {len(choices)} {kind}s: {', '.join(choices)}; give one of them")


@dataclass(frozen=True)
class ModelEntry:
    id: str
    config: dict[str, Any]
    source: str
    aliases: tuple[str, ...] = ()
    published_params: int | None = None
    published_params_source: str | None = None
    params: int | None = None  # what memplan builds with the default head (scripts/catalog_params.py writes it)


@dataclass(frozen=True)
class GpuEntry:
    id: str
    name: str
    vendor: str
    memory_bytes: int
    dense_tflops: dict[str, float | None] = field(default_factory=dict)
    memory_bandwidth_gb_s: float | None = None
    compute_capability: str | None = None
    aliases: tuple[str, ...] = ()
    source: str = ""
    memory_source: str = ""
    node_host_memory_bytes: int | None = None  # the most CPU memory a common node with this GPU has
    node_host_memory_source: str = ""
    #: the memory CUDA reports (torch.cuda.mem_get_info()[1]), what serving engines multiply by their utilization
    cuda_total_memory_bytes: int | None = None
    cuda_total_memory_source: str = ""

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GIB


def _lookup(kind: str, key: str, index: dict[str, Any]) -> Any:
    hit = index.get(key.lower())
    if hit is not None:
        return hit
    # a family name ("A100", "V100-PCIe") that several entries' ids or aliases extend: never a silent pick
    family = sorted({e.id for name, e in index.items() if name.startswith(key.lower() + "-")})
    if len(family) > 1:
        raise AmbiguousIdError(kind, key, family)
    # match against ids and aliases ("T5" finds the T4 by its alias "T4"), and suggest the ids
    names = {name: e.id for name, e in index.items()}
    close = difflib.get_close_matches(key.lower(), list(names), n=6, cutoff=0.5)
    if not close:  # substring matches help for ids like "llama-3.1-8b"
        close = [n for n in sorted(names) if key.lower() in n][:6]
    ids = list(dict.fromkeys(names[n] for n in close))[:3]
    raise CatalogError(kind, key, ids)


def _index(paths, make) -> dict:
    """Map each entry's id and aliases, lower-cased, to the entry built by `make` from its JSON file."""
    index = {}
    for path in sorted(paths):
        entry = make(json.loads(path.read_text()))
        for key in (entry.id, *entry.aliases):
            index[key.lower()] = entry
    return index


@cache
def _models() -> dict[str, ModelEntry]:
    return _index(MODELS_DIR.glob("*/*.json"), lambda raw: ModelEntry(
        id=raw["id"], config=raw["config"], source=raw["source"], aliases=tuple(raw.get("aliases", ())),
        published_params=raw.get("published_params"), published_params_source=raw.get("published_params_source"),
        params=raw.get("params")))


@cache
def _gpus() -> dict[str, GpuEntry]:
    return _index(GPUS_DIR.glob("*.json"), lambda raw: GpuEntry(
        id=raw["id"], name=raw["name"], vendor=raw["vendor"], memory_bytes=int(raw["memory_bytes"]),
        dense_tflops=raw.get("dense_tflops", {}), memory_bandwidth_gb_s=raw.get("memory_bandwidth_gb_s"),
        compute_capability=raw.get("compute_capability"), aliases=tuple(raw.get("aliases", ())),
        source=raw.get("source", ""), memory_source=raw.get("memory_source", ""),
        node_host_memory_bytes=raw.get("node_host_memory_bytes"),
        node_host_memory_source=raw.get("node_host_memory_source", ""),
        cuda_total_memory_bytes=raw.get("cuda_total_memory_bytes"),
        cuda_total_memory_source=raw.get("cuda_total_memory_source", "")))


@cache
def calibration() -> dict[str, Any]:
    """calibration.json: {"engines": {engine: {family: {"runs", "low_ratio", "high_ratio"}}}}, the measured /
    estimated device peaks of the stored runs (memplan.terms.uncertainty)."""
    return json.loads(CALIBRATION_PATH.read_text())


def get_model(model_id: str) -> ModelEntry:
    return _lookup("model", model_id, _models())


def get_gpu(gpu_id: str) -> GpuEntry:
    return _lookup("gpu", gpu_id, _gpus())


def list_models() -> list[ModelEntry]:
    return sorted({e.id: e for e in _models().values()}.values(), key=lambda e: e.id.lower())


def list_gpus() -> list[GpuEntry]:
    return sorted({e.id: e for e in _gpus().values()}.values(), key=lambda e: e.memory_bytes)
