"""The Estimate (shared/DESIGN.md's JSON: keys are a contract, change only by adding) and the one `assemble` that
every engine ends with: the peak phase, peak reserved, the CUDA context, memory outside PyTorch's allocator, the
range and whether it fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

from pydantic import BaseModel, Field

from memplan import catalog
from memplan.architecture import ModelInfo
from memplan.job import GpuInfo, ResolvedJob
from memplan.methods import kbit_prepared
from memplan.spec import JobSpec
from memplan.terms import overhead as ov
from memplan.terms.dtypes import GIB
from memplan.terms import uncertainty as unc

Verdict = Literal["fits", "borderline", "does_not_fit"]
#: how every surface spells a verdict for people
VERDICT_LABELS: dict[str, str] = {"fits": "FITS", "borderline": "BORDERLINE", "does_not_fit": "DOES NOT FIT"}


class ParamCounts(BaseModel):
    total: int
    trainable: int


class ByteRange(BaseModel):
    low_bytes: int
    high_bytes: int


class ModelSummary(BaseModel):
    id: str
    model_type: str
    head: str


class ServingBudget(BaseModel):
    """A serving engine's memory budget per GPU (task serve), in the terms its startup log uses."""

    engine: str = Field(description="vllm | sglang")
    engine_version: str = Field(description="the engine version whose rules are modelled")
    tensor_parallel_size: int
    gpu_memory_utilization: float = Field(description="vLLM gpu_memory_utilization / SGLang mem_fraction_static")
    cuda_total_bytes: int = Field(description="the GPU's memory as CUDA reports it (the engines' 'total memory')")
    requested_bytes: int = Field(description="the engine's share of the GPU: utilization x total memory (SGLang: "
                                             "x the memory free before loading)")
    weights_bytes: int = Field(description="'Model loading took': weights on this GPU, LoRA slots included")
    lora_bytes: int = Field(description="the LoRA adapter slots (part of weights_bytes for vLLM; SGLang's pool)")
    activation_bytes: int = Field(description="the profile run's peak (torch allocated) at max_num_batched_tokens")
    cuda_graph_bytes: int
    cuda_graph_in_budget: bool = Field(description="whether the engine subtracts CUDA graph memory from the KV "
                                                   "budget (else it comes on top of the requested share)")
    non_torch_bytes: int = Field(description="memory outside torch's allocator since startup: NCCL, kernels")
    kv_cache_bytes: int = Field(description="what vLLM logs as 'Available KV cache memory'")
    kv_cache_tokens: int = Field(description="'GPU KV cache size: N tokens'")
    max_concurrency: float = Field(description="'Maximum concurrency for max_model_len tokens per request'")
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    block_size: int
    kv_bytes_per_token: int = Field(description="KV bytes one token takes across all layers on this GPU")
    request_kv_bytes: int = Field(description="the KV cache one request of max_model_len needs (the engine refuses "
                                              "to start when the budget is smaller)")
    required_bytes: int = Field(description="what the engine needs of its requested share to serve one request of "
                                            "max_model_len: weights + activations + non-torch (+ graphs) + "
                                            "request_kv_bytes")
    largest_max_model_len: int = Field(description="the longest max_model_len the KV budget serves (vLLM's "
                                                   "auto-fit)")
    kv_tokens_per_lora_slot: int = Field(0, description="KV cache tokens one more adapter slot costs")


class Estimate(BaseModel):
    """The estimate's JSON (shared/DESIGN.md); keys are a contract, change only by adding."""

    peak_allocated_bytes: int = Field(description="torch.cuda.max_memory_allocated() per GPU")
    peak_reserved_bytes: int = Field(description="torch.cuda.max_memory_reserved() per GPU")
    peak_bytes: int = Field(description="what nvidia-smi shows for the process: reserved + context + non-PyTorch")
    components: dict[str, int] = Field(description="bytes by term at the peak; they add up to peak_bytes")
    peak_phase: str
    params: ParamCounts
    gpu: GpuInfo
    fits: bool
    headroom_bytes: int
    range: ByteRange = Field(description="calibrated: every stored CUDA run of the job's family measured a device "
                                         "peak inside this range of its estimate (memplan.terms.uncertainty)")
    assumptions: list[str]
    phases: dict[str, int] = Field(description="peak allocated bytes in each phase")
    model: ModelSummary
    engine: str = "formula"
    verdict: Verdict = Field(description="fits: range.high within the usable memory; does_not_fit: range.low above "
                                         "it; borderline: the usable memory lies inside the range")
    host_bytes: int = Field(0, description="CPU memory per node the job needs beside its GPUs: DeepSpeed's "
                                           "offloaded states and per-process model copies (0: none modelled)")
    host_memory_plausible: bool | None = Field(
        None, description="false when host_bytes exceeds the most CPU memory a common node with this GPU has (GPU "
                          "catalog); null when the job needs none or the GPU has no such figure")
    serving: ServingBudget | None = Field(None, description="task serve only: the serving engine's budget per GPU")


