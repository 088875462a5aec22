"""Which activation terms (memplan.terms.activations) a training step holds: per block, for the top and the bottom
block, one checkpoint, the model-level extras and the transients; and the logits' and loss's bytes."""

from __future__ import annotations

from memplan.architecture import ModelInfo
from memplan.engines.formula.static import StaticTerms
from memplan.methods import Trainables, first_input_needs_grad, kbit_prepared, unquantized_dtype
from memplan.spec import JobSpec
from memplan.terms import activations as act
from memplan.terms import logits as lg
from memplan.terms.dtypes import dtype_bytes


def activation_context(info: ModelInfo, spec: JobSpec, tr: Trainables, attention: str) -> act.ActivationContext:
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
        first_input_grad=first_input_needs_grad(spec, tr),
        weight_cast_bytes=c if spec.weight_dtype == "fp32" and autocast else 0,
        kv_cache_copies=not (spec.gradient_checkpointing and tr.grads_flow))


def block_activations(info: ModelInfo, st: StaticTerms, ctx: act.ActivationContext) -> dict[str, int]:
    """Saved activations of all blocks, of the largest (top) and the bottom block, one checkpoint, the model-level
    extras, and the transients of backward (per block), of LoRA forward and of checkpoint recompute."""
    tr = st.tr
    blocks = largest = transient = 0
    layer0 = info.layers[0]  # the bottom block, which backward reaches last: the first of its group
    for count, layer, lora, ia3, merged in st.block_groups:  # identical blocks save identical tensors: one call each
        one = act.block_activation_bytes(layer, ctx, lora, ia3, tr.adapter_size) + \
            act.merged_params_saved_bytes(sum(merged), ctx.resid_bytes)
        out_adapted = act.mlp_out_adapter_saved_bytes(lora, ctx)
        # its backward transient, net of its MLP side, which is freed before its attention's backward
        one_transient = act.block_backward_transient_bytes(
            layer, ctx, act.block_mlp_saved_bytes(layer, ctx, lora, ia3, tr.adapter_size), out_adapted) + \
            act.merged_params_backward_transient_bytes(list(merged), ctx.resid_bytes)
        blocks, largest, transient = blocks + count * one, max(largest, one), max(transient, one_transient)
        if layer is layer0:
            bottom, bottom_transient = one, one_transient
            if not ctx.first_input_grad:  # under adapters it saves nothing before its first adapter
                bottom = act.block_activation_bytes(layer, ctx, lora, ia3, tr.adapter_size, input_grad=False) + \
                    act.merged_params_saved_bytes(sum(merged), ctx.resid_bytes)
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
                                                   mask_count(info))
        if ctx.dropout and info.outer_dropouts:
            # each stack's dropout after its embeddings saves a mask only when the embeddings' output needs a
            # gradient; T5's after its final norm always does
            stacks = 2 if info.is_encoder_decoder else 1
            masks = stacks * (info.outer_dropouts - 1) + (stacks if ctx.first_input_grad else 0)
            persistent += masks * act.dropout_mask_bytes(T, h)
    lora_transient = recompute = 0
    for _, layer, lora, _, _ in st.block_groups:
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


def mask_count(info: ModelInfo) -> int:
    """One 4-D mask per attention kind the model mixes: sliding-window and full layers (Gemma 2) make two."""
    return 2 if info.sliding_window and 0 < info.sliding_window_layers < info.num_layers else 1


def loss_terms(info: ModelInfo, spec: JobSpec, tokens: int) -> tuple[int, int, int]:
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
