"""The HTTP API through httpx against the app: status codes, error bodies, and numbers equal to the library's."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memplan
from api.app import create_app
from api.settings import Settings, SettingsError
from memplan.check import check
from memplan.sweep import largest_fitting

QLORA_T4 = {"model": "meta-llama/Llama-3.1-8B", "method": "qlora", "optimizer": "paged_adamw_8bit",
            "gradient_checkpointing": True, "gpu": "T4-16GB"}
SMALL = {"model": "Qwen/Qwen2.5-0.5B", "method": "lora", "gpu": "T4-16GB"}


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(Settings()), base_url="http://localhost") as c:
        yield c


@pytest.mark.parametrize("job", [
    QLORA_T4,
    {"model": "meta-llama/Llama-3.1-70B", "method": "full", "zero_stage": 3, "num_gpus": 8,
     "gradient_checkpointing": True},
    {"model": "Qwen/Qwen2.5-7B", "task": "inference", "inference": {"batch_size": 4, "prompt_len": 8192}},
    {"model": "google/gemma-2-2b", "method": "lora"},  # attention defaulted: falls back to eager with a note
])
def test_estimate_equals_the_library(client, job):
    r = client.post("/v1/estimate", json=job)
    assert r.status_code == 200, r.text
    assert r.json() == memplan.estimate(job).model_dump(mode="json")


def test_estimate_accepts_an_inline_config(client):
    config = {"model_type": "llama", "hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 4,
              "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 32000}
    r = client.post("/v1/estimate", json={"model_config": config, "method": "full", "gpu": {"memory_gib": 8}})
    assert r.status_code == 200, r.text
    body = r.json()
    # 32000*512 embed + lm_head, 4 blocks of (4*512*512 - 2*512*384 attention... ): the library's own count
    assert body["params"]["total"] == memplan.estimate({"model_config": config}).params.total
    assert body["gpu"] == {"id": "custom-8GiB", "memory_bytes": 8 * 2**30, "usable_bytes": 8 * 2**30 - 512 * 2**20,
                           "name": None, "node_host_memory_bytes": None}


def test_a_bare_config_says_which_defaults_it_used(client):
    r = client.post("/v1/estimate", json={"model_config": {"model_type": "llama", "hidden_size": 1024}})
    notes = [a for a in r.json()["assumptions"] if a.startswith("model_config gives no")]
    assert notes == ["model_config gives no num_hidden_layers, num_attention_heads, vocab_size: transformers' "
                     "defaults for llama were used"]


def test_check_and_margin(client):
    r = client.post("/v1/check", json=QLORA_T4)
    body = r.json()
    assert r.status_code == 200 and body == check(QLORA_T4).model_dump(mode="json")
    # the point estimate fits with 0.06 GiB to spare, but the 14.50 GiB usable lie inside its calibrated range
    # (13.26 to 16.41 GiB): borderline, which fails the check unless accepted
    assert body["fits"] is True and (body["verdict"], body["passed"]) == ("borderline", False)
    assert body["message"].startswith("BORDERLINE (fails the check; --accept-borderline passes it): "
                                      "meta-llama/Llama-3.1-8B on T4-16GB")
    accepted = client.post("/v1/check", params={"accept_borderline": True}, json=QLORA_T4).json()
    assert (accepted["verdict"], accepted["passed"]) == ("borderline", True)
    # a margin larger than the headroom turns the point verdict: headroom 0.06 GiB is 0.4% of 14.50 GiB usable
    assert client.post("/v1/check", params={"margin_pct": 0.3}, json=QLORA_T4).json()["fits"] is True
    tight = client.post("/v1/check", params={"margin_pct": 10}, json=QLORA_T4).json()
    assert tight["fits"] is False and tight["verdict"] == "does_not_fit"  # 13.05 GiB left, below the range
    assert client.post("/v1/check", params={"margin_pct": 5},
                       json=QLORA_T4).json()["verdict"] == "borderline"  # 13.78 GiB left, inside the range
    assert tight["required_bytes"] == tight["estimate"]["peak_bytes"] + int(tight["usable_bytes"] * 0.10)


def test_sweep_points_equal_estimates_and_largest_fit_is_tight(client):
    job = {**SMALL, "seq_len": 512}
    r = client.post("/v1/sweep", json={"job": job, "field": "micro_batch_size"})
    assert r.status_code == 200, r.text
    body = r.json()
    best = largest_fitting(job, "micro_batch_size")
    assert body["largest_fitting"] == best and best >= 1
    assert memplan.estimate({**job, "micro_batch_size": best}).fits
    assert not memplan.estimate({**job, "micro_batch_size": best + 1}).fits
    values = [p["value"] for p in body["points"]]
    assert values[0] == 1 and values[-1] >= 2 * best  # the chart reaches past the largest fit
    for p in body["points"][:3]:
        assert p["peak_bytes"] == memplan.estimate({**job, "micro_batch_size": p["value"]}).peak_bytes
    assert body["usable_bytes"] == memplan.estimate(job).gpu.usable_bytes
    seq = client.post("/v1/sweep", json={"job": job, "field": "seq_len", "values": [512, 1024]}).json()
    assert [p["value"] for p in seq["points"]] == [512, 1024]


def test_models_are_searchable_with_counts(client):
    rows = client.get("/v1/models", params={"search": "llama-3.1-8b"}).json()
    assert {r["id"] for r in rows} >= {"meta-llama/Llama-3.1-8B"}
    row = next(r for r in rows if r["id"] == "meta-llama/Llama-3.1-8B")
    assert row["params"] == 8_030_261_248 and row["model_type"] == "llama"
    assert len(client.get("/v1/models").json()) == len(memplan.catalog.list_models())
    assert {r["model_type"] for r in client.get("/v1/models", params={"search": "qwen2"}).json()} >= {"qwen2"}
    assert client.get("/v1/models", params={"search": "no-such-model-xyz"}).json() == []


def test_gpus_and_health(client):
    gpus = {g["id"]: g for g in client.get("/v1/gpus").json()}
    assert gpus["H100-SXM-80GB"]["memory_bytes"] == 81_559 * 2**20
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["models"] == len(memplan.catalog.list_models())


def test_docs_work_offline(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "/_docs/swagger-ui-bundle.js" in page.text and "cdn" not in page.text
    assert client.get("/_docs/swagger-ui-bundle.js").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/v1/estimate", "/v1/check", "/v1/sweep", "/v1/models", "/v1/gpus", "/healthz"} <= set(spec["paths"])
    examples = spec["paths"]["/v1/estimate"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    for ex in examples.values():  # every documented example is a valid job
        assert memplan.estimate(ex["value"]).peak_bytes > 0


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("body,status,field,words", [
    ({"model": "meta-llama/Llama-3.1-8B", "metod": "lora"}, 422, "metod", "did you mean 'method'"),
    ({"model": "meta-llama/Llama-3.1-8B", "lora": {"rank": 8}}, 422, "lora.rank", "allowed fields: r, alpha"),
    ({"model": "meta-llama/Llama-3.1-8B", "method": "qlora", "weight_dtype": "bf16"}, 422, "weight_dtype",
     "needs weight_dtype 'nf4' or 'fp4'"),
    ({"model": "meta-llama/Llama-3.1-8B", "optimizer": "adam"}, 422, "optimizer", "'adamw'"),
    ({"model": "meta-llama/Llama-3.1-8B", "micro_batch_size": 0}, 422, "micro_batch_size", "greater than"),
    ({"model": "meta-llama/Llama-3.1-8B", "lora": {"target_modules": ["nope"]}}, 422, "lora.target_modules",
     "match no linear layer"),
    ({"model": "google/gemma-2-2b", "attention": "sdpa"}, 422, "attention", "allowed: eager"),
    ({"model_config": {"model_type": "llama_custom", "auto_map": {"AutoModel": "x.Y"}}}, 422, "model_config",
     "never executes code"),
    ({"model_config": {"model_type": "llama", "num_hidden_layers": 100000}}, 422, "model_config", "0..1024"),
    ({"model_config": {"model_type": "llama", "hidden_size": 100, "num_attention_heads": 7}}, 422, "model_config",
     ""),
    ({"model_config": {"hidden_size": 8}}, 422, "model_config", "model_type"),
    ({"model": "/etc/passwd.json"}, 404, "model", "unknown model"),  # server-side paths are not read
    ({"model": "meta-llama/Llama-3.1-8"}, 404, "model", "meta-llama/Llama-3.1-8B"),
    ({"model": "meta-llama/Llama-3.1-8B", "gpu": "H100-SXM-81GB"}, 404, "gpu", "H100-SXM-80GB"),
    ({}, 422, "model", "exactly one of 'model'"),
    ([1, 2], 422, "body", "JSON object"),
])
def test_errors_name_the_field(client, body, status, field, words):
    r = client.post("/v1/estimate", json=body)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert any(d["field"] == field and words in d["message"] for d in detail), detail
    if status == 404:
        assert detail[0]["suggestions"] or field == "model" and "passwd" in body.get("model", "")


def test_not_found_suggestions(client):
    detail = client.post("/v1/estimate", json={"model": "Qwen/Qwen2.5-7", "gpu": "A100"}).json()["detail"][0]
    assert detail["field"] == "model" and "Qwen/Qwen2.5-7B" in detail["suggestions"]


def test_invalid_json_and_sweep_field(client):
    r = client.post("/v1/estimate", content=b"{model: x", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "body"
    r = client.post("/v1/sweep", json={"job": {**SMALL, "lora": {"x": 1}}, "field": "batch"})
    fields = {d["field"] for d in r.json()["detail"]}
    assert r.status_code == 422 and fields == {"job.lora.x", "field"}
    r = client.post("/v1/check", params={"margin_pct": 100}, json=SMALL)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "margin_pct"


def test_body_limit():
    with TestClient(create_app(Settings(body_limit=4096)), base_url="http://localhost") as c:
        big = {**SMALL, "model_config": None, "pad": "x" * 5000}
        r = c.post("/v1/estimate", content=json.dumps(big).encode(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and "4096 bytes" in r.json()["error"]

        def chunks():  # no Content-Length: counted as it streams
            for _ in range(10):
                yield b" " * 1000

        r = c.post("/v1/estimate", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.post("/v1/estimate", json=SMALL).status_code == 200


def test_cors_only_when_configured():
    origin = {"Origin": "https://example.org"}
    with TestClient(create_app(Settings()), base_url="http://localhost") as c:
        assert "access-control-allow-origin" not in c.get("/healthz", headers=origin).headers
    with TestClient(create_app(Settings(cors_origins=("https://example.org",))), base_url="http://localhost") as c:
        assert c.get("/healthz", headers=origin).headers["access-control-allow-origin"] == "https://example.org"


# ---------------------------------------------------------------- no 500 for any client input

FIELD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**7), st.floats(allow_nan=False,
                                                                                      allow_infinity=False),
                         st.text(max_size=12), st.lists(st.text(max_size=6), max_size=3),
                         st.dictionaries(st.text(max_size=6), st.integers(), max_size=2))
SPEC_KEYS = ["task", "head", "num_labels", "method", "weight_dtype", "mixed_precision", "double_quant", "optimizer",
             "optimizer_impl", "lora", "num_virtual_tokens", "adapter_size", "micro_batch_size", "seq_len",
             "gradient_accumulation_steps", "gradient_checkpointing", "attention", "num_gpus", "zero_stage",
             "offload_optimizer", "offload_params", "inference", "gpu", "bogus"]
VALID_CHOICES = {
    "task": ["train", "inference"], "method": ["full", "lora", "qlora", "freeze", "prompt_tuning", "prefix_tuning",
                                               "ia3", "adapter"],
    "weight_dtype": ["fp32", "bf16", "fp16", "int8", "nf4", "fp4", "int4"], "mixed_precision": ["no", "bf16", "fp16"],
    "optimizer": ["adamw", "adamw_8bit", "paged_adamw_8bit", "sgd", "adafactor", "lion", "none"],
    "attention": ["eager", "sdpa", "flash_attention_2"], "zero_stage": [0, 1, 2, 3], "num_gpus": [1, 2, 8],
    "gradient_checkpointing": [True, False], "offload_optimizer": [True, False], "offload_params": [True, False],
    "head": ["auto", "causal_lm", "seq2seq_lm", "sequence_classification", "token_classification"],
    "gpu": ["T4-16GB", "H100-SXM-80GB", {"memory_gib": 0.5}],
}
MODELS = ["openai-community/gpt2", "google/flan-t5-base", "google-bert/bert-base-uncased", "Qwen/Qwen2.5-0.5B",
          "google/gemma-2-2b", "mistralai/Mixtral-8x7B-v0.1"]
INLINE = st.fixed_dictionaries({"model_type": st.sampled_from(["llama", "gpt2", "t5", "bert", "mixtral", "nope"])},
                               optional={"hidden_size": st.integers(-4, 4096), "num_attention_heads": st.integers(0, 64),
                                         "num_hidden_layers": st.integers(-2, 2000), "vocab_size": st.integers(0, 10**6),
                                         "intermediate_size": st.integers(-1, 8192), "n_embd": st.integers(0, 512),
                                         "num_key_value_heads": st.integers(0, 64), "d_model": st.integers(0, 512),
                                         "num_local_experts": st.integers(0, 5000), "rope_scaling": FIELD_VALUES})


@st.composite
def bodies(draw):
    body = {}
    if draw(st.booleans()):
        body["model"] = draw(st.sampled_from(MODELS + ["nope/x", ""]))
    else:
        body["model_config"] = draw(INLINE)
    for key in draw(st.lists(st.sampled_from(SPEC_KEYS), max_size=6, unique=True)):
        choices = VALID_CHOICES.get(key)
        body[key] = draw(st.sampled_from(choices)) if choices and draw(st.booleans()) else draw(FIELD_VALUES)
    return body


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies(), route=st.sampled_from(["/v1/estimate", "/v1/check", "/v1/sweep"]))
def test_no_client_input_gets_a_500(client, body, route):
    payload = {"job": body, "field": "seq_len", "values": [64, 128]} if route == "/v1/sweep" else body
    r = client.post(route, json=payload)
    assert r.status_code in (200, 404, 422), (r.status_code, r.text)
    if r.status_code != 200:
        detail = r.json()["detail"]
        assert detail and all(d["message"] for d in detail)


@pytest.mark.parametrize("raw", [b'{"model": "Qwen/Qwen2.5-0.5B", "lora": {"alpha": Infinity}}',
                                 b'{"model": "Qwen/Qwen2.5-0.5B", "gpu": {"memory_gib": NaN}}',
                                 b'{"model": "Qwen/Qwen2.5-0.5B", "micro_batch_size": 1e400}'])
def test_non_finite_numbers_are_refused(client, raw):
    """Python's JSON parser reads NaN and Infinity, which JSON itself does not have: refused by name."""
    r = client.post("/v1/estimate", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["field"] in ("lora.alpha", "gpu.memory_gib", "micro_batch_size")


# ---------------------------------------------------------------- settings and hub access


def test_settings_from_env():
    s = Settings.from_env({"MEMPLAN_PORT": "9001", "MEMPLAN_CORS_ORIGINS": "https://a.org, https://b.org",
                           "MEMPLAN_BODY_LIMIT": "2048", "MEMPLAN_HUB_ACCESS": "on", "MEMPLAN_TORCH_VERSION": "2.13.0"})
    assert (s.port, s.cors_origins, s.body_limit, s.hub_access) == (9001, ("https://a.org", "https://b.org"), 2048, True)
    for env, words in [({"MEMPLAN_PROT": "1"}, "did you mean MEMPLAN_PORT"), ({"MEMPLAN_PORT": "x"}, "MEMPLAN_PORT"),
                       ({"MEMPLAN_HUB_ACCESS": "maybe"}, "true/false"), ({"MEMPLAN_PORT": "70000"}, "1..65535")]:
        with pytest.raises(SettingsError, match=words):
            Settings.from_env(env)


def test_hub_access_off_by_default_gives_404(client):
    r = client.post("/v1/estimate", json={"model": "someorg/some-model"})
    assert r.status_code == 404 and "unknown model" in r.json()["error"]


def test_hub_access_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with TestClient(create_app(Settings(hub_access=True)), base_url="http://localhost") as c:
        start = time.perf_counter()
        r = c.post("/v1/estimate", json={"model": "someorg/some-model"})
        assert time.perf_counter() - start < 2
    assert r.status_code == 503 and "HF_HUB_OFFLINE" in r.json()["error"]


class _FakeHub(BaseHTTPRequestHandler):
    configs = {
        "/tiny/llama/resolve/main/config.json": {"model_type": "llama", "hidden_size": 256,
                                                 "intermediate_size": 688, "num_hidden_layers": 2,
                                                 "num_attention_heads": 4, "vocab_size": 1000},
        "/evil/remote/resolve/main/config.json": {"model_type": "llama_custom", "auto_map": {"AutoModel": "m.M"}},
    }

    def do_GET(self):  # noqa: N802
        body = self.configs.get(self.path)
        self.send_response(200 if body else 404)
        self.end_headers()
        self.wfile.write(json.dumps(body or {}).encode())

    def log_message(self, *args):
        pass


def test_hub_access_on_fetches_config_json_only(monkeypatch):
    """A local stand-in for the Hub (HF_ENDPOINT) on loopback: the fetched config is estimated; a config that
    needs remote code is refused; a missing repo is a 404."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    try:
        with TestClient(create_app(Settings(hub_access=True)), base_url="http://localhost") as c:
            r = c.post("/v1/estimate", json={"model": "tiny/llama", "method": "full"})
            assert r.status_code == 200, r.text
            inline = {"model_config": _FakeHub.configs["/tiny/llama/resolve/main/config.json"], "method": "full"}
            assert r.json()["peak_bytes"] == memplan.estimate(inline).peak_bytes
            assert r.json()["model"]["id"] == "tiny/llama"
            r = c.post("/v1/estimate", json={"model": "evil/remote"})
            assert r.status_code == 422 and "never executes code" in r.json()["error"]
            r = c.post("/v1/estimate", json={"model": "no/such"})
            assert r.status_code == 404 and "no config.json" in r.json()["error"]
    finally:
        server.shutdown()


# ---------------------------------------------------------------- memplan serve


def test_memplan_serve_runs_the_service(tmp_path):
    """The README's run command: `memplan serve` answers on the port it is given, with the page at /."""
    import os
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MEMPLAN_WARM": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "memplan.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read())
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, "memplan serve did not start"
                time.sleep(0.2)
        assert health["status"] == "ok"
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
        assert "<html" in page.lower() and "memplan" in page
    finally:
        proc.terminate()
        proc.wait(10)


def test_memplan_serve_rejects_a_misspelt_setting(capsys):
    import os

    from memplan.cli import main

    os.environ["MEMPLAN_BODY_LIMT"] = "10"
    try:
        assert main(["serve"]) == 2
    finally:
        del os.environ["MEMPLAN_BODY_LIMT"]
    assert "MEMPLAN_BODY_LIMIT" in capsys.readouterr().err
