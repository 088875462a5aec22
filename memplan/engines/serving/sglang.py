"""SGLang's memory budget at startup, per GPU (rules and defaults of v0.5.23; memplan.terms.sglang has each term and
its source): mem_fraction_static of the memory free before loading holds the weights (sharded by tensor parallelism
as vLLM shards them), the LoRA pool and the KV pool; activations and CUDA graphs live in the rest."""

from __future__ import annotations

from memplan.engines.serving import shards
from memplan.engines.serving.common import (Budget, cuda_total_bytes, kv_dtype, kv_groups, kv_layout_note,
                                            max_model_len_cap, model_dtype, rope_bytes)
from memplan.job import ResolvedJob
from memplan.result import ServingBudget
from memplan.terms import kv_cache as kvt
from memplan.terms import paged_kv as pkv
from memplan.terms import sglang as sgt
from memplan.terms import tensor_parallel as tpt
from memplan.terms.dtypes import GIB, dtype_bytes

VERSION = "0.5.23"
MIB = 2**20


def lora_bytes(job: ResolvedJob, dtype: str, tp: int) -> int:
    """The LoRA pool of every q/k/v, o, gate/up and down projection (SGLang stacks q/k/v and gate/up as vLLM
    does), on this GPU's shapes."""
    sv = job.spec.serving
    if not sv.max_loras:
        return 0
    c = dtype_bytes(dtype)
    total = 0
    for module, (_, lin) in job.info.block_linears.items():
        out_rank, in_rank = shards.rank_shape(job.info.linear_weights[module], job.info, tp)[-2:]
        if lin.group in ("attn_out", "mlp_out"):
            total += sgt.lora_pool_bytes(sv.max_loras, sv.max_lora_rank, 1, in_rank, lin.d_out, c)
        else:  # each projection of a stacked q/k/v or gate/up counts as one slice of the stack
            total += sgt.lora_pool_bytes(sv.max_loras, sv.max_lora_rank, 1, lin.d_in, out_rank, c)
    return total


def budget(job: ResolvedJob) -> Budget:
    spec, info, sv = job.spec, job.info, job.spec.serving
    tp = sv.tensor_parallel_size
    if len(kv_groups(job)) > 1:
        note_sliding = ("sliding-window layers are cached in full (SGLang's token pool sizes every layer for every "
                        "token unless its SWA pool is configured)")
    else:
        note_sliding = ""
    dtype = model_dtype(job)
    c = dtype_bytes(dtype)
    total, total_note = cuda_total_bytes(job)
    gpu_mib = job.gpu.memory_bytes // MIB
    chunk, decode_bs = sgt.default_limits(gpu_mib, tp)
    chunk = sv.max_num_batched_tokens or chunk
    fraction = sv.gpu_memory_utilization or sgt.default_mem_fraction_static(
        gpu_mib, tp, chunk, decode_bs, sgt.prefill_graph_sizes(chunk))
    init = sgt.INIT_BYTES + (sgt.NCCL_INIT_BYTES if tp > 1 else 0)
    free_before_load = total - init
    weights = (shards.served_weight_bytes(info, spec.weight_dtype, dtype, spec.double_quant, tp)
               + rope_bytes(job, dtype))
    lora = lora_bytes(job, dtype, tp)
    pool = sgt.kv_pool_bytes(free_before_load, fraction, weights, lora)
    layers = info.num_layers
    heads = tpt.kv_heads_per_rank(info.num_kv_heads, tp)
    if info.mla:  # SGLang's MLATokenToKVPool: the latent per token and layer
        cell = pkv.mla_page_bytes(1, info.kv_latent_size, dtype_bytes(kv_dtype(job))) * layers
    else:
        cell = pkv.token_pool_cell_bytes(heads, info.head_dim, layers, dtype_bytes(kv_dtype(job)))
    page = sv.block_size or 1
    tokens = sgt.pool_tokens(pool, cell, page)
    max_len = max_model_len_cap(job) if sv.max_model_len in (None, -1) else sv.max_model_len
    request_kv = -(-max_len // page) * page * cell
    widest = max(info.layers, key=lambda s: s.intermediate_size)
    activations = kvt.prefill_transient_bytes(chunk, info.hidden_size,
                                              tpt.column_parallel_rows(widest.intermediate_size, tp),
                                              widest.gated_mlp, c)
    graphs = 0 if sv.enforce_eager else (2 * decode_bs + 8 * sgt.prefill_graph_sizes(chunk)) * MIB
    seqs = sv.max_num_seqs or max(1, min(max(min(tokens * 512 // max(max_len, 1), 4096), 2048), tokens // 2))
    notes = [f"SGLang {VERSION} as `python -m sglang.launch_server` starts it: {total_note}; "
             f"{init / GIB:.2f} GiB held before loading (context, NCCL; measured on one log each, priors "
             f"elsewhere); mem_fraction_static {fraction:g}"
             + ("" if sv.gpu_memory_utilization else " (SGLang's default for this GPU and TP)")
             + f" of the {free_before_load / GIB:.2f} GiB free before loading holds weights, LoRA pool and KV pool",
             f"KV pool: {kv_dtype(job)}, {kv_layout_note(job, heads)}, {cell:,} B per token, page {page}",
             f"activations and CUDA graphs live outside the static share: the prefill chunk's working set "
             f"({chunk} tokens) and the graph reserve SGLang itself sets aside (2 MiB per decode batch size up to "
             f"{decode_bs}, 8 MiB per prefill graph), priors not checked against a log"]
    if note_sliding:
        notes.append(note_sliding)
    if sv.max_loras:
        notes.append(f"LoRA pool: {sv.max_loras} adapter(s) per batch of rank {sv.max_lora_rank} "
                     f"({lora / GIB:.2f} GiB), allocated before the KV pool is sized, so it comes out of the KV "
                     "budget; a merged adapter costs nothing at serve time")
    components = {"weights": weights, "lora_slots": lora, "activations": activations, "non_torch": 0,
                  "kv_cache": max(0, pool), "cuda_graphs": graphs, "cuda_context": init}
    requested = int(free_before_load * fraction)
    slot = lora // sv.max_loras if sv.max_loras else 0
    serving = ServingBudget(
        engine="sglang", engine_version=VERSION, tensor_parallel_size=tp, gpu_memory_utilization=fraction,
        cuda_total_bytes=total, requested_bytes=requested, weights_bytes=weights + lora, lora_bytes=lora,
        activation_bytes=activations,
        cuda_graph_bytes=graphs, cuda_graph_in_budget=False, non_torch_bytes=0, kv_cache_bytes=pool,
        kv_cache_tokens=tokens, max_concurrency=round(tokens / max_len, 2) if max_len else 0.0,
        max_model_len=max_len, max_num_seqs=seqs, max_num_batched_tokens=chunk, block_size=page,
        kv_bytes_per_token=cell, request_kv_bytes=request_kv, required_bytes=weights + lora + request_kv,
        largest_max_model_len=min(tokens, info.max_positions or tokens), kv_tokens_per_lora_slot=slot // cell)
    return Budget(serving, components, notes, 0)
