"""Where a training step's states live per GPU under data parallelism and DeepSpeed ZeRO / FSDP
(memplan.terms.sharding): weights, gradients, optimizer states, communication buffers and gathered parameters.
The same placement serves both engines: the trace engine traces one GPU's step and places these."""

from __future__ import annotations

from dataclasses import dataclass

from memplan.architecture import ModelInfo
from memplan.engines.formula.static import static_terms
from memplan.spec import JobSpec
from memplan.terms import host as hm
from memplan.terms import sharding as sh
from memplan.terms.dtypes import dtype_bytes


@dataclass
class HeldStates:
    """Per-GPU bytes of what a training step holds besides activations, after data parallelism / ZeRO."""

    weights: int
    grads: int
    states: int  # optimizer states inside PyTorch's allocator
    step_temp: int  # the optimizer step's temporaries
    buckets: int  # DDP / ZeRO communication buckets (backward and step)
    live: int  # ZeRO-3's gathered parameters
    outside: dict[str, int]  # bytes outside PyTorch's allocator (paged states, NCCL)
    host: int = 0  # CPU memory per node (DeepSpeed's offload and per-process model copies)


def held_states(info: ModelInfo, spec: JobSpec, notes: list[str]) -> HeldStates:
    """Weights, gradients, optimizer states and communication buffers per GPU (memplan.terms.sharding); used by
    both engines (the trace engine traces one GPU and places these)."""
    st = static_terms(info, spec)
    zero, n_gpu, tr = spec.zero_stage, spec.num_gpus, st.tr
    quantized = spec.weight_dtype in ("int8", "nf4", "fp4", "int4")
    weights = st.weights
    outside: dict[str, int] = {}
    host = 0  # CPU memory: only DeepSpeed's is modelled
    if zero == 0:
        grads, states, step_temp = st.grads, st.states, st.step_temp
        if st.paged:
            outside["paged_optimizer_states"] = st.paged
        buckets = sh.ddp_bucket_bytes(grads, n_gpu)
        live = 0
    else:
        k = dtype_bytes(spec.compute_dtype)
        if quantized:
            weights = weights if zero < 3 else -(-weights // n_gpu)
        else:
            weights = sh.zero_param_bytes(info.total_params, k, zero, n_gpu, spec.offload_params)
            if spec.method not in ("full", "freeze"):
                weights += sh.zero_param_bytes(tr.count, k, zero, n_gpu, spec.offload_params)
        grads = sh.zero_grad_bytes(tr.count, k, zero, n_gpu, spec.offload_optimizer)
        per_param = st.fp32_states / tr.count if tr.count else 0.0
        states = sh.zero_optimizer_bytes(tr.count, per_param, k, zero, n_gpu, spec.offload_optimizer)
        step_temp = 0  # DeepSpeed's fused optimizers update in place
        buckets = sh.zero_bucket_bytes(info.hidden_size, zero, k)
        live = sh.zero3_live_param_bytes(info.largest_module_params, k) if zero == 3 else 0
        notes.append(f"DeepSpeed ZeRO-{zero}: 16-bit model, fp32 master weights and fp32 optimizer states "
                     "partitioned as deepspeed's estimators count them; HF 'auto' bucket sizes (h^2)")
        per_node, nodes = hm.nodes_for(n_gpu)
        host = hm.zero_host_bytes(info.total_params, info.largest_module_params, zero, per_node, nodes,
                                  spec.offload_optimizer, spec.offload_params)
        notes.append(f"host_bytes: CPU memory per node as DeepSpeed's estimators count it ({per_node} GPU(s) per "
                     f"node, {nodes} node(s); zero.Init under ZeRO-3): {host / 2**30:.1f} GiB")
    if n_gpu > 1:
        outside["nccl_buffers"] = sh.nccl_buffer_bytes(n_gpu)
    return HeldStates(weights, grads, states, step_temp, buckets, live, outside, host)
