"""CUDA and allocator overheads, each a separate named term so that measured runs can calibrate it."""

from __future__ import annotations

MIB = 2**20

#: The CUDA context and the kernels loaded during a step: device memory the process uses beyond torch's reserved
#: bytes (NVML peak - max_memory_reserved). Measured on an H100 80GB (torch 2.11 + CUDA 13.0, lazy module loading):
#: 619 MiB right after CUDA init in all 61 runs of profiles/, and 687-895 MiB (median 767 MiB) at the peak of 57
#: runs without paged optimizers (bitsandbytes' kernels push it to the top of that range).
CUDA_CONTEXT_PRIOR_BYTES = 767 * MIB
#: Prior for the share of the driver-reported total that no process can allocate: nvidia-smi totals exceed
#: torch.cuda.get_device_properties().total_memory by 256-870 MiB across T4, A100 and H100 OOM reports.
DRIVER_RESERVED_PRIOR_BYTES = 512 * MIB
#: Fragmentation beyond the loss block, as a share of max_allocated: fitted on profiles/ (`memplan validate`).
FRAGMENTATION_PRIOR = 0.02


def cuda_context_bytes(measured_bytes: int | None = None) -> int:
    """Device memory the CUDA context, kernels and library handles take, outside torch's counters (in nvidia-smi
    only): a measured value when the GPU's catalog entry has one, else the measured H100 value.

    Example: cuda_context_bytes() == 804,257,792.
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


def fragmentation_bytes(peak_allocated: int, loss_block: int = 0, fraction: float = FRAGMENTATION_PRIOR) -> int:
    """Reserved-but-unallocated memory at the peak: loss_block + fraction * max_allocated.

    The caching allocator never returns a segment (c10/cuda/CUDACachingAllocator.cpp: only empty_cache or an OOM
    retry frees them), and it splits a cached block for any smaller request. The largest blocks of a training step
    are the loss's fp32 [T, V] tensors (`logits.cross_entropy_saved_bytes`); freed during backward, their segments
    are split by the next step's activations and gradients, so the next loss needs a fresh segment and about one
    such block stays reserved but unusable. Measured (profiles/, H100): reserved - allocated is 0.5-1.5x that block
    in 40 of the 51 training runs, and 2-4% of allocated in inference; `fraction` covers the rest (segment
    rounding, split slack).
    Example: 30 GiB allocated, T=2048, V=128,256 (loss_block 1,050,673,152 B):
    1,050,673,152 + 644,245,094 = 1,694,918,246 B.
    """
    return loss_block + int(peak_allocated * fraction)


def usable_memory_bytes(memory_bytes: int, driver_reserved: int = DRIVER_RESERVED_PRIOR_BYTES) -> int:
    """What a process can fill of a GPU: the driver-reported total less what the driver keeps for itself.

    Example: H100 SXM 80GB, 81,559 MiB reported: 85,520,809,984 - 536,870,912 = 84,983,939,072 B.
    """
    return memory_bytes - driver_reserved
