"""In-process cost of memplan.plan, and how many estimates one plan runs.

estimate ms: one warm memplan.estimate of the job (model built, per-method sums cached).
new recipes: the first plan after the model is built, with the per-method sums of every recipe the planner tries
  still to compute (what the first plan of a model costs in a running API server; the model build itself, 0.1-0.3 s,
  is in bench/estimate_speed.py).
warm: the same plan again (median and p99 of repeated calls).
estimates: memplan.estimate calls per plan (the search is bounded by pruning, not by a timeout).

Run: python bench/plan_speed.py > bench/results/plan_speed.txt
"""

import os
import platform
import statistics
import time

import torch
import transformers

import memplan
import memplan.plan as plan_pkg
from memplan import sweep
from memplan.engines.formula import static
from memplan.plan import changes, configurations, plan, serving, solvers, speed

CASES = [  # (job, target): the first is the typical request the 100 ms budget is for
    ({"model": "meta-llama/Llama-3.1-8B", "method": "lora", "seq_len": 4096, "gpu": "H100-SXM-80GB"},
     {"global_batch_size": 32}),
    ({"model": "meta-llama/Llama-3.1-8B", "method": "full", "seq_len": 4096, "micro_batch_size": 4,
      "gpu": "H100-SXM-80GB"}, {"global_batch_size": 32}),
    ({"model": "meta-llama/Llama-3.1-8B", "method": "qlora", "seq_len": 2048, "gpu": "T4-16GB"},
     {"global_batch_size": 16}),
    ({"model": "meta-llama/Llama-3.1-70B", "method": "full", "seq_len": 2048, "gradient_checkpointing": True},
     {"global_batch_size": 64, "num_gpus": 8}),
    ({"model": "Qwen/Qwen2.5-7B", "task": "inference", "gpu": "L4-24GB", "inference": {"prompt_len": 4096}},
     None),
    ({"model": "meta-llama/Llama-3.1-70B-Instruct", "task": "serve", "gpu": "A100-SXM-80GB",
      "serving": {"max_model_len": 32768}}, None),
]

_COUNT = [0]


def _counting(fn):
    def wrapped(*args, **kwargs):
        _COUNT[0] += 1
        return fn(*args, **kwargs)
    return wrapped


def _clear_static() -> None:
    static.clear_caches()
    speed.clear_caches()


def _ms(fn, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return sorted(times)


def main() -> None:
    print(f"# memplan {memplan.__version__}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    print(f"{'job':64s} {'estimate ms':>11} {'new recipes ms':>15} {'warm median ms':>15} {'warm p99 ms':>12} "
          f"{'estimates':>9} {'configs':>7} {'changes':>7}")
    est = _counting(memplan.estimate)
    for mod in (plan_pkg, solvers, configurations, changes, sweep, serving):
        mod.estimate = est
    for job, target in CASES:
        memplan.estimate(job)  # build the model outside the timings
        one = _ms(lambda: memplan.estimate({**job, "micro_batch_size": 2}), 200)
        _clear_static()
        memplan.estimate(job)
        t0 = time.perf_counter()
        plan(job, target)
        fresh = (time.perf_counter() - t0) * 1000
        _COUNT[0] = 0
        p = plan(job, target)
        calls = _COUNT[0]
        warm = _ms(lambda: plan(job, target), 30)
        label = ", ".join(f"{k}={v}" for k, v in job.items() if k not in ("inference", "gpu", "serving"))
        label = f"{label}, {job.get('gpu', 'H100-SXM-80GB')}, {target or {}}"[:64]
        print(f"{label:64s} {statistics.median(one):11.3f} {fresh:15.1f} {statistics.median(warm):15.1f} "
              f"{warm[int(0.99 * len(warm)) - 1]:12.1f} {calls:9d} {len(p.configurations):7d} {len(p.changes):7d}")


if __name__ == "__main__":
    main()
