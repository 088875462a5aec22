"""The Estimate (shared/DESIGN.md's JSON: keys are a contract, change only by adding) and the one `assemble` that
every engine ends with: the peak phase, peak reserved, the CUDA context, memory outside PyTorch's allocator, the
range and whether it fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pydantic import BaseModel, Field

from memplan.architecture import ModelInfo
from memplan.job import GpuInfo, ResolvedJob
from memplan.methods import kbit_prepared
from memplan.spec import JobSpec
from memplan.terms import overhead as ov

#: relative uncertainty of the uncalibrated activation-side terms (activations, logits, transients), for `range`
ACTIVATION_UNCERTAINTY = 0.15
FRAGMENTATION_LOW, FRAGMENTATION_HIGH = 0.01, 0.08
CONTEXT_LOW, CONTEXT_HIGH = 680 * 2**20, 900 * 2**20  # measured range, profiles/


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
    range: ByteRange
    assumptions: list[str]
    phases: dict[str, int] = Field(description="peak allocated bytes in each phase")
    model: ModelSummary
    engine: str = "formula"


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
             fragmentation: Callable[[int], int], engine: str = "formula") -> Estimate:
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
    context = ov.cuda_context_bytes()
    components = {k: v for k, v in peak.parts.items()}
    components["allocator_fragmentation"] = frag
    components["cuda_context"] = context
    components.update(outside)
    reserved = allocated + frag
    peak_bytes = reserved + context + sum(outside.values())
    uncertain = sum(v for k, v in peak.parts.items() if k in ("activations", "logits", "temporaries"))
    low = peak_bytes - int(ACTIVATION_UNCERTAINTY * uncertain) - (frag - int(FRAGMENTATION_LOW * allocated)) \
        - (context - CONTEXT_LOW)
    high = peak_bytes + int(ACTIVATION_UNCERTAINTY * uncertain) + (int(FRAGMENTATION_HIGH * allocated) - frag) \
        + (CONTEXT_HIGH - context)
    notes = r.notes + _assumptions(spec, info, r.attention, r.optimizer_impl)
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
        range=ByteRange(low_bytes=min(low, peak_bytes), high_bytes=max(high, peak_bytes)),
        assumptions=notes,
        phases={p.name: p.total for p in phases},
        model=ModelSummary(id=info.model_id, model_type=info.model_type, head=info.head),
        engine=engine,
    )


#: the config keys that set a model's size (any one spelling of each)
_SIZE_KEYS = (("hidden_size", "n_embd", "d_model"), ("num_hidden_layers", "n_layer", "num_layers"),
              ("num_attention_heads", "n_head", "num_heads"), ("vocab_size",))


def _assumptions(spec: JobSpec, info: ModelInfo, attention: str, optimizer_impl: str) -> list[str]:
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
    out.append("CUDA context 767 MiB and allocator fragmentation (one fp32 loss block + 2% of allocated) are "
               "measured on H100 runs (docs/accuracy.md); the driver reserve of 512 MiB is a prior")
    return out
