"""Compute and time of a step: FLOPs of the matmuls and of attention, and the seconds they take on a GPU.

FLOPs out (integers), or seconds out for the time terms. Notation: N matmul weights a token passes through
(every Linear / Conv1D weight and the lm_head, routed experts at their active share; embedding lookups and norms
are no matmuls), T tokens of a micro-batch (b sequences of s), h_q = heads * head_dim, L layers.
Speed is a planning aid, not a measurement: memplan's profiles/ hold memory only, no step times.
"""

from __future__ import annotations

#: Share of the GPU's dense tensor-core FLOP/s a training step achieves. Dubey et al. 2024, "The Llama 3 Herd of
#: Models" (arXiv:2407.21783), Table 4: 38-43% BF16 MFU pre-training Llama 3 405B on 8,192-16,384 H100s;
#: Chowdhery et al. 2022 (PaLM, arXiv:2204.02311) Table 3: 46.2% for PaLM 540B, 21.3% GPT-3, 30.2% MT-NLG
#: (MFU as defined in their Appendix B). memplan applies it to every FLOP it counts, recomputation included
#: (strictly a hardware FLOPs utilization, Korthikanti et al. 2022 §6).
MFU = 0.4
#: Host <-> GPU copy rate assumed for DeepSpeed offload: PCIe 4.0 x16 is 31.5 GB/s per direction on paper; pinned
#: host memory reaches about 25 GB/s in practice. Offload copies are counted as not overlapped with compute.
PCIE_GB_S = 25.0


def matmul_flops(params: int, tokens: int) -> int:
    """Forward FLOPs of the matmuls: 2 * N * T (one multiply and one add per weight per token).

    Source: Kaplan et al. 2020 (arXiv:2001.08361) §2.1, C_forward ~ 2N; the 6N of training (Chinchilla, Hoffmann
    et al. 2022) is this forward plus a backward of twice it (`backward_flops`).
    Example: Llama-3.1-8B, N = 7,504,658,432 (all Linear weights and the lm_head), one sequence of 4096 tokens:
    2 * 7,504,658,432 * 4096 = 61,478,161,874,944 FLOPs (61.5 TFLOP).
    """
    return 2 * params * tokens


def attention_flops(batch: int, seq: int, q_width: int, layers: int, causal: bool) -> int:
    """Forward FLOPs of the attention scores and their weighted sum: Q K^T (2*b*s^2*h_q) and P V (2*b*s^2*h_q),
    4*b*s^2*h_q per layer; halved for causal attention whose kernel skips the masked half (sdpa's flash /
    memory-efficient backends and flash_attention_2 with is_causal); eager computes the full s x s scores.

    Source: Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU Clusters Using
    Megatron-LM" (SC'21, arXiv:2104.04473) §5.1: the 4*B*s^2*h term of a layer's forward (24*B*s*h^2 + 4*B*s^2*h);
    causal halving as in Dao 2023 (FlashAttention-2, arXiv:2307.08691) §4.1.
    Example: Llama-3.1-8B (32 layers, h_q = 4096), b = 1, s = 4096: 4*1*4096^2*4096*32 = 8,796,093,022,208;
    causal: 4,398,046,511,104 FLOPs.
    """
    full = 4 * batch * seq * seq * q_width * layers
    return full // 2 if causal else full


def backward_flops(matmul_params: int, trainable_matmul_params: int, tokens: int, attention: int,
                   grads_flow: bool = True) -> int:
    """Backward FLOPs: input gradients through every matmul (2*N*T) and attention (2 * its forward: dQ, dK, dV and
    dP), when the gradient flows through the blocks, plus weight gradients of the trainable matmuls (2*N_t*T).

    Full fine-tuning (N_t = N): 4*N*T, twice the forward (Kaplan et al. 2020 §2.1; Narayanan et al. 2021 §5.1).
    Frozen weights (LoRA, QLoRA): activation gradients only, 2*N*T, plus the adapters' own 2*N_a*T weight
    gradients (N includes the adapters, whose input gradients flow too).
    Example: Llama-3.1-8B full fine-tuning, one sequence of 4096, causal attention 4,398,046,511,104:
    4 * 7,504,658,432 * 4096 + 2 * 4,398,046,511,104 = 131,752,416,772,096 FLOPs.
    """
    inputs = 2 * matmul_params * tokens + 2 * attention if grads_flow else 0
    return inputs + 2 * trainable_matmul_params * tokens


