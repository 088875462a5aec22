"""In-process cost of memplan.estimate.

cold: the first estimate of a model (builds it on the meta device; transformers already imported).
new method: the architecture is cached, but the per-model sums for this method and dtype are not (the first
  estimate after changing method, dtype, optimizer or LoRA rank/targets).
warm: both cached, a different micro-batch and sequence length on each call (what a sweep or a page edit costs).

Run: python bench/estimate_speed.py > bench/results/estimate_speed.txt
"""

import os
import platform
import statistics
import time

import torch
import transformers

import memplan
from memplan.engines.formula import static
from memplan import architecture

SPECS = [
    {"model": "meta-llama/Llama-3.1-8B", "method": "qlora", "gradient_checkpointing": True},
    {"model": "meta-llama/Llama-3.1-8B", "method": "lora", "lora": {"r": 64}},
    {"model": "meta-llama/Llama-3.1-70B", "method": "full", "zero_stage": 3, "num_gpus": 64},
    {"model": "mistralai/Mixtral-8x7B-v0.1", "method": "qlora"},
    {"model": "Qwen/Qwen2.5-7B", "task": "inference", "inference": {"prompt_len": 8192}},
    {"model": "google/flan-t5-xl", "method": "lora"},
]


def _ms(fn, n: int) -> list[float]:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t0) * 1000)
    return sorted(times)


def _clear_static() -> None:
    static.clear_caches()


def main() -> None:
    print(f"# memplan {memplan.__version__}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores")
    print(f"{'spec':58s} {'cold s':>7} {'new method ms':>14} {'warm median ms':>15} {'warm p99 ms':>12}")
    memplan.estimate({"model": "openai-community/gpt2", "seq_len": 512})  # import transformers outside the timings
    for spec in SPECS:
        architecture.clear_caches()
        _clear_static()
        t0 = time.perf_counter()
        memplan.estimate(spec)
        cold = time.perf_counter() - t0

        def new_method(i):
            _clear_static()
            memplan.estimate(spec)

        def warm(i):
            memplan.estimate({**spec, "micro_batch_size": 1 + i % 8, "seq_len": 512 * (1 + i % 5)})

        fresh = _ms(new_method, 50)
        times = _ms(warm, 1000)
        label = ", ".join(f"{k}={v}" for k, v in spec.items() if k not in ("inference", "lora"))[:58]
        print(f"{label:58s} {cold:7.2f} {statistics.median(fresh):14.2f} {statistics.median(times):15.3f} "
              f"{times[int(0.99 * len(times)) - 1]:12.3f}")


if __name__ == "__main__":
    main()
