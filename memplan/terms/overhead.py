"""CUDA and allocator overheads, each a separate named term so that measured runs can calibrate it."""

from __future__ import annotations

MIB = 2**20

#: Prior for the CUDA context with lazy module loading (PyTorch sets CUDA_MODULE_LOADING=LAZY): pytorch PR #86509
#: measured 287 MB lazy, and contexts grow to ~0.4-0.6 GiB once cuBLAS/cuDNN kernels load (pytorch#109888).
CUDA_CONTEXT_PRIOR_BYTES = 512 * MIB
#: Prior for the share of the driver-reported total that no process can allocate: nvidia-smi totals exceed
#: torch.cuda.get_device_properties().total_memory by 256-870 MiB across T4, A100 and H100 OOM reports.
DRIVER_RESERVED_PRIOR_BYTES = 512 * MIB
#: Prior for caching-allocator fragmentation (max_reserved / max_allocated - 1): the allocator replay of
#: memory-mechanics.md B5 gave +1.8% (fused AdamW) to +5.9% (foreach) at 8B.
FRAGMENTATION_PRIOR = 0.03


def cuda_context_bytes(measured_bytes: int | None = None) -> int:
    """Device memory the CUDA context, kernels and library handles take, outside torch's counters (in nvidia-smi
    only): a measured value when the GPU's catalog entry has one, else the 512 MiB prior.

    Example: cuda_context_bytes() == 536,870,912.
    """
    return measured_bytes if measured_bytes is not None else CUDA_CONTEXT_PRIOR_BYTES


def cublas_workspace_bytes(compute_capability: str | None, handles: int) -> int:
    """cuBLAS workspaces, allocated through the caching allocator (so inside memory_allocated): 32 MiB per
    (handle, stream) on sm90 and newer (4096 KiB * 8), 8 MiB + 128 KiB before; training uses two handles (the
    forward thread and the autograd engine's thread), inference one.

    Source: aten/src/ATen/cuda/CublasHandlePool.cpp getChosenWorkspaceSize / cublas workspace config default.
    Example: H100 (9.0), training: 2 * 33,554,432 = 67,108,864 B; A100 (8.0), inference: 8,519,680 B.
    """
    major = 0
    if compute_capability and compute_capability[0].isdigit():
        major = int(compute_capability.split(".")[0])
    per_handle = 32 * MIB if major >= 9 else 8 * MIB + 128 * 1024
    return handles * per_handle


def fragmentation_bytes(peak_allocated: int, fraction: float = FRAGMENTATION_PRIOR) -> int:
    """Reserved-but-unallocated memory at the peak (freed blocks the caching allocator keeps in its segments,
    block splitting slack, 2 MiB / 20 MiB segment rounding): fraction * max_allocated.

    Source: c10/cuda/CUDACachingAllocator.cpp (segments are released only by empty_cache or OOM retry).
    Example: 50 GiB allocated at 3%: 1,610,612,736 B.
    """
    return int(peak_allocated * fraction)


def usable_memory_bytes(memory_bytes: int, driver_reserved: int = DRIVER_RESERVED_PRIOR_BYTES) -> int:
    """What a process can fill of a GPU: the driver-reported total less what the driver keeps for itself.

    Example: H100 SXM 80GB, 81,559 MiB reported: 85,520,809,984 - 536,870,912 = 84,983,939,072 B.
    """
    return memory_bytes - driver_reserved
