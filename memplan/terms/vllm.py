"""vLLM V1's startup memory budget, per GPU: what it requests, what the profile run and the sampler take, the LoRA
slots it preallocates, CUDA graphs and memory outside torch, and what is left for the KV cache.

    available KV = utilization * total - (weights + LoRA slots) - profile peak - non-torch [- CUDA graphs]

Source: vllm/v1/worker/gpu_worker.py determine_available_memory and vllm/utils/mem_utils.py memory_profiling
(v0.19-v0.21); the measured constants come from the 59 vLLM 0.19.0 startup logs on H100 80GB in
llm-d-incubation/llm-d-planner (accuracy/results/v0.19.0/logs, commit 56dc5b7), docs/published-serving.md.
"""

from __future__ import annotations

import math

from memplan.terms.dtypes import allocation_bytes

MIB = 2**20

#: the GPU memory (GiB, as the driver reports it) from which vLLM's `vllm serve` raises its batch defaults, and
#: the defaults (vllm/engine/arg_utils.py _set_default_args: OPENAI_API_SERVER usage context; A100s keep the low
#: ones): (max_num_batched_tokens, max_num_seqs)
LARGE_GPU_GIB = 70
SERVE_LIMITS_LARGE = (8192, 1024)
SERVE_LIMITS_SMALL = (2048, 256)
#: tokens per KV block (vllm CacheConfig.block_size default for the FlashAttention / FlashInfer backends, v0.10-0.27)
BLOCK_SIZE = 16
#: gpu_memory_utilization's default (vllm/config/cache.py: 0.9 up to v0.17, 0.92 in v0.21-0.27)
DEFAULT_UTILIZATION = 0.92
#: the sampler's fp32 working set per logit of the dummy batch, beyond the logits themselves (their fp32 copy,
#: top-k/top-p's sorted copy and int64 indices, masks; vllm/v1/sample/sampler.py, ops/topk_topp_sampler.py):
#: fitted over the 11 dense models of the vLLM 0.19 logs whose profile peak the sampler sets (Llama 3.x, Qwen 2.5/3,
#: Phi, Gemma 2, Granite): every one within 0.01 GiB with this value, and the fp32 run (logits in fp32, 2 B more
#: per logit) as well
SAMPLER_FP32_BYTES_PER_LOGIT = 12.5
#: memory outside torch that the profile run adds on one GPU (cuBLAS/cuDNN handles, kernel modules loaded on
#: first launch): 0.24-0.26 GiB in the 40 single-GPU vLLM 0.19 logs on H100 (median 0.25)
NON_TORCH_SINGLE_GPU_BYTES = 256 * MIB
#: what NCCL adds during the profile run's first all-reduces with tensor parallelism (channel buffers, NVLink
#: SHARP buffers on NVSwitch systems): non-torch 2.06-2.21 GiB at TP 2-4 on H100 SXM in the same logs, less the
#: single-GPU share (median 1.82 GiB); a prior on other interconnects
NCCL_RUNTIME_BYTES = 1864 * MIB
#: device memory in use before vLLM's first snapshot, outside its budget: the CUDA context (0.51 GiB at TP 1) and
#: NCCL's communicator setup (1.53 GiB at TP 2, 2.01 GiB at TP 4), "worker init memory snapshot ... cuda_memory"
#: in the same logs; other sizes extrapolate +0.48 GiB per doubling (a prior)
INIT_MEMORY_TP_BYTES = {1: 522 * MIB, 2: 1567 * MIB, 4: 2058 * MIB}
#: CUDA graph memory per captured graph (PIECEWISE and FULL, one per capture size): a base plus a share per layer,
#: least squares over the 31 scored vLLM 0.19 logs' "Graph capturing finished ... took X GiB" (dense models and
#: Mixtral, TP 1-4): every one within 0.21 GiB (it shrinks with TP, which this does not model)
GRAPH_BASE_BYTES = int(3.41 * MIB)
GRAPH_PER_LAYER_BYTES = int(0.171 * MIB)


def requested_bytes(total_bytes: int, utilization: float) -> int:
    """The share of the GPU one vLLM instance may use (per GPU): total * gpu_memory_utilization.

    Formula: ceil(total * utilization).
    Source: vllm/v1/worker/gpu_worker.py init_device (requested_memory = math.ceil(total_memory *
    gpu_memory_utilization), v0.17+).
    Example: H100 80GB (79.19 GiB = 85,029,615,042 B to CUDA) at 0.95: 80,778,134,290 B (75.23 GiB).
    """
    return math.ceil(total_bytes * utilization)


