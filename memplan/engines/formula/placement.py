"""Where a training step's states live per GPU under data parallelism and DeepSpeed ZeRO / FSDP
(memplan.terms.sharding): weights, gradients, optimizer states, communication buffers and gathered parameters.
The same placement serves both engines: the trace engine traces one GPU's step and places these."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

from memplan.architecture import ModelInfo, model_cache
from memplan.engines.formula.static import base_weights, static_terms
from memplan.methods import first_input_needs_grad, unquantized_dtype
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
    #: weights while the model loads, where they exceed `weights` (FSDP2 loads a 4-bit model whole on every GPU)
    load: int | None = None
    #: FSDP: gathered and communication bytes at each moment of the step (forward_start, forward_end, spike; top and
    #: bottom while a block's backward computes, top_post and bottom_post at its post-backward; embedding; step),
    #: where they replace `live` / `live` + `buckets`
    moments: dict[str, int] | None = None


def held_states(info: ModelInfo, spec: JobSpec, notes: list[str]) -> HeldStates:
    """Weights, gradients, optimizer states and communication buffers per GPU (memplan.terms.sharding); used by
    both engines (the trace engine traces one GPU and places these)."""
    place = fsdp_held_states if spec.parallel_engine == "fsdp" else _data_parallel_held_states
    held = place(info, spec, notes)
    if spec.num_gpus > 1:
        held.outside["nccl_buffers"] = sh.nccl_buffer_bytes(spec.num_gpus)
    held.host += _loading_host(info, spec, notes)
    return held


def _loading_host(info: ModelInfo, spec: JobSpec, notes: list[str]) -> int:
    """The CPU copies of the model that loading holds per node (memplan.terms.host.loading_host_bytes); DeepSpeed's
    ZeRO counts its own in zero_host_bytes."""
    fsdp = spec.parallel_engine == "fsdp"
    if spec.zero_stage and not fsdp:
        return 0
    four_bit = spec.weight_dtype in ("nf4", "fp4")
    if spec.weight_dtype in QUANTIZED_DTYPES and not (fsdp and four_bit and spec.fsdp_version == 1):
        return 0  # bitsandbytes quantizes onto the GPU as it loads
    model = base_weights(info, spec.weight_dtype, unquantized_dtype(spec), spec.double_quant)
    per_node, _ = hm.nodes_for(spec.num_gpus)
    host = hm.loading_host_bytes(model, per_node, rank0_only=fsdp)
    notes.append(f"host_bytes: loading holds {host / 2**30:.1f} GiB of CPU memory per node ("
                 + ("rank 0 loads, FSDP cpu_ram_efficient_loading" if fsdp else f"{per_node} process(es) each load "
                    "the model on the CPU before moving it to the GPU") + ")")
    return host


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
        knobs = spec.zero3_prefetch_bucket_size is not None or spec.zero3_max_live_parameters is not None
        prefetch = sh.zero3_prefetch_params(info.hidden_size, spec.zero3_prefetch_bucket_size,
                                            spec.zero3_max_live_parameters)
        buckets = sh.zero_bucket_bytes(info.hidden_size, zero, k, prefetch if zero == 3 and knobs else None)
        live = sh.zero3_live_param_bytes(info.largest_module_params, k) if zero == 3 else 0
        notes.append(f"DeepSpeed ZeRO-{zero}: 16-bit model, fp32 master weights and fp32 optimizer states "
                     "partitioned as deepspeed's estimators count them; HF 'auto' bucket sizes (h^2)")
        per_node, nodes = hm.nodes_for(n_gpu)
        host = hm.zero_host_bytes(info.total_params, info.largest_module_params, zero, per_node, nodes,
                                  spec.offload_optimizer, spec.offload_params, zero_init=spec.zero3_init)
        notes.append(f"host_bytes: CPU memory per node as DeepSpeed's estimators count it ({per_node} GPU(s) per "
                     f"node, {nodes} node(s)"
                     + ("; zero.Init under ZeRO-3" if zero == 3 and spec.zero3_init else
                        "; without zero.Init every process loads the whole model" if zero == 3 else "")
                     + f"): {host / 2**30:.1f} GiB")
    return HeldStates(weights, grads, states, step_temp, buckets, live, outside, host)


def fsdp_held_states(info: ModelInfo, spec: JobSpec, notes: list[str]) -> HeldStates:
    """Per-GPU model states of torch FSDP as the HF Trainer runs it through accelerate (1.14 and later;
    memplan.terms.sharding.fsdp_*):

    - sharded storage: under mixed precision the trainable parameters are upcast to fp32 (accelerate's
      fsdp2_prepare_model upcasts `requires_grad` parameters before fully_shard; FSDP1's prepare_model upcasts
      the trainable flat parameters), the frozen ones keep the dtype they loaded in; gradients and Adam moments
      follow the trainable storage;
    - groups (FSDP2): `fully_shard` on every transformer block; the input embedding its own group; the final norm
      (not found on a PEFT model: accelerate's `_find_final_norm` looks at the base model's children) and the
      output head one "tail" group, not resharded after forward; the root holds what is left and is never
      resharded after forward. A tied embedding joins the tail. FSDP1: the blocks (PEFT's wrap policy adds the
      adapter layers, negligible) and a root of everything outside them, never resharded after forward, each
      flattened into one FlatParameter padded to a multiple of the world size (sharding.fsdp1_flat_shard_numel);
    - what is unsharded when (FULL_SHARD, zero_stage 3): at the first forward the embedding's (or, tied, the
      tail's) all-gather output and its copied-out parameters; at the loss the root and the tail; in a block's
      backward that block, and its unsharded gradients with their reduce-scatter input and the next block's
      prefetch (`fsdp_held_states` buckets); the tail reshards after its own backward. SHARD_GRAD_OP (zero_stage 2)
      keeps every group unsharded from its forward to its backward. NO_SHARD (zero_stage 0) is a shard group of
      one: everything unsharded;
    - offload_params (CPUOffloadPolicy): the sharded parameters, gradients and optimizer states live in pinned host
      memory; the GPU keeps the unsharded groups and the gradient buffers;
    - QLoRA (nf4/fp4 with `quant_storage` equal to the compute dtype, the FSDP-QLoRA recipe): the packed 4-bit
      values are parameters of [n/4, 1] bf16 elements (memplan.terms.weights.packed_4bit_shape), sharded and
      gathered like any other; no fp32 upcast (accelerate skips it for Params4bit models); the quantization state
      is replicated on every GPU; PEFT's adapters are fp32. With uint8 storage (FSDP2 only) accelerate leaves the
      4-bit weights out of sharding (`ignored_params`): whole on every GPU. FSDP2 loads the whole quantized model
      on every GPU before sharding it (accelerate keeps Params4bit models off the meta device: "bypassing the move
      to meta will still cause the VRAM spike"): the load phase holds it."""
    st = static_terms(info, spec)
    tr = st.tr
    n = spec.num_gpus if spec.zero_stage else 1  # the shard group: NO_SHARD replicates
    k = dtype_bytes(spec.compute_dtype)
    four_bit = spec.weight_dtype in ("nf4", "fp4")
    packed = None  # the packed 4-bit values' storage itemsize; 0: left out of sharding
    replicated = 0  # bytes every GPU keeps whole: 4-bit quantization state, or 4-bit weights left unsharded
    if four_bit:
        frozen = trained = k  # loaded in the quant storage dtype (the compute dtype), never upcast
        packed = 0 if spec.quant_storage_dtype == "uint8" else dtype_bytes(spec.quant_storage_dtype)
        replicated = fsdp_replicated_4bit_bytes(info, spec.double_quant, whole=packed == 0)
    else:
        frozen = dtype_bytes(spec.weight_dtype)
        trained = 4 if spec.mixed_precision != "no" else frozen
    peft = spec.method not in ("full", "freeze")
    v2 = spec.fsdp_version == 2
    g = fsdp_sums(info, n, k, packed, carve=v2, tail_norm=not peft, flat=not v2)
    if spec.method == "full":
        base_trained = g.shard_numel
    elif spec.method == "freeze":  # the unfrozen base parameters (padding of small shapes neglected)
        base_trained = -(-tr.count // n)
    else:
        base_trained = 0
    adapters = -(-tr.count // n) if peft else 0  # PEFT's fp32 parameters, sharded as well
    sharded_params = (g.shard_numel - base_trained) * frozen + base_trained * trained + 4 * adapters
    sharded_trainable = base_trained + adapters
    per_state = st.fp32_states / tr.count if tr.count else 0.0  # optimizer state bytes per fp32 element
    grads = base_trained * trained + 4 * adapters
    states = int(sharded_trainable * per_state)
    block = g.largest_block
    # a block's unsharded gradients in reduce_dtype: every parameter's under full fine-tuning, else its adapters'
    grad_block = block if spec.method == "full" else k * -(-tr.count // max(1, len(info.layers))) if peft else 0
    # a block's backward computes its unsharded gradients (G) beside its parameters; its post-backward copies them
    # into the reduce-scatter input (G more) once its activations are gone (the next group's prefetch is in `top` /
    # `bottom`)
    grad_reduce = grad_block * dtype_bytes(spec.reduce_dtype) // k if tr.grads_flow else 0  # in reduce_dtype
    reduce_scatter = sh.fsdp_block_backward_bytes(block, grad_block, grad_reduce) if tr.grads_flow else 0
    computing = reduce_scatter - grad_reduce
    tied = info.tied_embeddings
    stays = g.root + (g.tail if tied else 0)  # unsharded from the first forward to the end of backward
    trained_names = {t.name for t in tr.tensors}
    head_trained = spec.method == "full" or bool(trained_names & set(info.head_params))
    embedding_trained = spec.method == "full" or bool(trained_names & set(_input_embedding_names(info)))
    # the head's gradients stay unsharded until their group's backward ends: the root's under FSDP1, the tail's
    # (with the tied embedding in it) under FSDP2; an untied FSDP2 tail reduce-scatters them right away
    held_grads = (stays if not v2 or tied else 0) if head_trained and tr.grads_flow else 0
    # the embedding's group is gathered again in backward when its output needs a gradient (FSDP2 registers its
    # pre-backward hook then): the bottom block prefetches it instead of another block
    embedding_backward = v2 and not tied and tr.grads_flow and first_input_needs_grad(spec, tr)
    if spec.zero_stage == 3:
        at_loss = stays + (0 if tied else g.tail)
        top = stays + held_grads + block
        bottom = stays + held_grads + (g.embed if embedding_backward else 0)
    else:  # every group stays unsharded until its backward (all of them under NO_SHARD); the block in
        # backward is counted with its gradients below
        at_loss = g.everything
        top = g.everything - block + held_grads
        bottom = (stays + g.embed if spec.zero_stage == 2 else g.everything - block) + held_grads
    # the first forward: the root's all-gather, then (FSDP2) the input embedding's, or the tail's when tied
    first = g.tail if tied else g.embed
    forward_start = max(sh.fsdp_copy_out_bytes(g.root), g.root + sh.fsdp_copy_out_bytes(first))
    # at the embedding's backward: the group holding it, with its gradients when it trains, beside the bottom
    # block's reduce-scatter input
    if v2 and not tied:
        embedding = stays + (2 * g.embed if embedding_trained else g.embed if embedding_backward else 0)
    else:
        embedding = stays + (stays if embedding_trained or head_trained else 0)
    embedding += grad_reduce  # the bottom block's reduce-scatter input
    # FSDP2 keeps the latest all-gather's output buffer until the next all-gather starts or the root's forward
    # ends (its comm context's all_gather_state): through the loss computed inside the model's forward, the
    # tail's (FSDP2, untied) or the last block's
    forward_end = at_loss + sh.fsdp_last_all_gather_bytes(g.tail if v2 and not tied else block)
    # at the loss's backward: FSDP1's root (holding the head) runs its pre-backward hook on the loss and prefetches
    # the top block; FSDP2's tail prefetches it only once the logits' gradient exists, after the spike
    spike = at_loss + (block if spec.zero_stage == 3 and not v2 and tr.grads_flow else 0)
    # sharded gradients that do not exist yet: in the bottom block's backward its own and the embedding's, at the
    # embedding's backward its own (each reduce-scattered at its group's post-backward)
    block_grad_shard = -(-grad_block // (n * k)) * (trained if spec.method == "full" else 4)
    embed_grad_shard = g.embed // (n * k) * trained if embedding_trained and v2 and not tied else 0
    pending_bottom, pending_embedding = block_grad_shard + embed_grad_shard, embed_grad_shard
    moments = {"forward_start": forward_start, "forward_end": forward_end, "spike": spike,
               "top": top + computing, "top_post": top + reduce_scatter,
               "bottom": bottom + computing, "bottom_post": bottom + reduce_scatter,
               "embedding": embedding if tr.grads_flow else 0, "step": 0,
               "grads_pending_bottom": pending_bottom, "grads_pending_embedding": pending_embedding}
    host = 0
    if spec.offload_params:
        per_node, nodes = hm.nodes_for(spec.num_gpus)
        host = per_node * (sharded_params + grads + states)
        notes.append(f"FSDP CPU offload: sharded parameters, gradients and optimizer states in pinned host memory, "
                     f"{host / 2**30:.1f} GiB per node ({per_node} GPU(s) per node)")
        sharded_params = grads = states = 0
    load = None
    if four_bit:
        if v2:
            load = st.weights
        notes.append(f"QLoRA under FSDP{spec.fsdp_version}: packed 4-bit weights in {spec.quant_storage_dtype} "
                     + ("storage left out of sharding (accelerate's ignored_params), whole on every GPU"
                        if packed == 0 else "storage sharded and gathered with their blocks")
                     + f"; quantization state replicated; frozen parameters in {spec.compute_dtype}, adapters fp32"
                     + ("; FSDP2 loads the whole quantized model on every GPU before sharding it" if v2 else ""))
    groups = ("fully_shard per transformer block, the input embedding, the final norm and head (not resharded "
              "after forward) and the root" if v2 else "blocks and a root of everything else (FSDP1)")
    notes.append(f"FSDP{spec.fsdp_version} {FSDP_STRATEGY[spec.zero_stage]} on {spec.num_gpus} GPU(s) as accelerate "
                 f"wraps it: {groups}; trainable parameters in "
                 f"{'fp32' if trained == 4 else spec.compute_dtype} storage, frozen ones as loaded; "
                 f"{spec.compute_dtype} param_dtype, {spec.reduce_dtype} reduce_dtype")
    return HeldStates(weights=sharded_params + replicated, grads=grads, states=states,
                      step_temp=-(-st.step_temp // n), buckets=reduce_scatter, live=at_loss, outside={}, host=host,
                      load=load, moments=moments)


class FsdpSums(NamedTuple):
    """One rank's padded shard elements of every parameter, and the all-gather output bytes (param_dtype) of the
    largest block, the input embedding's group, the tail's (final norm and head) and the root's (the rest), and
    of every group together."""

    shard_numel: int
    largest_block: int
    embed: int
    tail: int
    root: int
    everything: int


def _input_embedding_names(info: ModelInfo) -> tuple[str, ...]:
    """The input embedding's parameter: the first embedding outside the blocks with a row per vocabulary entry."""
    for p in info.params:
        if p.layer is None and p.kind == "embedding" and p.shape and p.shape[0] == info.vocab_size:
            return (p.name,)
    return ()


def _final_norm_names(info: ModelInfo) -> tuple[str, ...]:
    """The final norm's parameters as accelerate's `_find_final_norm` finds it: the last norm module that is a
    direct child of the base model (`model.norm`, `transformer.ln_f`)."""
    norms = [p for p in info.params if p.layer is None and p.kind == "norm" and p.module.count(".") == 1]
    if not norms:
        return ()
    last = norms[-1].module
    return tuple(p.name for p in norms if p.module == last)


def fsdp_groups(info: ModelInfo, packed: int | None = None, carve: bool = False, tail_norm: bool = False
                ) -> tuple[dict[tuple, list[tuple[int, ...]]], dict[str, list[tuple[int, ...]]]]:
    """The parameter shapes of each `fully_shard` group: one per transformer block, and outside them the root's,
    or (carve: accelerate's FSDP2 wrapping) the input embedding's ("embed"), the head's with the final norm when
    `tail_norm` ("tail"; a tied embedding is there) and the root's (the rest). Under 4-bit weights (`packed`: the
    storage itemsize) a quantized weight is its packed [n / (2 * itemsize), 1] tensor; packed 0 leaves it out."""
    blocks: dict[tuple, list[tuple[int, ...]]] = {}
    outer: dict[str, list[tuple[int, ...]]] = {"embed": [], "tail": [], "root": []}
    tail = set(info.head_params) | (set(_final_norm_names(info)) if tail_norm else set())
    embed = set(_input_embedding_names(info)) - tail
    for p in info.params:
        shape = p.shape
        if packed is not None and p.quantizable:
            if not packed:
                continue
            shape = packed_4bit_shape(p.numel, packed)
        if p.layer is not None:
            blocks.setdefault((p.stack, p.layer), []).append(shape)
        elif carve and p.name in tail:
            outer["tail"].append(shape)
        elif carve and p.name in embed:
            outer["embed"].append(shape)
        else:
            outer["root"].append(shape)
    return blocks, outer


@lru_cache(maxsize=1024)
def fsdp_sums(info: ModelInfo, world: int, param_bytes: int, packed: int | None = None, carve: bool = False,
              tail_norm: bool = False, flat: bool = False) -> FsdpSums:
    """Sums over every group of `fsdp_groups`, cached per model: FSDP2 pads each parameter's Shard(0) chunks;
    FSDP1 (`flat`) flattens each group into one FlatParameter padded to a multiple of the world size."""
    blocks, outer = fsdp_groups(info, packed, carve, tail_norm)
    shard = sh.fsdp1_flat_shard_numel if flat else sh.fsdp2_group_shard_numel
    groups = [*blocks.values(), *outer.values()]
    largest = max((world * shard(g, world) * param_bytes for g in blocks.values()), default=0)
    shard_numel = sum(shard(g, world) for g in groups)
    return FsdpSums(shard_numel, largest, *(world * shard(outer[name], world) * param_bytes
                                            for name in ("embed", "tail", "root")), world * shard_numel * param_bytes)


@lru_cache(maxsize=256)
def fsdp_replicated_4bit_bytes(info: ModelInfo, double_quant: bool, whole: bool) -> int:
    """What every GPU keeps of a 4-bit model's quantized weights under FSDP: their quantization state, or (whole:
    uint8 storage, left out of sharding) the whole quantized weights."""
    size = nf4_weight_bytes if whole else nf4_quant_state_bytes
    return sum(size(p.numel, double_quant) for p in info.params if p.quantizable)


model_cache.on_evict(fsdp_sums.cache_clear)
model_cache.on_evict(fsdp_replicated_4bit_bytes.cache_clear)
