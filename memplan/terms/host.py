"""Host (CPU) memory a job needs per node beside its GPUs: DeepSpeed's offloaded optimizer and parameters, and the
per-process copies of the model that loading holds. Notation as in memplan.terms.sharding: P parameters, L the largest
layer's parameters, G GPUs per node, M nodes.
"""

from __future__ import annotations

#: DeepSpeed's estimators multiply their counts by this "additional_buffer_factor" (pinned buffers, fragmentation)
DEEPSPEED_HOST_BUFFER_FACTOR = 1.5
#: GPUs in one node when a job names only a GPU count (DGX / HGX / p4d / p5 nodes hold 8)
GPUS_PER_NODE = 8


def nodes_for(num_gpus: int, gpus_per_node: int = GPUS_PER_NODE) -> tuple[int, int]:
    """(GPUs per node, nodes) for a job of num_gpus GPUs packed into nodes of gpus_per_node.

    Example: nodes_for(4) == (4, 1); nodes_for(64) == (8, 8).
    """
    per = min(num_gpus, gpus_per_node)
    return per, -(-num_gpus // per)


def zero_host_bytes(total_params: int, largest_layer_params: int, stage: int, gpus_per_node: int, nodes: int,
                    offload_optimizer: bool, offload_params: bool, zero_init: bool = True) -> int:
    """CPU memory per node of a DeepSpeed ZeRO job, as DeepSpeed's own estimators count it (with their 1.5 buffer
    factor b; G GPUs per node, M nodes, N = G*M):

    - ZeRO-1/2, optimizer offloaded: P * max(4N, 16) * b (fp32 master weights, Adam states and gradients: 16 P,
      or each process's fp32 copy of the model while it loads, 4 P per GPU); not offloaded: P * 4G * b.
    - ZeRO-3 (zero.Init, as the HF Trainer builds under ZeRO-3): optimizer and parameters offloaded P * 18/M * b,
      optimizer only P * 16/M * b, neither L * 4G * b (one layer materialised per process at a time).

    Source: deepspeed/runtime/zero/stage_1_and_2.py estimate_zero2_model_states_mem_needs, stage3.py
    estimate_zero3_model_states_mem_needs (cpu_mem), which count every parameter (an upper bound for adapters).
    Example: Llama-3.1-8B (8,030,261,248 params), ZeRO-2 with the optimizer offloaded, 8 GPUs on one node:
    8,030,261,248 * 32 * 1.5 = 385,452,539,904 B (359 GiB).
    """
    if stage == 0:
        return 0
    b = DEEPSPEED_HOST_BUFFER_FACTOR
    if stage < 3:
        if offload_optimizer:
            return int(total_params * max(4 * gpus_per_node * nodes, 16) * b)
        return int(total_params * 4 * gpus_per_node * b)
    if offload_optimizer:
        per_param = 18 if offload_params else 16
        if zero_init:
            return int(total_params * per_param / nodes * b)
        return int(total_params * max(4 * gpus_per_node, per_param / nodes) * b)
    if zero_init:
        return int(largest_layer_params * 4 * gpus_per_node * b)
    return int(total_params * 4 * gpus_per_node * b)


def loading_host_bytes(model_bytes: int, processes_per_node: int, rank0_only: bool) -> int:
    """CPU memory per node while the model loads: transformers' from_pretrained materializes the checkpoint's
    tensors on the CPU in the load dtype, one copy per training process, before the Trainer moves the model to its
    GPU; under FSDP's cpu_ram_efficient_loading (the default `accelerate config` writes) rank 0 loads and the other
    ranks build on the meta device, so the first node holds one copy. bitsandbytes models quantize onto the GPU as
    they load (device_map): no CPU copy, except FSDP1's rank 0 keeping the quantized model for sync_module_states.

    Formula: G * W per node, or W (rank 0 only); W the model's bytes as loaded.
    Source: transformers modeling_utils from_pretrained (is_fsdp_enabled: rank 0 loads, the others meta),
    accelerate FullyShardedDataParallelPlugin.cpu_ram_efficient_loading; Answer.AI's FSDP-QLoRA benchmarks (a 70B
    load filling 128 GB of CPU RAM).
    Example: Llama-3.1-8B in bf16 (16,060,522,496 B) on 8 GPUs: 8 * W = 128,484,179,968 B; rank 0 only:
    16,060,522,496 B.
    """
    return model_bytes if rank0_only else processes_per_node * model_bytes
