"""What a training job holds independent of batch, sequence, GPU count and GPU, summed once per model and method
and cached: weights with adapters, gradients (and where backward makes them), optimizer states inside and outside
PyTorch's allocator, the optimizer step's temporaries, and the groups of identical blocks the activation terms run
over. Both engines read it (the trace engine for its data-parallel placement and the attention workspace)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from memplan.architecture import ModelInfo, model_cache, stack_and_layer
from memplan.job import resolve_optimizer_impl
from memplan.methods import Trainables, kbit_prepared, trainables, unquantized_dtype
from memplan.spec import JobSpec, SpecError
from memplan.terms import optimizer as opt
from memplan.terms.dtypes import allocation_bytes, dtype_bytes
from memplan.terms.gradients import gradient_bytes
from memplan.terms.weights import model_weight_bytes


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


@dataclass(frozen=True)
class StaticTerms:
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
    #: (count, layer, lora, ia3, merged expert numels in backward order) of identical blocks
    block_groups: tuple[tuple[int, Any, tuple, tuple, tuple], ...]


@lru_cache(maxsize=1024)
def base_weights(info: ModelInfo, weight_dtype: str, rest_dtype: str, double_quant: bool) -> int:
    return model_weight_bytes(info.params, weight_dtype, rest_dtype, double_quant)


def static_key(spec: JobSpec) -> tuple:
    """Every spec field `static_terms` reads (head and num_labels are part of the ModelInfo)."""
    targets = spec.lora.target_modules
    return (spec.task, spec.method, spec.weight_dtype, spec.mixed_precision, spec.double_quant, spec.optimizer,
            spec.optimizer_impl, spec.lora.r, spec.lora.dropout,  # dropout: PEFT refuses it on fused experts
            targets if isinstance(targets, str) else tuple(targets), spec.num_virtual_tokens, spec.adapter_size,
            kbit_prepared(spec))


_STATIC_CACHE: dict[tuple, StaticTerms] = {}
_STATIC_CACHE_SIZE = 1024


def static_terms(info: ModelInfo, spec: JobSpec) -> StaticTerms:
    key = (info, static_key(spec))
    hit = _STATIC_CACHE.get(key)
    if hit is None:
        if len(_STATIC_CACHE) >= _STATIC_CACHE_SIZE:
            _STATIC_CACHE.pop(next(iter(_STATIC_CACHE)))
        hit = _STATIC_CACHE[key] = _compute_static(info, spec)
    return hit


def clear_caches() -> None:
    """Forget every cached sum (benchmarks time the first estimate of a method with it; the model cache calls it
    when it evicts a model, so that no sum keeps an evicted ModelInfo alive)."""
    _STATIC_CACHE.clear()
    base_weights.cache_clear()
    _params_by_name.cache_clear()


model_cache.on_evict(clear_caches)


def _compute_static(info: ModelInfo, spec: JobSpec) -> StaticTerms:
    try:
        tr = trainables(info, spec)
    except ValueError as exc:
        field = getattr(exc, "field", None) or ("lora.target_modules" if spec.method in ("lora", "qlora")
                                                 else "method")
        raise SpecError([(field, str(exc))]) from None
    weights = base_weights(info, spec.weight_dtype, unquantized_dtype(spec), spec.double_quant)
    if spec.method not in ("full", "freeze"):  # adapters (and PEFT's trainable head copies) are extra parameters
        weights += sum(allocation_bytes(t.numel * dtype_bytes(t.dtype)) for t in tr.tensors)
    states, paged = _optimizer_states(tr, spec.optimizer)
    groups: dict[tuple, list] = {}
    for layer in info.layers:
        key = (layer.stack, layer.index)
        lora, ia3, merged = tr.adapted.get(key, ()), tr.ia3.get(key, ()), tr.merged_order.get(key, ())
        groups.setdefault((replace(layer, index=0), lora, ia3, merged), [0, layer, lora, ia3, merged])[0] += 1
    grads_where = _gradients_by_place(info, tr)
    return StaticTerms(
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
        place = (p.stack, p.layer) if p is not None else stack_and_layer(t.name + ".", info.is_encoder_decoder)
        if place[1] is not None:
            out["grads_bottom"] += size if place == bottom else 0
        elif p is not None and info.tied_embeddings and t.name in info.head_params:
            out["grads_tied"] += size
        elif (p is not None and p.kind == "embedding") or t.name in ("prompt_encoder", "prefix_encoder"):
            out["grads_embedding"] += size
        else:
            out["grads_head"] += size
    return out
