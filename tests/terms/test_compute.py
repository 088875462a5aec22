"""The worked examples of memplan/terms/compute.py, repeated exactly."""

import pytest

from memplan.architecture import introspect
from memplan.terms import compute as cp

N_8B = 7_504_658_432  # Llama-3.1-8B: every Linear weight and the lm_head
HEAD_8B = 525_336_576
ATTN_CAUSAL = 4_398_046_511_104


def test_matmul_params_of_llama_8b():
    info = introspect("meta-llama/Llama-3.1-8B")
    assert sum(p.numel for p in info.params if p.kind == "linear" and not p.bias) == N_8B
    assert sum(p.numel for p in info.params if p.quantizable and not p.bias and p.kind == "linear") == N_8B - HEAD_8B


def test_forward_matmul_and_attention():
    assert cp.matmul_flops(N_8B, 4096) == 61_478_161_874_944
    assert cp.attention_flops(1, 4096, 4096, 32, causal=False) == 8_796_093_022_208
    assert cp.attention_flops(1, 4096, 4096, 32, causal=True) == ATTN_CAUSAL


def test_backward_is_twice_the_forward_for_full_and_once_for_frozen():
    assert cp.backward_flops(N_8B, N_8B, 4096, ATTN_CAUSAL) == 131_752_416_772_096
    forward = cp.matmul_flops(N_8B, 4096) + ATTN_CAUSAL
    assert cp.backward_flops(N_8B, N_8B, 4096, ATTN_CAUSAL) == 2 * forward
    # frozen weights: input gradients only, the matmuls' forward again and attention's twice
    assert cp.backward_flops(N_8B, 0, 4096, ATTN_CAUSAL) == forward + ATTN_CAUSAL
    assert cp.backward_flops(N_8B, 0, 4096, ATTN_CAUSAL, grads_flow=False) == 0


def test_recompute_is_one_more_forward_of_the_blocks():
    assert cp.recompute_flops(N_8B - HEAD_8B, 4096, ATTN_CAUSAL) == 61_572_651_155_456


def test_compute_time():
    total = cp.matmul_flops(N_8B, 4096) + ATTN_CAUSAL + cp.backward_flops(N_8B, N_8B, 4096, ATTN_CAUSAL)
    assert total == 197_628_625_158_144
    assert cp.compute_time_s(total, 989.4, 0.4) == pytest.approx(0.49936, abs=5e-6)
    assert cp.MFU == 0.4


def test_dequantize_offload_and_decode():
    assert cp.dequantize_time_s(N_8B - HEAD_8B, 0.5, 2, 2, 3350) == pytest.approx(0.010417, abs=5e-7)
    assert cp.offload_optimizer_bytes(8_030_261_248, 2, 1) == 32_121_044_992
    assert cp.offload_params_bytes(8_030_261_248, 2, 8, 2) == 4_015_130_624
    assert cp.transfer_time_s(32_121_044_992) == pytest.approx(1.2848, abs=5e-5)
    assert 8 * 1280 * 131_072 == 1_342_177_280
    assert cp.decode_step_time_s(16_060_522_496, 1_342_177_280, 3350) == pytest.approx(0.0051948, abs=5e-8)


def test_bnb_decode_extra_bytes_docstring_example():
    q = 6_979_321_856
    assert cp.bnb_decode_extra_bytes(q, "nf4", 1, 2) == 0
    assert cp.bnb_decode_extra_bytes(q, "nf4", 8, 2) == 27_917_287_424
    assert cp.bnb_decode_extra_bytes(q, "int8", 4, 2) == 6_979_321_856
    assert cp.bnb_decode_extra_bytes(q, "int4", 4, 2) == 0 and cp.bnb_decode_extra_bytes(q, "bf16", 4, 2) == 0
