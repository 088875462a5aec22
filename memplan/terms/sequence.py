"""Sequence / context parallelism: a group of P GPUs splits each sequence, every GPU holding t = b*s/P tokens of
activations, logits and loss; attention needs the whole sequence, which the two schemes reach differently.

Notation: b micro-batch, s sequence length, P the sequence-parallel degree, t = b*s/P local tokens, H query heads,
H_kv key/value heads, d head dim, c bytes of the compute dtype. Per transformer block; priors from the libraries'
code, not traced (the trace engine refuses sequence parallelism) and not yet measured.
"""

from __future__ import annotations


def local_tokens(batch: int, seq: int, sp: int) -> int:
    """Tokens of activations one GPU of the group holds: t = b*s/P (spec validation makes P divide s).

    Example: b = 1, s = 32,768, P = 4: 8,192.
    """
    return batch * seq // sp


def ulysses_kv_replication_bytes(tokens: int, head_dim: int, kv_heads: int, sp: int, compute_bytes: int) -> int:
    """DeepSpeed Ulysses with fewer key/value heads than GPUs in the group: each GPU receives max(H_kv/P, 1) heads
    of the whole sequence, the kv heads repeated P/H_kv times first, so the keys and values attention saves for
    backward grow beyond the local shard's: 2*c*t*d*(max(H_kv, P) - H_kv) per block (0 when P divides H_kv).

    Source: deepspeed/runtime/sequence_parallel/ulysses_sp.py UlyssesSPAttentionHF (repeat_interleave of k/v when
    kv < sp, then the all-to-all to [b, s, max(kv/sp, 1), d]).
    Example: Llama-3.1-8B (H_kv = 8, d = 128), t = 2,048, P = 16, bf16: 2*2*2,048*128*8 = 8,388,608 B.
    """
    return 2 * compute_bytes * tokens * head_dim * (max(kv_heads, sp) - kv_heads)


def ulysses_all_to_all_bytes(tokens: int, head_dim: int, heads: int, kv_heads: int, sp: int, compute_bytes: int
                             ) -> int:
    """The all-to-all's transient buffers in one attention call: the contiguous copies of q, k and v rearranged
    for the exchange, alive beside the received tensors (which attention saves): c*t*d*(H + 2*max(H_kv, P)).

    Source: deepspeed/runtime/sequence_parallel/ulysses_sp.py (rearrange + contiguous before _DimZeroAllToAll,
    which saves nothing for backward).
    Example: Llama-3.1-8B (H = 32, H_kv = 8, d = 128), t = 8,192, P = 4, bf16: 2*8,192*128*(32 + 16)
    = 100,663,296 B.
    """
    return compute_bytes * tokens * head_dim * (heads + 2 * max(kv_heads, sp))


def ring_attention_forward_bytes(batch: int, seq: int, tokens: int, head_dim: int, heads: int, kv_heads: int,
                                 compute_bytes: int) -> int:
    """torch context parallelism (accelerate cp_backend torch) with its default all-gather rotation: one attention
    call all-gathers the keys and values of the whole sequence, 2*c*b*s*H_kv*d, and merges the partial outputs
    in fp32, 4*t*H*d.

    Source: torch/distributed/tensor/experimental/_context_parallel/_attention.py (_AllGatherRotater,
    convert_to_f32 merging); accelerate TorchContextParallelConfig (rotate_method allgather).
    Example: Llama-3.1-8B, b = 1, s = 32,768 (t = 8,192 on P = 4), bf16: 2*2*32,768*8*128 + 4*8,192*32*128
    = 134,217,728 + 134,217,728 = 268,435,456 B.
    """
    return 2 * compute_bytes * batch * seq * kv_heads * head_dim + 4 * tokens * heads * head_dim


def ring_attention_backward_bytes(batch: int, seq: int, tokens: int, head_dim: int, heads: int, kv_heads: int,
                                  compute_bytes: int) -> int:
    """Its backward: the whole sequence's keys and values gathered again, 2*c*b*s*H_kv*d, and fp32 accumulators
    of the query, key and value gradients, 4*t*d*(H + 2*H_kv).

    Source: as ring_attention_forward_bytes (the backward's all-gather and fp32 grad_q / grad_k / grad_v).
    Example: Llama-3.1-8B, b = 1, s = 32,768, t = 8,192, bf16: 134,217,728 + 4*8,192*128*48 = 335,544,320 B.
    """
    return 2 * compute_bytes * batch * seq * kv_heads * head_dim + 4 * tokens * head_dim * (heads + 2 * kv_heads)
