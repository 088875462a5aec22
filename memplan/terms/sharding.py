"""DeepSpeed ZeRO 1/2/3 and torch FSDP2 partitioning of model states across N GPUs, and buffers.

Notation: P all parameters, P_t trainable ones, N data-parallel GPUs, k bytes of the 16-bit (or fp32) params.
Mixed-precision DeepSpeed keeps fp32 master weights (4), fp32 gradient partitions (4) and the optimizer's fp32
states beside the 16-bit model: for Adam the "K = 12" of the ZeRO paper plus 4 for the fp32 gradient partition,
which is what deepspeed's own estimators count (2 grads16 + 4 grads32 + 4 params32 + 8 optim = 18 per param).
"""

from __future__ import annotations


def zero_param_bytes(total_params: int, param_bytes: int, stage: int, num_gpus: int, offload_params: bool) -> int:
    """16-bit parameters on each GPU: replicated below ZeRO-3, P*k/N under ZeRO-3, none with parameter offload.

    Source: Rajbhandari et al. 2019 (arXiv:1910.02054) Fig. 1, P_os+g+p; deepspeed/runtime/zero/stage3.py.
    Example: 8,030,261,248 params, bf16, ZeRO-3 on 8 GPUs: 2,007,565,312 B.
    """
    if stage == 3:
        return 0 if offload_params else -(-total_params * param_bytes // num_gpus)
    return total_params * param_bytes


def zero_grad_bytes(trainable_params: int, grad_bytes: int, stage: int, num_gpus: int, offload_optimizer: bool
                    ) -> int:
    """16-bit gradients on each GPU: full below ZeRO-2, reduce-scattered to P_t*k/N from ZeRO-2 on, none left on
    the GPU when the optimizer is offloaded (stage 2/3 copy each partition to pinned CPU memory).

    Source: ZeRO paper P_os+g; deepspeed stage_1_and_2.py estimate_zero2_model_states_mem_needs (offload: 2P).
    Example: 8,030,261,248 trainable, bf16, ZeRO-2, 8 GPUs: 2,007,565,312 B.
    """
    if offload_optimizer and stage >= 2:
        return 0
    if stage >= 2:
        return -(-trainable_params * grad_bytes // num_gpus)
    return trainable_params * grad_bytes


def zero_optimizer_bytes(trainable_params: int, state_bytes_per_param: float, param_bytes: int, stage: int,
                         num_gpus: int, offload_optimizer: bool) -> int:
    """Optimizer states plus, when the model is 16-bit, fp32 master weights (4 B/param) and fp32 gradients:
    ZeRO-1/2 hold the whole fp32 gradient partition during the step (4 B/param), ZeRO-3 upcasts one sub-group
    at a time, which deepspeed's estimator budgets at 2 B/param. All divided by N from ZeRO-1 on; none on the GPU
    when the optimizer is offloaded.

    Formula: P_t * (s + 4 + (4 if stage < 3 else 2)) / N for 16-bit models, P_t * s / N for fp32 ones.
    With Adam (s = 8), bf16: ZeRO-2 16 P_t/N (deepspeed: 2P + 18P/N in all), ZeRO-3 14 P_t/N (4LL + 18P/N).
    Source: ZeRO paper P_os; deepspeed stage_1_and_2.py single_partition_of_fp32_groups,
    stage3.py _prepare_fp32_grad_for_sub_group, estimate_zero{2,3}_model_states_mem_needs.
    Example: 8,030,261,248 params, Adam, bf16, ZeRO-2, 8 GPUs: 16 * P / 8 = 16,060,522,496 B.
    """
    if offload_optimizer and stage >= 1:
        return 0
    extra = 0 if param_bytes >= 4 else 4 + (4 if stage < 3 else 2)
    total = int(trainable_params * (state_bytes_per_param + extra))
    return -(-total // num_gpus) if stage >= 1 else total


def zero3_live_param_bytes(largest_layer_params: int, param_bytes: int) -> int:
    """ZeRO-3 gathers a module's full parameters for its forward/backward and holds its gradient before
    reduce-scatter: the largest single module (the embedding or lm_head for LLMs) at 2 * k bytes per parameter.

    Source: deepspeed stage3.py estimate_zero3_model_states_mem_needs (largest_layer_memory = 4 * LL).
    Example: Llama-3.1-8B embedding, 525,336,576 params, bf16: 2,101,346,304 B.
    """
    return 2 * largest_layer_params * param_bytes


def zero_bucket_bytes(hidden: int, stage: int, grad_bytes: int, prefetch_params: int | None = None) -> int:
    """Communication buckets with the HF Trainer's "auto" DeepSpeed values (transformers/integrations/
    deepspeed.py: reduce_bucket_size = h^2, stage3_prefetch_bucket_size = 0.9 h^2):
    ZeRO-1/2 keep two reduce buckets (overlap_comm double-buffers the IPG bucket), ZeRO-3 one reduce bucket and
    the parameters it prefetches (`prefetch_params`, default 0.9 h^2: `zero3_prefetch_params`).

    Example: h = 4096, bf16, ZeRO-2: 2 * 4096^2 * 2 = 67,108,864 B; ZeRO-3: (1 + 0.9) * 4096^2 * 2 = 63,753,420 B.
    """
    if stage == 0:
        return 0
    if stage == 3:
        if prefetch_params is None:
            return 19 * hidden * hidden * grad_bytes // 10
        return (hidden * hidden + prefetch_params) * grad_bytes
    return 2 * hidden * hidden * grad_bytes


def zero3_prefetch_params(hidden: int, prefetch_bucket: int | None, max_live: int | None) -> int:
    """Parameters ZeRO-3 gathers ahead of the module being computed: up to stage3_prefetch_bucket_size (the HF
    Trainer's 'auto' 0.9 h^2), never more than stage3_max_live_parameters (DeepSpeed's default 1e9): min(P_b, M).

    Source: deepspeed/runtime/zero/partitioned_param_coordinator.py PartitionedParameterCoordinator.fetch_sub_module
    (the prefetch loop bounded by __prefetch_bucket_sz; __max_n_available_params releases past max_live_parameters).
    Example: h = 8192 (Llama-3.1-70B), defaults: min(60,397,977, 1e9) = 60,397,977; with stage3_prefetch_bucket_size
    5e8 and max_live 1e8: 100,000,000.
    """
    bucket = 9 * hidden * hidden // 10 if prefetch_bucket is None else prefetch_bucket
    return min(bucket, 1_000_000_000 if max_live is None else max_live)


def ddp_bucket_bytes(grad_bytes_total: int, num_gpus: int) -> int:
    """Plain DistributedDataParallel (no ZeRO) on N > 1 GPUs keeps its own flat gradient buckets beside
    param.grad (gradient_as_bucket_view=False, the default): one more copy of all gradients.

    Source: torch/nn/parallel/distributed.py, reducer.cpp (bucket contents are separate tensors).
    Example: 16,060,522,496 B of bf16 gradients on 2 GPUs -> 16,060,522,496 B; on 1 GPU -> 0.
    """
    return grad_bytes_total if num_gpus > 1 else 0


def nccl_buffer_bytes(num_gpus: int) -> int:
    """NCCL's communicator buffers, outside PyTorch's allocator (visible in nvidia-smi only): a prior of
    512 MiB for any multi-GPU job (NCCL_BUFFSIZE 4 MiB per channel per peer, plus proxy buffers), 0 on one GPU.
    Not yet calibrated on a measured run.

    Example: nccl_buffer_bytes(8) = 536,870,912; nccl_buffer_bytes(1) = 0.
    """
    return 512 * 2**20 if num_gpus > 1 else 0


def fsdp_shard_numel(shape: tuple[int, ...], world: int) -> int:
    """Elements one rank stores of a parameter under FSDP2: `torch.chunk(dim=0)` into `world` pieces, every piece
    padded to the first (largest) one, ceil(d0 / N) rows of the other dimensions (a 0-d parameter counts as 1).

    Source: torch/distributed/fsdp/_fully_shard/_fsdp_param.py, FSDPParam._init_sharded_param
    (padded_sharded_param_size from torch.chunk's first chunk).
    Example: a [128,256, 4,096] embedding on 3 GPUs: ceil(128,256 / 3) * 4,096 = 42,752 * 4,096 = 175,112,192.
    """
    d0 = shape[0] if shape else 1
    rest = 1
    for d in shape[1:]:
        rest *= d
    return -(-d0 // world) * rest


def fsdp2_group_shard_numel(shapes: list[tuple[int, ...]], world: int) -> int:
    """Elements one rank stores of a `fully_shard` group: each parameter's padded Shard(0) chunk
    (`fsdp_shard_numel`), summed (FSDP1's flat parameter pads the group as a whole: `fsdp1_flat_shard_numel`).

    Example: two [4,096, 4,096] weights on 8 GPUs: 2 * 512 * 4,096 = 4,194,304.
    """
    return sum(fsdp_shard_numel(s, world) for s in shapes)


def fsdp_sharded_bytes(shapes: list[tuple[int, ...]], world: int, elem_bytes: int) -> int:
    """One rank's padded shards of the given parameters (or of their gradients or one Adam moment), in bytes.

    Example: two [4,096, 4,096] fp32 weights on 8 GPUs: 2 * 512 * 4,096 * 4 = 16,777,216 B.
    """
    return fsdp2_group_shard_numel(shapes, world) * elem_bytes


def fsdp_unsharded_bytes(shapes: list[tuple[int, ...]], world: int, param_bytes: int) -> int:
    """A `fully_shard` group's all-gather output: the padded shards of all ranks, N * sum(shard numel), in
    `MixedPrecisionPolicy.param_dtype`; the unsharded parameters are views into it, so it is the group's whole
    unsharded footprint (and, in backward, the size of its unsharded gradients before reduce-scatter).

    Source: torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py foreach_all_gather (all_gather_output of
    all_gather_input_numel * world_size); FSDPMemTracker's "All Gather" / "Unsharded Param" categories.
    Example: one Llama block 512 wide (attention, MLP and two norms: 2,900,992 params) on 4 GPUs in bf16:
    4 * 725,248 * 2 = 5,801,984 B.
    """
    return world * fsdp2_group_shard_numel(shapes, world) * param_bytes


def fsdp_copy_out_bytes(group_unsharded_bytes: int) -> int:
    """A `fully_shard` group while it is unsharded: the all-gather output buffer and the unsharded parameters
    FSDP2 copies out of it into their own storages, both alive until the copy ends: 2 * the group's bytes. The
    root group's, at the first forward, is the step's first all-gather.

    Source: torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py foreach_all_gather_copy_out
    (split_with_sizes_copy from all_gather_output into each FSDPParam's all_gather_outputs, alloc_storage'd);
    the all-gather output is freed with its AllGatherResult after the copy.
    Example: Llama-3.1-8B's root (embedding, norm and head: 1,050,677,248 params) on 8 GPUs in bf16:
    2 * 8 * 131,334,656 * 2 = 4,202,708,992 B.
    """
    return 2 * group_unsharded_bytes


def fsdp_last_all_gather_bytes(group_unsharded_bytes: int) -> int:
    """The output buffer of the latest all-gather, which FSDP2 keeps after copying the parameters out of it until
    the next all-gather starts or the root's forward ends (so that the next copy-in can wait on it without
    record_stream): one more copy of the last gathered group's bytes. At the end of forward that is the last group
    gathered (the head's under accelerate's FSDP2 wrapping), alive through a loss computed inside the model's
    forward (transformers' `labels`).

    Source: torch/distributed/fsdp/_fully_shard/_fsdp_param_group.py wait_for_unshard
    (comm_ctx.all_gather_state = AllGatherState(all_gather_result, event)), freed at the next unshard or in the
    root's post-forward (_fsdp_state.py); traced (tests/trace/test_fsdp_fake_pg.py).
    Example: a [8,000, 512] head on 8 GPUs in bf16: 8 * 1,000 * 512 * 2 = 8,192,000 B.
    """
    return group_unsharded_bytes


def fsdp_block_backward_bytes(block_unsharded_bytes: int, block_grad_bytes: int, reduce_grad_bytes: int | None = None
                              ) -> int:
    """A `fully_shard` block at its post-backward: its unsharded parameters, the unsharded gradients backward made
    for them (in param_dtype), and the reduce-scatter input the gradients are copied into (in reduce_dtype), all
    alive until the copy ends (the next group's prefetched all-gather comes on top).

    Formula: B + G + G_r, B the block's all-gather bytes, G its gradients in param_dtype (B under full fine-tuning,
    the adapters' under LoRA), G_r the same gradients in reduce_dtype (G when it is param_dtype, 2 G for fp32
    under bf16).
    Source: torch/distributed/fsdp/_fully_shard/_fsdp_param_group.py post_backward, _fsdp_collectives.py
    foreach_reduce (reduce_scatter_input in reduce_dtype); traced (bench/results/fsdp_crosscheck.txt: Llama-3.1-70B
    on 64 GPUs, the bottom block's parameters, gradients and reduce-scatter input beside the embedding's prefetch).
    Example: a Llama-3.1-8B block on 8 GPUs in bf16 (218,112,000 params: B = G = 436,224,000 B), full fine-tune:
    3 * 436,224,000 = 1,308,672,000 B; with an fp32 reduce_dtype: 4 * 436,224,000 = 1,744,896,000 B.
    """
    reduce = block_grad_bytes if reduce_grad_bytes is None else reduce_grad_bytes
    return block_unsharded_bytes + block_grad_bytes + reduce


def fsdp1_flat_shard_numel(shapes: list[tuple[int, ...]], world: int) -> int:
    """Elements one rank stores of an FSDP1 unit: its parameters flattened into one FlatParameter, padded to a
    multiple of the world size and split evenly, ceil(sum(numel) / N) (the alignment padding use_orig_params adds
    between parameters, under 16 bytes each, is left out).

    Source: torch/distributed/fsdp/_flat_param.py FlatParamHandle (flatten_tensors_into_flat_param,
    _get_shard: padded to world_size * ceil(numel / world_size)).
    Example: one Llama block 512 wide (attention, MLP and two norms: 2,900,992 params) on 3 GPUs:
    ceil(2,900,992 / 3) = 966,998 (FSDP2's per-parameter chunks: 968,822).
    """
    numel = 0
    for s in shapes:
        n = 1
        for d in s:
            n *= d
        numel += n
    return -(-numel // world)
