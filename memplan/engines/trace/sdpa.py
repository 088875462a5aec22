"""The kernels CUDA would pick, on CPU tensors: scaled dot-product attention and dropout.

Dropout: for a CUDA tensor with 0 < p < 1, `dropout` runs the fused `native_dropout`, which saves a 1-byte boolean
mask; on CPU it multiplies by a noise tensor of the input's dtype and saves that (4 bytes an element for fp32
LoRA inputs). While tracing, F.dropout takes CUDA's path (aten/src/ATen/native/Dropout.cpp
`is_fused_kernel_acceptable`).

Attention:

`F.scaled_dot_product_attention` chooses its kernel by device: on CPU it takes the math kernel (which saves the
[b, n, s, s] probabilities) for dropout and other cases where CUDA runs a fused kernel that saves only the output
and an fp32 logsumexp. While tracing (`cuda_sdpa_kernels()`), `cuda_sdpa` routes each call to the kernel CUDA
would choose, whose fake (meta) implementations run on any device:

- flash (`_scaled_dot_product_flash_attention`): fp16/bf16, no mask, head_dim <= 256 and a multiple of 8,
  grouped-query heads natively;
- memory-efficient (`_scaled_dot_product_efficient_attention`): any mask (a boolean mask becomes an additive bias
  in the query's dtype), fp32 too, equal head counts;
- math otherwise.

Under autocast, CUDA casts the floating inputs to the autocast dtype first (`scaled_dot_product_attention` is in
its lower_precision_fp list). Source: aten/src/ATen/native/transformers/cuda/sdp_utils.cpp (`select_sdp_backend`,
`check_flash_attention_hardware_support`, `check_mem_efficient_hardware_support`, `check_for_attn_mask`,
`check_grouped_query_attention`), sdp::convert_boolean_attn_mask.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator


def cuda_sdpa(query: Any, key: Any, value: Any, attn_mask: Any = None, dropout_p: float = 0.0,
              is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> Any:
    import torch

    aten = torch.ops.aten
    if torch.is_autocast_enabled("cpu"):
        target = torch.get_autocast_dtype("cpu")
        query, key, value = (t.to(target) if t.is_floating_point() else t for t in (query, key, value))
        if attn_mask is not None and attn_mask.is_floating_point():
            attn_mask = attn_mask.to(target)
        with torch.autocast("cpu", enabled=False):
            return cuda_sdpa(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    head_dim = query.shape[-1]
    same_heads = query.shape[-3] == key.shape[-3]
    # flash needs one head size for q, k and v (torch sdp_utils check_head_dim_size_flash); MLA's values are
    # narrower than its queries and keys, which CUDA sends to the memory-efficient kernel
    if (query.dtype in (torch.float16, torch.bfloat16) and attn_mask is None and head_dim <= 256
            and head_dim % 8 == 0 and value.shape[-1] == head_dim and (same_heads or enable_gqa)):
        return aten._scaled_dot_product_flash_attention(query, key, value, dropout_p, is_causal, False,
                                                        scale=scale)[0]
    if same_heads:
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            bias = torch.zeros(attn_mask.shape, dtype=query.dtype)
            attn_mask = bias.masked_fill_(attn_mask.logical_not(), float("-inf"))
        needs_lse = any(t.requires_grad for t in (query, key, value))
        return aten._scaled_dot_product_efficient_attention(query, key, value, attn_mask, needs_lse, dropout_p,
                                                            is_causal, scale=scale)[0]
    return aten._scaled_dot_product_attention_math(query, key, value, attn_mask, dropout_p, is_causal, None,
                                                   scale=scale, enable_gqa=enable_gqa)[0]


@contextlib.contextmanager
def cuda_sdpa_kernels() -> Iterator[None]:
    """Within the block, F.scaled_dot_product_attention and F.dropout run the kernels CUDA would select. Module
    attributes, not a TorchFunctionMode: gradient checkpointing recomputes the forward inside backward, where a
    function mode is not active."""
    import torch.nn.functional as F

    original = F.scaled_dot_product_attention, F.dropout
    F.scaled_dot_product_attention, F.dropout = cuda_sdpa, cuda_dropout
    try:
        yield
    finally:
        F.scaled_dot_product_attention, F.dropout = original


def cuda_dropout(input: Any, p: float = 0.5, training: bool = True, inplace: bool = False) -> Any:
    import torch

    if training and 0 < p < 1 and input.numel() > 0:
        out = torch.ops.aten.native_dropout(input, p, True)[0]
        return input.copy_(out) if inplace else out
    if training and p == 1:
        return input.zero_() if inplace else torch.zeros_like(input)
    return input
