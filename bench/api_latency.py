"""The API on loopback: latency (p50, p99) and throughput of POST /v1/estimate under a bounded load.

The server is `memplan serve` (uvicorn, one worker, httptools + uvloop) pinned to core 0; the load comes from
wrk (Debian's package; C, keep-alive connections) pinned to core 1, so the two do not share a core. Four loads:
  1 connection   - one request at a time: the latency a single caller sees
  2, 4 connections - concurrent callers below saturation
  8 connections  - a bounded closed loop past saturation: throughput, and the queueing it adds to latency
Each request is a real estimate: the body alternates micro-batch and sequence length (wrk's Lua script), so the
requests are not identical, while the architecture stays cached (warmed before the run).

Run: python bench/api_latency.py > bench/results/api_latency.txt   (needs wrk and taskset, 2 or more cores)
"""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

DURATION_S = 10
JOB = {"model": "meta-llama/Llama-3.1-8B", "method": "qlora", "optimizer": "paged_adamw_8bit",
       "gradient_checkpointing": True, "gpu": "T4-16GB"}

LUA = """
local bodies = {}
for i, mb in ipairs({1, 2, 3, 4}) do
  for j, seq in ipairs({512, 1024, 2048, 4096}) do
    bodies[#bodies + 1] = string.format('%s', mb, seq)
  end
end
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", "/v1/estimate", {["Content-Type"] = "application/json"}, bodies[(n %% #bodies) + 1])
end
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, timeout_s: float = 60) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"server did not answer at {url}")


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def _wrk(port: int, script: str, connections: int) -> dict:
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{DURATION_S}s", "--latency",
                          "--timeout", "30s",
                          "-s", script, f"http://127.0.0.1:{port}"], capture_output=True, text=True, check=True).stdout
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    if set(lat) != {"50", "99"}:
        raise SystemExit(f"wrk printed no latency distribution:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "p50_ms": _ms(lat["50"]), "p99_ms": _ms(lat["99"]), "errors": int(non2xx.group(1)) if non2xx else 0}


def main() -> None:
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-m", "memplan.cli", "serve", "--port",
                               str(port), "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL)
    try:
        _wait(f"http://127.0.0.1:{port}/healthz")
        template = json.dumps({**JOB, "micro_batch_size": 999, "seq_len": 888}).replace("999", "%d").replace(
            "888", "%d")
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            f.write(LUA.replace("'%s'", "'" + template + "'").replace("%%", "%"))
            script = f.name
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/estimate", data=json.dumps(JOB).encode(),
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=60).read()  # build the model once before timing
        import memplan
        import torch

        print(f"# memplan {memplan.__version__}, python {platform.python_version()}, torch {torch.__version__}, "
              f"{os.cpu_count()} cores; server: memplan serve (uvicorn, 1 worker) on core 0; load: wrk -t1 on "
              f"core 1, {DURATION_S} s per row")
        print(f"# POST /v1/estimate, {JOB['model']} {JOB['method']} on {JOB['gpu']}, 16 bodies (micro-batch 1-4 x "
              "seq 512-4096) in turn")
        print(f"{'connections':>11} {'requests':>9} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>8}")
        for connections in (1, 2, 4, 8):
            r = _wrk(port, script, connections)
            print(f"{connections:>11} {r['requests']:>9} {r['rps']:>8.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
                  f"{r['errors']:>8}")
        os.unlink(script)
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