def recompute_flops(block_matmul_params: int, tokens: int, attention: int) -> int:
    """Gradient checkpointing reruns each checkpointed block's forward during backward: one more forward of the
    blocks (their matmuls, adapters included, and attention; not the lm_head, which is outside the checkpoints).

    Source: Chen et al. 2016 (arXiv:1604.06174); Narayanan et al. 2021 §5.1 (with recomputation the step is 4
    forwards, 96*B*s*L*h^2 instead of 72); Korthikanti et al. 2022 (arXiv:2205.05198) §6.
    Example: Llama-3.1-8B blocks (N - lm_head = 7,504,658,432 - 525,336,576 = 6,979,321,856), 4096 tokens,
    causal attention 4,398,046,511,104: 57,174,604,644,352 + 4,398,046,511,104 = 61,572,651,155,456 FLOPs.
    """
    return matmul_flops(block_matmul_params, tokens) + attention


def compute_time_s(flops: int, dense_tflops: float, utilization: float = MFU) -> float:
    """Seconds for `flops` at `utilization` of the GPU's dense (non-sparse) tensor FLOP/s for the compute dtype.

    Formula: flops / (dense_tflops * 1e12 * utilization).
    Example: 197,628,625,158,144 FLOPs (Llama-3.1-8B full fine-tuning, one 4096-token sequence) on an H100 SXM
    (989.4 bf16 TFLOP/s) at 0.4: 197,628,625,158,144 / 395.76e12 = 0.49936 s.
    """
    return flops / (dense_tflops * 1e12 * utilization)


def dequantize_time_s(quantized_params: int, packed_bytes: float, compute_bytes: int, passes: int,
                      bandwidth_gb_s: float) -> float:
    """bitsandbytes dequantizes every 4-bit (or 8-bit) weight to the compute dtype before each matmul that uses it,
    in the forward and again for the input gradient in backward (and in the recomputed forward under gradient
    checkpointing): a memory-bound kernel that reads the packed weight and writes the 16-bit copy. Its FLOPs are
    negligible; its time is bytes / bandwidth (quantization constants left out).

    Formula: passes * P_q * (packed + c) / (bandwidth_gb_s * 1e9).
    Source: bitsandbytes/autograd/_functions.py MatMul4Bit.forward / .backward (dequantize_4bit, then matmul).
    Example: Llama-3.1-8B nf4 (6,979,321,856 quantized block weights, 0.5 B packed, bf16), forward + backward
    (2 passes) on an H100 SXM (3350 GB/s): 2 * 6,979,321,856 * 2.5 / 3.35e12 = 0.010417 s.
    """
    return passes * quantized_params * (packed_bytes + compute_bytes) / (bandwidth_gb_s * 1e9)


