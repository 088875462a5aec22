"""estimate(job, engine="trace"): the Estimate from a traced step, plus the terms a trace cannot see.

The traced part (memplan.engines.trace.run) counts every storage the real code allocates on fake tensors. Added from
memplan.terms, as named components: the cuBLAS workspaces (memplan.result.assemble, as for the formula engine),
the fused attention backward's internal buffers (`activations.attention_backward_workspace_bytes`, in the backward
phase), bitsandbytes' dequantization temporaries (inside the stand-ins, memplan.engines.trace.standins), paged optimizer
states (outside PyTorch's allocator) and the CUDA context. Reserved memory comes from replaying the traced
alloc/free log through the caching allocator model (memplan.engines.trace.allocator).
"""

from __future__ import annotations

from typing import Any

from memplan.engines.formula.activations import activation_context
from memplan.engines.formula.placement import held_states
from memplan.engines.formula.static import static_terms
from memplan.engines.trace.allocator import replay
from memplan.job import ResolvedJob
from memplan.result import Estimate, Phase, assemble
from memplan.spec import SpecError
from memplan.terms.activations import attention_backward_workspace_bytes
from memplan.terms.sharding import nccl_buffer_bytes

NAME = "trace"

#: the traced phases, in the order of the formula engine's phases
PHASE_ORDER = ("load", "forward", "backward", "optimizer_step", "prefill", "decode")


def check_traceable(r: ResolvedJob) -> None:
    """What the tracer cannot run: methods without a PEFT implementation, training through LLM.int8() layers,
    GPTQ/AWQ kernels, fp8 KV caches, FSDP's CPU offload and NO_SHARD, sequence parallelism. (Jobs longer than a learned position table
    are refused for both engines, `memplan.job.resolve`.)"""
    spec = r.spec
    if spec.sequence_parallel_size > 1:
        raise SpecError([("engine", "sequence parallelism is not traced (Ulysses' all-to-all and ring attention "
                                    "need real collectives and GPU attention kernels): use engine 'formula'")])
    if spec.task == "train" and spec.parallel_engine == "fsdp":
        if spec.offload_params:
            raise SpecError([("engine", "FSDP CPU offload is not traced (the traced step runs on CPU): use engine "
                                        "'formula'")])
        if spec.zero_stage == 0:
            raise SpecError([("engine", "FSDP NO_SHARD is not traced: use engine 'formula'")])
    if spec.task == "train" and spec.method == "adapter":
        raise SpecError([("engine", "bottleneck adapters have no PEFT implementation to trace; use engine "
                                    "'formula'")])
    if spec.task == "train" and spec.weight_dtype == "int8":
        raise SpecError([("engine", "training through bitsandbytes LLM.int8() layers (an adapter on an 8-bit base) "
                                    "has no stand-in yet: weight_dtype 'int8' is traced for inference only; use "
                                    "engine 'formula'")])
    if spec.weight_dtype == "int4":
        raise SpecError([("engine", "int4 (GPTQ/AWQ) kernels are not traced; use engine 'formula'")])
    if spec.task == "inference" and (spec.inference.num_beams > 1 or spec.inference.cache_implementation != "dynamic"):
        raise SpecError([("engine", "the trace runs greedy decoding with a DynamicCache; num_beams > 1 and a static "
                                    "cache are estimated by engine 'formula'")])
    if spec.task == "inference" and spec.inference.kv_cache_dtype != spec.compute_dtype:
        raise SpecError([("engine", f"transformers' DynamicCache stores the compute dtype ({spec.compute_dtype}); "
                                    f"kv_cache_dtype {spec.inference.kv_cache_dtype} is not traced: use engine "
                                    "'formula'")])


