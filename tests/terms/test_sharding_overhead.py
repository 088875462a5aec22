from memplan.terms import overhead as ov
from memplan.terms import sharding as sh

P = 8_030_261_248


def test_zero_partitions():
    assert sh.zero_param_bytes(P, 2, 3, 8, False) == 2_007_565_312
    assert sh.zero_param_bytes(P, 2, 2, 8, False) == 2 * P
    assert sh.zero_param_bytes(P, 2, 3, 8, True) == 0
    assert sh.zero_grad_bytes(P, 2, 2, 8, False) == 2_007_565_312
    assert sh.zero_grad_bytes(P, 2, 1, 8, False) == 2 * P
    assert sh.zero_grad_bytes(P, 2, 2, 8, True) == 0
    assert sh.zero_optimizer_bytes(P, 8, 2, 2, 8, False) == 16_060_522_496
    assert sh.zero_optimizer_bytes(P, 8, 2, 2, 8, True) == 0
    assert sh.zero3_live_param_bytes(525_336_576, 2) == 2_101_346_304


def test_buffers():
    assert sh.zero_bucket_bytes(4096, 2, 2) == 67_108_864
    assert sh.zero_bucket_bytes(4096, 3, 2) == 63_753_420
    assert sh.zero_bucket_bytes(4096, 0, 2) == 0
    assert sh.ddp_bucket_bytes(16_060_522_496, 2) == 16_060_522_496
    assert sh.ddp_bucket_bytes(16_060_522_496, 1) == 0
    assert sh.nccl_buffer_bytes(8) == 536_870_912 and sh.nccl_buffer_bytes(1) == 0


def test_overheads():
    # the docstring's examples: init context + the modules a training step / an int8 generate() loads
    assert ov.cuda_context_bytes("train") == 648_871_936 + 148 * 2**20 == 804_061_184
    assert ov.cuda_context_bytes("inference", int8_weights=True) == 648_871_936 + 164 * 2**20 == 820_838_400
    assert ov.cuda_context_bytes("inference") == 648_871_936 + 100 * 2**20
    assert ov.cuda_context_bytes("train", init_bytes=400 * 2**20) == 548 * 2**20
    assert ov.cublas_workspace_bytes("9.0", 2) == 67_108_864
    assert ov.cublas_workspace_bytes("8.0", 1) == 8_519_680
    # the docstring's example: one fp32 [T, V] loss block (T=2048, V=128,256) + 2% of 30 GiB
    assert ov.fragmentation_bytes(30 * 2**30, 4 * 2048 * 128_256) == 1_050_673_152 + 644_245_094 == 1_694_918_246
    assert ov.fragmentation_bytes(50 * 2**30) == 1_073_741_824  # inference: no loss block
    # expandable segments: the loss block needs no segment of its own, the page slack stays
    assert ov.fragmentation_bytes(30 * 2**30, 4 * 2048 * 128_256, allocator="expandable_segments") == 644_245_094
    assert ov.usable_memory_bytes(81_559 * 2**20) == 84_983_939_072


def test_fsdp_copy_out_of_the_llama_8b_root_on_8_gpus():
    # embedding and head 128,256 x 4,096 each, norm 4,096: one rank's padded shards 131,334,656 elements
    shard = sh.fsdp_shard_numel((128256, 4096), 8) * 2 + sh.fsdp_shard_numel((4096,), 8)
    assert shard == 131_334_656
    root = sh.fsdp_unsharded_bytes([(128256, 4096), (128256, 4096), (4096,)], 8, 2)
    assert sh.fsdp_copy_out_bytes(root) == 2 * 8 * 131_334_656 * 2 == 4_202_708_992


def test_fsdp2_group_shard_is_its_parameters_chunks():
    assert sh.fsdp2_group_shard_numel([(4096, 4096), (4096, 4096)], 8) == 2 * 512 * 4096 == 4_194_304


def test_fsdp1_flat_parameter_pads_the_whole_unit():
    block = [(512, 512), (256, 512), (256, 512), (512, 512), (1376, 512), (1376, 512), (512, 1376), (512,), (512,)]
    assert sh.fsdp1_flat_shard_numel(block, 3) == -(-2_900_992 // 3) == 966_998
    assert sum(sh.fsdp_shard_numel(s, 3) for s in block) == 968_822  # FSDP2 pads every parameter's chunks


def test_zero3_prefetch_bounded_by_the_bucket_and_max_live():
    assert sh.zero3_prefetch_params(8192, None, None) == 9 * 8192 * 8192 // 10 == 60_397_977
    assert sh.zero3_prefetch_params(8192, 500_000_000, 100_000_000) == 100_000_000
    # explicit knobs feed the ZeRO-3 buckets: the reduce bucket (h^2) and the prefetched parameters
    assert sh.zero_bucket_bytes(4096, 3, 2, 5_000_000) == (4096 * 4096 + 5_000_000) * 2


def test_zero3_knobs_move_the_buckets_by_their_bytes():
    import memplan
    from memplan.engines.formula.placement import held_states
    from memplan.job import resolve

    job = {"model": "meta-llama/Llama-3.1-8B", "method": "full", "num_gpus": 8, "zero_stage": 3, "gpu": "H200-141GB"}

    def buckets(**knobs):
        r = resolve({**job, **knobs})
        return held_states(r.info, r.spec, []).buckets

    small, large = buckets(zero3_prefetch_bucket_size=1_000_000), buckets(zero3_prefetch_bucket_size=201_000_000)
    assert large - small == 200_000_000 * 2
    assert buckets(zero3_prefetch_bucket_size=201_000_000, zero3_max_live_parameters=1_000_000) == small
    no_init = memplan.estimate({**job, "zero3_init": False})
    assert no_init.host_bytes > memplan.estimate(job).host_bytes


def test_fsdp_block_backward_with_its_reduce_dtype():
    block = 218_112_000 * 2  # a Llama-3.1-8B block's bf16 all-gather on 8 GPUs
    assert sh.fsdp_block_backward_bytes(block, block) == 3 * block == 1_308_672_000
    assert sh.fsdp_block_backward_bytes(block, block, 2 * block) == 4 * block == 1_744_896_000
