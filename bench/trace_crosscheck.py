"""The two engines on real-size jobs (7B-70B): peak allocated from each, their disagreement, and the time each
takes (the trace runs the real step on fake tensors: seconds, no GPU, no memory).

Disagreement is on peak allocated less the GPU-only terms both engines add from the same functions
(tests/trace/crosscheck_configs.compared_bytes). Target (issue 5): an 8B-class training step traced in <= 15 s on
2 cores.

Run: python bench/trace_crosscheck.py [REPEATS, default 3] > bench/results/trace_crosscheck.txt
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import transformers  # noqa: E402

from memplan.estimate import estimate  # noqa: E402
from tests.trace.crosscheck_configs import compared_bytes  # noqa: E402

GIB = 2**30
JOBS = [
    ("Llama-3.1-8B full, bf16, s4096", {"model": "meta-llama/Llama-3.1-8B", "method": "full", "seq_len": 4096}),
    ("Llama-3.1-8B full, bf16, gc, s4096", {"model": "meta-llama/Llama-3.1-8B", "method": "full", "seq_len": 4096,
                                            "gradient_checkpointing": True}),
    ("Llama-3.1-8B LoRA r16, s4096", {"model": "meta-llama/Llama-3.1-8B", "seq_len": 4096}),
    ("Llama-3.1-8B QLoRA nf4, gc, s2048 b4", {"model": "meta-llama/Llama-3.1-8B", "method": "qlora",
                                              "gradient_checkpointing": True, "micro_batch_size": 4}),
    ("Mistral-7B LoRA, eager, s2048", {"model": "mistralai/Mistral-7B-v0.3", "attention": "eager"}),
    ("Qwen2.5-7B inference, p8192 n256", {"model": "Qwen/Qwen2.5-7B", "task": "inference",
                                          "inference": {"prompt_len": 8192, "max_new_tokens": 256}}),
    ("Qwen2.5-14B LoRA, gc, s4096", {"model": "Qwen/Qwen2.5-14B", "seq_len": 4096, "gradient_checkpointing": True}),
    ("Qwen2.5-32B QLoRA, gc, s2048", {"model": "Qwen/Qwen2.5-32B", "method": "qlora",
                                      "gradient_checkpointing": True}),
    ("Llama-3.1-70B QLoRA, gc, s2048", {"model": "meta-llama/Llama-3.1-70B", "method": "qlora",
                                        "gradient_checkpointing": True}),
    ("Llama-3.1-70B LoRA bf16, gc, s4096", {"model": "meta-llama/Llama-3.1-70B", "seq_len": 4096,
                                            "gradient_checkpointing": True, "gpu": "H200-141GB"}),
]


def measure(index: int) -> dict[str, float]:
    """One job in this process: both engines' compared bytes and their times (the formula engine timed with its
    model already built, as the API serves it; the trace from scratch, as `memplan estimate --engine trace` runs)."""
    job = JOBS[index][1]
    estimate(job)
    t = time.perf_counter()
    formula = estimate(job)
    formula_ms = 1000 * (time.perf_counter() - t)
    t = time.perf_counter()
    traced = estimate(job, engine="trace")
    trace_s = time.perf_counter() - t
    return {"trace": compared_bytes(traced), "formula": compared_bytes(formula), "trace_s": trace_s,
            "formula_ms": formula_ms}


def main(repeats: int) -> None:
    print(f"# memplan trace vs formula, real-size jobs ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, transformers {transformers.__version__})")
    print("# GiB = 2^30; diff = (formula - trace) / trace on peak allocated less the shared GPU-only terms")
    print(f"# trace s: median of {repeats} runs, each in a fresh process (FakeTensor's dispatch cache starts empty, as "
          "for a CLI call), with the range")
    print(f"{'job':40s} {'trace GiB':>10s} {'formula GiB':>12s} {'diff':>7s} {'trace s':>8s} {'range s':>11s} "
          f"{'formula ms':>11s}")
    for index, (name, _) in enumerate(JOBS):
        runs = []
        for _ in range(repeats):
            done = subprocess.run([sys.executable, __file__, "--one", str(index)], capture_output=True, text=True,
                                  check=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        a, b = runs[0]["trace"], runs[0]["formula"]
        times = sorted(r["trace_s"] for r in runs)
        formula_ms = statistics.median(r["formula_ms"] for r in runs)
        print(f"{name:40s} {a / GIB:10.2f} {b / GIB:12.2f} {100 * (b - a) / a:+6.1f}% "
              f"{statistics.median(times):8.1f} {times[0]:5.1f}-{times[-1]:<5.1f} {formula_ms:11.2f}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(measure(int(sys.argv[2]))))
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