@dataclass
class Phase:
    """One phase of the step (load, forward, backward, optimizer_step; prefill, decode): allocated bytes by
    component at its peak."""

    name: str
    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def assemble(r: ResolvedJob, phases: list[Phase], trainable: int, outside: dict[str, int],
             fragmentation: Callable[[int], int], engine: str = "formula", host_bytes: int = 0) -> Estimate:
    """The Estimate from per-phase allocated bytes (by component): adds the cuBLAS workspace to every phase after
    load, takes the peak phase, adds `fragmentation(peak_allocated)` for reserved and the CUDA context and
    memory outside PyTorch (`outside`, by component) for peak_bytes."""
    spec, info, gpu = r.spec, r.info, r.gpu
    workspace = ov.cublas_workspace_bytes(r.compute_capability, 2 if spec.task == "train" else 1)
    for ph in phases:
        if ph.name != "load":
            ph.parts["cublas_workspace"] = workspace
    peak = max(phases, key=lambda p: p.total)
    allocated = peak.total
    frag = fragmentation(allocated)
    context = ov.cuda_context_bytes(spec.task, spec.weight_dtype == "int8")
    components = {k: v for k, v in peak.parts.items()}
    components["allocator_fragmentation"] = frag
    components["cuda_context"] = context
    components.update(outside)
    reserved = allocated + frag
    peak_bytes = reserved + context + sum(outside.values())
    family = range_family(spec, r.attention)
    runs, low_ratio, high_ratio = range_calibration(engine, family)
    low, high = unc.calibrated_range_bytes(peak_bytes, low_ratio, high_ratio)
    notes = r.notes + _assumptions(spec, info, r.attention, r.optimizer_impl, context)
    plausible = host_memory_plausible(host_bytes, gpu.node_host_memory_bytes)
    if plausible is False:
        notes.append(f"host memory: {host_bytes / GIB:.0f} GiB of CPU memory per node is more than the "
                     f"{gpu.node_host_memory_bytes / GIB:.0f} GiB the largest common {gpu.id} node has (GPU "
                     "catalog): plan for a larger host, more nodes, or less offload")
    notes.append(f"range: the {runs} stored CUDA runs of this family ({family}) measured {low_ratio:.3f}x to "
                 f"{high_ratio:.3f}x their estimated device peak; a new run lands at or below range.high with "
                 f"probability about {unc.new_run_coverage(runs):.0%} (profiles/, docs/accuracy.md)")
    return Estimate(
        peak_allocated_bytes=allocated,
        peak_reserved_bytes=reserved,
        peak_bytes=peak_bytes,
        components=components,
        peak_phase=peak.name,
        params=ParamCounts(total=info.total_params, trainable=trainable),
        gpu=gpu,
        fits=peak_bytes <= gpu.usable_bytes,
        headroom_bytes=gpu.usable_bytes - peak_bytes,
        range=ByteRange(low_bytes=low, high_bytes=high),
        assumptions=notes,
        phases={p.name: p.total for p in phases},
        model=ModelSummary(id=info.model_id, model_type=info.model_type, head=info.head),
        engine=engine,
        verdict=verdict(low, high, gpu.usable_bytes),
        host_bytes=host_bytes,
        host_memory_plausible=plausible,
    )


