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
    product for gated MLPs: 3*c*T*I; fc1 out and act out: 2*c*T*I) plus four c*T*h tensors: the block's input
    kept as the residual, the norm's output the MLP reads, the MLP's output projection, and the embedding output,
    which the model's forward keeps in `inputs_embeds` through every layer. Nothing is saved across blocks
    without autograd.
    Source: memory-mechanics.md A6 (8B prefill, T=4096: about 4*T*I*2 B above weights and KV); traced
    (llama-infer-bf16: silu, up and product of 32 MiB with four 8 MiB [T, h] tensors at T=2048).
    Example: Llama-3.1-8B, T=4096, bf16: 3*2*4096*14336 + 4*2*4096*4096 = 352,321,536 + 134,217,728
      = 486,539,264 B.
    """
    return compute_bytes * tokens * ((3 if gated else 2) * intermediate + 4 * hidden)



def moe_prefill_transient_bytes(tokens: int, hidden: int, expert_intermediate: int, top_k: int,
                                compute_bytes: int) -> int:
    """Largest working set of a mixture-of-experts block in a no-grad forward, with transformers 5's grouped_mm
    experts (the default): each token's hidden state gathered once per routed expert (S = T * k rows), the experts'
    gate/up output [S, 2I], the activation and the gated product [S, I] each; later the down projection, the
    routing-weighted copy and its reordered copy [S, h] each, beside the gathered input; plus the four [T, h]
    tensors of `prefill_transient_bytes` around the block.

    Formula: c * T * (k * max(h + 4I, 4h) + 4h).
    Source: transformers integrations/moe.py grouped_mm_experts_forward (selected_hidden_states_g,
    _default_apply_gate, weighted_out[inv_perm]); traced (2 Qwen3-30B-A3B-shaped layers, 2 x 512 tokens: the
    formula's prefill 130 MB short without it).
    Example: Qwen3-30B-A3B (h 2048, I 768, k 8), 1024 tokens, bf16: 2 * 1024 * (8 * 8192 + 8192) = 150,994,944 B.
    """
    per_route = max(hidden + 4 * expert_intermediate, 4 * hidden)
    return compute_bytes * tokens * (top_k * per_route + 4 * hidden)


def eager_probs_held_bytes(batch: int, heads: int, seq: int, kv_seq: int, compute_bytes: int) -> int:
    """Eager attention returns its probabilities (c bytes, cast back from the fp32 softmax) with its output, and
    the decoder layer keeps them in a local (`hidden_states, _ = self.self_attn(...)`) until it returns: in a
    no-grad forward they are alive through the MLP, c*b*n_q*s*s_k on top of `prefill_transient_bytes`.
    Source: transformers modeling_llama.py / modeling_gemma2.py DecoderLayer.forward, eager_attention_forward;
    traced (gemma2-infer-eager, b=2, s=512, 8 heads, bf16: 8 MiB of probabilities at the MLP's peak).
    Example: Llama-3.1-8B, b=1, s=4096, bf16: 2*32*4096*4096 = 1,073,741,824 B.
    """
    return compute_bytes * batch * heads * seq * kv_seq


def eager_prefill_transient_bytes(batch: int, heads: int, seq: int, hidden: int, compute_bytes: int) -> int:
    """Eager attention's working set in a no-grad forward: softmax(scores, dtype=float32) first copies the c-byte
    scores to fp32, then writes its fp32 output while both are alive: (c + 8)*b*n_q*s^2, with the same four
    c*T*h tensors as `prefill_transient_bytes` (the residual, the embedding output, the norm's output, the query).
    The MLP runs after the scores are freed, so a block's peak is the larger of the two, not their sum.
    Source: transformers modeling_llama.py / modeling_gemma2.py eager_attention_forward
    (softmax(dtype=float32).to(query.dtype)); traced (Gemma-2-2B, b=8, s=4096: 2 + 4 + 4 GiB of scores at the
    peak, profiles/infer-bf16-gemma2b-p4096-n256-b8 allocated within 0.3%).
    Example: Llama-3.1-8B, b=1, s=4096, bf16: 10*32*4096^2 + 4*2*4096*4096 = 5,368,709,120 + 134,217,728
      = 5,502,926,848 B.
    """
    return (8 + compute_bytes) * batch * heads * seq * seq + 4 * compute_bytes * batch * seq * hidden


def mla_kv_cache_bytes(layers: int, latent: int, batch: int, tokens: int, kv_bytes: int) -> int:
    """Multi-head latent attention (DeepSeek-V2/V3) as transformers 5 caches it: per layer the compressed latent
    kv_nope [b, 1, s, r_kv] and the shared rotary key k_rot [b, 1, s, d_rope], no per-head keys or values.

    Formula: L * (r_kv + d_rope) * b * tokens * bytes.
    Source: transformers models/deepseek_v3/modeling_deepseek_v3.py DeepseekV3Attention.forward
    (past_key_values.update(kv_nope, k_rot, layer_idx): "Cache read / write is performed while latent KV is still
    compressed").
    Example: DeepSeek-V3 (61 layers, r_kv 512 + d_rope 64), 8192 tokens, bf16: 61 * 576 * 8192 * 2 = 575,668,224 B
    (0.54 GiB).
    """
    return layers * latent * batch * tokens * kv_bytes


def mla_expand_transient_bytes(batch: int, tokens: int, heads: int, nope: int, rope: int, v_dim: int,
                               compute_bytes: int) -> int:
    """The keys and values an MLA layer expands from its cached latent for every cached token, at each forward
    (prefill and every decode step): kv_b_proj's output [b, s, n * (d_nope + d_v)] (the nope keys and the values
    are views of it) and the assembled keys [b, n, s, d_nope + d_rope]; freed when the layer's attention returns.

    Formula: c * b * s * n * (2 * d_nope + d_v + d_rope).
    Source: transformers modeling_deepseek_v3.py DeepseekV3Attention.expand_kv.
    Example: DeepSeek-V3 (128 heads, d_nope 128, d_v 128, d_rope 64), one sequence of 8192 tokens, bf16:
      2 * 8192 * 128 * (256 + 128 + 64) = 939,524,096 B.
    """
    return compute_bytes * batch * tokens * heads * (2 * nope + v_dim + rope)


def mla_attention_query_bytes(batch: int, tokens: int, heads: int, hidden: int, nope: int, rope: int, v_dim: int,
                              compute_bytes: int) -> int:
    """What an MLA layer holds for the tokens it processes while its attention output is made contiguous (all are
    locals of the attention's forward, alive until it returns), beside the expanded keys and values: the block
    input, the embedding output and the normed input ([T, h] each), q_b_proj's queries [T, n * d_qk], their
    rotated rotary part [T, n * d_rope], the queries assembled by torch.cat [T, n * d_qk], the attention output
    [T, n * d_v] and its contiguous copy.

    Formula: c * b * s * (3h + n * (2 * d_qk + d_rope + 2 * d_v)), d_qk = d_nope + d_rope.
    Source: transformers modeling_deepseek_v3.py DeepseekV3Attention.forward; traced (2 DeepSeek-V3-shaped
    layers, b 2 x 1024 tokens: 692 MB above weights against the trace's 695 MB, tests/trace/crosscheck_configs.py).
    Example: DeepSeek-V3 (h 7168, 128 heads, d_nope 128, d_rope 64, d_v 128), 2 x 1024 tokens, bf16:
      2 * 2048 * (21,504 + 128 * (384 + 64 + 256)) = 457,179,136 B.
    """
    qk = nope + rope
    return compute_bytes * batch * tokens * (3 * hidden + heads * (2 * qk + rope + 2 * v_dim))
