"""Where a training step's states live per GPU under data parallelism and DeepSpeed ZeRO / FSDP
(memplan.terms.sharding): weights, gradients, optimizer states, communication buffers and gathered parameters.
The same placement serves both engines: the trace engine traces one GPU's step and places these."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from memplan.architecture import ModelInfo, model_cache
from memplan.engines.formula.static import static_terms
from memplan.spec import FSDP_STRATEGY, QUANTIZED_DTYPES, JobSpec
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
    #: gathered parameters when backward reaches the bottom block, where they differ from `live`: FSDP reshards
    #: every block after its backward, so only the root and the bottom block remain unsharded (None: `live`)
    live_end: int | None = None


def held_states(info: ModelInfo, spec: JobSpec, notes: list[str]) -> HeldStates:
    """Weights, gradients, optimizer states and communication buffers per GPU (memplan.terms.sharding); used by
    both engines (the trace engine traces one GPU and places these)."""
    place = fsdp_held_states if spec.parallel_engine == "fsdp" else _data_parallel_held_states
    held = place(info, spec, notes)
    if spec.num_gpus > 1:
        held.outside["nccl_buffers"] = sh.nccl_buffer_bytes(spec.num_gpus)
    return held


def _data_parallel_held_states(info: ModelInfo, spec: JobSpec, notes: list[str]) -> HeldStates:
    """DDP (zero_stage 0) or DeepSpeed ZeRO-1/2/3, as deepspeed's estimators count them."""
    st = static_terms(info, spec)
    zero, n_gpu, tr = spec.zero_stage, spec.num_gpus, st.tr
    weights = st.weights
    outside: dict[str, int] = {}
    host = 0  # CPU memory: DeepSpeed's offload and per-process model copies
    if zero == 0:
        grads, states, step_temp = st.grads, st.states, st.step_temp
        if st.paged:
            outside["paged_optimizer_states"] = st.paged
        buckets = sh.ddp_bucket_bytes(grads, n_gpu)
        live = 0
    else:
        k = dtype_bytes(spec.compute_dtype)
        if spec.weight_dtype in QUANTIZED_DTYPES:
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
    return HeldStates(weights, grads, states, step_temp, buckets, live, outside, host)


