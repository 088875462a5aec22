"""SGLang's startup memory budget, per GPU: mem_fraction_static, the share of the memory free before loading that
the weights and the KV pool may take, and the pool's tokens.

    KV pool = free_before_load * mem_fraction_static - weights - LoRA pool

Source: sglang python/sglang/srt/arg_groups/memory_hook.py handle_gpu_memory_settings (the default fraction),
model_executor/kv_cache_configurator.py _profile_available_bytes (rest_memory = available now - free before load *
(1 - mem_fraction_static)), lora/mem_pool.py (the LoRA pool, made before the KV pool is sized); v0.5.23.
"""

from __future__ import annotations

from memplan.terms.dtypes import allocation_bytes

MIB = 2**20
#: free memory SGLang measures before loading, below CUDA's total: 79.19 - 78.81 GiB on an 80 GB GPU at TP 1
#: ("Load weight begin. avail mem=78.81 GB", docs.sglang.ai quick start, Jan 2025); what NCCL's setup adds at TP 4
#: on L4s ("Init torch distributed ends. mem usage=0.13 GB", didier-durand/llms-in-clouds docs/sglang.md)
INIT_BYTES = 389 * MIB
NCCL_INIT_BYTES = 133 * MIB


def default_limits(gpu_memory_mib: int, tp: int) -> tuple[int, int]:
    """SGLang's default (chunked_prefill_size, decode CUDA-graph max batch) by the GPU's memory (nvidia-smi MiB).

    Source: sglang arg_groups/memory_hook.py handle_gpu_memory_settings (v0.5.23).
    Example: H100 80 GB (81,559 MiB), tp 1 -> (8192, 256); tp 4 -> (8192, 512); L4 (23,034 MiB), tp 4 -> (4096, 160).
    """
    if gpu_memory_mib < 20 * 1024:
        return 2048, 8
    if gpu_memory_mib < 35 * 1024:
        return 4096, 48 if tp < 4 else 160
    if gpu_memory_mib < 60 * 1024:
        return 4096, 32 if tp < 4 else 160
    if gpu_memory_mib < 160 * 1024:
        return 8192, 256 if tp < 4 else 512
    return 16384, 512


def prefill_graph_sizes(chunked_prefill_size: int) -> int:
    """How many token counts SGLang captures a prefill CUDA graph for: range(4, 33, 4) + range(48, 257, 16) +
    range(288, 513, 32) + range(576, 1025, 64) + range(1280, 4097, 256) + range(4608, max + 1, 512), up to the
    chunked-prefill size. Source: sglang cuda_graph_config.py. Example: 8192 -> 58; 2048 -> 42."""
    sizes = [*range(4, 33, 4), *range(48, 257, 16), *range(288, 513, 32), *range(576, 1025, 64),
             *range(1280, 4097, 256), *range(4608, chunked_prefill_size + 1, 512)]
    return sum(1 for s in sizes if s <= chunked_prefill_size)


def default_mem_fraction_static(gpu_memory_mib: int, tp: int, chunked_prefill_size: int, decode_max_bs: int,
                                prefill_sizes: int) -> float:
    """mem_fraction_static when it is not set: the GPU's memory less a reserve for activations, NCCL and CUDA
    graphs, at least 10 GiB on GPUs over 60 GiB, as a share rounded to 0.001.

    Formula: reserve (MiB) = 512 + 1.5 * max(chunk, 2048) + tp / 8 * 1024 + 2 * decode_max_bs + 8 * prefill_sizes;
    round((mem - reserve) / mem, 3).
    Source: sglang arg_groups/memory_hook.py handle_gpu_memory_settings (v0.5.23, no pipeline parallelism).
    Example: H100 80 GB (81,559 MiB), tp 1: 512 + 12,288 + 128 + 512 + 464 = 13,904 MiB -> 0.83.
    """
    reserve = 512 + 1.5 * max(chunked_prefill_size, 2048) + tp / 8 * 1024 + 2 * decode_max_bs + 8 * prefill_sizes
    if gpu_memory_mib > 60 * 1024:
        reserve = max(reserve, 10 * 1024)
    return round((gpu_memory_mib - reserve) / gpu_memory_mib, 3)


def kv_pool_bytes(free_before_load: int, mem_fraction_static: float, weights: int, lora_pool: int) -> int:
    """The KV pool: what mem_fraction_static of the memory free before loading leaves after the weights and the
    LoRA pool.

    Formula: free * f - weights - lora (rest_memory = (free - weights - lora) - free * (1 - f)).
    Example: 78.81 GiB free, f 0.88, Llama-3.1-8B's 15.09 GiB of loaded weights: 69.3528 - 15.09 = 54.26 GiB (the
    log's K + V = 27.13 + 27.13).
    """
    return int(free_before_load * mem_fraction_static) - weights - lora_pool


def pool_tokens(pool_bytes: int, cell_bytes: int, page_size: int = 1) -> int:
    """max_total_num_tokens: whole cells, aligned down to the page. Source: sglang pool_configurator.py
    calculate_pool_sizes. Example: 54.26 GiB, 131,072 B per token: 444,497 tokens (the log: 444,500)."""
    tokens = max(0, pool_bytes) // cell_bytes
    return tokens // page_size * page_size


def lora_pool_bytes(max_loras: int, rank: int, slices: int, in_features: int, out_features: int,
                    dtype_bytes: int) -> int:
    """One layer's module in SGLang's LoRA pool: A [n, r * slices, in] and B [n, out, r] on this GPU (row-parallel
    modules split `in`, column-parallel ones `out`), in the model's dtype.

    Source: sglang lora/mem_pool.py LoRAMemoryPool.init_buffers (get_lora_A_shape / get_lora_B_shape).
    Example: 8 slots of rank 64, Llama-3.1-8B's qkv (3 slices, 4096 -> 6144), bf16: 12,582,912 + 6,291,456 =
    18,874,368 B.
    """
    return (allocation_bytes(max_loras * rank * slices * in_features * dtype_bytes)
            + allocation_bytes(max_loras * out_features * rank * dtype_bytes))
