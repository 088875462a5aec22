"""The Estimate (shared/DESIGN.md's JSON: keys are a contract, change only by adding) and the one `assemble` that
every engine ends with: the peak phase, peak reserved, the CUDA context, memory outside PyTorch's allocator, the
range and whether it fits.
"""

from __future__ import annotations

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
    entry = families.get(family) or families["all"]
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
