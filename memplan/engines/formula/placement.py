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
from memplan.terms.weights import nf4_quant_state_bytes, nf4_weight_bytes, packed_4bit_shape


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
    #: weights while the model loads, where they exceed `weights` (FSDP2 loads a 4-bit model whole on every GPU)
    load: int | None = None
    #: gathered bytes at the step's first all-gather (FSDP: the root group's output buffer and the unsharded
    #: parameters copied out of it, memplan.terms.sharding.fsdp_copy_out_bytes)
    first_gather: int = 0


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
      unsharded, gradients all-reduced in place (no DDP bucket copy);
    - QLoRA (nf4/fp4 with `quant_storage` equal to the compute dtype, the FSDP-QLoRA recipe): the packed 4-bit
      values are parameters of [n/4, 1] bf16 elements (memplan.terms.weights.packed_4bit_shape), sharded and
      gathered like any other; the frozen parameters keep the compute dtype (no fp32 upcast: accelerate skips it
      for Params4bit under FSDP2 and upcasts only trainable flat parameters under FSDP1); the quantization state
      is replicated on every GPU; PEFT's adapters are fp32. With uint8 storage (FSDP2 only) accelerate leaves the
      4-bit weights out of sharding (`ignored_params`): whole on every GPU. FSDP2 loads the whole quantized model
      on every GPU before sharding it (accelerate's fsdp2_prepare_model keeps Params4bit models off the meta
      device: "bypassing the move to meta will still cause the VRAM spike"): the load phase holds it.
    FSDP1 (fsdp_version 1) flattens each wrapped module into one FlatParameter with the same sharded and unsharded
    byte totals up to padding: it is placed the same way."""
    st = static_terms(info, spec)
    tr = st.tr
    n = spec.num_gpus if spec.zero_stage else 1  # the shard group: NO_SHARD replicates
    k = dtype_bytes(spec.compute_dtype)
    four_bit = spec.weight_dtype in ("nf4", "fp4")
    packed = None  # the packed 4-bit values' storage itemsize; 0: left out of sharding
    replicated = 0  # bytes every GPU keeps whole: 4-bit quantization state, or 4-bit weights left unsharded
    if four_bit:
        storage = k  # the checkpoint loads in the quant storage dtype, which is the compute dtype
        packed = 0 if spec.quant_storage_dtype == "uint8" else dtype_bytes(spec.quant_storage_dtype)
        replicated = fsdp_replicated_4bit_bytes(info, spec.double_quant, whole=packed == 0)
    else:
        storage = 4 if spec.mixed_precision != "no" else dtype_bytes(spec.weight_dtype)
    shard_numel, largest_block, root_unsharded = fsdp_sums(info, n, k, packed)
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
    load = None
    if four_bit:
        if spec.fsdp_version == 2:
            load = st.weights
        notes.append(f"QLoRA under FSDP{spec.fsdp_version}: packed 4-bit weights in {spec.quant_storage_dtype} "
                     + ("storage left out of sharding (accelerate's ignored_params), whole on every GPU"
                        if packed == 0 else "storage sharded and gathered with their blocks")
                     + f"; quantization state replicated; frozen parameters in {spec.compute_dtype}, adapters fp32"
                     + ("; FSDP2 loads the whole quantized model on every GPU before sharding it"
                        if spec.fsdp_version == 2 else ""))
    storage_name = "fp32" if storage == 4 else spec.compute_dtype if four_bit else "the weights"
    notes.append(f"FSDP{spec.fsdp_version} {FSDP_STRATEGY[spec.zero_stage]} on {spec.num_gpus} GPU(s): fully_shard "
                 f"per transformer block and the root (accelerate); {storage_name} sharded storage, "
                 f"{spec.compute_dtype} param_dtype and reduce_dtype")
    return HeldStates(weights=sharded_params + replicated, grads=grads, states=states,
                      step_temp=-(-st.step_temp // n), buckets=reduce_scatter, live=gathered, outside={}, host=host,
                      live_end=root_unsharded + largest_block, load=load,
                      first_gather=sh.fsdp_copy_out_bytes(root_unsharded if spec.zero_stage else gathered))


def fsdp_groups(info: ModelInfo, packed: int | None = None
                ) -> tuple[dict[tuple, list[tuple[int, ...]]], list[tuple[int, ...]]]:
    """The parameter shapes of each `fully_shard` group: one per transformer block, and the root's (everything
    outside the blocks: embeddings, final norm, head). Under 4-bit weights (`packed`: the storage itemsize) a
    quantized weight is its packed [n / (2 * itemsize), 1] tensor; packed 0 leaves it out (not sharded)."""
    blocks: dict[tuple, list[tuple[int, ...]]] = {}
    root: list[tuple[int, ...]] = []
    for p in info.params:
        shape = p.shape
        if packed is not None and p.quantizable:
            if not packed:
                continue
            shape = packed_4bit_shape(p.numel, packed)
        (root if p.layer is None else blocks.setdefault((p.stack, p.layer), [])).append(shape)
    return blocks, root


def fsdp_unsharded_groups(info: ModelInfo, world: int, param_bytes: int) -> tuple[int, int]:
    """(the largest block's, the root's) all-gather output in param_dtype bytes."""
    _, largest, root = fsdp_sums(info, world, param_bytes)
    return largest, root


@lru_cache(maxsize=1024)
def fsdp_sums(info: ModelInfo, world: int, param_bytes: int, packed: int | None = None) -> tuple[int, int, int]:
    """(one rank's padded shard elements of every parameter, the largest block's and the root's all-gather bytes
    in param_dtype): sums over every tensor, cached per model (`packed` as in fsdp_groups)."""
    blocks, root = fsdp_groups(info, packed)
    every = [s for group in blocks.values() for s in group] + root
    largest = max((sh.fsdp_unsharded_bytes(g, world, param_bytes) for g in blocks.values()), default=0)
    return (sum(sh.fsdp_shard_numel(s, world) for s in every), largest,
            sh.fsdp_unsharded_bytes(root, world, param_bytes))


@lru_cache(maxsize=256)
def fsdp_replicated_4bit_bytes(info: ModelInfo, double_quant: bool, whole: bool) -> int:
    """What every GPU keeps of a 4-bit model's quantized weights under FSDP: their quantization state, or (whole:
    uint8 storage, left out of sharding) the whole quantized weights."""
    size = nf4_weight_bytes if whole else nf4_quant_state_bytes
    return sum(size(p.numel, double_quant) for p in info.params if p.quantizable)


model_cache.on_evict(fsdp_sums.cache_clear)
model_cache.on_evict(fsdp_replicated_4bit_bytes.cache_clear)
