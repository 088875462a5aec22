"""CUDA and allocator overheads, each a separate named term so that measured runs can calibrate it."""

from __future__ import annotations

MIB = 2**20

#: The CUDA context right after `torch.cuda.init()`: NVML used - max_memory_reserved, 648,871,936 B (618.8 MiB) in
#: all 61 runs of profiles/ (H100 80GB, torch 2.11 + CUDA 13.0, driver 580, lazy module loading, the CUDA default
#: since 11.7: kernels are loaded when first launched, not at init).
CUDA_CONTEXT_INIT_BYTES = 648_871_936
#: Kernel modules the job's step loads on top of that (lazy loading), by what the step runs: the measured
#: (NVML - reserved) at the peak less the init context, in the 60 runs of profiles/ (paged optimizers' managed
#: memory is counted apart, as `paged_optimizer_states`): 148 MiB in all 51 training runs with sdpa or
#: flash attention but Gemma 2 (132 MiB there and with eager attention: fewer kernels), 100 MiB in generate() with
#: bf16 or nf4 weights (68 MiB Gemma 2), 164 MiB with bitsandbytes LLM.int8 weights (its int8 matmul kernels).
STEP_MODULES_BYTES = {"train": 148 * MIB, "inference": 100 * MIB, "inference_int8": 164 * MIB}
#: The default stack the context terms were measured on, stated in every estimate's assumptions.
CUDA_CONTEXT_STACK = "torch 2.11, CUDA 13.0, lazy module loading, H100"
#: Prior for the share of the driver-reported total that no process can allocate: nvidia-smi totals exceed
#: torch.cuda.get_device_properties().total_memory by 256-870 MiB across T4, A100 and H100 OOM reports.
DRIVER_RESERVED_PRIOR_BYTES = 512 * MIB
#: Fragmentation beyond the loss block, as a share of max_allocated: fitted on profiles/ (`memplan validate`).
FRAGMENTATION_PRIOR = 0.02


def cuda_context_bytes(task: str = "train", int8_weights: bool = False, init_bytes: int = CUDA_CONTEXT_INIT_BYTES
                       ) -> int:
    """Device memory the CUDA context and the kernel modules a step loads take, outside torch's counters (in
    nvidia-smi only): the context after init plus the modules the step's kernels load (`STEP_MODULES_BYTES`).

    With lazy module loading (CUDA_MODULE_LOADING=LAZY, the default since CUDA 11.7; CUDA programming guide,
    "Lazy Loading") a kernel's module is loaded at its first launch, so the context grows with what the step runs.
    Example: training, 648,871,936 + 155,189,248 = 804,061,184 B (766.8 MiB); generate() with int8 weights:
    648,871,936 + 171,966,464 = 820,838,400 B.
    """
    key = "train" if task == "train" else ("inference_int8" if int8_weights else "inference")
    return init_bytes + STEP_MODULES_BYTES[key]


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


def fragmentation_bytes(peak_allocated: int, loss_block: int = 0, fraction: float = FRAGMENTATION_PRIOR,
                        allocator: str = "default") -> int:
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

    With `allocator="expandable_segments"` (PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True) each pool is one
    segment of virtual memory mapped in pages (2 MiB small, 20 MiB large: ExpandableSegment), free blocks merge
    across what were separate segments, and before it reports out-of-memory the allocator unmaps the free pages of
    every free block (release_cached_blocks -> release_blocks -> unmap_block) and maps them where they are needed:
    the loss block needs no segment of its own. What stays is the slack inside partly used pages, modelled by the
    same `fraction` (an upper bound: its measured share includes segment rounding the pages remove). Not measured
    on a GPU yet (profiles/ has no run with expandable segments).
    Example: the job above with expandable segments: 644,245,094 B.
    """
    if allocator == "expandable_segments":
        return int(peak_allocated * fraction)
    return loss_block + int(peak_allocated * fraction)


def usable_memory_bytes(memory_bytes: int, driver_reserved: int = DRIVER_RESERVED_PRIOR_BYTES) -> int:
    """What a process can fill of a GPU: the driver-reported total less what the driver keeps for itself.

    Example: H100 SXM 80GB, 81,559 MiB reported: 85,520,809,984 - 536,870,912 = 84,983,939,072 B.
    """
    return memory_bytes - driver_reserved
