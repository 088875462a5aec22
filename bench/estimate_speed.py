"""In-process cost of memplan.estimate: cold (builds the model on meta) and warm (architecture cached).

Run: python bench/estimate_speed.py > bench/results/estimate_speed.txt
"""

import platform
import statistics
import time

import torch
import transformers

import memplan
from memplan.architecture import _introspect_cached

SPECS = [
    {"model": "meta-llama/Llama-3.1-8B", "method": "qlora", "gradient_checkpointing": True},
    {"model": "meta-llama/Llama-3.1-70B", "method": "full", "zero_stage": 3, "num_gpus": 64},
    {"model": "Qwen/Qwen2.5-7B", "task": "inference", "inference": {"prompt_len": 8192}},
    {"model": "google/flan-t5-xl", "method": "lora"},
]


def main() -> None:
    print(f"# memplan {memplan.__version__}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"python {platform.python_version()}, {platform.machine()}")
    print(f"{'spec':60s} {'cold s':>8} {'warm median ms':>15} {'warm p99 ms':>12}")
    for spec in SPECS:
        _introspect_cached.cache_clear()
        t0 = time.perf_counter()
        memplan.estimate(spec)
        cold = time.perf_counter() - t0
        times = []
        for _ in range(200):
            t0 = time.perf_counter()
            memplan.estimate(spec)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        label = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "inference")[:60]
        print(f"{label:60s} {cold:8.2f} {statistics.median(times):15.2f} {times[int(0.99 * len(times)) - 1]:12.2f}")


if __name__ == "__main__":
    main()
