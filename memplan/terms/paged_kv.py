"""The paged KV cache of a serving engine (vLLM V1, SGLang): bytes per page, pages that fit a budget, the tokens and
concurrent requests they hold.

vLLM stores each attention layer's cache as blocks (pages) of `block_size` tokens; all layers of a group share one
block table, so the budget is divided by (page bytes x layers per group). SGLang keeps a token pool (page size 1 by
default) with one cell per token for all layers.
"""

from __future__ import annotations


def attention_page_bytes(block_size: int, kv_heads: int, head_size: int, kv_bytes: int,
                         head_size_v: int | None = None) -> int:
    """One layer's page: keys and values of `block_size` tokens on one GPU.

    Formula: block * n_kv * (d_k + d_v) * bytes  (= 2 * block * n_kv * d * bytes when d_v = d_k).
    Source: vllm/v1/kv_cache_interface.py AttentionSpec.page_size_bytes / FullAttentionSpec (head_size_v).
    Example: Llama-3.1-8B (8 KV heads of 128), block 16, bf16: 2 * 16 * 8 * 128 * 2 = 65,536 B; at tp 2 (4 heads
    per GPU): 32,768 B; fp8: 32,768 B.
    """
    return block_size * kv_heads * (head_size + (head_size if head_size_v is None else head_size_v)) * kv_bytes


def mla_page_bytes(block_size: int, latent_size: int, kv_bytes: int) -> int:
    """One MLA layer's page: the compressed latent (kv_lora_rank + qk_rope_head_dim values) per token, no separate
    keys and values, not split across tensor-parallel GPUs (every GPU keeps the whole latent). With block 1 it is
    SGLang's per-token MLA cell of one layer.

    Formula: block * (r_kv + d_rope) * bytes.
    Source: vllm/v1/kv_cache_interface.py MLAAttentionSpec.page_size_bytes; sglang model_runner cell_size for MLA.
    Example: DeepSeek-V3 (r_kv 512 + d_rope 64 = 576), block 64, bf16: 64 * 576 * 2 = 73,728 B. The vLLM 0.19 log of
    DeepSeek-V2-Lite (27 layers) on an H100 shows 43.61 GiB for 1,505,552 tokens: 31,103 B per token = 27 * 576 * 2.
    """
    return block_size * latent_size * kv_bytes


def num_blocks(available_bytes: int, page_bytes: int, layers_per_group: int) -> int:
    """Blocks per layer tensor that a KV budget buys: each block costs one page in every layer of a group.

    Formula: floor(floor(available / page) / layers).
    Source: vllm/v1/core/kv_cache_utils.py get_num_blocks (`int(available_memory // page_size // num_layers)`).
    Example: 54 GiB (57,982,058,496 B) for Llama-3.1-8B (page 65,536 B, 32 layers): 884,736 // 32 = 27,648 blocks.
    """
    if available_bytes <= 0:
        return 0
    return available_bytes // page_bytes // layers_per_group


def kv_cache_tokens(blocks: int, block_size: int, groups: int = 1) -> int:
    """Tokens the cache holds, as vLLM logs "GPU KV cache size: N tokens": blocks shared by the layer groups, each
    block `block_size` tokens.

    Formula: (blocks // groups) * block.
    Source: vllm/v1/core/kv_cache_utils.py (num_tokens = num_blocks // len(kv_cache_groups) * min_block_size).
    Example: 27,648 blocks of 16 tokens, one group: 442,368 tokens.
    """
    return blocks // groups * block_size


def full_attention_request_bytes(tokens: int, block_size: int, page_bytes: int) -> int:
    """What one request of `tokens` tokens can take in one full-attention layer: whole pages.

    Formula: ceil(tokens / block) * page.
    Source: vllm/v1/kv_cache_interface.py FullAttentionSpec.max_memory_usage_bytes.
    Example: 131,072 tokens, block 16, page 65,536 B: 8,192 * 65,536 = 536,870,912 B (512 MiB per layer).
    """
    return -(-tokens // block_size) * page_bytes


def sliding_window_request_bytes(tokens: int, window: int, batched_tokens: int, block_size: int,
                                 page_bytes: int) -> int:
    """What one request takes in one sliding-window layer: the window plus one step's new tokens, never more than
    the request, plus one page for a window that straddles a page boundary.

    Formula: (ceil(min(W - 1 + T_batch, tokens) / block) + 1) * page.
    Source: vllm/v1/kv_cache_interface.py SlidingWindowSpec.max_memory_usage_bytes.
    Example: Gemma-2-9B's window 4096, 8,192 batched tokens, a request of 8,192 tokens, block 16, page 131,072 B:
      (ceil(8192 / 16) + 1) * 131,072 = 513 * 131,072 = 67,239,936 B.
    """
    return (-(-min(window - 1 + batched_tokens, tokens) // block_size) + 1) * page_bytes


def max_concurrency(blocks: int, blocks_per_request: int) -> float:
    """How many requests of the full length fit at once, as vLLM logs "Maximum concurrency for L tokens per
    request: Cx".

    Formula: blocks / blocks_per_request.
    Source: vllm/v1/core/kv_cache_utils.py get_max_concurrency_for_kv_cache_config.
    Example: 27,648 blocks, requests of 131,072 tokens in blocks of 16 (8,192 blocks): 3.375.
    """
    return blocks / blocks_per_request if blocks_per_request else 0.0


def token_pool_cell_bytes(kv_heads: int, head_dim: int, layers: int, kv_bytes: int,
                          head_dim_v: int | None = None) -> int:
    """SGLang's KV pool: bytes of one token's keys and values across all layers on one GPU.

    Formula: n_kv * (d_k + d_v) * L * bytes.
    Source: sglang python/sglang/srt/model_executor/model_runner.py profile_max_num_token (cell_size).
    Example: Llama-3.1-8B, bf16, tp 1: 8 * 256 * 32 * 2 = 131,072 B per token.
    """
    return kv_heads * (head_dim + (head_dim if head_dim_v is None else head_dim_v)) * layers * kv_bytes


def pool_tokens(available_bytes: int, cell_bytes: int) -> int:
    """Tokens a pool of `available_bytes` holds: floor(available / cell). Source: sglang model_runner.py
    profile_max_num_token (`int(rest_memory * (1 << 30)) // cell_size`).
    Example: 50 GiB for Llama-3.1-8B (131,072 B per token): 409,600 tokens."""
    return max(0, available_bytes) // cell_bytes
