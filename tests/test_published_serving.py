"""The published serving startup logs (bench/published/serving/, one file each): every file is well formed and
restates its log as a valid serve job; docs/published-serving.md and the serving range calibration are what
bench/published_serving.py writes today; and the estimates stay within the accuracy the page states."""

from __future__ import annotations

import importlib.util
import json
import statistics
from pathlib import Path

import pytest

from memplan.spec import parse_spec

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("published_serving", ROOT / "bench" / "published_serving.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH = _bench()
ROWS = BENCH.load()
SCORED = {name: row for name, row in ROWS.items() if row["job"] is not None}
RESULTS = {name: BENCH.score(row) for name, row in SCORED.items()}


@pytest.mark.parametrize("name", sorted(ROWS))
def test_each_log_file_is_well_formed(name):
    row = ROWS[name]
    assert set(BENCH.REQUIRED) <= set(row), name
    assert row["url"].startswith("https://") and row["quote"] and row["settings"]
    assert row["logged"]["kv_cache_tokens"] > 0 and row["logged"]["model_loading_gib"] > 0
    if row["job"] is None:
        assert row["not_modelled"] and all(isinstance(x, str) and x for x in row["not_modelled"])
    else:
        assert parse_spec(row["job"]).task == "serve"


def test_there_are_enough_scored_logs():
    engines = [r["s"].engine for r in RESULTS.values()]
    assert engines.count("vllm") >= 25 and engines.count("sglang") >= 2
    assert {r["s"].tensor_parallel_size for r in RESULTS.values()} >= {1, 2, 4}


def test_the_published_table_and_calibration_are_current():
    """Regenerate with `python bench/published_serving.py` after a change to the serving estimates."""
    assert (ROOT / "docs" / "published-serving.md").read_text() == BENCH.render(ROWS)
    stored = json.loads((ROOT / "memplan" / "catalog" / "calibration.json").read_text())["engines"]["serving"]
    assert stored == BENCH.calibration(RESULTS)


def test_vllm_kv_budget_within_the_stated_accuracy():
    """Dense models memplan models whole (no item in not_modelled): every KV budget within 0.5% and weights within
    0.1 GiB of the log; over all scored vLLM logs the median absolute KV error is under 0.1% (the issue's target:
    3%)."""
    vllm = {n: r for n, r in RESULTS.items() if r["s"].engine == "vllm"}
    for name, r in vllm.items():
        if not SCORED[name]["not_modelled"]:
            assert abs(r["kv_error"]) < 0.005, name
            assert abs(r["weights_gib"]) < 0.1, name
    assert statistics.median(abs(r["kv_error"]) for r in vllm.values()) < 0.001


def test_every_logged_budget_lies_inside_its_range():
    """The calibrated range (what the engine needs of its share) holds what each vLLM log's numbers imply: the
    logged non-KV memory plus the request's KV."""
    for name, row in SCORED.items():
        log = row["logged"]
        if "requested_memory_gib" not in log:
            continue
        import memplan

        e = memplan.estimate(row["job"])
        held = e.components["cuda_context"]
        logged_need = held + (log["requested_memory_gib"] - log["available_kv_cache_gib"]) * 2**30 + \
            e.serving.request_kv_bytes
        assert e.range.low_bytes - 2**24 <= logged_need <= e.range.high_bytes + 2**24, name
