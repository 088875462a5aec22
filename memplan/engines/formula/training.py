"""The phases of a training step (load, forward, backward as a walk from the loss down, optimizer step), each
adding the terms alive in it."""

from __future__ import annotations

from memplan.architecture import ModelInfo
from memplan.engines.formula.activations import activation_context, block_activations, loss_terms
from memplan.engines.formula.placement import held_states
from memplan.engines.formula.static import StaticTerms
from memplan.methods import kbit_prepared
from memplan.result import Phase
from memplan.spec import QUANTIZED_DTYPES, JobSpec
from memplan.terms import activations as act
from memplan.terms import kv_cache as kv
from memplan.terms import sequence as sq
from memplan.terms.weights import autocast_weight_copies_bytes


def training_phases(info: ModelInfo, spec: JobSpec, st: StaticTerms, attention: str, notes: list[str]
                     ) -> tuple[list[Phase], dict[str, int], int, int]:
    """The phases, the components outside PyTorch's allocator, the loss block (for fragmentation) and the host
    memory per node."""
    zero, tr = spec.zero_stage, st.tr
    held = held_states(info, spec, notes)
    if spec.parallel_engine == "fsdp" and spec.mixed_precision != "no" and spec.weight_dtype not in QUANTIZED_DTYPES:
        # FSDP's MixedPrecisionPolicy gathers the weights in param_dtype: the step computes on compute-dtype
        # weights (no autocast weight copies, a compute-dtype residual stream), whatever the sharded storage
        spec = spec.model_copy(update={"weight_dtype": spec.compute_dtype})
    weights, grads, states, step_temp = held.weights, held.grads, held.states, held.step_temp
    buckets, live, outside = held.buckets, held.live, held.outside

    if spec.weight_dtype == "fp32" and spec.mixed_precision != "no":
        autocast_copies = autocast_weight_copies_bytes(st.matmul_numel, spec.mixed_precision)
    else:
        autocast_copies = 0

    sp = spec.sequence_parallel_size
    # sequence / context parallelism: each GPU of the group holds seq_len / P tokens of everything that scales with
    # tokens (memplan.terms.sequence); attention's extra bytes for the whole sequence come on top below
    local = spec.model_copy(update={"seq_len": spec.seq_len // sp}) if sp > 1 else spec
    ctx = activation_context(info, local, tr, attention)
    a = block_activations(info, st, ctx)
    sp_forward = sp_backward = 0
    if sp > 1:
        sp_saved, sp_forward, sp_backward = sequence_parallel_terms(info, spec, ctx)
        a = {**a, "blocks": a["blocks"] + len(info.layers) * sp_saved if tr.grads_flow else 0,
             "largest_block": a["largest_block"] + sp_saved, "bottom_block": a["bottom_block"] + sp_saved}
        notes.append(f"sequence parallelism over {sp} GPUs ("
                     + ("DeepSpeed Ulysses all-to-all" if spec.parallel_engine == "deepspeed"
                        else "torch context parallelism, all-gather rotation")
                     + f"): {spec.seq_len // sp} tokens per GPU; attention's all-to-all / ring buffers are priors "
                       "from the libraries' code (memplan.terms.sequence), not traced or measured")
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
    loss_fwd, loss_spike, loss_block = loss_terms(info, spec, loss_tokens)
    grads_accumulated = grads if spec.gradient_accumulation_steps > 1 else 0
    # steady state: optimizer states exist in every phase from the first optimizer step on
    base = {"weights": weights, "optimizer_states": states}
    phases = [Phase("load", {"weights": weights if held.load is None else held.load})]
    # a checkpointed (or no-grad) block's intermediates exist only while it runs, not during the loss
    # (checkpointed blocks run forward without saving: their intermediates are freed as they go)
    fwd_block = (a["largest_block"] if not tr.grads_flow else 0) + a["lora_forward_transient"]
    if info.layers[-1].post_norm and tr.grads_flow and not checkpointing:
        fwd_block = max(fwd_block, act.post_norm_block_end_bytes(info.layers[-1], ctx))
    fwd_block = max(fwd_block, sp_forward)
    moments = held.moments or {}
    forward_end = Phase("forward", {**base, "gradients": grads_accumulated,
                                    "zero_buffers": moments.get("forward_end", live),
                                    "activations": saved + a["head_level"] + a["persistent"] + autocast_copies
                                    + head_cast + fp32_kv,
                                    "logits": loss_fwd if loss_fwd >= fwd_block else 0,
                                    "temporaries": fwd_block if fwd_block > loss_fwd else 0})
    # FSDP's first all-gathers of the step, before any activation exists: each output buffer alive with the
    # unsharded parameters copied out of it
    forward_start = Phase("forward", {**base, "gradients": grads_accumulated,
                                      "zero_buffers": moments.get("forward_start", 0)})
    phases.append(max(forward_end, forward_start, key=lambda p: p.total))
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
    top_transient = max(a["backward_transient"] + sp_backward, a["recompute_transient"] if checkpointing else 0)
    backward_points = [
        {**base, "gradients": grads_accumulated, "zero_buffers": moments.get("spike", live),
         "activations": saved + a["head_level"] + a["persistent"] + autocast_copies + head_cast,
         "logits": loss_spike, "temporaries": 0},
        {**base, "gradients": g_top, "zero_buffers": moments.get("top", live),
         "activations": top_saved + a["persistent"] + cast_blocks, "logits": 0, "temporaries": top_transient},
        {**base, "gradients": g_bottom - moments.get("grads_pending_bottom", 0),
         "zero_buffers": moments.get("bottom", live + buckets),
         "activations": ckpt + a["bottom_block"] + a["persistent"] + cast_block, "logits": 0,
         "temporaries": a["bottom_transient"] + sp_backward},
        {**base, "gradients": grads - moments.get("grads_pending_embedding", 0),
         "zero_buffers": moments.get("embedding", live + buckets), "activations": 0,
         "logits": 0,
         "temporaries": 2 * st.grads_tied if zero == 0 else 0},
    ]
    if "top_post" in moments:  # FSDP: a block's post-backward, its saved tensors and transients gone
        top_rest = len(info.layers) * ckpt if checkpointing else a["blocks"] - a["largest_block"]
        backward_points += [
            {**base, "gradients": g_top, "zero_buffers": moments["top_post"],
             "activations": top_rest + a["persistent"], "logits": 0, "temporaries": 0},
            {**base, "gradients": g_bottom - moments["grads_pending_bottom"], "zero_buffers": moments["bottom_post"],
             "activations": ckpt + a["persistent"], "logits": 0, "temporaries": 0}]
    phases.append(max((Phase("backward", p) for p in backward_points), key=lambda p: p.total))
    if spec.optimizer != "none" and tr.tensors:
        phases.append(Phase("optimizer_step", {"weights": weights, "gradients": grads, "optimizer_states": states,
                                                "zero_buffers": moments.get("step", buckets),
                                                "temporaries": step_temp}))
    return phases, outside, loss_block, held.host


def sequence_parallel_terms(info: ModelInfo, spec: JobSpec, ctx: act.ActivationContext) -> tuple[int, int, int]:
    """(bytes each block saves beyond the local shard's, forward and backward transients of one attention call)
    under sequence parallelism, the largest over the model's blocks: DeepSpeed Ulysses (parallelism deepspeed) or
    torch context parallelism (fsdp), memplan.terms.sequence."""
    sp, c, b = spec.sequence_parallel_size, ctx.compute_bytes, spec.micro_batch_size
    t = sq.local_tokens(b, spec.seq_len, sp)
    saved = forward = backward = 0
    for layer in {(x.heads, x.kv_heads, x.head_dim) for x in info.layers}:
        heads, kv_heads, d = layer
        if spec.parallel_engine == "deepspeed":
            saved = max(saved, sq.ulysses_kv_replication_bytes(t, d, kv_heads, sp, c))
            forward = max(forward, sq.ulysses_all_to_all_bytes(t, d, heads, kv_heads, sp, c))
            backward = forward
        else:
            forward = max(forward, sq.ring_attention_forward_bytes(b, spec.seq_len, t, d, heads, kv_heads, c))
            backward = max(backward, sq.ring_attention_backward_bytes(b, spec.seq_len, t, d, heads, kv_heads, c))
    return saved, forward, backward
