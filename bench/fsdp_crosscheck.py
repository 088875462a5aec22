"""The formula's FSDP2 per-GPU peak against the trace engine's (torch's own FSDP2 on a fake process group, one CPU
process) on real-size models: Llama-3.1-8B and -70B, full fine-tuning and LoRA, FULL_SHARD and SHARD_GRAD_OP,
world sizes 8 to 64, seq 2048, checkpointing on, the HF Trainer's defaults otherwise (bf16 weights, bf16 mixed
precision: accelerate upcasts the shards to fp32).

Run: python bench/fsdp_crosscheck.py > bench/results/fsdp_crosscheck.txt
"""

from __future__ import annotations

import os
import platform
import time

import memplan

GIB = 2**30
CASES = [("meta-llama/Llama-3.1-8B", "full", 3, 8), ("meta-llama/Llama-3.1-8B", "full", 3, 64),
         ("meta-llama/Llama-3.1-8B", "full", 2, 8), ("meta-llama/Llama-3.1-8B", "lora", 3, 8),
         ("meta-llama/Llama-3.1-8B", "lora", 2, 16), ("meta-llama/Llama-3.1-70B", "full", 3, 64),
         ("meta-llama/Llama-3.1-70B", "lora", 3, 8)]


def main() -> None:
    print(f"# memplan {memplan.__version__}, python {platform.python_version()}, {os.cpu_count()} cores; peak "
          "allocated per GPU (GiB), formula vs trace (torch FSDP2 on a fake process group); seq 2048, micro-batch 1, "
          "gradient checkpointing")
    print(f"{'model':<28} {'method':<6} {'stage':>5} {'gpus':>4} {'formula':>8} {'trace':>8} {'error':>7} "
          f"{'trace s':>7}")
    for model, method, stage, gpus in CASES:
        job = {"model": model, "method": method, "parallelism": "fsdp", "zero_stage": stage, "num_gpus": gpus,
               "seq_len": 2048, "gradient_checkpointing": True}
        formula = memplan.estimate(job).peak_allocated_bytes
        start = time.monotonic()
        traced = memplan.estimate(job, engine="trace").peak_allocated_bytes
        seconds = time.monotonic() - start
        print(f"{model:<28} {method:<6} {stage:>5} {gpus:>4} {formula / GIB:>8.2f} {traced / GIB:>8.2f} "
              f"{100 * (formula / traced - 1):>+6.2f}% {seconds:>7.1f}")


if __name__ == "__main__":
    main()