def assemble_serving(r: ResolvedJob, b: ServingBudget, components: dict[str, int], notes: list[str],
                     non_kv_bytes: int) -> Estimate:
    """The Estimate of a serve job: `components` are what nvidia-smi shows while serving (they add up to
    peak_bytes). Whether it fits is the engine's own start rule: what it needs of its requested share to serve
    one request of max_model_len (ServingBudget.required_bytes) within that share, and the share within the
    GPU. `range` brackets that need: the modelled non-KV bytes (`non_kv_bytes`, activations, non-torch, graphs)
    times the measured / estimated ratios of the published startup logs (calibration.json, engine "serving").
    """
    info, gpu = r.info, r.gpu
    peak = sum(components.values())
    context = components.get("cuda_context", 0)
    allocated = components["weights"] + components.get("lora_slots", 0) + components["kv_cache"] + \
        components["activations"]
    runs, low_ratio, high_ratio = range_calibration("serving", serving_family(b.engine, info))
    fixed = b.required_bytes - non_kv_bytes
    need = context + b.required_bytes
    low = context + fixed + math.floor(non_kv_bytes * low_ratio)
    high = context + fixed + math.ceil(non_kv_bytes * high_ratio)
    low, high = min(low, need), max(high, need)
    capacity = serving_capacity_bytes(context, b.requested_bytes, peak, gpu.usable_bytes)
    out = list(r.notes) + notes
    if runs:
        out.append(f"range: what the engine needs of its share to serve one {b.max_model_len:,}-token request; the "
                   f"modelled non-KV memory (activations, non-torch, graphs) times the {low_ratio:.3f}x to "
                   f"{high_ratio:.3f}x the {runs} published startup logs measured (docs/published-serving.md)")
    else:
        out.append(f"range: what the engine needs of its share to serve one {b.max_model_len:,}-token request, not "
                   "calibrated (no published log of this engine separates what it subtracts); "
                   "docs/published-serving.md shows its KV errors")
    if peak > gpu.usable_bytes:
        out.append(f"the engine's share plus what it holds outside it ({peak / GIB:.2f} GiB) exceeds the "
                   f"{gpu.usable_bytes / GIB:.2f} GiB usable: lower the utilization")
    if b.kv_cache_bytes <= 0:
        out.append("no memory is left for the KV cache: vLLM stops at startup ('No available memory for the cache "
                   "blocks')")
    elif b.request_kv_bytes > b.kv_cache_bytes:
        out.append(f"one request of max_model_len {b.max_model_len:,} needs {b.request_kv_bytes / GIB:.2f} GiB of "
                   f"KV cache, more than the {b.kv_cache_bytes / GIB:.2f} GiB available: the engine refuses to start; "
                   f"the longest that fits is {b.largest_max_model_len:,} tokens")
    return Estimate(
        peak_allocated_bytes=allocated,
        peak_reserved_bytes=allocated + components.get("cuda_graphs", 0),
        peak_bytes=peak,
        components=components,
        peak_phase="serve",
        params=ParamCounts(total=info.total_params, trainable=0),
        gpu=gpu,
        fits=need <= capacity,
        headroom_bytes=capacity - need,
        range=ByteRange(low_bytes=low, high_bytes=high),
        assumptions=out,
        phases={"load": components["weights"] + components.get("lora_slots", 0),
                "profile": components["weights"] + components.get("lora_slots", 0) + components["activations"],
                "serve": allocated},
        model=ModelSummary(id=info.model_id, model_type=info.model_type, head=info.head),
        engine="serving",
        verdict=verdict(low, high, capacity),
        serving=b,
    )


def serving_family(engine: str, info: ModelInfo) -> str:
    """The family of serve jobs whose published logs calibrate the range: the engine, and apart its mixture-of-
    experts models (whose fused-MoE buffers the profile run holds, not modelled yet)."""
    return f"{engine}_moe" if info.num_experts else engine


def serving_capacity_bytes(context: int, requested: int, peak: int, usable: int) -> int:
    """What a serving engine can give its need: its requested share plus the memory it held before sizing it, less
    whatever the engine's whole footprint (`peak`, graphs outside the share included) overflows the GPU by (that
    much of the share does not exist: the engine would not start, or run out of memory capturing graphs).

    Example: 0.51 GiB held + 75.23 GiB requested on an H100 (79.15 GiB usable), 76.65 GiB in all: 75.74 GiB; at
    0.99 with 0.9 GiB of graphs outside the share (79.8 GiB in all): 78.90 - 0.65 = 78.25 GiB."""
    return context + requested - max(0, peak - usable)


def demand_bytes(e: Estimate) -> int:
    """What a job needs of its GPU, the figure `check` compares with the capacity: peak_bytes, or for a serve job
    what the engine needs of its share (held memory + ServingBudget.required_bytes)."""
    if e.serving is None:
        return e.peak_bytes
    return e.components.get("cuda_context", 0) + e.serving.required_bytes


def capacity_bytes(e: Estimate) -> int:
    """What a job's need is compared with: the GPU's usable memory, or for a serve job the engine's share."""
    if e.serving is None:
        return e.gpu.usable_bytes
    return serving_capacity_bytes(e.components.get("cuda_context", 0), e.serving.requested_bytes, e.peak_bytes,
                                  e.gpu.usable_bytes)


def host_memory_plausible(host_bytes: int, node_host_memory_bytes: int | None) -> bool | None:
    """Whether a node with this GPU can hold the job's host memory: None when the job needs none or the GPU has
    no node figure."""
    if not host_bytes or not node_host_memory_bytes:
        return None
    return host_bytes <= node_host_memory_bytes


