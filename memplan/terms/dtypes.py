"""Bytes per element of each dtype, and the allocator's rounding of one tensor's storage."""

from __future__ import annotations

#: bytes in a GiB (2^30): what every surface prints as "GiB"
GIB = 2**30

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1, "uint8": 1, "bool": 1, "int32": 4}

#: PyTorch's CUDA caching allocator rounds every request up to a multiple of 512 bytes (kMinBlockSize in
#: c10/cuda/CUDACachingAllocator.cpp), so a tensor of n bytes occupies round_up(n, 512) in memory_allocated.
ALLOCATION_GRANULARITY = 512


def dtype_bytes(dtype: str) -> int:
    """Bytes per element: fp32 4, bf16/fp16 2, fp8/int8 1.

    Example: dtype_bytes("bf16") == 2.
    """
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype '{dtype}', allowed: {', '.join(DTYPE_BYTES)}") from None


def allocation_bytes(nbytes: int) -> int:
    """Bytes one tensor of `nbytes` takes in torch.cuda.memory_allocated: ceil(nbytes / 512) * 512; 0 stays 0.

    Source: CUDACachingAllocator.cpp `round_size` (kMinBlockSize = 512).
    Example: a 4096-element bf16 norm weight (8192 B) takes 8192 B; a 100-byte bias takes 512 B.
    """
    if nbytes <= 0:
        return 0
    return -(-nbytes // ALLOCATION_GRANULARITY) * ALLOCATION_GRANULARITY
