"""KV cache for inference: keys and values of every attended token, per layer."""

from __future__ import annotations


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, batch: int, tokens: int, kv_bytes: int) -> int:
    """2 (K and V) * L * n_kv * d_head * b * tokens * bytes. GQA and MQA enter through n_kv (MQA: n_kv = 1).

    Source: transformers cache_utils.py DynamicLayer (keys/values [b, n_kv, tokens, d_head] per layer).
    Example: Llama-3.1-8B (32 layers, 8 KV heads of 128), one sequence, bf16: 131,072 B per token
    (128 KiB); 4096 tokens: 536,870,912 B.
    """
    return 2 * layers * kv_heads * head_dim * batch * tokens * kv_bytes


def sliding_kv_cache_bytes(full_layers: int, sliding_layers: int, window: int, kv_heads: int, head_dim: int,
                           batch: int, tokens: int, kv_bytes: int) -> int:
    """Hybrid caches (Gemma 2/3, Mistral v0.1): sliding-window layers keep at most `window` tokens.

    Formula: kv_cache_bytes(full_layers, ..., tokens) + kv_cache_bytes(sliding_layers, ..., min(tokens, window)).
    Source: transformers cache_utils.py DynamicSlidingWindowLayer.
    Example: Gemma-2-2B (13 full + 13 sliding layers, window 4096, 4 KV heads of 256), 8192 tokens, bf16:
      2*13*4*256*8192*2 + 2*13*4*256*4096*2 = 436,207,616 + 218,103,808 = 654,311,424 B.
    """
    return (kv_cache_bytes(full_layers, kv_heads, head_dim, batch, tokens, kv_bytes)
            + kv_cache_bytes(sliding_layers, kv_heads, head_dim, batch, min(tokens, window), kv_bytes))


def kv_append_transient_bytes(kv_heads: int, head_dim: int, batch: int, tokens: int, kv_bytes: int) -> int:
    """DynamicCache grows with torch.cat, so appending to one layer briefly holds the old and the new key (or
    value) tensor: one layer's K or V, n_kv * d_head * b * tokens * bytes.

    Example: Llama-3.1-8B, 4096 tokens, bf16: 8*128*4096*2 = 8,388,608 B.
    """
    return kv_heads * head_dim * batch * tokens * kv_bytes


def prefill_transient_bytes(tokens: int, hidden: int, intermediate: int, gated: bool, compute_bytes: int) -> int:
    """Largest working set of one block in a no-grad forward: the MLP's intermediates (gate, up and their
    product for gated MLPs: 3*c*T*I; fc1 out and act out: 2*c*T*I) plus the block's input and output (2*c*T*h).
    Nothing is saved across blocks without autograd.
    Source: memory-mechanics.md A6 (8B prefill, T=4096: about 4*T*I*2 B above weights and KV). Example:
    Llama-3.1-8B, T=4096, bf16: 3*2*4096*14336 + 2*2*4096*4096 = 352,321,536 + 67,108,864 = 419,430,400 B.
    """
    return compute_bytes * tokens * ((3 if gated else 2) * intermediate + 2 * hidden)

