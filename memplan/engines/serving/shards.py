"""Each GPU's share of a model's weights under tensor parallelism, parameter by parameter, as vLLM and SGLang
load it (memplan.terms.tensor_parallel has the rules): the ModelInfo's parameters mapped onto column-parallel,
row-parallel, vocab-parallel and replicated tensors by the role transformers gives them."""

from __future__ import annotations

from functools import lru_cache

from memplan.architecture import model_cache
from memplan.model_info import ModelInfo, ParamInfo
from memplan.terms import tensor_parallel as tpt
from memplan.terms.weights import dense_weight_bytes, quantized_tensor_bytes, quantizes


def _token_embedding(p: ParamInfo, info: ModelInfo) -> bool:
    return p.kind == "embedding" and p.shape[0] == info.vocab_size


def rank_shape(p: ParamInfo, info: ModelInfo, tp: int) -> tuple[int, ...]:
    """The shape of `p` on one of `tp` GPUs, as (out, in) for linears (transformers' Conv1D stores [in, out]; the
    engines' linears are [out, in])."""
    if tp == 1 and p.kind != "embedding" and p.name not in info.head_params:
        return p.shape
    if _token_embedding(p, info) or (p.name in info.head_params and p.shape[0] == info.vocab_size):
        return (tpt.padded_vocab_rows_per_rank(info.vocab_size, tp), p.shape[1])
    if p.kind == "expert":  # fused experts [E, out, in]: gate/up split their output, down its input (FusedMoE)
        e, out_f, in_f = p.shape
        if out_f == info.hidden_size and in_f != info.hidden_size:
            return (e, out_f, tpt.row_parallel_columns(in_f, tp))
        return (e, tpt.column_parallel_rows(out_f, tp), in_f)
    found = info.block_linears.get(p.module)
    if found is None:
        return p.shape  # norms, routers, position tables: replicated
    (_, layer), lin = found
    if info.mla and lin.name.endswith(("q_a_proj", "kv_a_proj_with_mqa")):
        return p.shape  # MLA's down-projections to the latents are replicated (vLLM: ReplicatedLinear)
    shape = info.layers[layer].heads, info.layers[layer].kv_heads, info.layers[layer].head_dim
    if lin.group in ("attn_in", "cross_kv"):
        out_f = _attention_rows(lin.d_out, *shape, tp)
    elif lin.group in ("mlp_in", "cross_q"):
        out_f = tpt.column_parallel_rows(lin.d_out, tp)
    else:  # attn_out, mlp_out: row-parallel (the bias stays whole)
        return (lin.d_out,) if p.bias else (lin.d_out, tpt.row_parallel_columns(lin.d_in, tp))
    return (out_f,) if p.bias else (out_f, lin.d_in)


def _attention_rows(d_out: int, heads: int, kv_heads: int, head_dim: int, tp: int) -> int:
    """Rows of a q, k, v or fused qkv projection on one GPU (QKVParallelLinear): query heads split, key/value
    heads split or replicated."""
    kv_rows = tpt.kv_heads_per_rank(kv_heads, tp) * head_dim
    if d_out == (heads + 2 * kv_heads) * head_dim:
        return tpt.qkv_rows_per_rank(heads, kv_heads, head_dim, tp)
    if d_out == kv_heads * head_dim and kv_heads != heads:
        return kv_rows
    return tpt.column_parallel_rows(d_out, tp)


@lru_cache(maxsize=512)
def served_weight_bytes(info: ModelInfo, weight_dtype: str, rest_dtype: str, double_quant: bool, tp: int) -> int:
    """Weights on one GPU: quantizable matrices at `weight_dtype` (on their per-GPU shape), the rest at
    `rest_dtype`; a tied head is the embedding itself (listed once)."""
    quantized = weight_dtype in ("int8", "nf4", "fp4", "int4", "fp8", "mxfp4")
    total = 0
    for p in info.params:
        shape = rank_shape(p, info, tp)
        if quantized and p.quantizable and quantizes(weight_dtype, p.shape):
            total += quantized_tensor_bytes(shape, weight_dtype, double_quant)
        else:
            numel = 1
            for d in shape:
                numel *= d
            total += dense_weight_bytes(numel, rest_dtype if quantized else weight_dtype)
    return total


model_cache.on_evict(served_weight_bytes.cache_clear)
