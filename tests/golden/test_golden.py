"""Every golden job's full Estimate JSON, byte for byte as stored in tests/golden/<engine>/<name>.json
(tests/golden/jobs.py lists them and says how to regenerate)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memplan.estimate import estimate
from tests.golden.jobs import BOTH_JOBS, FORMULA_JOBS, cases
from tests.trace.crosscheck_configs import traced

GOLDEN_DIR = Path(__file__).parent


def rendered(engine: str, name: str, job: dict) -> str:
    e = traced(name) if engine == "trace" else estimate(job)
    return json.dumps(e.model_dump(mode="json"), indent=1) + "\n"


def test_enough_golden_jobs():
    jobs = [job for _, job in FORMULA_JOBS] + [job for _, job in BOTH_JOBS]
    assert len(cases()) >= 60 and len({n for _, n, _ in cases()}) == len(FORMULA_JOBS) + len(BOTH_JOBS)
    methods = {j.get("method", "lora") for j in jobs if j.get("task") != "inference"}
    assert methods == {"full", "lora", "qlora", "freeze", "prompt_tuning", "prefix_tuning", "ia3", "adapter"}
    assert {j.get("optimizer", "adamw") for j in jobs} >= {"adamw", "adamw_8bit", "paged_adamw_8bit",
                                                          "paged_adamw_32bit", "sgd", "sgd_momentum", "adafactor",
                                                          "lion", "none"}
    assert {j.get("attention", "sdpa") for j in jobs} == {"eager", "sdpa", "flash_attention_2"}
    assert {j.get("zero_stage", 0) for j in jobs} == {0, 1, 2, 3}
    assert {j.get("gradient_checkpointing", False) for j in jobs} == {True, False}


def test_every_golden_file_is_a_job():
    stored = {f"{p.parent.name}/{p.stem}" for p in GOLDEN_DIR.glob("*/*.json")}
    assert stored == {f"{engine}/{name}" for engine, name, _ in cases()}


@pytest.mark.parametrize("engine,name,job", cases(), ids=[f"{e}-{n}" for e, n, _ in cases()])
def test_estimate_matches_golden_file(engine, name, job):
    expected = (GOLDEN_DIR / engine / f"{name}.json").read_text()
    assert rendered(engine, name, job) == expected, f"{engine}/{name}: the estimate changed"
