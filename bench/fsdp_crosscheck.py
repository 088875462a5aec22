"""The formula's FSDP per-GPU peak against the trace engine's (torch's own FSDP2 on a fake process group, one CPU
process, wrapped as accelerate 1.14+ wraps it) on real-size models: Llama-3.1-8B and -70B, full fine-tuning, LoRA
and QLoRA (bnb_4bit_quant_storage bf16; FSDP2, and FSDP1 by the trace's stand-in wrapping), FULL_SHARD and
SHARD_GRAD_OP, world sizes 8 to 64, seq 2048, checkpointing on, the HF Trainer's defaults otherwise (bf16 weights,
bf16 mixed precision: accelerate upcasts the trainable parameters to fp32).

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
         ("meta-llama/Llama-3.1-70B", "lora", 3, 8), ("meta-llama/Llama-3.1-70B", "qlora", 3, 8),
         ("meta-llama/Llama-3.1-70B", "qlora", 3, 2, 1)]


def main() -> None:
    print(f"# memplan {memplan.__version__}, python {platform.python_version()}, {os.cpu_count()} cores; peak "
          "allocated per GPU (GiB), formula vs trace (torch FSDP2 on a fake process group); seq 2048, micro-batch 1, "
          "gradient checkpointing")
    print(f"{'model':<28} {'method':<6} {'fsdp':>4} {'stage':>5} {'gpus':>4} {'formula':>8} {'trace':>8} "
          f"{'error':>7} {'trace s':>7}")
    for model, method, stage, gpus, *version in CASES:
        fsdp_version = version[0] if version else 2
        job = {"model": model, "method": method, "parallelism": "fsdp", "zero_stage": stage, "num_gpus": gpus,
               "seq_len": 2048, "gradient_checkpointing": True, "fsdp_version": fsdp_version}
        formula = memplan.estimate(job).peak_allocated_bytes
        start = time.monotonic()
        traced = memplan.estimate(job, engine="trace").peak_allocated_bytes
        seconds = time.monotonic() - start
        print(f"{model:<28} {method:<6} {fsdp_version:>4} {stage:>5} {gpus:>4} {formula / GIB:>8.2f} {traced / GIB:>8.2f} "
              f"{100 * (formula / traced - 1):>+6.2f}% {seconds:>7.1f}")


if __name__ == "__main__":
    main()