def offload_optimizer_bytes(trainable_params: int, grad_bytes: int, num_gpus: int) -> int:
    """Host <-> GPU traffic of one optimizer step under DeepSpeed ZeRO-Offload: each GPU sends its partition of the
    16-bit gradients to the CPU and receives its partition of the updated 16-bit parameters: 2 * c * P_t / N.

    Source: Ren et al. 2021, "ZeRO-Offload" (arXiv:2101.06840) §4.1: fp16 gradients (2M bytes) to the CPU,
    fp16 parameters (2M bytes) back, per step.
    Example: 8,030,261,248 trainable params, bf16, 1 GPU: 32,121,044,992 B.
    """
    return -(-2 * grad_bytes * trainable_params // num_gpus)


def offload_params_bytes(total_params: int, param_bytes: int, num_gpus: int, passes: int) -> int:
    """Host -> GPU traffic of ZeRO-3 parameter offload per micro-step: every forward (and backward, and
    recomputed forward) fetches each GPU's partition of the 16-bit parameters from CPU memory: passes * c * P / N.

    Source: Rajbhandari et al. 2021, "ZeRO-Infinity" (arXiv:2104.07857) §5: parameters live in CPU/NVMe memory and
    are gathered layer by layer for forward and backward.
    Example: 8,030,261,248 params, bf16, 8 GPUs, forward + backward: 2 * 2 * 8,030,261,248 / 8 = 4,015,130,624 B.
    """
    return -(-passes * param_bytes * total_params // num_gpus)


def transfer_time_s(nbytes: int, gb_s: float = PCIE_GB_S) -> float:
    """Seconds to move `nbytes` at `gb_s` GB/s (10^9 B/s): PCIe for offload, HBM bandwidth for memory-bound decode.

    Example: 32,121,044,992 B over PCIe at 25 GB/s: 1.2848 s.
    """
    return nbytes / (gb_s * 1e9)


def bnb_decode_extra_bytes(quantized_params: int, weight_dtype: str, batch: int, compute_bytes: int) -> int:
    """Weight traffic a bitsandbytes layer adds to one decode step beyond reading its packed weights.

    - 4-bit (nf4 / fp4): one token (batch 1) takes the inference kernel that reads the packed weights
      (bnb.matmul_4bit -> gemv_4bit): nothing extra; a batch of tokens dequantizes each weight to a c-byte copy
      and multiplies that (MatMul4Bit: dequantize_4bit, then the matmul): + 2c per parameter (write, read).
    - LLM.int8() (int8): its int8 GEMM reads 1 byte a parameter, but activation quantization, the int8 matmul,
      the dequantization of its output and the fp16 outlier matmul run as separate kernels, and people measure
      its generation 2-5x slower than 16-bit; memplan does not model those kernels, so it times the step as no
      faster than 16-bit weights (a lower bound on its time): + (c - 1) per parameter.

    Source: bitsandbytes/autograd/_functions.py matmul_4bit (the gemv path when A has one row and needs no
    gradient), MatMul4Bit.forward, MatMul8bitLt.forward; Dettmers et al. 2022 (arXiv:2208.07339) §3.
    Example: Llama-3.1-8B's 6,979,321,856 quantized weights in bf16: nf4 at batch 1: 0; nf4 at batch 8:
    27,917,287,424; int8: 6,979,321,856.
    """
    if weight_dtype in ("nf4", "fp4"):
        return 0 if batch == 1 else 2 * compute_bytes * quantized_params
    if weight_dtype == "int8":
        return (compute_bytes - 1) * quantized_params
    return 0


def decode_step_time_s(weight_bytes: int, kv_cache_bytes: int, bandwidth_gb_s: float) -> float:
    """One decode step of a batch is memory-bound: it reads every weight once and the whole KV cache once
    (compute is a few FLOPs per byte read, far below the GPU's FLOP/byte ratio), at the datasheet bandwidth (an
    upper bound on speed; no utilization factor).

    Formula: (weights + kv_cache) / (bandwidth_gb_s * 1e9).
    Source: Pope et al. 2022, "Efficiently Scaling Transformer Inference" (arXiv:2211.05102) §2.1 (decode is
    memory-bandwidth bound at small batch: time ~ bytes of weights and KV cache / bandwidth).
    Example: Llama-3.1-8B bf16 weights 16,060,522,496 B and 8 sequences of 1280 tokens of bf16 KV cache
    (8 * 1280 * 131,072 = 1,342,177,280 B) on an H100 SXM (3350 GB/s): 17,402,699,776 / 3.35e12 = 0.0051948 s.
    """
    return (weight_bytes + kv_cache_bytes) / (bandwidth_gb_s * 1e9)