def estimate(r: ResolvedJob, progress: Any = None) -> Estimate:
    """The Estimate of the job from a traced step (two optimizer steps, or prefill and the last decode step),
    calling `progress(message)` as it goes when given."""
    from memplan.engines.trace.run import trace_job

    check_traceable(r)
    spec = r.spec
    fsdp = spec.task == "train" and spec.parallel_engine == "fsdp"
    distributed = spec.task == "train" and (spec.num_gpus > 1 or spec.zero_stage > 0) and not fsdp
    # one GPU's step is traced; data parallelism and ZeRO change what it holds, not what it computes; FSDP2 is
    # traced as itself, on a fake process group (memplan.engines.trace.fsdp)
    one_gpu = spec.model_copy(update={"num_gpus": 1, "zero_stage": 0}) if distributed else spec
    log = trace_job(one_gpu, r.attention, r.info.head_params, progress=progress)
    peaks: dict[str, Phase] = {}
    for ph in log.phases:  # steady state: the largest occurrence of each phase over the traced steps
        if ph.name in PHASE_ORDER and (ph.name not in peaks or ph.peak_bytes > peaks[ph.name].total):
            peaks[ph.name] = Phase(ph.name, {k: v for k, v in ph.breakdown.items() if v})
    backward = peaks.get("backward")
    if backward is not None:
        backward.parts["attention_backward_workspace"] = _attention_workspace(r)
    phases = [peaks[name] for name in PHASE_ORDER if name in peaks]
    outside = {k: v for k, v in log.outside.items() if v}
    host = 0
    if distributed:
        outside, host = _place_held_states(r, one_gpu, phases, outside)
    elif fsdp and spec.num_gpus > 1:
        outside["nccl_buffers"] = nccl_buffer_bytes(spec.num_gpus)
        r.notes.append(f"traced torch FSDP2 at world size {spec.num_gpus} on a fake process group: fully_shard per "
                       f"block and the root, {spec.compute_dtype} param_dtype, {spec.reduce_dtype} reduce_dtype")
    expandable = spec.allocator == "expandable_segments"
    # with expandable segments the replay's reserved is what the allocator reaches without memory pressure, an
    # upper bound: under pressure it unmaps free pages (memplan.terms.overhead.fragmentation_bytes)
    replayed = replay(((e.key, e.nbytes) for e in log.events), expandable_segments=expandable)

    def fragmentation(allocated: int) -> int:
        # replay counts the traced storages; the terms added on top are allocated as whole blocks of their own
        return max(0, replayed.max_reserved_bytes - log.peak_bytes)

    r.notes.append(f"traced {len(log.phases)} phases ({log.ops:,} ops) of the real step on fake tensors; "
                   "reserved memory from replaying the allocation log through a caching-allocator model"
                   + (" with expandable segments" if expandable else ""))
    return assemble(r, phases, log.trainable if r.spec.task == "train" else 0, outside, fragmentation,
                    engine=NAME, host_bytes=host)


def _place_held_states(r: ResolvedJob, one_gpu: Any, phases: list[Phase], outside: dict[str, int]
                       ) -> tuple[dict[str, int], int]:
    """Turn the traced one-GPU step into one GPU's share of a data-parallel / ZeRO job: weights, optimizer states
    and communication buffers as memplan.engines.formula.placement.held_states places them
    (memplan.terms.sharding); the traced gradients scaled by the share each GPU keeps (ZeRO-2/3 reduce-scatter them
    as backward makes them); DeepSpeed's optimizer steps in place, so the traced step's temporaries go.
    Activations stay as traced."""
    held = held_states(r.info, r.spec, r.notes)
    one_gpu_grads = static_terms(r.info, one_gpu).grads  # what the traced step's gradients add up to
    grad_share = held.grads / one_gpu_grads if one_gpu_grads else 0.0
    zero = r.spec.zero_stage
    for ph in phases:
        parts = ph.parts
        if zero:
            parts["weights"] = held.weights
            if ph.name != "load":
                parts["optimizer_states"] = held.states
            if "gradients" in parts:
                parts["gradients"] = int(parts["gradients"] * grad_share)
            if ph.name == "optimizer_step":
                parts["temporaries"] = held.step_temp
        if ph.name != "load":
            parts["zero_buffers"] = held.live + (held.buckets if ph.name in ("backward", "optimizer_step") else 0)
    r.notes.append("traced one GPU's step; weights, gradients, optimizer states and buffers per GPU placed by the "
                   "data-parallel / ZeRO terms (memplan.terms.sharding)")
    return {**{k: v for k, v in outside.items() if not (zero and k == "paged_optimizer_states")}, **held.outside}, \
        held.host


def _attention_workspace(r: ResolvedJob) -> int:
    st = static_terms(r.info, r.spec)
    ctx = activation_context(r.info, r.spec, st.tr, r.attention)
    return max((attention_backward_workspace_bytes(layer, ctx) for _, layer, *_ in st.block_groups), default=0)