def rope_cache_bytes(max_positions: int, rotary_dim: int, dtype_bytes: int) -> int:
    """vLLM's rotary cos/sin table, one per model (get_rope caches it by its arguments): [max_position_embeddings,
    rotary_dim] in the model's dtype, allocated at load, so part of "Model loading took".

    Source: vllm/model_executor/layers/rotary_embedding (RotaryEmbedding._compute_cos_sin_cache, cos_sin_cache
    buffer cast to the model dtype).
    Example: Llama-3.1-8B (131,072 positions, head 128, bf16): 33,554,432 B; with its 16,060,522,496 B of weights
    16,094,076,928 B = 14.99 GiB, the logged "Model loading took 14.99 GiB".
    """
    return allocation_bytes(max_positions * rotary_dim * dtype_bytes)


def serve_batch_limits(gpu_memory_gib: float, is_a100: bool) -> tuple[int, int]:
    """`vllm serve`'s default (max_num_batched_tokens, max_num_seqs): 8192 and 1024 on GPUs with at least 70 GiB
    that are not A100s, else 2048 and 256.

    Source: vllm/engine/arg_utils.py EngineArgs._set_default_args (default_max_num_batched_tokens /
    default_max_num_seqs for UsageContext.OPENAI_API_SERVER); logged as "Defaulting max_num_batched_tokens to
    8192 for OPENAI_API_SERVER usage context".
    Example: H100 80GB -> (8192, 1024); A100 80GB -> (2048, 256); L4 -> (2048, 256).
    """
    return SERVE_LIMITS_LARGE if gpu_memory_gib >= LARGE_GPU_GIB and not is_a100 else SERVE_LIMITS_SMALL


def sampler_peak_bytes(tokens: int, requests: int, hidden: int, vocab: int, compute_bytes: int) -> int:
    """The dummy sampler run at the end of the profile run: the forward's output hidden states [T, h], the rows
    of the last tokens [R, h] and the random stand-in the sampler reads [R, h], the [R, V] logits in the model's
    dtype and the sampler's fp32 working set over them (R = min(max_num_seqs, T) dummy requests, V the padded
    vocabulary, whole on every GPU).

    Formula: c * h * (T + 2R) + (c + 12.5) * R * V.
    Source: vllm/v1/worker/gpu_model_runner.py profile_run / _dummy_sampler_run (hidden_states[logit_indices],
    torch.rand_like, compute_logits, sampler with top-k and top-p); SAMPLER_FP32_BYTES_PER_LOGIT measured.
    Example: Llama-3.1-8B at vllm serve's H100 defaults (T 8192, R 1024, h 4096, V 128,256, bf16):
      2 * 4096 * (8192 + 2048) + 14.5 * 1024 * 128,256 = 83,886,080 + 1,904,345,088 = 1,988,231,168 B.
    """
    per_logit = compute_bytes + SAMPLER_FP32_BYTES_PER_LOGIT
    return compute_bytes * hidden * (tokens + 2 * requests) + int(per_logit * requests * vocab)


def profile_peak_bytes(forward_bytes: int, sampler_bytes: int, workspace_bytes: int) -> int:
    """The profile run's torch peak increase (what vLLM logs as "torch peak memory increase"): the larger of the
    dummy forward's working set and the dummy sampler's (they run one after the other), plus the cuBLAS
    workspace the first matmul allocates.

    Formula: max(forward, sampler) + workspace.
    Source: vllm/utils/mem_utils.py memory_profiling (torch_peak_increase = allocated_bytes.all.peak during
    profile_run).
    Example: Llama-3.1-8B, H100 defaults: forward 973,078,528 B (memplan.terms.kv_cache.prefill_transient_bytes at
    T 8192), sampler 1,988,231,168 B, workspace 33,554,432 B: 2,021,785,600 B (1.88 GiB; logged 1.89 GiB).
    """
    return max(forward_bytes, sampler_bytes) + workspace_bytes


def non_torch_bytes(tp: int) -> int:
    """Memory outside torch's allocator that vLLM counts against its budget: the single-GPU share, plus NCCL's
    runtime buffers under tensor parallelism.

    Example: tp 1 -> 268,435,456 B (0.25 GiB); tp 2 -> 2,222,981,120 B (2.07 GiB; logged 2.06-2.09 GiB).
    """
    return NON_TORCH_SINGLE_GPU_BYTES + (NCCL_RUNTIME_BYTES if tp > 1 else 0)


def init_memory_bytes(tp: int) -> int:
    """Device memory in use before vLLM's first snapshot (the CUDA context, NCCL's setup), on top of the budget.

    Example: tp 1 -> 547,356,672 B; tp 8 -> 2,058 + 492 MiB = 2,673,868,800 B (a prior).
    """
    if tp in INIT_MEMORY_TP_BYTES:
        return INIT_MEMORY_TP_BYTES[tp]
    if tp < 4:
        return INIT_MEMORY_TP_BYTES[2]
    doublings = (tp.bit_length() - 1) - 2
    return INIT_MEMORY_TP_BYTES[4] + doublings * 492 * MIB


