"""vLLM V1's memory budget at startup, per GPU (rules and defaults of v0.21, which v0.19-v0.27 share but for the
defaults named in memplan.terms.vllm, where each term has its source): weights sharded by tensor parallelism with
the LoRA slots, the profile run at max_num_batched_tokens, the memory outside torch, CUDA graphs, and the paged KV
cache that gets the rest."""

from __future__ import annotations

from memplan.engines.serving import shards
from memplan.engines.serving.common import (Budget, cuda_total_bytes, group_count, kv_dtype, kv_groups,
                                            kv_layout_note, largest_len, max_model_len_cap, model_dtype,
                                            request_blocks, rope_bytes, uniform_group_size)
from memplan.job import ResolvedJob
from memplan.result import ServingBudget
from memplan.terms import kv_cache as kvt
from memplan.terms import overhead as ov
from memplan.terms import paged_kv as pkv
from memplan.terms import tensor_parallel as tpt
from memplan.terms import vllm as vt
from memplan.terms.dtypes import GIB, dtype_bytes

VERSION = "0.21"


def lora_bytes(job: ResolvedJob, dtype: str, tp: int) -> int:
    """The adapter slots of every wrapped linear in the blocks (q/k/v, o, gate/up, down): A and B stacks per
    slice on this GPU's shapes (column-parallel: A whole, B split; row-parallel: A split, B whole; both split with
    fully_sharded_loras), and of the token embedding and the head's logits processor."""
    sv = job.spec.serving
    if not sv.max_loras:
        return 0
    c = dtype_bytes(dtype)
    total = 0
    for module, ((_, layer), lin) in job.info.block_linears.items():
        weight = job.info.linear_weights[module]
        out_rank, in_rank = shards.rank_shape(weight, job.info, tp)[-2:]
        if lin.group in ("attn_out", "mlp_out"):  # row-parallel: in split, B whole
            in_size, out_size = in_rank, lin.d_out
        else:  # column-parallel: out split, A whole
            in_size, out_size = lin.d_in, out_rank
        if sv.fully_sharded_loras:
            in_size, out_size = in_rank, out_rank
        total += vt.lora_slot_bytes(sv.max_loras, sv.max_lora_rank, in_size, out_size, c)
    if job.info.head == "causal_lm":
        total += 2 * vt.lora_embedding_bytes(sv.max_loras, sv.max_lora_rank, job.info.vocab_size,
                                             job.info.hidden_size, c)
    return total


