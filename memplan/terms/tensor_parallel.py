"""Tensor parallelism as vLLM and SGLang shard a model (Megatron-style): each GPU's share of every parameter.

Column-parallel linears (q/k/v, gate/up) split their output features, row-parallel linears (o_proj, down_proj) their
input features, the token embedding and the head split the (padded) vocabulary, and norms, routers and position
tables are replicated. Key/value heads are split while there are at least as many as GPUs, and replicated (one per
GPU) when there are fewer.
"""

from __future__ import annotations

#: vLLM pads the vocabulary of VocabParallelEmbedding / ParallelLMHead to a multiple of this
#: (vllm/model_executor/layers/vocab_parallel_embedding.py DEFAULT_VOCAB_PADDING_SIZE)
VOCAB_PADDING = 64


def kv_heads_per_rank(kv_heads: int, tp: int) -> int:
    """Key/value heads each GPU holds: n_kv / tp, and 1 (replicated) when tp >= n_kv.

    Formula: max(1, n_kv // tp).
    Source: vllm/config/model.py ModelConfig.get_num_kv_heads ("the number of KV heads is less than the number of
    GPUs: replicate"); vllm/model_executor/layers/linear.py QKVParallelLinear (num_kv_head_replicas = tp / n_kv);
    SGLang python/sglang/srt/configs/model_config.py get_num_kv_heads (the same rule).
    Example: Llama-3.1-70B (8 KV heads): tp 2 -> 4, tp 8 -> 1, tp 16 -> 1 (each head on two GPUs).
    """
    return max(1, kv_heads // tp)


def tp_divisibility_problem(heads: int, kv_heads: int, tp: int) -> str | None:
    """Why a model cannot be split across `tp` GPUs, or None: the query heads must divide by tp, and the key/value
    heads must divide by tp or divide it (vLLM asserts both: "Total number of attention heads must be divisible by
    tensor parallel size"; QKVParallelLinear `divide(tp_size, total_num_kv_heads)`).

    Example: 32 query and 8 KV heads: tp 4 -> None; tp 3 -> a message; 28 heads / 4 KV heads, tp 8 -> a message.
    """
    if heads % tp:
        return f"{heads} attention heads do not divide by tensor_parallel_size {tp}"
    if kv_heads % tp and tp % kv_heads:
        return f"{kv_heads} key/value heads neither divide by nor divide tensor_parallel_size {tp}"
    return None


def padded_vocab_rows_per_rank(vocab: int, tp: int, padding: int = VOCAB_PADDING) -> int:
    """Rows of a vocab-parallel embedding or head on each GPU: the vocabulary padded to a multiple of 64, split
    evenly.

    Formula: ceil(V / 64) * 64 / tp.
    Source: vllm/model_executor/layers/vocab_parallel_embedding.py pad_vocab_size,
    VocabParallelEmbedding.num_embeddings_per_partition = divide(num_embeddings_padded, tp_size).
    Example: Llama-3 (V = 128,256, already a multiple of 64): tp 1 -> 128,256, tp 8 -> 16,032;
    Qwen2.5 (151,936): tp 4 -> 37,984; a vocabulary of 32,001 pads to 32,064, tp 2 -> 16,032.
    """
    padded = -(-vocab // padding) * padding
    return -(-padded // tp)


def qkv_rows_per_rank(q_heads: int, kv_heads: int, head_dim: int, tp: int) -> int:
    """Output rows of the fused q/k/v projection on one GPU: the rank's query heads and its key and value heads.

    Formula: (n_q / tp + 2 * kv_heads_per_rank(n_kv, tp)) * d_head.
    Source: vllm QKVParallelLinear.__init__ (output_size = (num_heads + 2 * num_kv_heads) * tp_size * head_size).
    Example: Llama-3.1-8B (32 q, 8 kv heads of 128), tp 2: (16 + 2*4) * 128 = 3,072 rows of 4,096 inputs.
    """
    return (q_heads // tp + 2 * kv_heads_per_rank(kv_heads, tp)) * head_dim


def column_parallel_rows(out_features: int, tp: int) -> int:
    """Output rows of a column-parallel linear (gate/up, q) on one GPU: out / tp (vllm ColumnParallelLinear,
    output_size_per_partition = divide(output_size, tp_size); MergedColumnParallelLinear splits each of its
    parts the same way). Example: Llama-3.1-8B gate+up (2 x 14,336), tp 4: 28,672 / 4 = 7,168."""
    return -(-out_features // tp)


def row_parallel_columns(in_features: int, tp: int) -> int:
    """Input columns of a row-parallel linear (o_proj, down_proj) on one GPU: in / tp (vllm RowParallelLinear,
    input_size_per_partition = divide(input_size, tp_size)); its bias stays whole on every GPU.
    Example: Llama-3.1-8B down_proj (14,336 inputs), tp 8: 1,792."""
    return -(-in_features // tp)
