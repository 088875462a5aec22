"""Weights: bytes of the base model's parameters at each storage dtype, quantization constants included."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from memplan.terms.dtypes import allocation_bytes, dtype_bytes

NF4_BLOCKSIZE = 64  # bitsandbytes Linear4bit default blocksize (bitsandbytes/nn/modules.py Params4bit)
NF4_NESTED_BLOCKSIZE = 256  # quantize_blockwise(absmax - mean, blocksize=256) under compress_statistics
GPTQ_GROUP_SIZE = 128


def dense_weight_bytes(numel: int, dtype: str) -> int:
    """A float tensor: numel * bytes(dtype), rounded to the allocator's 512 B.

    Example: Llama-3.1-8B's embedding, 128256 x 4096 in bf16: 525,336,576 * 2 = 1,050,673,152 B.
    """
    return allocation_bytes(numel * dtype_bytes(dtype))


def nf4_weight_bytes(numel: int, double_quant: bool, blocksize: int = NF4_BLOCKSIZE,
                     nested_blocksize: int = NF4_NESTED_BLOCKSIZE) -> int:
    """A bitsandbytes 4-bit (NF4 or FP4) tensor with its quantization state, each allocation rounded to 512 B.

    Formula (bitsandbytes/functional.py quantize_4bit): packed data ceil(n/2) bytes (whatever the storage dtype:
    `packed_4bit_shape`) plus the quantization state (`nf4_quant_state_bytes`):
      - plain: absmax fp32, 4 * ceil(n/64)                     -> 0.5 + 4/64 = 0.5625 B/param = 4.5 bits
      - double quant (compress_statistics): absmax re-quantized to uint8, ceil(n/64) bytes, plus an fp32 absmax
        per 256 blocks, 4 * ceil(n/64/256), plus an fp32 offset  -> 0.5 + 1/64 + 4/16384 = 0.5159 B = 4.127 bits
      - the 16-entry fp32 NF4 code table (64 B, its own allocation per tensor); the 8-bit map that double quant
        uses is one cached tensor per device (functional.name2qmap["dynamic"]), not per weight.
    Example: a 4096 x 4096 q_proj (16,777,216 params) with double quant:
      8,388,608 + 262,144 + 4,096 + 512 (offset) + 512 (code table) = 8,655,872 B (4.127 bits/param).
    """
    return allocation_bytes(-(-numel // 2)) + nf4_quant_state_bytes(numel, double_quant, blocksize, nested_blocksize)


def nf4_quant_state_bytes(numel: int, double_quant: bool, blocksize: int = NF4_BLOCKSIZE,
                          nested_blocksize: int = NF4_NESTED_BLOCKSIZE) -> int:
    """The quantization state of one 4-bit tensor (absmax, the nested absmax and offset under double quant, the
    code table), each allocation rounded to 512 B. It is a plain attribute of the weight and of its Linear4bit
    (`Params4bit.quant_state`, `Linear4bit.quant_state`), neither a parameter nor a buffer: FSDP and ZeRO never
    shard it, every GPU keeps all of it.

    Source: bitsandbytes/functional.py quantize_4bit (QuantState), nn/modules.py
    fix_4bit_weight_quant_state_from_module.
    Example: a 4096 x 4096 q_proj with double quant: 262,144 + 4,096 + 512 + 512 = 267,264 B; without:
    4 * 262,144 + 512 = 1,049,088 B.
    """
    blocks = -(-numel // blocksize)
    total = allocation_bytes(16 * 4)  # the NF4 / FP4 code table
    if double_quant:
        nested = -(-blocks // nested_blocksize)
        return total + allocation_bytes(blocks) + allocation_bytes(4 * nested) + allocation_bytes(4)
    return total + allocation_bytes(4 * blocks)


def packed_4bit_shape(numel: int, storage_bytes: int) -> tuple[int, int]:
    """The shape bitsandbytes gives a 4-bit weight's packed values in a storage dtype of `storage_bytes` bytes
    (`bnb_4bit_quant_storage`): [(n + 1) // (2 * itemsize), 1], two 4-bit values per byte whatever the dtype,
    so FSDP shards and gathers it as a tensor of that many elements (and bf16 storage is what lets it).

    Source: bitsandbytes/backends/cuda/ops.py quantize_4bit (`torch.empty(((n + 1) // (quant_storage.itemsize
    * 2), 1), dtype=quant_storage)`); bitsandbytes docs fsdp_qlora.md.
    Example: a 4096 x 4096 weight in bf16 storage: (16,777,217 // 4, 1) = (4,194,304, 1); uint8: (8,388,608, 1).
    """
    return ((numel + 1) // (2 * storage_bytes), 1)


def int8_weight_bytes(out_features: int, in_features: int) -> int:
    """A bitsandbytes LLM.int8() linear (Linear8bitLt): int8 weight [out, in] plus one fp32 scale per output row.

    Formula (bitsandbytes/nn/modules.py Int8Params: CB int8 and SCB fp32 row statistics): out*in + 4*out.
    Example: a 4096 x 4096 projection: 16,777,216 + 16,384 = 16,793,600 B (8.008 bits/param).
    """
    return allocation_bytes(out_features * in_features) + allocation_bytes(4 * out_features)


def int4_gptq_weight_bytes(out_features: int, in_features: int, group_size: int = GPTQ_GROUP_SIZE) -> int:
    """A GPTQ-style group-wise 4-bit linear (auto-gptq / gptqmodel QuantLinear layout; AWQ differs only by g_idx).

    Formula: qweight in*out/2 (int32-packed 4-bit), qzeros (in/g)*out/2 (int32-packed 4-bit), scales fp16
    (in/g)*out*2, g_idx int32 in*4. With g = 128: 0.5 + 0.5/128 + 2/128 = 0.5195 B/param (+ g_idx) = 4.16 bits.
    Example: 4096 x 4096, g=128: 8,388,608 + 65,536 + 262,144 + 16,384 = 8,732,672 B.
    """
    groups = -(-in_features // group_size)
    return (allocation_bytes(in_features * out_features // 2) + allocation_bytes(groups * out_features // 2)
            + allocation_bytes(groups * out_features * 2) + allocation_bytes(in_features * 4))


def fp8_weight_bytes(out_features: int, in_features: int, block: int | None = None) -> int:
    """An fp8 (e4m3) linear as vLLM serves an fp8 checkpoint: one byte per weight plus its fp32 scales, one per
    tensor, or one per block x block tile for block-wise checkpoints (DeepSeek-V3 style, block 128).

    Source: vllm/model_executor/layers/quantization/fp8.py Fp8LinearMethod.create_weights (weight
    float8_e4m3fn [out, in]; weight_scale PerTensorScaleParameter, or BlockQuantScaleParameter
    [ceil(out/b), ceil(in/b)] fp32).
    Example: 4096 x 4096 per-tensor: 16,777,216 + 512 = 16,777,728 B; block-wise 128: 16,777,216 + 4,096 =
    16,781,312 B.
    """
    scales = 1 if block is None else -(-out_features // block) * -(-in_features // block)
    return allocation_bytes(out_features * in_features) + allocation_bytes(4 * scales)


def mxfp4_weight_bytes(numel: int) -> int:
    """An MXFP4 tensor (OCP microscaling FP4, gpt-oss's expert stacks): 4-bit values packed two per byte (the
    "_blocks" uint8 tensor) and one 8-bit power-of-two scale per 32 values (the "_scales" uint8 tensor).

    Formula: n/2 + n/32 bytes = 4.25 bits per weight, each allocation rounded to 512 B.
    Source: transformers integrations/mxfp4.py (gate_up_proj_blocks / _scales, 32-value blocks of 16 bytes).
    Example: gpt-oss-20b's gate_up_proj of one layer (32 experts x 2880 x 5760 = 530,841,600 values):
      265,420,800 + 16,588,800 = 282,009,600 B.
    """
    return allocation_bytes(numel // 2) + allocation_bytes(numel // 32)


class _Param(Protocol):
    shape: tuple[int, ...]
    numel: int
    quantizable: bool


def quantized_tensor_bytes(shape: tuple[int, ...], weight_dtype: str, double_quant: bool) -> int:
    """One quantizable weight (a Linear's matrix, or a stack of expert matrices [E, out, in]) at `weight_dtype`.

    Dispatches to the formulas above; 3-D expert stacks count as E matrices.
    Example: (4096, 4096) at "nf4" with double quant = nf4_weight_bytes(16,777,216, True) = 8,655,872 B.
    """
    mats = shape[0] if len(shape) == 3 else 1
    out_f, in_f = shape[-2], shape[-1]
    if weight_dtype in ("nf4", "fp4"):
        return mats * nf4_weight_bytes(out_f * in_f, double_quant)
    if weight_dtype == "int8":
        return mats * int8_weight_bytes(out_f, in_f)
    if weight_dtype == "int4":
        return mats * int4_gptq_weight_bytes(out_f, in_f)
    if weight_dtype == "fp8":
        return mats * fp8_weight_bytes(out_f, in_f)
    if weight_dtype == "mxfp4":
        return mxfp4_weight_bytes(mats * out_f * in_f)
    return mats * dense_weight_bytes(out_f * in_f, weight_dtype)


def quantizes(weight_dtype: str, shape: tuple[int, ...]) -> bool:
    """Whether a quantizable parameter of this shape is stored at `weight_dtype`: bitsandbytes (nf4, fp4, int8)
    replaces nn.Linear modules only, so transformers 5's fused expert stacks (3-D) stay in the load dtype
    (transformers integrations/bitsandbytes.py has no expert path); MXFP4 checkpoints quantize the expert stacks
    only (gpt-oss: attention, router, embeddings and head in modules_to_not_convert); int4 and fp8 both.
    Example: quantizes("nf4", (8, 28672, 4096)) is False; quantizes("mxfp4", (4096, 4096)) is False."""
    if weight_dtype in ("nf4", "fp4", "int8"):
        return len(shape) != 3
    if weight_dtype == "mxfp4":
        return len(shape) == 3
    return True


def model_weight_bytes(params: Iterable[_Param], weight_dtype: str, unquantized_dtype: str,
                       double_quant: bool = True) -> int:
    """All base weights: quantizable matrices at `weight_dtype`, everything else (embeddings, lm_head, norms,
    biases: transformers' get_keys_to_not_convert plus non-Linear modules) at `unquantized_dtype`. bitsandbytes
    (nf4, fp4, int8) replaces nn.Linear modules only: transformers 5's fused expert stacks (3-D parameters) stay
    unquantized (transformers integrations/bitsandbytes.py has no expert path); int4 / fp8 checkpoints quantize them.

    Formula: sum over quantizable p of quantized_tensor_bytes(p) + sum over the rest of numel * bytes(dtype).
    Example: a model of one 4096 x 4096 linear and one 4096 norm weight, nf4 + double quant, rest in bf16:
      8,655,872 + 8,192 = 8,664,064 B.
    """
    quantized = weight_dtype in ("int8", "nf4", "fp4", "int4", "fp8", "mxfp4")
    total = 0
    for p in params:
        if quantized and p.quantizable and quantizes(weight_dtype, p.shape):
            total += quantized_tensor_bytes(p.shape, weight_dtype, double_quant)
        else:
            total += dense_weight_bytes(p.numel, unquantized_dtype if quantized else weight_dtype)
    return total


def bits_per_param(weight_bytes: int, numel: int) -> float:
    """Effective storage bits per parameter: 8 * bytes / numel. Example: 8,655,872 B over 16,777,216 -> 4.127."""
    return 8 * weight_bytes / numel


def autocast_weight_copies_bytes(matmul_weight_numel: int, compute_dtype: str) -> int:
    """Training fp32 weights under torch.autocast: every matmul weight is cast to the autocast dtype and the copy
    lives through backward (cached for trained leaf weights; saved by the linear for its input gradient when
    frozen): numel * bytes(c).

    Source: aten/src/ATen/autocast_mode.cpp cached_cast; memory-mechanics.md A3 (8B fp32 + autocast trace).
    Example: Llama-3.1-8B's 7,504,658,432 matmul weights (lm_head included) in bf16: 15,009,316,864 B.
    """
    return allocation_bytes(matmul_weight_numel * dtype_bytes(compute_dtype))