def fsdp_held_states(info: ModelInfo, spec: JobSpec, notes: list[str]) -> HeldStates:
    """Per-GPU model states of torch FSDP2 as the HF Trainer runs it through accelerate (`fully_shard` on every
    transformer block, then on the root; memplan.terms.sharding.fsdp_*):

    - sharded parameters, gradients and Adam moments in the storage dtype: fp32 when mixed precision is on
      (accelerate's fsdp2_prepare_model upcasts the model to fp32 after sharding), else the weights' dtype;
    - unsharded: the root group (embeddings, final norm, head) in `param_dtype` (the compute dtype) from the
      first forward to the end of backward (the root is not resharded after forward); under FULL_SHARD
      (zero_stage 3) the all-gather output of the block being computed; under SHARD_GRAD_OP (zero_stage 2)
      every block stays unsharded after forward, until its own backward reshards it (so at the bottom block only
      the root and that block are unsharded);
    - in a block's backward, its unsharded gradients and their reduce-scatter input, in the compute dtype
      (reduce_dtype = param_dtype), and under FULL_SHARD the next block's prefetched all-gather;
    - offload_params (CPUOffloadPolicy): the sharded parameters, gradients and optimizer states live in pinned host
      memory; the GPU keeps the unsharded groups and the gradient buffers;
    - NO_SHARD (zero_stage 0) is FSDP over a shard group of one: the whole model in fp32 storage, its compute copy
      unsharded, gradients all-reduced in place (no DDP bucket copy).
    FSDP1 (fsdp_version 1) flattens each wrapped module into one FlatParameter with the same sharded and unsharded
    byte totals up to padding: it is placed the same way."""
    st = static_terms(info, spec)
    tr = st.tr
    n = spec.num_gpus if spec.zero_stage else 1  # the shard group: NO_SHARD replicates
    storage = 4 if spec.mixed_precision != "no" else dtype_bytes(spec.weight_dtype)
    k = dtype_bytes(spec.compute_dtype)
    shard_numel, largest_block, root_unsharded = fsdp_sums(info, n, k)
    adapters = 0 if spec.method in ("full", "freeze") else tr.count  # PEFT's fp32 parameters, sharded as well
    sharded_params = shard_numel * storage + 4 * -(-adapters // n)
    if spec.method == "full":
        sharded_trainable = shard_numel
    else:  # adapters or the unfrozen part: their count over N (padding of small shapes neglected)
        sharded_trainable = -(-tr.count // n)
    per_state = st.fp32_states / tr.count if tr.count else 0.0  # optimizer state bytes per fp32 element
    grads = sharded_trainable * (storage if spec.method in ("full", "freeze") else 4)
    states = int(sharded_trainable * per_state)
    if spec.zero_stage == 3:
        gathered = root_unsharded + largest_block
    else:
        gathered = n * shard_numel * k  # every group's all-gather output
    # in a block's backward: its unsharded gradients and the reduce-scatter input made from them, and under
    # FULL_SHARD the next block's all-gather, prefetched
    reduce_scatter = (3 if spec.zero_stage == 3 else 2) * largest_block if tr.grads_flow else 0
    host = 0
    if spec.offload_params:
        per_node, nodes = hm.nodes_for(spec.num_gpus)
        host = per_node * (sharded_params + grads + states)
        notes.append(f"FSDP CPU offload: sharded parameters, gradients and optimizer states in pinned host memory, "
                     f"{host / 2**30:.1f} GiB per node ({per_node} GPU(s) per node)")
        sharded_params = grads = states = 0
    storage_name = "fp32" if storage == 4 else "the weights"
    notes.append(f"FSDP{spec.fsdp_version} {FSDP_STRATEGY[spec.zero_stage]} on {spec.num_gpus} GPU(s): fully_shard "
                 f"per transformer block and the root (accelerate); {storage_name} sharded storage, "
                 f"{spec.compute_dtype} param_dtype and reduce_dtype")
    return HeldStates(weights=sharded_params, grads=grads, states=states, step_temp=-(-st.step_temp // n),
                      buckets=reduce_scatter, live=gathered, outside={}, host=host,
                      live_end=root_unsharded + largest_block)


def fsdp_groups(info: ModelInfo) -> tuple[dict[tuple, list[tuple[int, ...]]], list[tuple[int, ...]]]:
    """The parameter shapes of each `fully_shard` group: one per transformer block, and the root's (everything
    outside the blocks: embeddings, final norm, head)."""
    blocks: dict[tuple, list[tuple[int, ...]]] = {}
    root: list[tuple[int, ...]] = []
    for p in info.params:
        (root if p.layer is None else blocks.setdefault((p.stack, p.layer), [])).append(p.shape)
    return blocks, root


def fsdp_unsharded_groups(info: ModelInfo, world: int, param_bytes: int) -> tuple[int, int]:
    """(the largest block's, the root's) all-gather output in param_dtype bytes."""
    _, largest, root = fsdp_sums(info, world, param_bytes)
    return largest, root


@lru_cache(maxsize=1024)
def fsdp_sums(info: ModelInfo, world: int, param_bytes: int) -> tuple[int, int, int]:
    """(one rank's padded shard elements of every parameter, the largest block's and the root's all-gather bytes
    in param_dtype): sums over every tensor, cached per model."""
    blocks, root = fsdp_groups(info)
    every = [s for group in blocks.values() for s in group] + root
    largest = max((sh.fsdp_unsharded_bytes(g, world, param_bytes) for g in blocks.values()), default=0)
    return (sum(sh.fsdp_shard_numel(s, world) for s in every), largest,
            sh.fsdp_unsharded_bytes(root, world, param_bytes))


model_cache.on_evict(fsdp_sums.cache_clear)
