"""estimate(job) -> Estimate: walk the step through its phases, add the terms of each phase, take the peak.

No I/O and no formulas here: every byte count comes from `memplan.terms`; this module only decides which terms
are alive in which phase (load, forward, backward, optimizer step; prefill and decode for inference).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, Field

from memplan import catalog
from memplan.architecture import ArchitectureError, ModelInfo, _stack_and_layer, introspect
from memplan.methods import Trainables, float_dtype, kbit_prepared, trainables, unquantized_dtype
from memplan.spec import GpuMemorySpec, JobSpec, SpecError, UnknownIdError, parse_spec
from memplan.terms import activations as act
from memplan.terms import kv_cache as kv
from memplan.terms import logits as lg
from memplan.terms import optimizer as opt
from memplan.terms import overhead as ov
from memplan.terms import sharding as sh
from memplan.terms.dtypes import allocation_bytes, dtype_bytes
from memplan.terms.gradients import gradient_bytes
from memplan.terms.weights import autocast_weight_copies_bytes, model_weight_bytes

GIB = 2**30
#: relative uncertainty of the uncalibrated activation-side terms (activations, logits, transients), for `range`
ACTIVATION_UNCERTAINTY = 0.15
FRAGMENTATION_LOW, FRAGMENTATION_HIGH = 0.01, 0.08
CONTEXT_LOW, CONTEXT_HIGH = 680 * 2**20, 900 * 2**20  # measured range, profiles/


class GpuInfo(BaseModel):
    id: str
    memory_bytes: int = Field(description="total memory as the driver reports it (nvidia-smi)")
    usable_bytes: int = Field(description="memory_bytes less what the driver keeps for itself")
    name: str | None = None


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
    name: str
    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def _gpu(spec: JobSpec) -> tuple[GpuInfo, str | None]:
    if isinstance(spec.gpu, GpuMemorySpec):
        mem = int(spec.gpu.memory_gib * GIB)
        if ov.usable_memory_bytes(mem) <= 0:
            raise SpecError([("gpu.memory_gib", f"must be above the {ov.DRIVER_RESERVED_PRIOR_BYTES / GIB:g} GiB the "
                                                f"driver keeps, got {spec.gpu.memory_gib:g}")])
        return GpuInfo(id=f"custom-{spec.gpu.memory_gib:g}GiB", memory_bytes=mem,
                       usable_bytes=ov.usable_memory_bytes(mem)), None
    entry = catalog.get_gpu(spec.gpu)
    return (GpuInfo(id=entry.id, memory_bytes=entry.memory_bytes, name=entry.name,
                    usable_bytes=ov.usable_memory_bytes(entry.memory_bytes)), entry.compute_capability)


def resolve_attention(info: ModelInfo, spec: JobSpec, notes: list[str]) -> str:
    """The attention implementation the job runs: the spec's, or eager where sdpa was defaulted and the model has
    none (noted in `notes`); an explicit unsupported choice is a SpecError."""
    impl = spec.attention
    explicit = "attention" in spec.model_fields_set
    if impl == "flash_attention_2":
        if not info.supports_flash_attention:
            raise SpecError([("attention", f"{info.model_type} has no flash_attention_2 implementation in "
                                           "transformers; allowed: eager, sdpa" if info.supports_sdpa else
                              f"{info.model_type} supports only eager attention")])
        if spec.compute_dtype == "fp32":
            raise SpecError([("attention", "flash_attention_2 runs in bf16/fp16 only; set mixed_precision bf16 "
                                           "or fp16, or use sdpa / eager")])
    if impl == "sdpa" and not info.supports_sdpa:
        if explicit:
            raise SpecError([("attention", f"{info.model_type} has no sdpa implementation in transformers; "
                                           "allowed: eager")])
        notes.append(f"{info.model_type} has no SDPA attention in transformers: estimated with eager attention")
        return "eager"
    return impl


def resolve_optimizer_impl(spec: JobSpec) -> str:
    """fused / foreach / for_loop: the spec's, or what the HF Trainer and torch pick on CUDA for `auto`."""
    if spec.optimizer_impl != "auto":
        return spec.optimizer_impl
    if spec.optimizer == "adamw":
        return "fused"  # HF Trainer's default optim is adamw_torch_fused (torch >= 2.8)
    if spec.optimizer in ("lion", "adafactor"):
        return "for_loop"
    return "foreach"  # torch's default on CUDA for SGD


