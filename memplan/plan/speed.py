"""Step time and tokens/s of a job from `memplan.terms.compute`: which weights a token's matmuls use, which of them
train, which are quantized (selection logic over the model's parameters; the formulas live in the terms).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from memplan import catalog
from memplan.architecture import ModelInfo, model_cache
from memplan.engines.formula.static import static_key, static_terms
from memplan.job import resolve
from memplan.result import Estimate
from memplan.spec import GpuMemorySpec, JobSpec
from memplan.terms import compute as cp
from memplan.terms import kv_cache as kv
from memplan.terms.dtypes import dtype_bytes

#: where the job's GPU has no catalog speeds (a {memory_gib} GPU), ratios (slowdowns) use this one's
REFERENCE_GPU = "H100-SXM-80GB"
_PACKED_BYTES = {"nf4": 0.5, "fp4": 0.5, "int8": 1.0}


@dataclass(frozen=True)
class Rates:
    tflops: float  # dense tensor TFLOP/s in the compute dtype
    bandwidth_gb_s: float
    reference: bool  # borrowed from REFERENCE_GPU: fine for ratios, not for absolute times
    note: str | None = None


def rates(spec: JobSpec) -> Rates:
    """The GPU's dense TFLOP/s for the job's compute dtype and its memory bandwidth (catalog/gpus/*.json)."""
    if isinstance(spec.gpu, GpuMemorySpec):
        ref = rates(spec.model_copy(update={"gpu": REFERENCE_GPU}))
        return Rates(ref.tflops, ref.bandwidth_gb_s, True, f"a custom GPU has no catalog speed: slowdowns use "
                                                            f"{REFERENCE_GPU} rates, step times are left out")
    entry = catalog.get_gpu(spec.gpu)
    dtype = spec.compute_dtype
    tflops = entry.dense_tflops.get(dtype)
    note = None
    if not tflops:
        tflops = entry.dense_tflops.get("fp32") or 1.0
        note = f"{entry.id} has no {dtype} tensor cores: step times use its fp32 rate ({tflops:g} TFLOP/s)"
    return Rates(float(tflops), float(entry.memory_bandwidth_gb_s or 1.0), False, note)


@dataclass(frozen=True)
class MatmulCounts:
    """Per-token matmul weights of one model under one method (see terms.compute's notation)."""

    matmul: int  # N + N_a: base weights (routed experts at their active share) and adapters
    head: int  # the output layer's weights (outside gradient checkpoints)
    trainable: int  # N_t: matmul weights with a weight gradient
    quantized: int  # weights bitsandbytes dequantizes before each matmul
    grads_flow: bool
    trainable_params: int  # all trainable parameters (offloaded optimizer traffic)


_COUNTS: dict[tuple, MatmulCounts] = {}


def matmul_counts(info: ModelInfo, spec: JobSpec) -> MatmulCounts:
    key = (info, static_key(spec))
    hit = _COUNTS.get(key)
    if hit is None:
        if len(_COUNTS) > 1024:
            _COUNTS.clear()
        hit = _COUNTS[key] = _matmul_counts(info, spec)
    return hit


def clear_caches() -> None:
    """Forget the cached matmul counts (bench/plan_speed.py times a first plan with it; also when the model
    cache evicts a model)."""
    _COUNTS.clear()


model_cache.on_evict(clear_caches)


def _matmul_counts(info: ModelInfo, spec: JobSpec) -> MatmulCounts:
    tr = static_terms(info, spec).tr if spec.task == "train" else None
    share = (info.experts_per_token, info.num_experts) if info.num_experts else (1, 1)
    base = quantizable = 0
    for p in info.params:
        if p.bias or p.kind not in ("linear", "expert"):
            continue
        n = p.numel * share[0] // share[1] if p.kind == "expert" else p.numel
        base += n
        if p.quantizable:
            quantizable += n
    head = sum(p.numel for p in info.params if p.name in info.head_params and not p.bias)
    if info.tied_embeddings:  # the tied lm_head's matmul uses the embedding's weight (kind "embedding")
        base += head
    adapters = trainable = 0
    if tr is not None:
        adapters = sum(t.numel for t in tr.tensors if t.name.endswith((".lora_A", ".lora_B"))
                       or t.name.startswith("adapter."))
        if tr.base_linears_trainable:
            trainable = base + adapters
        else:
            names = {t.name for t in tr.tensors}
            trainable = adapters + (head if any(n in names for n in info.head_params) else 0)
    quantized = quantizable if spec.weight_dtype in _PACKED_BYTES else 0
    return MatmulCounts(matmul=base + adapters, head=head, trainable=trainable, quantized=quantized,
                        grads_flow=tr.grads_flow if tr is not None else False,
                        trainable_params=tr.count if tr is not None else 0)


@lru_cache(maxsize=256)
def _attention_groups(info: ModelInfo, attention: str) -> tuple[tuple[int, bool, int], ...]:
    """(q_width, causal, layers) groups: decoder self-attention is causal (halved unless eager); encoder and
    cross-attention are not."""
    groups: dict[tuple[int, bool], int] = {}
    for layer in info.layers:
        causal = layer.stack == "decoder" and attention != "eager"
        key = (layer.q_width, causal)
        groups[key] = groups.get(key, 0) + 1
        if layer.cross_attention:
            groups[(layer.q_width, False)] = groups.get((layer.q_width, False), 0) + 1
    return tuple((w, c, n) for (w, c), n in groups.items())


def attention_forward_flops(info: ModelInfo, attention: str, batch: int, seq: int) -> int:
    return sum(cp.attention_flops(batch, seq, w, n, c) for w, c, n in _attention_groups(info, attention))


@dataclass(frozen=True)
class Speed:
    step_time_s: float  # training: one optimizer step of one GPU; inference: one decode step of the batch
    tokens_per_s: float  # over all GPUs
    tokens_per_step: int  # over all GPUs
    reference: bool  # rates borrowed from REFERENCE_GPU

    @property
    def seconds_per_token(self) -> float:
        return self.step_time_s / self.tokens_per_step


def training_speed(spec: JobSpec, utilization: float = cp.MFU) -> Speed:
    """One optimizer step: gradient_accumulation_steps micro-steps of micro_batch_size * seq_len tokens (seq_len /
    sequence_parallel_size on each GPU of a sequence-parallel group, which trains one sequence together), each
    forward + backward (+ recomputation under gradient checkpointing) at `utilization` of the dense TFLOP/s, plus
    bitsandbytes dequantization (memory-bound) and DeepSpeed offload copies over PCIe (not overlapped). The job
    as it runs (memplan.job.resolve: a checkpoint's quantization, fp16 on a GPU without bf16)."""
    job = resolve(spec)
    spec, info = job.spec, job.info
    r = rates(spec)
    counts = matmul_counts(info, spec)
    mb, ga, seq, n = spec.micro_batch_size, spec.gradient_accumulation_steps, spec.seq_len, spec.num_gpus
    sp = spec.sequence_parallel_size  # each GPU of a group computes 1/sp of every sequence (tokens or heads)
    tokens = mb * seq // sp
    attention = attention_forward_flops(info, job.attention, mb, seq) // sp
    gc = spec.gradient_checkpointing and counts.grads_flow
    flops = (cp.matmul_flops(counts.matmul, tokens) + attention
             + cp.backward_flops(counts.matmul, counts.trainable, tokens, attention, counts.grads_flow)
             + (cp.recompute_flops(counts.matmul - counts.head, tokens, attention) if gc else 0))
    c = dtype_bytes(spec.compute_dtype)
    passes = 1 + counts.grads_flow + gc
    micro = cp.compute_time_s(flops, r.tflops, utilization)
    if counts.quantized:
        micro += cp.dequantize_time_s(counts.quantized, _PACKED_BYTES[spec.weight_dtype], c, passes,
                                      r.bandwidth_gb_s)
    if spec.offload_params:
        micro += cp.transfer_time_s(cp.offload_params_bytes(info.total_params, c, n, passes))
    step = ga * micro
    if spec.offload_optimizer:
        step += cp.transfer_time_s(cp.offload_optimizer_bytes(counts.trainable_params, c, n))
    per_step = n // sp * mb * ga * seq  # a sequence-parallel group trains one sequence at a time
    return Speed(step, per_step / step, per_step, r.reference)


def inference_speed(spec: JobSpec, e: Estimate) -> Speed:
    """One decode step of the batch at its last position: every weight and the whole KV cache read once, plus what
    bitsandbytes' kernels add (memplan.terms.compute.bnb_decode_extra_bytes); the job as it runs."""
    job = resolve(spec)
    spec, info = job.spec, job.info
    r = rates(spec)
    inf = spec.inference
    dec = [s for s in info.layers if s.stack == "decoder"]
    cache = kv.kv_cache_bytes(len(dec), info.num_kv_heads, info.head_dim, inf.batch_size,
                              inf.prompt_len + inf.max_new_tokens, dtype_bytes(inf.kv_cache_dtype)) \
        if info.head in ("causal_lm", "seq2seq_lm") else 0
    extra = cp.bnb_decode_extra_bytes(matmul_counts(info, spec).quantized, spec.weight_dtype, inf.batch_size,
                                      dtype_bytes(spec.compute_dtype))
    step = cp.decode_step_time_s(e.components.get("weights", 0) + extra, cache, r.bandwidth_gb_s)
    per_step = inf.batch_size * spec.num_gpus
    return Speed(step, per_step / step, per_step, r.reference)


def job_speed(spec: JobSpec, e: Estimate, utilization: float = cp.MFU) -> Speed:
    return training_speed(spec, utilization) if spec.task == "train" else inference_speed(spec, e)