def verdict(low_bytes: int, high_bytes: int, capacity_bytes: int) -> Verdict:
    """fits when the whole range is within the capacity, does_not_fit when the whole range is above it,
    borderline when the capacity lies inside the range."""
    if high_bytes <= capacity_bytes:
        return "fits"
    return "does_not_fit" if low_bytes > capacity_bytes else "borderline"


def range_family(spec: JobSpec, attention: str) -> str:
    """The family of job whose stored runs calibrate its range: inference; training whose backward recomputes
    checkpointed blocks or holds eager attention's s^2 blocks (train_recompute: the caching allocator keeps the
    most memory it cannot reuse there, so the measured device peak strays furthest above the estimate); other
    training (train)."""
    if spec.task != "train":
        return "inference"
    return "train_recompute" if spec.gradient_checkpointing or attention == "eager" else "train"


def range_calibration(engine: str, family: str) -> tuple[int, float, float]:
    """(runs, low_ratio, high_ratio) of the family for the engine (memplan/catalog/calibration.json); a family
    with too few runs, or an engine not calibrated yet, uses the formula engine's runs of every family."""
    engines = catalog.calibration()["engines"]
    families = engines.get(engine) or engines["formula"]
    entry = families.get(family) or families.get("all") or {"runs": 0, "low_ratio": 1.0, "high_ratio": 1.0}
    return entry["runs"], entry["low_ratio"], entry["high_ratio"]


#: the config keys that set a model's size (any one spelling of each)
_SIZE_KEYS = (("hidden_size", "n_embd", "d_model"), ("num_hidden_layers", "n_layer", "num_layers"),
              ("num_attention_heads", "n_head", "num_heads"), ("vocab_size",))


def _assumptions(spec: JobSpec, info: ModelInfo, attention: str, optimizer_impl: str, context: int) -> list[str]:
    out = [f"model {info.model_id}: {info.model_class}, {info.total_params:,} parameters "
           f"(built on the meta device with transformers)"]
    if spec.inline_config is not None:
        missing = [names[0] for names in _SIZE_KEYS if not any(n in spec.inline_config for n in names)]
        if missing:
            out.append(f"model_config gives no {', '.join(missing)}: transformers' defaults for "
                       f"{info.model_type} were used")
    if spec.task == "train":
        out.append("per GPU, steady state from the second optimizer step on (optimizer states are created "
                   "lazily in the first step); HF Trainer-style step: forward with labels, backward, clip, step, "
                   "zero_grad(set_to_none=True)")
        out.append(f"attention '{attention}', no padding mask (packed or equal-length sequences); "
                   f"micro-batch {spec.micro_batch_size} x {spec.seq_len} tokens")
        if spec.method in ("lora", "qlora", "ia3", "prompt_tuning", "prefix_tuning"):
            out.append("PEFT defaults: adapter weights upcast to fp32 (autocast_adapter_dtype=True)")
        if kbit_prepared(spec):
            out.append("QLoRA setup: peft.prepare_model_for_kbit_training casts embeddings, norms and lm_head "
                       "to fp32; bitsandbytes blocksize 64" + (", double quant" if spec.double_quant else ""))
        if spec.zero_stage == 0 and spec.optimizer in ("adamw", "sgd", "sgd_momentum"):
            out.append(f"optimizer torch {spec.optimizer} ({optimizer_impl} implementation)")
        elif spec.optimizer != "none":
            out.append(f"optimizer {spec.optimizer}")
    else:
        inf = spec.inference
        out.append(f"generate(): batch {inf.batch_size}, prompt {inf.prompt_len} + {inf.max_new_tokens} new "
                   f"tokens, {inf.kv_cache_dtype} DynamicCache, logits for the last position only")
    out.append(f"CUDA context {context / 2**20:.0f} MiB ({ov.CUDA_CONTEXT_INIT_BYTES / 2**20:.0f} MiB after init + "
               "the kernel modules this step loads), "
               f"measured on H100 runs (docs/accuracy.md) of one stack: {ov.CUDA_CONTEXT_STACK} "
               "(CUDA_MODULE_LOADING=LAZY, the default since CUDA 11.7; eager loading adds hundreds of MiB to over "
               "1 GiB, not modelled); the driver reserve of 512 MiB is a prior")
    if spec.allocator == "expandable_segments":
        out.append("allocator with expandable segments: 2% of allocated for partly used pages, no loss block (free "
                   "pages are unmapped and remapped before an out-of-memory error); modelled from the allocator's "
                   "source, not yet measured on a GPU")
    else:
        out.append("default caching allocator: fragmentation of one fp32 loss block + 2% of allocated, measured "
                   "on the same runs; PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (allocator: "
                   "expandable_segments) removes the loss block")
    return out