def budget(job: ResolvedJob) -> Budget:
    spec, info, sv = job.spec, job.info, job.spec.serving
    tp = sv.tensor_parallel_size
    dtype = model_dtype(job)
    c = dtype_bytes(dtype)
    notes: list[str] = []
    total, total_note = cuda_total_bytes(job)
    utilization = sv.gpu_memory_utilization or vt.DEFAULT_UTILIZATION
    requested = vt.requested_bytes(total, utilization)
    default_tokens, default_seqs = vt.serve_batch_limits(job.gpu.memory_bytes / GIB,
                                                         "A100" in (job.gpu.name or job.gpu.id).upper())
    batched = sv.max_num_batched_tokens or default_tokens
    seqs = sv.max_num_seqs or default_seqs
    max_len_cap = max_model_len_cap(job)
    block = sv.block_size or vt.BLOCK_SIZE

    weights = shards.served_weight_bytes(info, spec.weight_dtype, dtype, spec.double_quant, tp)
    weights += rope_bytes(job, dtype)
    lora = lora_bytes(job, dtype, tp)

    widest = max(info.layers, key=lambda s: s.intermediate_size)
    intermediate = tpt.column_parallel_rows(widest.intermediate_size, tp)
    forward = kvt.prefill_transient_bytes(batched, info.hidden_size, intermediate, widest.gated_mlp, c)
    requests = min(seqs, batched)
    vocab = tpt.padded_vocab_rows_per_rank(info.vocab_size, 1)
    sampler = vt.sampler_peak_bytes(batched, requests, info.hidden_size, vocab, c)
    workspace = ov.cublas_workspace_bytes(job.compute_capability, 1)
    activations = vt.profile_peak_bytes(forward, sampler, workspace)
    non_torch = vt.non_torch_bytes(tp)
    layers = info.num_layers
    graphs = 0 if sv.enforce_eager else vt.cuda_graph_bytes(vt.capture_sizes(seqs, batched), layers)
    in_budget = sv.estimate_cuda_graphs
    available = vt.available_kv_bytes(requested, weights + lora, activations, non_torch,
                                      graphs if in_budget else 0)

    kinds = kv_groups(job)
    group_size = uniform_group_size(kinds)
    groups = group_count(kinds, group_size)
    heads = tpt.kv_heads_per_rank(info.num_kv_heads, tp)
    if info.mla:  # the latent, whole on every GPU (MLAAttentionSpec)
        page = pkv.mla_page_bytes(block, info.kv_latent_size, dtype_bytes(kv_dtype(job)))
    else:
        page = pkv.attention_page_bytes(block, heads, info.head_dim, dtype_bytes(kv_dtype(job)))
    blocks = pkv.num_blocks(available, page, group_size)
    tokens = pkv.kv_cache_tokens(blocks, block, groups)
    auto_len = largest_len(kinds, group_size, blocks, batched, block, max_len_cap)
    max_len = max_len_cap if sv.max_model_len is None else auto_len if sv.max_model_len == -1 else sv.max_model_len
    per_request = request_blocks(kinds, group_size, max_len, batched, block)
    request_kv = per_request * page * group_size
    per_token = page // block * layers
    slot = lora // sv.max_loras if sv.max_loras else 0

    notes.append(f"vLLM {VERSION} (V1 engine, rules shared by v0.19-v0.27) as `vllm serve` starts it: {total_note}; "
                 f"requested {utilization:g} x total = {requested / GIB:.2f} GiB per GPU; max_num_batched_tokens {batched}, "
                 f"max_num_seqs {seqs}" + (" (vllm serve's defaults for this GPU)" if not (sv.max_num_batched_tokens
                                                                                         and sv.max_num_seqs) else ""))
    notes.append(f"KV cache: {kv_dtype(job)}, blocks of {block} tokens, {kv_layout_note(job, heads)}, {groups} "
                 f"layer group(s) of {group_size}")
    if sv.max_model_len is None:
        notes.append(f"max_model_len: the model's max_position_embeddings, {max_len_cap:,}")
    if in_budget:
        notes.append("CUDA graphs estimated and taken from the KV budget (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS, "
                     "the default since v0.21)")
    elif graphs:
        notes.append("CUDA graphs captured after the KV cache, on top of the requested share (vLLM <= v0.20, or "
                     "VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0)")
    if sv.max_loras:
        notes.append(f"LoRA: {sv.max_loras} slot(s) of rank {sv.max_lora_rank} preallocated in every q/k/v, o, "
                     f"gate/up and down projection ({lora / GIB:.2f} GiB, in 'Model loading took'); a merged "
                     "adapter costs nothing at serve time (one adapter per deployment)")
    notes.append("measured constants (sampler, non-torch, NCCL, CUDA graphs, init memory) come from vLLM 0.19 logs "
                 "on H100 80GB (docs/published-serving.md); elsewhere they are priors")

    init = vt.init_memory_bytes(tp)
    components = {"weights": weights, "lora_slots": lora, "activations": activations, "non_torch": non_torch,
                  "kv_cache": max(0, available), "cuda_graphs": graphs, "cuda_context": init}
    serving = ServingBudget(
        engine="vllm", engine_version=VERSION, tensor_parallel_size=tp, gpu_memory_utilization=utilization,
        cuda_total_bytes=total, requested_bytes=requested, weights_bytes=weights + lora, lora_bytes=lora,
        activation_bytes=activations,
        cuda_graph_bytes=graphs, cuda_graph_in_budget=in_budget, non_torch_bytes=non_torch,
        kv_cache_bytes=available, kv_cache_tokens=tokens,
        max_concurrency=round(pkv.max_concurrency(blocks, per_request), 2), max_model_len=max_len,
        max_num_seqs=seqs, max_num_batched_tokens=batched, block_size=block, kv_bytes_per_token=per_token,
        request_kv_bytes=request_kv,
        required_bytes=weights + lora + activations + non_torch + (graphs if in_budget else 0) + request_kv,
        largest_max_model_len=auto_len,
        kv_tokens_per_lora_slot=(slot // (page * group_size)) * block // groups if slot else 0)
    return Budget(serving, components, notes, activations + non_torch + (graphs if in_budget else 0))
