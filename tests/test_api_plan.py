"""POST /v1/plan through the FastAPI TestClient: every configuration and change it returns re-estimates to the
numbers it reports; bad input is a 422 (404 for unknown ids) naming the field, never a 500."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memplan
from api.app import create_app
from api.settings import Settings
from memplan.plan import PlanTarget, plan
from tests.test_api import bodies

SMALL = {"model": "Qwen/Qwen2.5-0.5B", "method": "lora", "gpu": "T4-16GB"}
# full fine-tune of a 0.5B model at micro-batch 4 on a T4: does not fit, so the plan also lists changes
TIGHT = {"model": "Qwen/Qwen2.5-0.5B", "method": "full", "micro_batch_size": 4, "gpu": "T4-16GB"}


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(Settings()), base_url="http://localhost") as c:
        yield c


def post_plan(client, body):
    return client.post("/v1/plan", json=body)


# ---------------------------------------------------------------- answers equal the library's


@pytest.mark.parametrize("job,target", [(SMALL, {"global_batch_size": 16}), (TIGHT, {"global_batch_size": 8})])
def test_configurations_re_estimate_to_their_peak_and_fit(client, job, target):
    r = post_plan(client, {"job": job, "target": target})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body == plan(job, target).model_dump(mode="json")  # the route adds nothing of its own
    assert body["configurations"], "a 0.5B model has configurations that fit a T4"
    for option in body["configurations"]:
        e = memplan.estimate(option["job"])
        assert e.peak_bytes == option["peak_bytes"], option["label"]
        assert e.fits, option["label"]
        assert option["headroom_bytes"] == e.gpu.usable_bytes - e.peak_bytes
        job_spec = option["job"]
        assert (job_spec["micro_batch_size"] * job_spec["gradient_accumulation_steps"] * job_spec["num_gpus"]
                == target["global_batch_size"])
    # the baseline: the job with the accumulation that reaches the global batch at its micro-batch
    mb = job.get("micro_batch_size", 1)
    baseline = memplan.estimate({**job, "gradient_accumulation_steps": target["global_batch_size"] // mb})
    assert baseline.peak_bytes == body["estimate"]["peak_bytes"]
    for change in body["changes"]:
        e = memplan.estimate(change["job"])
        assert e.peak_bytes == change["peak_bytes"], change["description"]
        assert change["saves_bytes"] == body["estimate"]["peak_bytes"] - e.peak_bytes
    solvers = body["solvers"]
    assert {"largest_micro_batch", "longest_seq_len", "fewest_gpus", "smallest_memory_gpu", "fastest_gpu"} <= set(solvers)
    assert solvers["cheapest_gpu"] == solvers["smallest_memory_gpu"]  # the old name, kept for scripts
    assert body["target"]["global_batch_size"] == target["global_batch_size"]


def test_a_job_that_does_not_fit_gets_changes_that_fit(client):
    body = post_plan(client, {"job": TIGHT, "target": {"global_batch_size": 8}}).json()
    assert body["estimate"]["fits"] is False
    fitting = [c for c in body["changes"] if c["fits"]]
    assert fitting and all(memplan.estimate(c["job"]).fits for c in fitting)


def test_inference_plan_has_the_kv_budget(client):
    job = {"model": "Qwen/Qwen2.5-0.5B", "task": "inference", "gpu": "T4-16GB"}
    r = post_plan(client, {"job": job, "limit": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert 1 <= len(body["configurations"]) <= 3
    inference = body["solvers"]["inference"]
    assert inference["kv_cache_budget_bytes"] > 0 and inference["concurrent_sequences"] >= 1
    for option in body["configurations"]:
        assert memplan.estimate(option["job"]).peak_bytes == option["peak_bytes"]


def test_limit_and_defaults(client):
    body = post_plan(client, {"job": SMALL, "limit": 1}).json()
    assert len(body["configurations"]) == 1
    assert body["target"] == PlanTarget().model_dump(mode="json")  # no target: the job's own


def test_openapi_documents_the_route_with_working_examples(client):
    spec = client.get("/openapi.json").json()
    route = spec["paths"]["/v1/plan"]["post"]
    assert route["tags"] == ["estimate"]
    assert route["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Plan")
    examples = route["requestBody"]["content"]["application/json"]["examples"]
    assert examples
    for ex in examples.values():
        r = post_plan(client, ex["value"])
        assert r.status_code == 200, (ex["summary"], r.text)
        assert r.json()["configurations"], ex["summary"]


# ---------------------------------------------------------------- errors name the field


@pytest.mark.parametrize("target,field,words", [
    ({"global_batch_size": 0}, "target.global_batch_size", "greater than or equal to 1"),
    ({"global_batch_size": "many"}, "target.global_batch_size", "integer"),
    ({"global_batch_size": 3, "num_gpus": 2}, "target.global_batch_size", "not a multiple of num_gpus 2"),
    ({"num_gpus": 0}, "target.num_gpus", "greater than or equal to 1"),
    ({"num_gpus": 5000}, "target.num_gpus", "less than or equal to 1024"),
    ({"utilization": 1.5}, "target.utilization", "less than or equal to 1"),
    ({"margin_pct": 100}, "target.margin_pct", "less than 100"),
    ({"global_batch": 8}, "target.global_batch", "did you mean 'global_batch_size'"),
    ("eight", "target", "valid dictionary"),
])
def test_bad_target_field_is_a_422_naming_it(client, target, field, words):
    r = post_plan(client, {"job": SMALL, "target": target})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert any(d["field"] == field and words in d["message"] for d in detail), detail


@pytest.mark.parametrize("job,field,words", [
    ({**SMALL, "method": "nope"}, "job.method", "got 'nope'"),
    ({**SMALL, "metod": "lora"}, "job.metod", "did you mean 'method'"),
    ({**SMALL, "micro_batch_size": 0}, "job.micro_batch_size", "greater than"),
    ({**SMALL, "lora": {"r": 0}}, "job.lora.r", "greater than"),
    ({**SMALL, "lora": {"target_modules": ["nope"]}}, "job.lora.target_modules", "match no linear layer"),
    ({**SMALL, "method": "qlora", "weight_dtype": "bf16"}, "job.weight_dtype", "needs weight_dtype 'nf4'"),
    ({"model_config": {"hidden_size": 8}}, "job.model_config", "model_type"),
    ({"method": "lora"}, "job.model", "exactly one of 'model'"),
])
def test_bad_job_field_is_a_422_naming_it(client, job, field, words):
    r = post_plan(client, {"job": job})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert any(d["field"] == field and words in d["message"] for d in detail), detail


@pytest.mark.parametrize("body,field", [
    ({"job": SMALL, "limit": 0}, "limit"),
    ({"job": SMALL, "limit": 101}, "limit"),
    ({"job": SMALL, "limit": "ten"}, "limit"),
    ({"job": SMALL, "targt": {}}, "targt"),
    ({"target": {}}, "job"),
])
def test_limit_out_of_range_and_unknown_keys_are_422(client, body, field):
    r = post_plan(client, body)
    assert r.status_code == 422, r.text
    assert [d["field"] for d in r.json()["detail"]] == [field]


@pytest.mark.parametrize("job,field", [({**SMALL, "gpu": "H100-SXM-81GB"}, "gpu"),
                                       ({**SMALL, "model": "Qwen/Qwen2.5-0.6B"}, "model")])
def test_unknown_ids_answer_like_estimate(client, job, field):
    """The same status, body shape, message and suggestions as /v1/estimate, the field under job."""
    est = client.post("/v1/estimate", json=job)
    r = post_plan(client, {"job": job})
    assert r.status_code == est.status_code == 404
    got, want = r.json(), est.json()
    assert set(got) == set(want) == {"error", "detail"}
    assert [set(d) for d in got["detail"]] == [set(d) for d in want["detail"]]
    assert got["detail"][0] == {**want["detail"][0], "field": f"job.{field}"}
    assert got["detail"][0]["suggestions"]


def test_unknown_target_gpu_is_a_404_naming_target_gpu(client):
    r = post_plan(client, {"job": SMALL, "target": {"gpu": "H100-SXM-81GB"}})
    assert r.status_code == 404, r.text
    detail = r.json()["detail"][0]
    assert detail["field"] == "target.gpu" and "H100-SXM-80GB" in detail["suggestions"]


def test_target_gpu_alias_is_accepted(client):
    body = post_plan(client, {"job": SMALL, "target": {"gpu": "H100-SXM-80GB", "num_gpus": 2}}).json()
    assert body["estimate"]["gpu"]["id"] == "H100-SXM-80GB"
    assert all(o["num_gpus"] == 2 for o in body["configurations"])


# ---------------------------------------------------------------- no 500 for any client input

TARGETS = st.one_of(st.none(), st.fixed_dictionaries({}, optional={
    "global_batch_size": st.one_of(st.integers(-2, 64), st.text(max_size=3)),
    "num_gpus": st.integers(-1, 9), "gpu": st.sampled_from(["T4-16GB", "H100-SXM-80GB", "nope", ""]),
    "utilization": st.floats(-1, 2, allow_nan=False), "margin_pct": st.floats(-5, 120, allow_nan=False),
    "bogus": st.integers()}))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(job=bodies(), target=TARGETS, limit=st.integers(-1, 120))
def test_no_client_input_gets_a_500(client, job, target, limit):
    r = post_plan(client, {"job": job, "target": target, "limit": limit})
    assert r.status_code in (200, 404, 422), (r.status_code, r.text)
    if r.status_code != 200:
        detail = r.json()["detail"]
        assert detail and all(d["message"] for d in detail)
        assert all(d["field"] == "body" or d["field"].split(".")[0] in ("job", "target", "limit")
                   for d in detail), detail
