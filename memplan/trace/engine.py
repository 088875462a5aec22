"""estimate(job, engine="trace"): the Estimate from a traced step, plus the terms a trace cannot see.

The traced part (memplan.trace.run) counts every storage the real code allocates on fake tensors. Added from
memplan.terms, as named components: the cuBLAS workspaces (memplan.estimate.assemble, as for the formula engine),
the fused attention backward's internal buffers (`activations.attention_backward_workspace_bytes`, in the backward
phase), bitsandbytes' dequantization temporaries (inside the stand-ins, memplan.trace.standins), paged optimizer
states (outside PyTorch's allocator) and the CUDA context. Reserved memory comes from replaying the traced
alloc/free log through the caching allocator model (memplan.trace.allocator).
"""

from __future__ import annotations

from typing import Any

from memplan.estimate import Estimate, Phase, ResolvedJob, assemble
from memplan.spec import SpecError
from memplan.trace.allocator import replay

#: the traced phases, in the order of the formula engine's phases
PHASE_ORDER = ("load", "forward", "backward", "optimizer_step", "prefill", "decode")


def check_traceable(r: ResolvedJob) -> None:
    """The tracer runs one process: no ZeRO / FSDP sharding, and only PEFT's methods."""
    spec = r.spec
    if spec.num_gpus > 1 or spec.zero_stage:
        raise SpecError([("engine", "the trace engine traces one GPU (num_gpus 1, zero_stage 0); use engine "
                                    "'formula' for DeepSpeed ZeRO / FSDP jobs")])
    if spec.task == "train" and spec.method == "adapter":
        raise SpecError([("engine", "bottleneck adapters have no PEFT implementation to trace; use engine "
                                    "'formula'")])
    if spec.weight_dtype == "int4":
        raise SpecError([("engine", "int4 (GPTQ/AWQ) kernels are not traced; use engine 'formula'")])
    if spec.task == "inference" and spec.inference.kv_cache_dtype != spec.compute_dtype:
        raise SpecError([("engine", f"transformers' DynamicCache stores the compute dtype ({spec.compute_dtype}); "
                                    f"kv_cache_dtype {spec.inference.kv_cache_dtype} is not traced: use engine "
                                    "'formula'")])
    positions = _learned_positions(r)
    tokens = spec.seq_len + (spec.num_virtual_tokens if spec.method == "prompt_tuning" else 0) \
        if spec.task == "train" else spec.inference.prompt_len + spec.inference.max_new_tokens
    if positions is not None and tokens > positions:
        field = "seq_len" if spec.task == "train" else "inference.prompt_len"
        raise SpecError([(field, f"{r.info.model_type} has learned absolute positions for {positions} tokens; "
                                 f"the job needs {tokens}, which the model cannot run")])


def _learned_positions(r: ResolvedJob) -> int | None:
    """How many positions a learned absolute position table covers (BERT, GPT-2, OPT), None for rotary or
    relative positions, which run at any length."""
    if not any(p.kind == "embedding" and ("position" in p.name or p.name.endswith("wpe.weight"))
               for p in r.info.params):
        return None
    return r.info.max_positions


def trace_estimate(r: ResolvedJob, progress: Any = None) -> Estimate:
    from memplan.trace.run import trace_job

    check_traceable(r)
    log = trace_job(r.spec, r.attention, r.info.head_params, progress=progress)
    peaks: dict[str, Phase] = {}
    for ph in log.phases:  # steady state: the largest occurrence of each phase over the traced steps
        if ph.name in PHASE_ORDER and (ph.name not in peaks or ph.peak_bytes > peaks[ph.name].total):
            peaks[ph.name] = Phase(ph.name, {k: v for k, v in ph.breakdown.items() if v})
    backward = peaks.get("backward")
    if backward is not None:
        backward.parts["attention_backward_workspace"] = _attention_workspace(r)
    phases = [peaks[name] for name in PHASE_ORDER if name in peaks]
    outside = {k: v for k, v in log.outside.items() if v}
    replayed = replay((e.key, e.nbytes) for e in log.events)

    def fragmentation(allocated: int) -> int:
        # replay counts the traced storages; the terms added on top are allocated as whole blocks of their own
        return max(0, replayed.max_reserved_bytes - log.peak_bytes)

    r.notes.append(f"traced {len(log.phases)} phases ({log.ops:,} ops) of the real step on fake tensors; "
                   "reserved memory from replaying the allocation log through a caching-allocator model")
    return assemble(r, phases, log.trainable if r.spec.task == "train" else 0, outside, fragmentation,
                    engine="trace")


def _attention_workspace(r: ResolvedJob) -> int:
    from memplan.estimate import _activation_context, _static_terms
    from memplan.terms.activations import attention_backward_workspace_bytes

    st = _static_terms(r.info, r.spec)
    ctx = _activation_context(r.info, r.spec, st.tr, r.attention)
    return max((attention_backward_workspace_bytes(layer, ctx) for _, layer, _, _ in st.block_groups), default=0)
