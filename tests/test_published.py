"""The published multi-GPU measurements (bench/published/, one file each): every file is well formed and restates
its run as a valid job, and docs/published-multi-gpu.md is what bench/published_multi_gpu.py writes today (the
errors it states are the estimates' of today)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from memplan.spec import parse_spec

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("published_multi_gpu", ROOT / "bench" / "published_multi_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH = _bench()
ROWS = BENCH.load()


def test_there_are_enough_scored_measurements_of_each_engine():
    scored = [row["job"] for row in ROWS.values() if row["job"] is not None]
    assert len(scored) >= 8
    engines = {parse_spec(job).parallel_engine for job in scored}
    assert {"fsdp", "deepspeed"} <= engines
    assert any(job.get("offload_params") for job in scored)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_each_measurement_file_is_well_formed(name):
    row = ROWS[name]
    assert set(BENCH.REQUIRED) <= set(row), name
    assert row["url"].startswith("https://") and row["quote"] and row["settings"]
    rep = row["reported"]
    assert rep["unit"] in BENCH.UNITS and rep["metric"] in BENCH.METRICS
    assert rep["value"] > 0 and rep.get("value_high", rep["value"]) >= rep["value"]
    if row["job"] is None:
        assert row["not_scored"].strip()
    else:
        spec = parse_spec(row["job"])
        assert spec.num_gpus > 1 and spec.parallel_engine in ("fsdp", "deepspeed")
        assert row["not_modelled"] and all(isinstance(x, str) and x for x in row["not_modelled"])


def test_the_published_table_is_current():
    """Regenerate with `python bench/published_multi_gpu.py` after a change to the estimates."""
    assert (ROOT / "docs" / "published-multi-gpu.md").read_text() == BENCH.render(ROWS)


def test_errors_are_computed_against_the_named_metric():
    """An allocated figure is compared with peak_allocated_bytes, a reserved one with peak_reserved_bytes; a
    reported range scores 0 inside it."""
    row = ROWS["aai-fsdp1-lora-llama2-7b-b1-allocated"]
    import memplan

    e = memplan.estimate(row["job"])
    result = BENCH.score(row)
    assert result["estimated"] == e.peak_allocated_bytes
    assert result["error"] == pytest.approx(e.peak_allocated_bytes / (9.16 * 2**30) - 1)
    inside = {**row, "reported": {"value": 1, "value_high": 1000, "unit": "GiB", "metric": "allocated"}}
    assert BENCH.score(inside)["error"] == 0.0
