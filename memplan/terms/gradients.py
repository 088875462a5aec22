"""Gradients: one tensor per trainable parameter, in the parameter's dtype."""

from __future__ import annotations

from collections.abc import Iterable

from memplan.terms.dtypes import allocation_bytes, dtype_bytes


def gradient_bytes(tensors: Iterable[tuple[int, str]]) -> int:
    """Sum over trainable tensors of round512(numel * bytes(dtype)): autograd's AccumulateGrad allocates
    `param.grad` like the parameter (torch/csrc/autograd/functions/accumulate_grad.h), so bf16 params get bf16
    gradients and PEFT's fp32 LoRA weights get fp32 gradients.

    Example: Llama-3.1-8B full fine-tuning in bf16: 8,030,261,248 params * 2 B = 16,060,522,496 B (14.96 GiB),
    plus rounding of small tensors (norm weights of 8 KiB are already multiples of 512).
    """
    return sum(allocation_bytes(numel * dtype_bytes(dtype)) for numel, dtype in tensors)