def capture_sizes(max_num_seqs: int, max_num_batched_tokens: int) -> int:
    """How many batch sizes vLLM captures a CUDA graph for: [1, 2, 4] + range(8, 256, 8) + range(256, M + 1, 16)
    up to M = min(2 * max_num_seqs, 512, max_num_batched_tokens).

    Source: vllm/config/vllm.py _set_cudagraph_sizes (max_cudagraph_capture_size); logged as "Profiling CUDA
    graph memory: PIECEWISE=51 (largest=512), FULL=51 (largest=512)".
    Example: max_num_seqs 1024, 8192 batched tokens: M = 512 -> 3 + 31 + 17 = 51.
    """
    top = min(2 * max_num_seqs, 512, max_num_batched_tokens)
    sizes = [s for s in [1, 2, 4, *range(8, 256, 8), *range(256, top + 1, 16)] if s <= top]
    return len(sizes)


def cuda_graph_bytes(sizes: int, layers: int, modes: int = 2) -> int:
    """CUDA graph memory: per captured graph (`modes` per size: PIECEWISE and FULL by default) a base plus a share
    per layer (each layer's kernels are graph nodes).

    Formula: modes * sizes * (3.41 MiB + 0.171 MiB * L) (fitted constants, GRAPH_*).
    Example: Llama-3.1-8B, 51 sizes, 32 layers: 102 * (3,575,644 + 32 * 179,306) = 949,970,472 B (0.88 GiB;
    logged 0.91 GiB).
    """
    return modes * sizes * (GRAPH_BASE_BYTES + layers * GRAPH_PER_LAYER_BYTES)


def lora_slot_bytes(max_loras: int, rank: int, in_features: int, out_features: int, dtype_bytes: int) -> int:
    """One LoRA-wrapped slice's adapter slots: A stacked [max_loras, 1, r, in] and B stacked [max_loras, 1, out, r]
    in the LoRA dtype (the model's), both allocated at load, whether adapters are loaded or not, each rounded to
    the allocator's 512 B. `in` and `out` are this GPU's sizes (vLLM shards B of column-parallel and A of
    row-parallel layers; fully_sharded_loras shards the other too).

    Source: vllm/lora/layers/base_linear.py BaseLinearLayerWithLoRA.create_lora_weights; counted in "Model loading
    took" (load_lora_model runs inside the weights profiler).
    Example: 8 slots of rank 64 on Llama-3.1-8B's q_proj (4096 -> 4096), bf16: 2 * 8 * 64 * 4096 * 2 =
    8,388,608 B.
    """
    return (allocation_bytes(max_loras * rank * in_features * dtype_bytes)
            + allocation_bytes(max_loras * out_features * rank * dtype_bytes))


def lora_embedding_bytes(max_loras: int, rank: int, vocab: int, hidden: int, dtype_bytes: int) -> int:
    """The adapter slots of the token embedding (A [max_loras, V, r], B [max_loras, 1, h, r]) or of the head's
    logits processor (A [max_loras, 1, r, h], B [max_loras, 1, V, r]): the same bytes, the vocabulary whole on
    every GPU. vLLM wraps both whenever LoRA is on (no target_modules restriction).

    Source: vllm/lora/layers/vocab_parallel_embedding.py VocabParallelEmbeddingWithLoRA.create_lora_weights,
    vllm/lora/layers/logits_processor.py LogitsProcessorWithLoRA.create_lora_weights (v0.13+: no extra vocabulary).
    Example: 8 slots of rank 64, Llama-3.1-8B (V 128,256, h 4096), bf16: 131,334,144 + 4,194,304 = 135,528,448 B.
    """
    return (allocation_bytes(max_loras * vocab * rank * dtype_bytes)
            + allocation_bytes(max_loras * hidden * rank * dtype_bytes))


def available_kv_bytes(requested: int, weights: int, activations: int, non_torch: int, graphs: int = 0) -> int:
    """What vLLM logs as "Available KV cache memory": the requested share less everything else it measured (CUDA
    graphs only when it estimates them, VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS, on by default since v0.21).

    Formula: requested - weights - activations - non_torch - graphs.
    Source: vllm/v1/worker/gpu_worker.py determine_available_memory.
    Example: Llama-3.1-8B on H100 at 0.95: 80,778,134,290 - 16,094,076,928 - 2,021,785,600 - 268,435,456 =
    62,393,836,306 B (58.11 GiB; logged 58.11 GiB).
    """
    return requested - weights - activations - non_torch - graphs
