"""The service under hostile and heavy use, on loopback, every loop bounded in count and time:

  fuzz       10,000 schema-generated requests (tests/fuzzing.py) over HTTP: 5xx and contract violations
  load       64 connections for 60 s on POST /v1/estimate and on POST /v1/plan (wrk): req/s, p50, p99, errors
  isolation  /healthz latency while two clients keep sending slow requests (distinct 300-layer pasted configs,
             each a fresh build of ~0.5 s): p50, p99, max
  flood      RSS of the server over 2,000 distinct pasted configs (the model cache is bounded in bytes)

The server is `memplan serve` (1 worker) pinned to core 0; wrk and the Python clients run on core 1.
Run: python bench/reliability.py > bench/results/reliability.txt   (needs wrk and taskset, 2 or more cores)
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_latency import _free_port, _wait, _wrk  # noqa: E402

from tests.fuzzing import fuzz  # noqa: E402

LOAD_S = int(os.environ.get("LOAD_S", 60))
ESTIMATE = {"model": "meta-llama/Llama-3.1-8B", "method": "qlora", "optimizer": "paged_adamw_8bit",
            "gradient_checkpointing": True, "gpu": "T4-16GB"}
PLAN = {"job": ESTIMATE, "target": {"global_batch_size": 16}, "limit": 3}


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _lua(path: str, body: dict) -> str:
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    script.write(f'wrk.method = "POST"\nwrk.path = "{path}"\nwrk.headers["Content-Type"] = "application/json"\n'
                 f"wrk.body = [[{json.dumps(body)}]]\n")
    script.close()
    return script.name


def _config(i: int, layers: int) -> dict:
    return {"model_config": {"model_type": "llama", "num_hidden_layers": layers, "hidden_size": 256 + 64 * (i % 8),
                             "intermediate_size": 512 + i, "num_attention_heads": 4, "vocab_size": 1000}}


def main() -> None:
    os.sched_setaffinity(0, {1})
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-m", "memplan.cli", "serve", "--port",
                               str(port), "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL)
    try:
        _wait(f"{base}/healthz")
        import memplan

        print(f"# memplan {memplan.__version__}, python {platform.python_version()}, {os.cpu_count()} cores; server: "
              "memplan serve (1 worker, defaults: 2 compute slots, 10 s budget) on core 0; clients on core 1")
        with httpx.Client(base_url=base, timeout=60) as client:
            client.post("/v1/plan", json=PLAN)  # warm
            spec = client.get("/openapi.json").json()

            def send(method, target, body):
                r = client.request(method, target, content=body,
                                   headers={"content-type": "application/json"} if body is not None else {})
                return r.status_code, r.content

            started = time.monotonic()
            tally = fuzz(spec, send, n=10_000, seed=2026)
            print(f"\n## fuzz: {tally.requests} requests in {time.monotonic() - started:.0f} s, statuses "
                  f"{dict(sorted(tally.by_status.items()))}")
            print(f"server errors (5xx but 503/504): {len(tally.server_errors)}; contract violations: "
                  f"{len(tally.violations)}")
            for line in (tally.server_errors + tally.violations)[:10]:
                print(f"  {line[:200]}")

        print(f"\n## load: 64 connections, {LOAD_S} s each (wrk -t1)")
        print(f"{'route':<14} {'requests':>9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
        import api_latency

        api_latency.DURATION_S = LOAD_S
        for path, body in (("/v1/estimate", ESTIMATE), ("/v1/plan", PLAN)):
            script = _lua(path, body)
            r = _wrk(port, script, 64)
            os.unlink(script)
            print(f"{path:<14} {r['requests']:>9} {r['rps']:>8.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                  f"{r['errors']:>8}")

        stop = threading.Event()
        slow_done = []

        def slow_client(k: int) -> None:
            with httpx.Client(base_url=base, timeout=60) as c:
                i = 0
                while not stop.is_set():
                    t = time.monotonic()
                    c.post("/v1/estimate", json=_config(100_000 * k + i, 300))
                    slow_done.append(time.monotonic() - t)
                    i += 1

        threads = [threading.Thread(target=slow_client, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        latencies = []
        with httpx.Client(base_url=base, timeout=60) as c:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and len(latencies) < 2000:
                t = time.monotonic()
                c.get("/healthz")
                latencies.append(1000 * (time.monotonic() - t))
                time.sleep(0.01)
        stop.set()
        for t in threads:
            t.join(60)
        q = statistics.quantiles(latencies, n=100)
        print(f"\n## isolation: /healthz while 2 clients send slow requests ({len(slow_done)} slow requests, "
              f"median {statistics.median(slow_done):.2f} s each)")
        print(f"/healthz: {len(latencies)} requests, p50 {q[49]:.2f} ms, p99 {q[98]:.2f} ms, max {max(latencies):.2f} ms")

        print("\n## flood: 2,000 distinct pasted configs (2-9 layers), server RSS")
        with httpx.Client(base_url=base, timeout=60) as c:
            statuses: dict[int, int] = {}
            rss = [f"start {_rss_mib(server.pid):.0f}"]
            for i in range(2000):
                r = c.post("/v1/estimate", json=_config(i, 2 + i % 8))
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if (i + 1) % 250 == 0:
                    rss.append(f"{i + 1}: {_rss_mib(server.pid):.0f}")
        print(f"statuses {statuses}; RSS MiB after n configs: " + ", ".join(rss))
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