def _state_bytes(t_numel: int, shape: tuple[int, ...], dtype: str, optimizer: str) -> int:
    if optimizer == "adamw":
        return opt.adamw_state_bytes(t_numel, dtype)
    if optimizer in ("adamw_8bit", "paged_adamw_8bit"):
        return opt.adam_8bit_state_bytes(t_numel)
    if optimizer == "paged_adamw_32bit":
        return opt.adam_32bit_bnb_state_bytes(t_numel)
    if optimizer in ("sgd_momentum", "lion"):
        return opt.momentum_state_bytes(t_numel, dtype)
    if optimizer == "adafactor":
        return opt.adafactor_state_bytes(shape)
    return 0  # sgd without momentum, none


def _optimizer_states(tr: Trainables, optimizer: str) -> tuple[int, int]:
    """(bytes inside PyTorch's allocator, bytes in paged / managed memory outside it)."""
    inside = outside = 0
    for t in tr.tensors:
        b = _state_bytes(t.numel, t.shape, t.dtype, optimizer)
        if optimizer.startswith("paged_") and t.numel >= opt.BNB_PAGED_MIN_SIZE:
            outside += b
        else:
            inside += b
    return inside, outside


def _step_temp(tr: Trainables, optimizer: str, impl: str) -> int:
    if not tr.tensors or optimizer in ("none", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit"):
        return 0
    sizes = [allocation_bytes(t.numel * dtype_bytes(t.dtype)) for t in tr.tensors]
    largest = max(sizes)
    if optimizer == "adamw":
        return opt.adamw_step_temp_bytes(impl, sum(sizes), largest)
    if optimizer == "adafactor":
        return opt.adafactor_step_temp_bytes([t.numel for t in tr.tensors],
                                             any(t.dtype in ("bf16", "fp16") for t in tr.tensors))
    if optimizer == "lion" or impl == "for_loop":
        return opt.single_tensor_update_temp_bytes(largest)
    return 0


ENGINES = ("formula", "trace")


@dataclass
class ResolvedJob:
    """A validated job with its model introspected, its GPU looked up and its attention resolved."""

    spec: JobSpec
    info: ModelInfo
    gpu: GpuInfo
    compute_capability: str | None
    attention: str
    notes: list[str]


def resolve_job(job: dict[str, Any] | JobSpec, allow_path: bool = False) -> ResolvedJob:
    """Validate the spec, introspect the model and look up the GPU. Raises SpecError naming the field."""
    spec = parse_spec(job)
    info = model_info(spec, allow_path)
    try:
        gpu, cc = _gpu(spec)
    except catalog.CatalogError as exc:
        raise UnknownIdError("gpu", f"{exc} or give {{memory_gib: N}}", exc.suggestions) from None
    _check_positions(spec, info)
    notes: list[str] = []
    attention = resolve_attention(info, spec, notes)
    return ResolvedJob(spec, info, gpu, cc, attention, notes)


def model_info(spec: JobSpec, allow_path: bool = False) -> ModelInfo:
    """The spec's model, introspected; a model that cannot be built is bad input naming its field."""
    try:
        return introspect(spec.model, spec.inline_config, spec.head, spec.num_labels, allow_path=allow_path)
    except ArchitectureError as exc:
        if exc.suggestions is not None:
            raise UnknownIdError("model", str(exc), exc.suggestions) from None
        raise SpecError([(exc.field if spec.inline_config is None else "model_config", str(exc))]) from None


def learned_positions(info: ModelInfo) -> int | None:
    """How many positions a learned absolute position table covers (BERT, GPT-2, OPT), None for rotary or
    relative positions, which run at any length."""
    if not any(p.kind == "embedding" and ("position" in p.name or p.name.endswith("wpe.weight"))
               for p in info.params):
        return None
    return info.max_positions


def position_cap(spec: JobSpec, info: ModelInfo, field: str) -> int | None:
    """The largest `field` (seq_len, inference.prompt_len) a learned position table lets the job run: the table's
    rows less prompt tuning's virtual tokens / the tokens generation appends. None when positions do not limit it
    (rotary or relative positions, or a batch field)."""
    positions = learned_positions(info)
    if positions is None:
        return None
    if field == "seq_len":
        return positions - (spec.num_virtual_tokens if spec.method == "prompt_tuning" else 0)
    if field == "inference.prompt_len":
        return positions - spec.inference.max_new_tokens
    return None


def _check_positions(spec: JobSpec, info: ModelInfo) -> None:
    """A job longer than a learned position table cannot run (the embedding lookup fails): refuse it."""
    field = "seq_len" if spec.task == "train" else "inference.prompt_len"
    cap = position_cap(spec, info, field)
    value = spec.seq_len if spec.task == "train" else spec.inference.prompt_len
    if cap is not None and value > cap:
        positions = learned_positions(info)
        raise SpecError([(field, f"{info.model_type} has learned absolute positions for {positions} tokens; "
                                 f"the job needs {value + positions - cap}, which the model cannot run")])


def estimate(job: dict[str, Any] | JobSpec, engine: str = "formula", allow_path: bool = False,
             progress: Any = None) -> Estimate:
    """Estimate per-GPU memory of the job. Raises SpecError (bad field) or ArchitectureError (bad model).

    engine "formula" adds the closed-form terms (milliseconds); "trace" runs the real training step or generation
    on fake tensors (seconds; memplan.trace), calling `progress(message)` as it goes when given."""
    if engine not in ENGINES:
        raise SpecError([("engine", f"unknown engine '{engine}'; allowed: {', '.join(ENGINES)}")])
    r = resolve_job(job, allow_path)
    if engine == "trace":
        from memplan.trace.engine import trace_estimate

        return trace_estimate(r, progress)
    spec, info = r.spec, r.info
    if spec.task == "inference":
        phases, tr = _inference_phases(info, spec, r.attention, r.notes), Trainables(tensors=())
        outside, loss_block = {}, 0
    else:
        st = _static_terms(info, spec)
        tr = st.tr
        phases, outside, loss_block = _training_phases(info, spec, st, r.attention, r.notes)
    return assemble(r, phases, tr.count, outside, lambda allocated: ov.fragmentation_bytes(allocated, loss_block))


def assemble(r: ResolvedJob, phases: list[Phase], trainable: int, outside: dict[str, int],
             fragmentation: Any, engine: str = "formula") -> Estimate:
    """The Estimate from per-phase allocated bytes (by component): adds the cuBLAS workspace to every phase after
    load, takes the peak phase, adds `fragmentation(peak_allocated)` for reserved and the CUDA context and
    memory outside PyTorch for peak_bytes."""
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
    notes = r.notes + _assumptions(spec, info, r.attention)
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


# ---------------------------------------------------------------- training


def _activation_context(info: ModelInfo, spec: JobSpec, tr: Trainables, attention: str) -> act.ActivationContext:
    c = dtype_bytes(spec.compute_dtype)
    resid = dtype_bytes(unquantized_dtype(spec))
    autocast = spec.mixed_precision != "no"
    if not autocast:
        resid = c if spec.weight_dtype in ("bf16", "fp16", "fp32") else resid
    seq = spec.seq_len + tr.virtual_tokens
    return act.ActivationContext(
        batch=spec.micro_batch_size, seq=seq, kv_seq=seq + tr.prefix_tokens, compute_bytes=c, resid_bytes=resid,
        attention=attention, autocast=autocast, base_trainable=tr.base_linears_trainable,
        norms_trainable=tr.norms_trainable, adapter_input_bytes=4, lora_r=spec.lora.r,
        lora_dropout=spec.lora.dropout if spec.method in ("lora", "qlora") else 0.0,
        mlp_bytes=resid if kbit_prepared(spec) and spec.weight_dtype in ("nf4", "fp4") else c,
        # memplan.profiling._apply_method: enable_input_require_grads under checkpointing, except for k-bit
        # models (peft's prepare_model_for_kbit_training skips it with use_reentrant=False)
        first_input_grad=tr.base_linears_trainable or tr.virtual_tokens > 0 or spec.method == "adapter"
        or (spec.gradient_checkpointing and not kbit_prepared(spec)),
        weight_cast_bytes=c if spec.weight_dtype == "fp32" and autocast else 0,
        kv_cache_copies=not (spec.gradient_checkpointing and tr.grads_flow))


def _activations(info: ModelInfo, st: _Static, ctx: act.ActivationContext) -> dict[str, int]:
    """Saved activations of all blocks, of the largest (top) and the bottom block, one checkpoint, the model-level
    extras, and the transients of backward (per block), of LoRA forward and of checkpoint recompute."""
    tr = st.tr
    blocks = largest = transient = 0
    layer0 = info.layers[0]  # the bottom block, which backward reaches last: the first of its group
    for count, layer, lora, ia3 in st.block_groups:  # identical blocks save identical tensors: one call per kind
        one = act.block_activation_bytes(layer, ctx, lora, ia3, tr.adapter_size)
        out_adapted = act.mlp_out_adapter_saved_bytes(lora, ctx)
        # its backward transient, net of its MLP side, which is freed before its attention's backward
        one_transient = act.block_backward_transient_bytes(
            layer, ctx, act.block_mlp_saved_bytes(layer, ctx, lora, ia3, tr.adapter_size), out_adapted)
        blocks, largest, transient = blocks + count * one, max(largest, one), max(transient, one_transient)
        if layer is layer0:
            bottom, bottom_transient = one, one_transient
            if not ctx.first_input_grad:  # under adapters it saves nothing before its first adapter
                bottom = act.block_activation_bytes(layer, ctx, lora, ia3, tr.adapter_size, input_grad=False)
                blocks -= one - bottom
                bottom_transient = act.block_backward_transient_bytes(layer, ctx, act.block_mlp_saved_bytes(
                    layer, ctx, lora, ia3, tr.adapter_size, input_grad=False), out_adapted)
    T, h, c = ctx.tokens, info.hidden_size, ctx.compute_bytes
    head_level = persistent = 0  # freed by the head's backward / alive until the blocks' backward ends
    if tr.grads_flow or tr.tensors:  # the final norm and the head's input feed the head's gradient
        last = info.layers[-1]
        if not last.post_norm:  # a post-norm stack (BERT, OPT-350m) ends with its last block's norm
            head_level += act.norm_saved_bytes(T, h, last.norm_kind, ctx.resid_bytes, ctx.autocast,
                                               ctx.norms_trainable)
        if ctx.base_trainable:  # a frozen head's matmul needs only its weight for the input gradient
            head_level += act.linear_inputs_saved_bytes(T, h, 1, ctx.resid_bytes, c, ctx.autocast)
    if tr.grads_flow:
        if info.is_encoder_decoder:  # the encoder output, read by every decoder block's cross-attention k/v
            persistent += ctx.resid_bytes * T * h
            if any(x.attn_bias for x in info.layers):  # the cross-attentions' shared zeros bias (T5)
                persistent += act.attention_bias_saved_bytes(info.num_heads, ctx.seq, ctx.seq, c, ctx.attention)
        if ctx.attention == "eager" or (info.sliding_window and ctx.attention == "sdpa"):
            persistent += act.attention_mask_bytes(ctx.batch, ctx.seq, ctx.kv_seq, c, ctx.attention,
                                                   _mask_count(info))
        if ctx.dropout and info.outer_dropouts:
            # each stack's dropout after its embeddings saves a mask only when the embeddings' output needs a
            # gradient; T5's after its final norm always does
            stacks = 2 if info.is_encoder_decoder else 1
            masks = stacks * (info.outer_dropouts - 1) + (stacks if ctx.first_input_grad else 0)
            persistent += masks * act.dropout_mask_bytes(T, h)
    lora_transient = recompute = 0
    for _, layer, lora, _ in st.block_groups:
        for lin in lora:
            in_bytes = act.linear_input_bytes(layer, lin.group, ctx)
            one = act.lora_forward_transient_bytes(T, lin.d_in, in_bytes, ctx.adapter_input_bytes, ctx.autocast,
                                                   ctx.lora_dropout > 0)
            out_bytes = (ctx.mlp_bytes or c) if lin.group in ("mlp_in", "mlp_out") else c
            lora_transient = max(lora_transient, one)
            recompute = max(recompute, one + act.recompute_in_flight_bytes(T, h, lin, c, ctx.resid_bytes, in_bytes,
                                                                           out_bytes, ctx.base_trainable))
    return {"blocks": blocks if tr.grads_flow else 0, "largest_block": largest, "bottom_block": bottom,
            "checkpoint": act.checkpoint_saved_bytes(T, h, _block_input_bytes(info.layers[-1], ctx)),
            "head_level": head_level,
            "persistent": persistent, "backward_transient": transient, "bottom_transient": bottom_transient,
            "lora_forward_transient": lora_transient, "recompute_transient": recompute}


def _block_input_bytes(layer: act.LayerShape, ctx: act.ActivationContext) -> int:
    """Bytes per element of what a block receives: the residual stream (r), or for a post-norm stack (BERT) the
    previous block's closing norm output, fp32 for a LayerNorm under autocast."""
    return act.linear_input_bytes(layer, "attn_in", ctx) if layer.post_norm else ctx.resid_bytes


def _mask_count(info: ModelInfo) -> int:
    """One 4-D mask per attention kind the model mixes: sliding-window and full layers (Gemma 2) make two."""
    return 2 if info.sliding_window and 0 < info.sliding_window_layers < info.num_layers else 1


def _loss_terms(info: ModelInfo, spec: JobSpec, tokens: int) -> tuple[int, int, int]:
    """(forward peak, backward spike, largest fp32 block) of the logits and loss; the block, log_softmax's [T, V]
    output, is what the allocator keeps as fragmentation (`overhead.fragmentation_bytes`)."""
    if info.head == "sequence_classification":
        return lg.cross_entropy_forward_peak_bytes(spec.micro_batch_size, spec.num_labels, 4), \
            lg.cross_entropy_backward_spike_bytes(spec.micro_batch_size, spec.num_labels), 0
    vocab = spec.num_labels if info.head == "token_classification" else info.vocab_size
    # the fp32 lm_head of a k-bit-prepared model still runs under autocast: fp32 logits only without it
    fp32_logits = spec.compute_dtype == "fp32" or (kbit_prepared(spec) and spec.mixed_precision == "no")
    per = 4 if fp32_logits else dtype_bytes(spec.compute_dtype)
    # Gemma 2: tanh's output over the logits is saved too, in the logits' dtype
    softcap = lg.logits_bytes(tokens, vocab, per) if info.final_logit_softcap else 0
    return lg.cross_entropy_forward_peak_bytes(tokens, vocab, per) + softcap, \
        lg.cross_entropy_backward_spike_bytes(tokens, vocab) + softcap, lg.cross_entropy_saved_bytes(tokens, vocab)


@dataclass(frozen=True)
class _Static:
    """What a training job holds independent of batch, sequence, GPU count and GPU: summed once per model and
    method (these sums run over every tensor, so they are cached; the activations run over `block_groups`)."""

    tr: Trainables
    weights: int  # base weights plus adapters, unsharded
    grads: int
    states: int  # optimizer states inside PyTorch's allocator
    paged: int  # bitsandbytes paged states (managed memory outside it)
    step_temp: int
    fp32_states: int  # optimizer states if kept in fp32, for ZeRO's partitioned optimizer
    matmul_numel: int  # matmul weights autocast copies (fp32 weights + AMP)
    blocks_matmul_numel: int  # the same, of all transformer blocks
    block_matmul_numel: int  # the same, of the largest block
    grads_bottom: int  # gradients of the block backward reaches last (the first block of the forward)
    grads_head: int  # gradients alive when backward enters the top block: the head's, the final norm's
    grads_embedding: int  # input-embedding gradients not tied to the head, made at the very end of backward
    grads_tied: int  # the tied embedding / lm_head gradient, summed from both uses at the very end
    block_groups: tuple[tuple[int, Any, tuple, tuple], ...]  # (count, layer, lora, ia3) of identical blocks


@lru_cache(maxsize=1024)
def _base_weights(info: ModelInfo, weight_dtype: str, rest_dtype: str, double_quant: bool) -> int:
    return model_weight_bytes(info.params, weight_dtype, rest_dtype, double_quant)


def _static_key(spec: JobSpec) -> tuple:
    """Every spec field `_static_terms` reads (head and num_labels are part of the ModelInfo)."""
    targets = spec.lora.target_modules
    return (spec.task, spec.method, spec.weight_dtype, spec.mixed_precision, spec.double_quant, spec.optimizer,
            spec.optimizer_impl, spec.lora.r, targets if isinstance(targets, str) else tuple(targets),
            spec.num_virtual_tokens, spec.adapter_size)


_STATIC_CACHE: dict[tuple, _Static] = {}
_STATIC_CACHE_SIZE = 1024


def _static_terms(info: ModelInfo, spec: JobSpec) -> _Static:
    key = (info, _static_key(spec))
    hit = _STATIC_CACHE.get(key)
    if hit is None:
        if len(_STATIC_CACHE) >= _STATIC_CACHE_SIZE:
            _STATIC_CACHE.pop(next(iter(_STATIC_CACHE)))
        hit = _STATIC_CACHE[key] = _compute_static(info, spec)
    return hit


def _compute_static(info: ModelInfo, spec: JobSpec) -> _Static:
    try:
        tr = trainables(info, spec)
    except ValueError as exc:
        field = "lora.target_modules" if spec.method in ("lora", "qlora") else "method"
        raise SpecError([(field, str(exc))]) from None
    weights = _base_weights(info, spec.weight_dtype, unquantized_dtype(spec), spec.double_quant)
    if spec.method not in ("full", "freeze"):  # adapters (and PEFT's trainable head copies) are extra parameters
        weights += sum(allocation_bytes(t.numel * dtype_bytes(t.dtype)) for t in tr.tensors)
    states, paged = _optimizer_states(tr, spec.optimizer)
    groups: dict[tuple, list] = {}
    for layer in info.layers:
        key = (layer.stack, layer.index)
        lora, ia3 = tr.adapted.get(key, ()), tr.ia3.get(key, ())
        groups.setdefault((replace(layer, index=0), lora, ia3), [0, layer, lora, ia3])[0] += 1
    grads_where = _gradients_by_place(info, tr)
    return _Static(
        tr=tr, weights=weights, grads=gradient_bytes((t.numel, t.dtype) for t in tr.tensors), **grads_where,
        states=states, paged=paged, step_temp=_step_temp(tr, spec.optimizer, resolve_optimizer_impl(spec)),
        fp32_states=sum(_state_bytes(t.numel, t.shape, "fp32", spec.optimizer) for t in tr.tensors),
        # a tied lm_head is the embedding's weight, still cast once by autocast for its F.linear
        matmul_numel=sum(p.numel for p in info.params if p.kind in ("linear", "expert") and not p.bias)
        + (info.vocab_size * info.hidden_size if info.tied_embeddings else 0),
        blocks_matmul_numel=sum(lin.d_in * lin.d_out for layer in info.layers for lin in layer.linears),
        block_matmul_numel=max(sum(lin.d_in * lin.d_out for lin in layer.linears) for layer in info.layers),
        block_groups=tuple(tuple(g) for g in groups.values()))


@lru_cache(maxsize=64)
def _params_by_name(info: ModelInfo) -> dict[str, Any]:
    return {p.name: p for p in info.params}


def _gradients_by_place(info: ModelInfo, tr: Trainables) -> dict[str, int]:
    """Gradient bytes by when backward makes them: the bottom block's, the head's (first), the input
    embedding's (last), and the tied embedding / head weight's (both)."""
    params = _params_by_name(info)
    bottom = (info.layers[0].stack, info.layers[0].index)
    out = dict.fromkeys(("grads_bottom", "grads_head", "grads_embedding", "grads_tied"), 0)
    for t in tr.tensors:
        size = gradient_bytes([(t.numel, t.dtype)])
        p = params.get(t.name)
        place = (p.stack, p.layer) if p is not None else _stack_and_layer(t.name + ".", info.is_encoder_decoder)
        if place[1] is not None:
            out["grads_bottom"] += size if place == bottom else 0
        elif p is not None and info.tied_embeddings and t.name in info.head_params:
            out["grads_tied"] += size
        elif (p is not None and p.kind == "embedding") or t.name in ("prompt_encoder", "prefix_encoder"):
            out["grads_embedding"] += size
        else:
            out["grads_head"] += size
    return out


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


def held_states(info: ModelInfo, spec: JobSpec, notes: list[str]) -> HeldStates:
    """Weights, gradients, optimizer states and communication buffers per GPU (memplan.terms.sharding); used by
    both engines (the trace engine traces one GPU and places these)."""
    st = _static_terms(info, spec)
    zero, n_gpu, tr = spec.zero_stage, spec.num_gpus, st.tr
    quantized = spec.weight_dtype in ("int8", "nf4", "fp4", "int4")
    weights = st.weights
    outside: dict[str, int] = {}
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
    if n_gpu > 1:
        outside["nccl_buffers"] = sh.nccl_buffer_bytes(n_gpu)
    return HeldStates(weights, grads, states, step_temp, buckets, live, outside)


def _training_phases(info: ModelInfo, spec: JobSpec, st: _Static, attention: str, notes: list[str]
                     ) -> tuple[list[Phase], dict[str, int], int]:
    """The phases, the components outside PyTorch's allocator, and the loss block (for fragmentation)."""
    zero, tr = spec.zero_stage, st.tr
    held = held_states(info, spec, notes)
    weights, grads, states, step_temp = held.weights, held.grads, held.states, held.step_temp
    buckets, live, outside = held.buckets, held.live, held.outside

    if spec.weight_dtype == "fp32" and spec.mixed_precision != "no":
        autocast_copies = autocast_weight_copies_bytes(st.matmul_numel, spec.mixed_precision)
    else:
        autocast_copies = 0

    ctx = _activation_context(info, spec, tr, attention)
    a = _activations(info, st, ctx)
    checkpointing = spec.gradient_checkpointing and tr.grads_flow
    head_cast = fp32_kv = 0
    if kbit_prepared(spec) and spec.mixed_precision != "no" and info.head != "sequence_classification":
        # the frozen fp32 lm_head's autocast copy, saved by its matmul until the head's backward runs
        head_cast = autocast_weight_copies_bytes(info.vocab_size * info.hidden_size, spec.mixed_precision)
    if ctx.mlp_bytes == 4 and ctx.compute_bytes != 4 and not checkpointing:
        # use_cache builds a DynamicCache during the training forward; under QLoRA its k/v are fp32 (Linear4bit
        # returns its fp32 input's dtype) and do not share storage with attention's bf16 saves; checkpointed
        # layers get past_key_values=None (transformers GradientCheckpointingLayer)
        dec = [x for x in info.layers if x.stack == "decoder"]
        fp32_kv = sum(kv.kv_cache_bytes(1, x.kv_heads, x.head_dim, spec.micro_batch_size, ctx.seq, 4) for x in dec)
    saved = len(info.layers) * a["checkpoint"] if checkpointing else a["blocks"]
    loss_tokens = spec.micro_batch_size * ctx.seq if info.head != "sequence_classification" else 0
    loss_fwd, loss_spike, loss_block = _loss_terms(info, spec, loss_tokens)
    grads_accumulated = grads if spec.gradient_accumulation_steps > 1 else 0
    # steady state: optimizer states exist in every phase from the first optimizer step on
    base = {"weights": weights, "optimizer_states": states}
    phases = [Phase("load", {"weights": weights})]
    # a checkpointed (or no-grad) block's intermediates exist only while it runs, not during the loss
    # (checkpointed blocks run forward without saving: their intermediates are freed as they go)
    fwd_block = (a["largest_block"] if not tr.grads_flow else 0) + a["lora_forward_transient"]
    if info.layers[-1].post_norm and tr.grads_flow and not checkpointing:
        fwd_block = max(fwd_block, act.post_norm_block_end_bytes(info.layers[-1], ctx))
    phases.append(Phase("forward", {**base, "gradients": grads_accumulated, "zero_buffers": live,
                                     "activations": saved + a["head_level"] + a["persistent"] + autocast_copies
                                     + head_cast + fp32_kv,
                                     "logits": loss_fwd if loss_fwd >= fwd_block else 0,
                                     "temporaries": fwd_block if fwd_block > loss_fwd else 0}))
    # backward walks from the loss down: its peak is at the start (the loss spike), in the top block (every
    # block's saved tensors, the head's gradients), in the bottom block (one block's saved tensors, every other
    # gradient) or at the embedding (every gradient; a tied embedding sums its two gradients out of place:
    # autograd's InputBuffer cannot add in place into the head's transposed gradient)
    if zero == 0 and spec.gradient_accumulation_steps == 1:
        g_top, g_bottom = st.grads_head + st.grads_tied, grads - st.grads_bottom - st.grads_embedding
    else:
        g_top, g_bottom = grads_accumulated, grads
    cast_blocks = autocast_weight_copies_bytes(st.blocks_matmul_numel, spec.mixed_precision) if autocast_copies else 0
    cast_block = autocast_weight_copies_bytes(st.block_matmul_numel, spec.mixed_precision) if autocast_copies else 0
    ckpt = a["checkpoint"] if checkpointing else 0
    top_saved = len(info.layers) * ckpt + a["largest_block"] if checkpointing else a["blocks"]
    # a checkpointed block's recompute ends with its largest LoRA input's forward transient
    top_transient = max(a["backward_transient"], a["recompute_transient"] if checkpointing else 0)
    backward_points = [
        {**base, "gradients": grads_accumulated, "zero_buffers": live,
         "activations": saved + a["head_level"] + a["persistent"] + autocast_copies + head_cast,
         "logits": loss_spike, "temporaries": 0},
        {**base, "gradients": g_top, "zero_buffers": live,
         "activations": top_saved + a["persistent"] + cast_blocks, "logits": 0, "temporaries": top_transient},
        {**base, "gradients": g_bottom, "zero_buffers": live + buckets,
         "activations": ckpt + a["bottom_block"] + a["persistent"] + cast_block, "logits": 0,
         "temporaries": a["bottom_transient"]},
        {**base, "gradients": grads, "zero_buffers": live + buckets, "activations": 0, "logits": 0,
         "temporaries": 2 * st.grads_tied if zero == 0 else 0},
    ]
    phases.append(max((Phase("backward", p) for p in backward_points), key=lambda p: p.total))
    if spec.optimizer != "none" and tr.tensors:
        phases.append(Phase("optimizer_step", {"weights": weights, "gradients": grads, "optimizer_states": states,
                                                "zero_buffers": buckets, "temporaries": step_temp}))
    return phases, outside, loss_block


# ---------------------------------------------------------------- inference


def _inference_phases(info: ModelInfo, spec: JobSpec, attention: str, notes: list[str]) -> list[Phase]:
    inf = spec.inference
    weights = _base_weights(info, spec.weight_dtype, float_dtype(spec), spec.double_quant)
    c = dtype_bytes(spec.compute_dtype)
    kvb = dtype_bytes(inf.kv_cache_dtype)
    b, prompt, total = inf.batch_size, inf.prompt_len, inf.prompt_len + inf.max_new_tokens
    dec = [s for s in info.layers if s.stack == "decoder"]
    widest = max(info.layers, key=lambda s: s.intermediate_size)
    logits_last = lg.logits_bytes(b, info.vocab_size, c + 4)  # last position, and generate()'s fp32 copy

    def cache(tokens: int) -> int:
        if info.head not in ("causal_lm", "seq2seq_lm"):
            return 0
        layers = len(dec)
        if info.sliding_window and info.sliding_window_layers:
            return kv.sliding_kv_cache_bytes(layers - info.sliding_window_layers, info.sliding_window_layers,
                                             info.sliding_window, info.num_kv_heads, info.head_dim, b, tokens, kvb)
        return kv.kv_cache_bytes(layers, info.num_kv_heads, info.head_dim, b, tokens, kvb)

    prefill_tokens = b * prompt
    transient = kv.prefill_transient_bytes(prefill_tokens, info.hidden_size, widest.intermediate_size,
                                           widest.gated_mlp, c)
    if attention == "eager":
        transient = max(transient + kv.eager_probs_held_bytes(b, info.num_heads, prompt, prompt, c),
                        kv.eager_prefill_transient_bytes(b, info.num_heads, prompt, info.hidden_size, c))
    if attention == "eager" or (info.sliding_window and attention == "sdpa"):
        transient += act.attention_mask_bytes(b, prompt, prompt, c, attention, _mask_count(info))
    if info.is_encoder_decoder:
        cross = kv.kv_cache_bytes(len(dec), info.num_kv_heads, info.head_dim, b, prompt, kvb)
        prefill_kv, decode_kv = cross, cross + cache(inf.max_new_tokens)
        notes.append("encoder-decoder: the prompt feeds the encoder; the decoder caches max_new_tokens "
                     "self-attention positions and a static cross-attention cache of prompt_len positions")
    else:
        prefill_kv, decode_kv = cache(prompt), cache(total)
    phases = [Phase("load", {"weights": weights}),
              Phase("prefill", {"weights": weights, "kv_cache": prefill_kv,
                                 "activations": transient, "logits": logits_last})]
    if info.head in ("causal_lm", "seq2seq_lm") and inf.max_new_tokens > 0:
        append = kv.kv_append_transient_bytes(info.num_kv_heads, info.head_dim, b, total, kvb)
        step = kv.prefill_transient_bytes(b, info.hidden_size, widest.intermediate_size, widest.gated_mlp, c)
        phases.append(Phase("decode", {"weights": weights, "kv_cache": decode_kv, "activations": step,
                                        "logits": logits_last, "temporaries": append}))
    return phases


#: the config keys that set a model's size (any one spelling of each)
_SIZE_KEYS = (("hidden_size", "n_embd", "d_model"), ("num_hidden_layers", "n_layer", "num_layers"),
              ("num_attention_heads", "n_head", "num_heads"), ("vocab_size",))


def _assumptions(spec: JobSpec, info: ModelInfo, attention: str) -> list[str]:
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
            out.append(f"optimizer torch {spec.optimizer} ({resolve_optimizer_impl(spec)} implementation)")
        elif spec.optimizer != "none":
            out.append(f"optimizer {spec.optimizer}")
    else:
        inf = spec.inference
        out.append(f"generate(): batch {inf.batch_size}, prompt {inf.prompt_len} + {inf.max_new_tokens} new "
                   f"tokens, {inf.kv_cache_dtype} DynamicCache, logits for the last position only")
    out.append("CUDA context 767 MiB and allocator fragmentation (one fp32 loss block + 2% of allocated) are "
               "measured on H100 runs (docs/accuracy.md); the driver reserve of 512 MiB is a prior")
    return out
