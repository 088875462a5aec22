"""The worked examples of memplan.terms.host (loading's CPU copies), and where the estimate applies them."""

import memplan
from memplan.terms import host as hm

LLAMA_8B_BF16 = 8_030_261_248 * 2


def test_loading_copies_per_process_or_rank_zero():
    assert hm.loading_host_bytes(LLAMA_8B_BF16, 8, rank0_only=False) == 128_484_179_968
    assert hm.loading_host_bytes(LLAMA_8B_BF16, 8, rank0_only=True) == 16_060_522_496


def test_the_estimate_counts_loading_as_the_stacks_load():
    """DDP: every process of the node holds a CPU copy before moving it to its GPU; FSDP: rank 0 only (accelerate's
    cpu_ram_efficient_loading); bitsandbytes quantizes onto the GPU: no copy, except FSDP1's rank 0."""
    job = {"model": "meta-llama/Llama-3.1-8B", "method": "lora", "gpu": "H100-SXM-80GB"}
    one = memplan.estimate(job).host_bytes
    ddp = memplan.estimate({**job, "num_gpus": 8}).host_bytes
    fsdp = memplan.estimate({**job, "num_gpus": 8, "parallelism": "fsdp", "zero_stage": 3}).host_bytes
    assert ddp == 8 * one and fsdp == one and one >= LLAMA_8B_BF16
    qlora = {**job, "method": "qlora"}
    assert memplan.estimate(qlora).host_bytes == 0
    assert memplan.estimate({**qlora, "num_gpus": 2, "parallelism": "fsdp", "zero_stage": 3,
                             "fsdp_version": 2}).host_bytes == 0
    fsdp1 = memplan.estimate({**qlora, "num_gpus": 2, "parallelism": "fsdp", "zero_stage": 3, "fsdp_version": 1})
    assert 0.25 * one < fsdp1.host_bytes < 0.5 * one  # rank 0's 4-bit copy
