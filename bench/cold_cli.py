"""Cold CLI start: whole `memplan` processes, as a CI gate or a pre-commit hook runs them (a fresh interpreter each
time, nothing cached), several runs after one warm-up, min / median / max of wall time.

  check    memplan check examples/llama3-8b-qlora-t4.yaml   (a catalog model: the shipped introspection)
  estimate memplan estimate meta-llama/Llama-3.1-8B --method qlora --json
  inline   memplan estimate --model <a config.json path>    (not in the catalog: builds on meta, imports torch)

Run: python bench/cold_cli.py > bench/results/cold_cli.txt
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = 7
ROOT = Path(__file__).resolve().parent.parent
CONFIG = {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
          "num_attention_heads": 32, "num_key_value_heads": 4, "vocab_size": 32000}


def _run(argv: list[str]) -> float:
    """Wall seconds of one process."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "memplan.cli", *argv], capture_output=True, cwd=ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"memplan {' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return wall


def main() -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(CONFIG, f)
        config_path = f.name
    cases = {"check": ["check", "examples/llama3-8b-qlora-t4.yaml"],
             "estimate": ["estimate", "meta-llama/Llama-3.1-8B", "--method", "qlora", "--json"],
             "inline": ["estimate", "--model", config_path, "--json"]}
    print(f"# memplan cold CLI, python {platform.python_version()}, {os.cpu_count()} cores; {RUNS} runs after one "
          "warm-up each; wall seconds of the whole process")
    print(f"{'case':<9} {'min s':>7} {'median s':>9} {'max s':>7}")
    for name, argv in cases.items():
        _run(argv)
        walls = [_run(argv) for _ in range(RUNS)]
        print(f"{name:<9} {min(walls):>7.3f} {statistics.median(walls):>9.3f} {max(walls):>7.3f}")
    os.unlink(config_path)


if __name__ == "__main__":
    main()
