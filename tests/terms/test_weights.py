"""The worked examples of memplan.terms.weights, derived by hand in each docstring."""

from memplan.terms.dtypes import allocation_bytes, dtype_bytes
from memplan.terms.weights import (
    autocast_weight_copies_bytes,
    bits_per_param,
    dense_weight_bytes,
    int4_gptq_weight_bytes,
    int8_weight_bytes,
    model_weight_bytes,
    nf4_quant_state_bytes,
    nf4_weight_bytes,
    packed_4bit_shape,
    quantized_tensor_bytes,
)
from memplan.architecture import ParamInfo


def test_dtype_and_rounding():
    assert dtype_bytes("bf16") == 2 and dtype_bytes("fp32") == 4 and dtype_bytes("fp8") == 1
    assert allocation_bytes(8192) == 8192
    assert allocation_bytes(100) == 512
    assert allocation_bytes(0) == 0


def test_dense_embedding_8b():
    assert dense_weight_bytes(128256 * 4096, "bf16") == 1_050_673_152


def test_nf4_double_quant_4127_bits():
    # 8,388,608 packed + 262,144 uint8 absmax + 4,096 fp32 nested absmax + 512 offset + 512 code table
    n = 4096 * 4096
    b = nf4_weight_bytes(n, double_quant=True)
    assert b == 8_655_872
    assert round(bits_per_param(b, n), 3) == 4.127


def test_nf4_plain_45_bits():
    n = 4096 * 4096
    b = nf4_weight_bytes(n, double_quant=False)
    assert b == n // 2 + 4 * n // 64 + 512  # packed + fp32 absmax per 64 + code table
    assert abs(bits_per_param(b, n) - 4.5) < 0.001


def test_nf4_quant_state_is_the_weight_less_its_packed_values():
    n = 4096 * 4096
    assert nf4_quant_state_bytes(n, True) == 262_144 + 4_096 + 512 + 512 == 267_264
    assert nf4_quant_state_bytes(n, False) == 4 * 262_144 + 512 == 1_049_088
    assert nf4_weight_bytes(n, True) - nf4_quant_state_bytes(n, True) == n // 2


def test_packed_4bit_shape_per_storage_dtype():
    # bitsandbytes quantize_4bit: ((n + 1) // (2 * itemsize), 1), 0.5 B per weight whatever the dtype
    n = 4096 * 4096
    assert packed_4bit_shape(n, 2) == (4_194_304, 1)
    assert packed_4bit_shape(n, 1) == (8_388_608, 1)
    assert packed_4bit_shape(n, 4) == (2_097_152, 1)
    for itemsize in (1, 2, 4):
        assert packed_4bit_shape(n, itemsize)[0] * itemsize == n // 2


def test_int8_and_gptq():
    assert int8_weight_bytes(4096, 4096) == 16_793_600
    assert int4_gptq_weight_bytes(4096, 4096) == 8_732_672


def test_quantized_tensor_dispatch_and_experts():
    assert quantized_tensor_bytes((4096, 4096), "nf4", True) == 8_655_872
    assert quantized_tensor_bytes((8, 4096, 4096), "nf4", True) == 8 * 8_655_872
    assert quantized_tensor_bytes((4096, 4096), "bf16", True) == 33_554_432


def test_model_weight_bytes_keeps_norms_in_float():
    lin = ParamInfo("l.weight", (4096, 4096), 4096 * 4096, "l", "linear", False, True, "decoder", 0)
    norm = ParamInfo("n.weight", (4096,), 4096, "n", "norm", False, False, "decoder", 0)
    assert model_weight_bytes([lin, norm], "nf4", "bf16", True) == 8_664_064
    assert model_weight_bytes([lin, norm], "bf16", "bf16", True) == 33_554_432 + 8192


def test_autocast_copies_8b():
    assert autocast_weight_copies_bytes(7_504_658_432, "bf16") == 15_009_316_864


def test_mxfp4_and_which_tensors_each_format_quantizes():
    from memplan.terms.weights import mxfp4_weight_bytes, quantizes

    assert mxfp4_weight_bytes(32 * 2880 * 5760) == 282_009_600  # 4.25 bits per weight
    assert quantizes("nf4", (4096, 4096)) and not quantizes("nf4", (8, 28672, 4096))
    assert quantizes("mxfp4", (32, 5760, 2880)) and not quantizes("mxfp4", (4096, 2880))
    assert quantizes("int4", (8, 28672, 4096)) and quantizes("fp8", (4096, 4096))
