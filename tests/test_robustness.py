"""Hostile and oversized input, in the API and the CLI: each defect found by load tests and fuzzing gets its
regression test here (bounded work, no 5xx, no server internals, clean CLI failures)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest
from fastapi.testclient import TestClient

import memplan
from api.app import create_app
from api.background import serving
from api.compute import Busy, Compute, OverBudget
from api.guards import API_METHODS, host_name
from api.settings import Settings
from memplan import architecture
from memplan.architecture import plain_error
from memplan.cli import main
from memplan.engines.formula import static
from memplan.memo import BytesLRU
from memplan.spec import MAX_REPORTED_ERRORS, MAX_TARGET_MODULES, SpecError, printable

LLAMA = "meta-llama/Llama-3.1-8B"


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(Settings(warm=False)), base_url="http://localhost",
                    raise_server_exceptions=False) as c:
        yield c


# ---------------------------------------------------------------- 1. nested configs and the size of a build


@pytest.mark.parametrize("config, where", [
    ({"model_type": "gemma3", "text_config": {"num_hidden_layers": 3000}}, "text_config.num_hidden_layers"),
    ({"model_type": "llava", "vision_config": {"num_hidden_layers": 5000}}, "vision_config.num_hidden_layers"),
    ({"model_type": "llama", "vocab_size": 2**70}, "vocab_size"),
    ({"model_type": "llama", "hidden_size": -4}, "hidden_size"),
])
def test_every_nested_config_is_bounded(client, config, where):
    r = client.post("/v1/estimate", json={"model_config": config})
    assert r.status_code == 422
    (item,) = r.json()["detail"]
    assert item["field"] == "model_config" and f"'{where}'" in item["message"]


@pytest.mark.parametrize("config", [
    {"model_type": "t5", "num_layers": 1024, "num_decoder_layers": 1024},
    {"model_type": "switch_transformers", "num_layers": 16, "num_decoder_layers": 16, "num_experts": 256},
    {"model_type": "llama", "num_hidden_layers": 1024},
])
def test_builds_are_bounded_by_modules(client, config):
    """Counts inside their caps can still multiply into a huge model: the build stops at MAX_MODULES modules
    (2.5x the largest catalog model), which also bounds its time."""
    r = client.post("/v1/estimate", json={"model_config": config})
    assert r.status_code == 422
    message = r.json()["detail"][0]["message"]
    assert f"more than {architecture.MAX_MODULES:,} modules" in message


def test_the_largest_catalog_model_is_inside_the_module_budget():
    assert memplan.estimate({"model": "meta-llama/Llama-3.1-405B", "method": "full"}).params.total > 4 * 10**11


# ---------------------------------------------------------------- 2, 3. errors and lists


def test_many_unknown_fields_give_a_short_answer(client):
    body = {"model": LLAMA, **{f"field_{i}": 1 for i in range(16_000)}}
    r = client.post("/v1/estimate", json=body)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert len(detail) == MAX_REPORTED_ERRORS + 1
    assert detail[-1]["message"] == f"... and {16_000 - MAX_REPORTED_ERRORS} more errors"
    # the allowed fields are listed once, the other unknown fields refer to that list
    assert "allowed fields: model, " in detail[0]["message"]
    assert all(d["message"].endswith("allowed fields as listed above") for d in detail[1:-1])
    assert len(r.content) < 20_000


def test_library_errors_are_capped_too():
    with pytest.raises(SpecError) as exc:
        memplan.estimate({"model": LLAMA, **{f"f{i}": 1 for i in range(500)}})
    assert len(exc.value.errors) == MAX_REPORTED_ERRORS + 1


@pytest.mark.parametrize("path, body, field", [
    ("/v1/estimate", {"model": LLAMA, "lora": {"target_modules": ["q_proj"] * 60_000}}, "lora.target_modules"),
    ("/v1/plan", {"job": {"model": LLAMA, "lora": {"target_modules": ["x"] * 5_000}}}, "job.lora.target_modules"),
    ("/v1/estimate", {"model": LLAMA, "lora": {"target_modules": ["q" * 5000]}}, "lora.target_modules.0"),
    ("/v1/estimate", {"model": "m" * 10_000}, "model"),
    ("/v1/plan", {"job": {"model": LLAMA}, "target": {"gpu": "g" * 10_000}}, "target.gpu"),
])
def test_list_and_name_fields_are_bounded(client, path, body, field):
    r = client.post(path, json=body)
    assert r.status_code == 422
    assert [i["field"] for i in r.json()["detail"]] == [field]
    assert len(r.content) < 2_000  # the input is not echoed back
    if "target_modules" in field and field.endswith("modules"):
        assert f"at most {MAX_TARGET_MODULES} items" in r.json()["detail"][0]["message"]


# ---------------------------------------------------------------- 4. one slow request does not block the others


def test_compute_bounds_concurrency_and_time():
    import asyncio

    release = threading.Event()
    compute = Compute(max_concurrent=1, timeout_s=0.2)

    async def scenario():
        slow = asyncio.ensure_future(compute.run(release.wait))
        await asyncio.sleep(0.05)
        with pytest.raises(Busy):  # the only slot is held by the slow call
            await compute.run(lambda: 1)
        with pytest.raises(OverBudget):
            await slow
        release.set()
        await asyncio.sleep(0.05)  # the abandoned thread finishes and frees its slot
        assert await compute.run(lambda: 2) == 2

    asyncio.run(scenario())


def test_healthz_answers_while_an_estimate_runs(monkeypatch):
    """An estimate that does not return until released: /healthz still answers, then the estimate finishes."""
    started, release = threading.Event(), threading.Event()
    import api.app as app_module

    def stuck(job):
        started.set()
        release.wait(30)
        return memplan.estimate(job)

    monkeypatch.setattr(app_module, "estimate", stuck)
    with TestClient(create_app(Settings(warm=False)), base_url="http://localhost") as c:
        result = {}
        worker = threading.Thread(target=lambda: result.update(r=c.post("/v1/estimate", json={"model": LLAMA})))
        worker.start()
        assert started.wait(30)
        assert c.get("/healthz").status_code == 200 and worker.is_alive()
        release.set()
        worker.join(30)
    assert result["r"].status_code == 200


def test_over_budget_request_gets_504(monkeypatch):
    import api.app as app_module

    release = threading.Event()
    monkeypatch.setattr(app_module, "estimate", lambda job: release.wait(30))
    with TestClient(create_app(Settings(warm=False, request_timeout=0.2)), base_url="http://localhost") as c:
        r = c.post("/v1/estimate", json={"model": LLAMA})
        release.set()
    assert r.status_code == 504 and "MEMPLAN_REQUEST_TIMEOUT" in r.json()["detail"][0]["message"]


# ---------------------------------------------------------------- 5, 6. no 500, no internals


@pytest.mark.parametrize("path, body", [
    ("/v1/estimate", '{"model": "\\ud800"}'),
    ("/v1/estimate", '{"model": "x", "gpu": "\\ud800"}'),
    ("/v1/estimate", '{"model_config": {"model_type": "\\ud800"}}'),
    ("/v1/estimate", '{"model_config": {"model_type": "llama", "\\udfff": 1}, "method": "\\ud800"}'),
    ("/v1/plan", '{"job": {"model": "meta-llama/Llama-3.1-8B"}, "target": {"gpu": "\\ud800"}}'),
    ("/v1/check", '{"model": "meta-llama/Llama-3.1-8B", "lora": {"target_modules": ["\\ud800"]}}'),
])
def test_lone_surrogates_get_a_422_not_a_500(client, path, body):
    r = client.post(path, content=body.encode(), headers={"content-type": "application/json"})
    assert r.status_code in (404, 422), r.text
    json.loads(r.text)  # valid UTF-8 JSON


def test_build_errors_carry_no_server_internals(client):
    r = client.post("/v1/estimate", json={"model_config": {"model_type": "llama", "hidden_size": 4096,
                                                           "num_attention_heads": 7}})
    assert r.status_code == 422
    message = r.json()["detail"][0]["message"]
    assert "/" not in message.replace("model_config", "") and "\n" not in message and len(message) < 400


def test_plain_error_keeps_the_first_line_without_paths():
    exc = RuntimeError("shape '[-1]' is invalid\nException raised from foo at /opt/pytorch/c10/core/x.cpp:42 "
                       "(most recent call first):\nframe #0: c10::Error")
    assert plain_error(exc) == "RuntimeError: shape '[-1]' is invalid"
    two_lines = ValueError("Class validation error for validator 'x':\n    ValueError: hidden 4096 % heads 7")
    assert plain_error(two_lines) == "ValueError: Class validation error for validator 'x': ValueError: hidden 4096 % heads 7"
    assert plain_error(ValueError("bad in /usr/lib/python3/site-packages/transformers/x.py:10")) == \
        "ValueError: bad in <path>"


def test_printable_escapes_lone_surrogates():
    assert printable("a\ud800b") == "a\\ud800b"
    assert printable("plain ü") == "plain ü"


# ---------------------------------------------------------------- 8, 9. contract and headers


@pytest.mark.parametrize("method, path", [("GET", "/v1/estimate"), ("PUT", "/v1/plan"), ("POST", "/v1/models"),
                                          ("DELETE", "/v1/gpus")])
def test_wrong_methods_get_405_with_allow(client, method, path):
    r = client.request(method, path)
    assert r.status_code == 405 and r.headers["allow"] == API_METHODS[path]
    assert r.json()["detail"][0]["field"] == "method"


def test_json_sent_as_text_is_415(client):
    r = client.post("/v1/estimate", content=json.dumps({"model": LLAMA}), headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["detail"][0]["field"] == "content-type"
    ok = client.post("/v1/estimate", content=json.dumps({"model": LLAMA}),
                     headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200


@pytest.mark.parametrize("body", [{"job": {"model": LLAMA}, "target": {"margin_pct": False}},
                                  {"job": {"model": LLAMA, "seq_len": True}}])
def test_booleans_are_not_numbers(client, body):
    r = client.post("/v1/plan", json=body)
    assert r.status_code == 422 and "expected a number, got" in r.json()["error"]


def test_every_route_documents_memplans_error_shape(client):
    spec = client.get("/openapi.json").json()
    routes = {(p, m.upper()) for p, ops in spec["paths"].items() for m in ops}
    assert routes == {(p, m) for p, m in API_METHODS.items()}
    for path, ops in spec["paths"].items():
        for op in ops.values():
            for status in ("422", "400"):
                if status in op["responses"] and path != "/healthz":
                    schema = op["responses"][status]["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, status)
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_security_headers_on_page_api_and_docs(client):
    for path in ("/", "/healthz", "/docs"):
        r = client.get(path)
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp
        assert ("'unsafe-inline'" in csp) == (path == "/docs")


def test_hosts_not_served_are_refused():
    with TestClient(create_app(Settings(warm=False)), base_url="http://evil.example") as c:
        r = c.get("/healthz")
        assert r.status_code == 400 and r.json()["detail"][0]["field"] == "host"
    with TestClient(create_app(Settings(warm=False, allowed_hosts=("memplan.internal",))),
                    base_url="http://memplan.internal:8000") as c:
        assert c.get("/healthz").status_code == 200
    with TestClient(create_app(Settings(warm=False, host="0.0.0.0")), base_url="http://any.name") as c:
        assert c.get("/healthz").status_code == 200
    assert host_name("[::1]:8000") == "[::1]" and host_name("localhost:80") == "localhost"


# ---------------------------------------------------------------- 7. header size and slow clients (a real server)


def test_header_limit_and_slow_clients_on_a_real_server():
    with serving(Settings(warm=False, header_timeout=0.5)) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
            assert s.recv(64).startswith(b"HTTP/1.1 400")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")  # never finishes its headers
            assert s.recv(64) == b""  # the server closed the connection
        with socket.create_connection((host, int(port)), timeout=10) as s:  # a prompt client is served
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert s.recv(64).startswith(b"HTTP/1.1 200")


# ---------------------------------------------------------------- 10. CLI


def _hostile_files(tmp_path):
    files = {
        "utf16.yaml": f"model: {LLAMA}\n".encode("utf-16"),
        "binary.yaml": bytes(range(256)) * 4,
        "binary.json": b"\x89PNG\r\n\x1a\n\x00\x00",
        "deep.json": b"[" * 30_000 + b"]" * 30_000,
        "deep.yaml": ("a:\n" + "".join("  " * i + "b:\n" for i in range(1, 3000))).encode(),
        "bomb.yaml": ("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))).encode(),
        "aliases.yaml": ("a: &a [1]\nb: [" + ", ".join(["*a"] * 150) + "]\n").encode(),
        "list.yaml": b"- a\n- b\n",
        "nul.yaml": b"model: x\x00\n",
        "model-binary.yaml": b"model: ./binary.json\n",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return [str(tmp_path / n) for n in files]


def test_every_hostile_job_file_exits_2_with_a_message(tmp_path, capsys):
    for path in _hostile_files(tmp_path):
        # (a --from file's model is overridden by the JOB's: model-binary.yaml is hostile as a JOB only)
        uses = [["estimate", path]] + ([] if path.endswith("model-binary.yaml") else [["check", LLAMA, "--from", path]])
        for argv in uses:
            code = main(argv)
            out, err = capsys.readouterr()
            assert code == 2, (argv, err)
            # estimate reports on stderr; check reports each job on its own line of stdout
            said = err if argv[0] == "estimate" else out
            named = "binary.json" if path.endswith("model-binary.yaml") else path.split("/")[-1]  # the file at fault
            assert said.startswith(("memplan: error:", "memplan check:")) and named in said, said
            assert "Traceback" not in out + err


def test_hostile_config_path_exits_2(tmp_path, capsys):
    _hostile_files(tmp_path)
    code = main(["estimate", str(tmp_path / "binary.json")])
    assert code == 2 and "binary file" in capsys.readouterr().err


def test_broken_pipe_is_quiet():
    proc = subprocess.Popen([sys.executable, "-m", "memplan.cli", "models"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the command prints (it takes a second to start)
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 141 and "Traceback" not in err and "BrokenPipe" not in err


def test_a_bug_exits_3_not_1(monkeypatch, capsys):
    import memplan.cli as cli

    def boom(args):
        raise RuntimeError("unexpected")

    monkeypatch.setattr(cli, "_cmd_models", boom)  # build_parser binds it when main runs
    monkeypatch.delenv("MEMPLAN_DEBUG", raising=False)
    assert main(["models"]) == 3
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: unexpected" in err and "Traceback" not in err


# ---------------------------------------------------------------- 11. caches bounded by bytes


def test_bytes_lru_evicts_by_cost_and_tells_dependents():
    cleared = []
    cache = BytesLRU(100)
    cache.on_evict(lambda: cleared.append(1))
    cache.put("a", 1, 60)
    cache.put("b", 2, 30)
    assert cache.get("a") == 1 and not cleared  # a is now the most recent
    cache.put("c", 3, 50)  # 140 > 100: b (least recent) goes first, then 110 > 100: a
    assert cache.get("b") is None and cache.get("a") is None and cache.get("c") == 3
    assert cache.bytes == 50 and cleared == [1]


def test_model_cache_holds_bytes_not_entries(monkeypatch):
    """A flood of distinct pasted configs: the cache stays under its byte bound, and the per-model sums are
    cleared with what they referenced."""
    monkeypatch.setattr(architecture.model_cache, "max_bytes", 4 * 2**20)
    for layers in range(60, 80):
        memplan.estimate({"model_config": {"model_type": "llama", "num_hidden_layers": layers, "hidden_size": 256,
                                           "intermediate_size": 512, "num_attention_heads": 4, "vocab_size": 1000}})
    assert architecture.model_cache.bytes <= 4 * 2**20 and len(architecture.model_cache) < 20
    kept = {id(v[0]) for v in architecture.model_cache._data.values()}
    assert all(id(key[0]) in kept for key in static._STATIC_CACHE)


# ---------------------------------------------------------------- the contract under fuzzing


def test_fuzzed_requests_get_no_5xx_and_match_the_documented_contract():
    """400 schema-generated requests (bench/reliability.py sends 10,000 to a real server): every answer is
    documented in /openapi.json, status and body."""
    from tests.fuzzing import fuzz

    with TestClient(create_app(Settings(warm=False, request_timeout=30)), base_url="http://localhost",
                    raise_server_exceptions=False) as c:
        spec = c.get("/openapi.json").json()

        def send(method, target, body):
            r = c.request(method, target, content=body,
                          headers={"content-type": "application/json"} if body is not None else {})
            return r.status_code, r.content

        tally = fuzz(spec, send, n=400, seed=7)
    assert tally.requests == 400
    assert not tally.server_errors, tally.server_errors[:5]
    assert not tally.violations, tally.violations[:5]
    assert len(tally.by_status) >= 3  # the fuzzer reaches answers of several kinds


def test_serve_with_two_workers_answers(tmp_path):
    """`memplan serve --workers 2`: uvicorn pickles the server settings for its worker processes (a class made at
    run time could not be pickled); both workers start warm and answer."""
    import os
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "memplan.cli", "serve", "--port", str(port), "--workers", "2",
                             "--log-level", "warning"], env={**os.environ, "HF_HUB_OFFLINE": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "no answer within 120 s"
                time.sleep(0.25)
        assert json.loads(body)["status"] == "ok"
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/estimate", data=json.dumps({"model": LLAMA}).encode(),
                                     headers={"content-type": "application/json"})
        assert json.loads(urllib.request.urlopen(req, timeout=30).read())["peak_bytes"] > 0
    finally:
        proc.terminate()
        proc.wait(30)
