"""Activations: the tensors autograd saves for backward, per transformer block, for each piece of the block.

Notation: T = b*s tokens, h hidden, h_kv = n_kv*d_head, I MLP width, n_q query heads, c bytes of the compute dtype
(2 for bf16/fp16), r bytes of the residual stream (2, or 4 when norms/embeddings are fp32: AMP over fp32
weights, or QLoRA after prepare_model_for_kbit_training).

Source for the accounting: shared/reference/memory-mechanics.md A1 (saved tensors of transformers 5.23
LlamaDecoderLayer listed with saved-tensor hooks); Korthikanti et al. 2022 (arXiv:2205.05198) section 4.1 for the
GPT-layer baseline sbh(34 + 5as/h), which this refines: fp32 norm upcasts, SwiGLU, no dropout, no s^2 term with
SDPA/flash. Worked example for a whole block (repeated in tests): Llama-3.1-8B, bf16, sdpa, full fine-tuning,
T = 4096 (b=1, s=4096): block_activation_bytes = 822,607,872 B = 49.03 * T * h.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

from memplan.terms.shapes import LayerShape, LinearShape

#: activations whose saved-tensor count differs from one tensor of the input's size
ACTIVATION_SAVED_TENSORS = {
    "gelu_new": 4,  # python tanh GELU (transformers NewGELUActivation): input, 0.5*x, tanh out, 1 + tanh
    "gelu_fast": 4,
    "gelu_python": 4,
    "quick_gelu": 2,  # x * sigmoid(1.702 x): x and the sigmoid output
}


def activation_saved_tensors(activation: str) -> int:
    """How many [T, I] tensors an MLP activation saves: 1 for the fused kernels (silu, gelu, relu, GELU-tanh via
    F.gelu), 4 for transformers' python GELU (gelu_new), 2 for quick_gelu.

    Example: activation_saved_tensors("silu") == 1; activation_saved_tensors("gelu_new") == 4.
    """
    return ACTIVATION_SAVED_TENSORS.get(activation, 1)


@dataclass(frozen=True)
class ActivationContext:
    """The run's settings that the saved tensors depend on."""

    batch: int  # b
    seq: int  # s: query positions (virtual tokens of prompt tuning included)
    kv_seq: int  # s_k: key positions (prefix tokens included)
    compute_bytes: int  # c
    resid_bytes: int  # r
    attention: str  # eager | sdpa | flash_attention_2
    autocast: bool  # torch.autocast on: each trained linear saves its own cast copy when r != c
    base_trainable: bool  # base linear weights have gradients (full fine-tuning)
    norms_trainable: bool
    adapter_input_bytes: int = 4  # dtype of the input copy a LoRA adapter saves (fp32 adapters, no autocast: 4)
    lora_r: int = 0
    lora_dropout: float = 0.0
    dropout: bool = True  # training mode: dropout layers with p > 0 save a mask
    #: dtype of the MLP's intermediates: c, or 4 under QLoRA, where bitsandbytes' Linear4bit returns its (fp32)
    #: input's dtype (bitsandbytes nn/modules.py Linear4bit.forward: `.to(inp_dtype)`) and SiLU / the gate product
    #: are not autocast ops (traced on CPU, profiles/qlora-nf4-llama8b-s2048-b2-nogc: +10.5 GiB at 8B, T=4096)
    mlp_bytes: int = 0
    #: does the first block's input need a gradient: trained embeddings, prompt tuning's virtual tokens, or
    #: `enable_input_require_grads` (the Trainer's PEFT + checkpointing setup); False for other adapter runs
    first_input_grad: bool = True
    #: bytes of the autocast copy each matmul weight keeps for backward (fp32 weights under AMP: c), else 0
    weight_cast_bytes: int = 0
    #: the training forward builds a DynamicCache (use_cache, no checkpointing): each self-attention's k and v are
    #: copied into it (torch.cat onto an empty tensor) and attention saves the copies
    kv_cache_copies: bool = False

    @property
    def tokens(self) -> int:
        return self.batch * self.seq


def activation_saves_output(layer: LayerShape) -> bool:
    """ReLU's backward reads its output (aten threshold_backward(grad, result, 0)), which is also the next
    linear's input in a plain MLP: one saved tensor serves both. Traced: OPT-350m's fc2 input is relu's output.

    Example: OPT's relu MLP -> True; Llama's SwiGLU (the product feeds down_proj) -> False.
    """
    return layer.activation == "relu" and not layer.gated_mlp


def norm_saved_bytes(tokens: int, width: int, kind: str, resid_bytes: int, autocast: bool,
                     weight_trainable: bool) -> int:
    """One normalization layer over `width` features.

    - RMSNorm (Llama family, T5LayerNorm): `x.to(float32).pow(2)` saves an fp32 copy, 4*T*w; `weight * x_norm`
      saves x_norm (r*T*w) only when the weight is trained (frozen weight: its grad is not needed).
    - T5LayerNorm: as RMSNorm, and `hidden_states * rsqrt(variance)` multiplies the r-byte input itself (not the
      fp32 copy), so the input is saved too: (4 + r)*T*w (transformers modeling_t5.py T5LayerNorm; traced).
    - Gemma's RMSNorm: as RMSNorm, but it scales in fp32 (`output * (1.0 + self.weight.float())`), so a trained
      weight saves the fp32 x_norm: 4*T*w + 4*T*w (transformers modeling_gemma2.py Gemma2RMSNorm).
    - LayerNorm (native_layer_norm): saves its input (r*T*w, fp32 4*T*w under autocast, which runs layer_norm in
      fp32) and fp32 mean and rstd, 8*T.
    Source: transformers models/llama/modeling_llama.py LlamaRMSNorm; aten native_layer_norm_backward inputs.
    Example: Llama-3.1-8B, T=4096, w=4096, bf16, trained weight: 4*T*w + 2*T*w = 100,663,296 B.
    """
    if kind in ("rms", "t5_rms", "gemma_rms"):
        kept_input = resid_bytes * tokens * width if kind == "t5_rms" else 0
        scaled_bytes = 4 if kind == "gemma_rms" else resid_bytes
        return 4 * tokens * width + kept_input + (scaled_bytes * tokens * width if weight_trainable else 0)
    return (4 if autocast else resid_bytes) * tokens * width + 8 * tokens


def linear_inputs_saved_bytes(tokens: int, d_in: int, trained_linears: int, input_bytes: int, compute_bytes: int,
                              autocast: bool) -> int:
    """The input of a group of linears reading one tensor (q/k/v, or gate/up), saved for their weight gradients.

    Formula: 0 if no weight in the group is trained; under autocast with r != c every trained linear saves its own
    c-byte cast copy (autocast caches casts of leaf weights only), so n*c*T*d_in; else one shared r*T*d_in.
    Source: aten linear/addmm backward (grad_weight = grad_out^T @ input); torch autocast cached_cast.
    Example: Llama-3.1-8B q,k,v trained in pure bf16, T=4096: 2 * 4096 * 4096 = 33,554,432 B.
    """
    if trained_linears == 0:
        return 0
    if autocast and input_bytes != compute_bytes:
        return trained_linears * compute_bytes * tokens * d_in
    return input_bytes * tokens * d_in


def attention_saved_bytes(batch: int, seq: int, kv_seq: int, heads: int, kv_heads: int, head_dim: int,
                          compute_bytes: int, attention: str, dropout: bool = False, softcap: bool = False) -> int:
    """The attention core (scores, softmax, weighted sum) of one block.

    - sdpa / flash_attention_2: q (c*b*s*n_q*d), k and v at their own n_kv heads (HF passes enable_gqa, or flash
      takes GQA natively), the output (c*b*s*n_q*d, shared with o_proj's input) and the fp32 logsumexp
      (4*b*n_q*s). No s^2 term.
    - eager: q, and k, v repeated to n_q heads by repeat_kv (3 * c*b*s*n_q*d); the fp32 softmax output
      (4*b*n_q*s*s_k) and its cast to c saved by the matmul with v (c*b*n_q*s*s_k); with attention dropout a
      1-byte mask more; with logit softcapping (Gemma 2, eager only: flash applies it inside the kernel) tanh's
      output, c*b*n_q*s*s_k more (modeling_gemma2.py eager_attention_forward; traced, profiles/
      lora-all-r16-gemma2b-s2048-b2 went from -10.6% to 0% allocated with the final-logit term below).
    Source: transformers integrations/sdpa_attention.py, modeling_llama.py eager_attention_forward;
    flash-attn mha_fwd saves (q, k, v, out, softmax_lse).
    Example: Llama-3.1-8B block, b=1, s=4096, bf16, sdpa: 2*4096*4096*2 + 2*2*4096*1024 + 4*32*4096
      = 67,108,864 + 16,777,216 + 524,288 = 84,410,368 B.
    """
    q_bytes = compute_bytes * batch * seq * heads * head_dim
    if attention == "eager":
        kv_bytes = 2 * compute_bytes * batch * kv_seq * heads * head_dim
        scores = batch * heads * seq * kv_seq
        return q_bytes + kv_bytes + (4 + compute_bytes + (1 if dropout else 0)
                                     + (compute_bytes if softcap else 0)) * scores
    kv_bytes = 2 * compute_bytes * batch * kv_seq * kv_heads * head_dim
    return 2 * q_bytes + kv_bytes + 4 * batch * heads * seq


def fused_qkv_kept_bytes(tokens: int, kv_width: int, compute_bytes: int) -> int:
    """The k and v parts of a fused qkv output that attention keeps through q's view while it saves the cache's
    copies of k and v (GPT-2: c_attn's [T, 3h] output is split into views, the DynamicCache concatenates k and v
    onto empty tensors, and SDPA saves q, a view of the whole output, with the two copies).
    Formula: 2*c*T*h_kv. Source: transformers gpt2 GPT2Attention.forward, cache_utils.py DynamicLayer.update;
    traced: gpt2-lora-all (tests/trace/test_crosscheck.py) saved 9.05 MiB of attention per block, not 6.05.
    Example: GPT-2, T=1024, h=768, bf16: 2*2*1024*768 = 3,145,728 B.
    """
    return 2 * compute_bytes * tokens * kv_width


def sdpa_mask_bias_saved_bytes(batch: int, seq: int, kv_seq: int, compute_bytes: int) -> int:
    """A boolean attention mask given to SDPA is turned into an additive c-byte bias on every call
    (ATen attention.cpp convert_boolean_attn_mask: zeros, then -inf where masked), which the memory-efficient
    kernel saves for backward: c*b*s*s_k per self-attention. Taken with an explicit mask: prefix tuning's
    virtual keys (traced: qwen-prefix, 1.04 MiB per block at b=2, s=512, s_k=532).
    Example: b=2, s=512, s_k=532, bf16: 2*2*512*532 = 1,089,536 B.
    """
    return compute_bytes * batch * seq * kv_seq


def attention_mask_bytes(batch: int, seq: int, kv_seq: int, compute_bytes: int, attention: str,
                         masks: int = 1) -> int:
    """The 4-D masks transformers builds once per forward and keeps through it (masking_utils.py): eager adds a
    float mask to the scores (c bytes per element), SDPA gets a boolean one (1 byte) when it needs one at all;
    models mixing sliding-window and full layers (Gemma 2) build one of each. Formula: masks*e*b*s*s_k.
    Example: Gemma-2 eager, b=2, s=512, bf16, two masks: 2*2*2*512*512 = 2,097,152 B.
    """
    return masks * (compute_bytes if attention == "eager" else 1) * batch * seq * kv_seq


def attention_bias_saved_bytes(heads: int, seq: int, kv_seq: int, compute_bytes: int, attention: str) -> int:
    """T5's relative position bias ([1, n_q, s, s_k], the causal mask folded in for the decoder) goes to SDPA as
    attn_mask; the memory-efficient kernel keeps its bias for backward, and each call saves its own contiguous
    copy: c*n_q*s*s_k per self-attention. Eager adds the bias to the scores, which saves nothing. (The decoder's
    cross-attention gets one zeros bias, shared by its layers: a model-level term.)
    Source: transformers modeling_t5.py T5Attention (position_bias passed as the mask); aten
    _efficient_attention_forward/backward (attn_bias is a saved input); traced (t5-lora-qv: 4 MiB per call).
    Example: T5 at s=512, 8 heads, bf16: 2*8*512*512 = 4,194,304 B.
    """
    return compute_bytes * heads * seq * kv_seq if attention != "eager" else 0


def mlp_saved_bytes(tokens: int, intermediate: int, compute_bytes: int, gated: bool, activation: str,
                    autocast: bool = False) -> int:
    """The MLP's internal tensors (its input and the down projection's input are linear inputs, counted there).

    - gated (SwiGLU/GeGLU, act(gate) * up): the activation's input (the gate output, times the activation's
      saved-tensor count) plus both factors of the product, act(gate) and up: c*T*I*(k + 2).
    - plain (fc1 -> act -> fc2): the activation's saved tensors, c*T*I*k.
    - gelu_new under CUDA autocast: torch.pow runs in fp32, so pow's input, tanh's output and 1 + tanh are fp32
      and only 0.5*x stays in c: (12 + c)*T*I instead of 4*c*T*I (traced; GPT-2 and Phi-2 use gelu_new:
      profiles/full-bf16-gpt2-s1024-b4 went from -16% to -2% allocated).
    Source: modeling_llama.py LlamaMLP (down_proj(act_fn(gate_proj(x)) * up_proj(x))); activations.py
    NewGELUActivation; aten/src/ATen/autocast_mode.cpp (pow in the fp32 list).
    Example: Llama-3.1-8B, T=4096, I=14336, bf16, silu: 2*4096*14336*3 = 352,321,536 B;
      GPT-2, T=4096, I=3072, bf16 autocast, gelu_new: (12 + 2)*4096*3072 = 176,160,768 B.
    """
    if activation == "gelu_new" and autocast and compute_bytes != 4:
        act_bytes = (12 + compute_bytes) * tokens * intermediate
        return act_bytes + (2 * compute_bytes * tokens * intermediate if gated else 0)
    k = activation_saved_tensors(activation)
    return compute_bytes * tokens * intermediate * (k + 2 if gated else k)


def dropout_mask_bytes(tokens: int, width: int) -> int:
    """A dropout layer in training saves its boolean mask: 1 byte per element (aten native_dropout).

    Example: GPT-2 residual dropout, T=1024, h=768: 786,432 B.
    """
    return tokens * width


def lora_saved_bytes(tokens: int, d_in: int, r: int, input_bytes: int, dropout: bool) -> int:
    """One LoRA adapter (PEFT lora.Linear): lora_A saves its input, a copy of x cast to the adapter dtype
    (PEFT autocasts adapters to fp32 and casts x to lora_A.weight.dtype; under torch.autocast the saved copy is the
    c-byte cast instead); with lora_dropout > 0, dropout's 1-byte mask too; lora_B saves lora_A's output (T*r).
    Formula: input_bytes*T*d_in + (T*d_in if dropout) + input_bytes*T*r.
    Source: peft/tuners/lora/layer.py Linear.forward; memory-mechanics.md A1 (8B, 7 targets, r=16: 72.1*T*h/layer).
    Example: q_proj of Llama-3.1-8B, T=4096, r=16, fp32 copy, no dropout: 4*4096*4096 + 4*4096*16 = 67,371,008 B.
    """
    return input_bytes * tokens * d_in + (tokens * d_in if dropout else 0) + input_bytes * tokens * r


#: transformers' python GELUs (activations.py NewGELUActivation and kin), whose pow/tanh chain autocast runs in fp32
_FP32_CHAIN_GELUS = ("gelu_new", "gelu_fast", "gelu_python")


def linear_input_bytes(layer: LayerShape, group: str, ctx: ActivationContext) -> int:
    """Bytes per element of what a block's linear reads: a norm's output for the input projections (fp32 for a
    LayerNorm under autocast, else r), the MLP's dtype for its output projection, c for the rest.

    Example: Llama under QLoRA (r = 4, MLP in fp32): q_proj and down_proj read 4-byte inputs, o_proj 2-byte.
    """
    if group in ("attn_in", "mlp_in", "cross_q"):
        return 4 if (layer.norm_kind == "layer" and ctx.autocast) else ctx.resid_bytes
    if group == "mlp_out":
        if layer.activation in _FP32_CHAIN_GELUS and ctx.autocast and ctx.compute_bytes != 4:
            return 4  # the python GELU's chain runs in fp32 under autocast (pow is an fp32 op): so is its output
        return ctx.mlp_bytes or ctx.compute_bytes
    return ctx.compute_bytes


def _adapter_copy_bytes(ctx: ActivationContext) -> int:
    """Bytes per element of the input copy lora_A saves: autocast's c-byte cast, else the adapter's dtype."""
    return ctx.compute_bytes if ctx.autocast else ctx.adapter_input_bytes


def mlp_out_adapter_saved_bytes(lora: tuple[LinearShape, ...], ctx: ActivationContext) -> int:
    """What the LoRA adapters on a block's MLP output projection save (`lora_saved_bytes` each): freed by that
    projection's backward, before the activation's (`block_backward_transient_bytes`).
    Example: Phi-2's fc2 (d_in 10240), T=4096, r=16, autocast bf16, dropout: 2*4096*10240 + 4096*10240
      + 2*4096*16 = 125,960,192 B.
    """
    return sum(lora_saved_bytes(ctx.tokens, lin.d_in, ctx.lora_r, _adapter_copy_bytes(ctx), ctx.lora_dropout > 0)
               for lin in lora if lin.group == "mlp_out")


def lora_forward_transient_bytes(tokens: int, d_in: int, input_bytes: int, adapter_bytes: int, autocast: bool,
                                 dropout: bool) -> int:
    """Bytes a LoRA adapter holds for an instant in forward beyond what it saves: PEFT casts x to the adapter's
    dtype (`x.to(lora_A.weight.dtype)`, a*T*d_in when x is not already in it), dropout returns a new a-byte tensor,
    and under autocast lora_A then saves its own c-byte cast of that, so the a-byte tensors are not kept.
    Formula: cast = a*T*d_in if input_bytes != a else 0; with autocast, cast + (a*T*d_in if dropout); without,
    the dropout output is what lora_A saves, so cast if dropout else 0 (the cast itself is saved).
    Source: peft/tuners/lora/layer.py Linear.forward (`lora_A(dropout(x))` after `x = self._cast_input_dtype(x,
    lora_A.weight.dtype)`); traced, llama-lora-all-gc: 64 MiB at down_proj's recompute (T=1024, d_in=8192).
    Example: down_proj of Llama-3.1-8B, T=4096, bf16 x, fp32 adapter, autocast, dropout: 8*4096*14336 =
      469,762,048 B.
    """
    a = adapter_bytes
    cast = a * tokens * d_in if input_bytes != a else 0
    if autocast:
        return cast + (a * tokens * d_in if dropout else 0)
    return cast if dropout else 0


def recompute_in_flight_bytes(tokens: int, hidden: int, lin: LinearShape, compute_bytes: int, resid_bytes: int,
                              input_bytes: int, output_bytes: int, input_saved: bool) -> int:
    """Beyond the saved tensors, what is alive while a checkpointed block recomputes an adapted linear `lin` (the
    LoRA forward transient's moment): the gradient arriving from the block above (the residual stream's, r bytes,
    and the norm backward's c-byte product), the residual stream kept for the block's add (r*T*h), the linear's
    base output until the adapter's is added to it (o*T*d_out) and its input (i*T*d_in) when nothing saves it (a
    frozen base layer; the adapter saves its own cast).
    Formula: (2r + c)*T*h + o*T*d_out + (i*T*d_in if not input_saved).
    Source: transformers GradientCheckpointingLayer + torch.utils.checkpoint (non-reentrant) recompute inside
    backward; traced (llama-lora-all-gc at down_proj: 32 MiB at T=1024, h=2048, I=8192; under QLoRA, where the
    residual and the MLP are fp32: 60 MiB).
    Example: Llama-3.1-8B's down_proj, T=4096, bf16, LoRA: 6*4096*4096 + 2*4096*4096 + 2*4096*14336
      = 251,658,240 B.
    """
    in_flight = (2 * resid_bytes + compute_bytes) * tokens * hidden + output_bytes * tokens * lin.d_out
    return in_flight + (0 if input_saved else input_bytes * tokens * lin.d_in)


def post_norm_block_end_bytes(layer: LayerShape, ctx: ActivationContext) -> int:
    """Beyond the saved tensors, what a post-norm block's Python frames hold at its last op (the norm after the
    MLP's residual add), the forward peak of an encoder whose loss is small (BERT classification): the new norm
    output (x*T*h, x the norm output's bytes: 4 for a LayerNorm under autocast), the dropped-out MLP output the add
    read (c*T*h), and, when no trained linear saves them as they are (frozen weights, or autocast saving c-byte
    casts of x-byte tensors), the block's input, held by the encoder loop, the attention's normed output, held by
    the layer (x*T*h each), and the embeddings' output, held by the model's forward around the loop (x*T*h); with
    a frozen output projection, the activation's output (c*T*I), held until the MLP returns.
    Formula: (x + c)*T*h + (3x*T*h if not kept) + (c*T*I if frozen).
    Source: transformers bert BertEncoder.forward / BertLayer.feed_forward_chunk / BertOutput.forward; traced
    (bert-lora-qv, T=1024, h=768, I=3072, AMP: 19.5 MiB at the last block's output norm).
    Example: BERT-base, T=1024, LoRA on q, v under AMP: (4 + 2)*1024*768 + 3*4*1024*768 + 2*1024*3072
      = 4,718,592 + 9,437,184 + 6,291,456 = 20,447,232 B.
    """
    T, c, h = ctx.tokens, ctx.compute_bytes, layer.hidden
    x = linear_input_bytes(layer, "attn_in", ctx)
    held = (x + c) * T * h
    if not (ctx.base_trainable and x == c):
        held += 3 * x * T * h
    if not ctx.base_trainable:
        held += c * T * layer.intermediate_size
    return held


def ia3_saved_bytes(tokens: int, width: int, compute_bytes: int, feedforward: bool = False) -> int:
    """(IA)^3 scales a tensor by a learned vector; the product saves the scaled tensor for the vector's gradient:
    c*T*d_out for key/value targets (the base output), 4*T*d_in for feed-forward targets (PEFT casts the input to
    the fp32 vector's dtype first: `x = x.to(ia3_l.dtype)`; traced, profiles/ia3-* went from -7/-10% to ~0%).
    Source: peft/tuners/ia3/layer.py Linear.forward. Example: v_proj of Llama-3.1-8B, T=4096: 2*4096*1024 =
    8,388,608 B; its down_proj (d_in 14336): 4*4096*14336 = 234,881,024 B.
    """
    return (4 if feedforward else compute_bytes) * tokens * width


def bottleneck_adapter_saved_bytes(tokens: int, hidden: int, adapter_size: int, compute_bytes: int) -> int:
    """One Houlsby adapter (down h->m, nonlinearity, up m->h): saves the down projection's input (c*T*h), the
    nonlinearity's input and the up projection's input (2*c*T*m).
    Source: Houlsby et al. 2019 (arXiv:1902.00751) Fig. 2. Example: h=4096, m=64, T=4096, bf16: 34,603,008 B.
    """
    return compute_bytes * tokens * (hidden + 2 * adapter_size)


def checkpoint_saved_bytes(tokens: int, hidden: int, resid_bytes: int) -> int:
    """Gradient checkpointing keeps only each block's input, r*T*h (transformers GradientCheckpointingLayer,
    torch.utils.checkpoint non-reentrant); the block's activations are recomputed in backward. r is the input's
    bytes: the residual stream's, or in a post-norm stack (BERT) the closing LayerNorm's output, fp32 under
    autocast (traced: bert-full-gc in tests/trace/test_crosscheck.py; BERT-base at 16 x 512 went from -9% to +1%).
    Source: Chen et al. 2016 (arXiv:1604.06174). Example: Llama-3.1-8B, T=4096, bf16: 33,554,432 B.
    """
    return resid_bytes * tokens * hidden


def block_activation_bytes(layer: LayerShape, ctx: ActivationContext, lora: tuple[LinearShape, ...] = (),
                           ia3: tuple[tuple[LinearShape, bool], ...] = (), adapter_size: int = 0,
                           input_grad: bool = True) -> int:
    """All tensors one block saves for backward: norms + trained linears' inputs + attention + MLP + dropout
    masks + adapters. The sum of the functions above (see the module docstring for the worked example).

    input_grad=False is the first block under an adapter method: its input (the frozen embeddings' output) needs
    no gradient, so autograd saves nothing for the ops before the first adapter (an op saves inputs only for the
    gradients it must compute: torch codegen `should_compute_output`). The gradient starts at the attention when
    a q/k/v projection is adapted (or prefix tuning adds trainable keys), at o_proj, or inside the MLP; with a
    parallel residual (GPT-NeoX, Phi) the MLP branch gets none from the attention. Traced: the first block of
    llama-lora-mlp-eager saves no attention probabilities (tests/trace/test_crosscheck.py).
    """
    T, c, r = ctx.tokens, ctx.compute_bytes, ctx.resid_bytes
    h = layer.hidden
    groups_adapted = {lin.group for lin in lora} | {lin.group for lin, _ in ia3}
    attn_core = input_grad or "attn_in" in groups_adapted or ctx.kv_seq > ctx.seq  # prefix keys are trained
    after_attn = attn_core or "attn_out" in groups_adapted
    mlp_input = input_grad or (after_attn and not layer.parallel_residual)
    mlp_core = mlp_input or "mlp_in" in groups_adapted
    after_mlp = mlp_core or "mlp_out" in groups_adapted
    # which of the block's norms see a gradient, in order: pre-norm (input, [post-attn, pre-ff, post-ff] for
    # Gemma 2's four, the MLP's otherwise), post-norm (after attention, after the MLP); T5's decoder: 3
    if input_grad:
        norms = layer.norms
    elif layer.post_norm:
        norms = [after_attn, after_mlp][:layer.norms].count(True)
    elif layer.norms == 4:
        norms = [False, attn_core, mlp_input, after_mlp].count(True)
    else:
        norms = [False, mlp_input, mlp_input][:layer.norms].count(True)
    total = norms * norm_saved_bytes(T, h, layer.norm_kind, r, ctx.autocast, ctx.norms_trainable)
    if layer.head_norms and attn_core:  # per-head q/k RMSNorms (Qwen3, Gemma 3) over the q and k projections
        total += norm_saved_bytes(T, layer.q_width, "rms", c, ctx.autocast, ctx.norms_trainable)
        total += norm_saved_bytes(T, layer.kv_width, "rms", c, ctx.autocast, ctx.norms_trainable)
    norm_out_bytes = linear_input_bytes(layer, "attn_in", ctx)
    groups: dict[str, list[LinearShape]] = {}
    for lin in layer.linears:
        groups.setdefault(lin.group, []).append(lin)
    moe_factor = layer.experts_per_token if layer.experts else 1
    if ctx.base_trainable:
        for group, lins in groups.items():
            if group == "cross_kv":
                continue  # reads the encoder output, saved once per model (model_activation_bytes)
            if group == "attn_out" and ctx.attention != "eager" and not any(
                    lin.name.endswith(("EncDecAttention.o", "crossattention.output.dense")) for lin in lins):
                continue  # o_proj's input is the SDPA output, already saved by the attention
            if group == "mlp_out" and activation_saves_output(layer) and not any(
                    "DenseReluDense" in lin.name for lin in lins):  # T5 puts a dropout between
                continue  # fc2's input is ReLU's output, which ReLU saves for its own backward (OPT)
            in_bytes = norm_out_bytes if group in ("attn_in", "mlp_in", "cross_q") else c
            total += sum(linear_inputs_saved_bytes(T, d_in, len([x for x in lins if x.d_in == d_in]), in_bytes, c,
                                                   ctx.autocast)
                         for d_in in {x.d_in for x in lins})
        if layer.experts:  # routed experts: each token's hidden state is gathered k times and read by the experts
            total += c * T * moe_factor * h * 2 + c * T * moe_factor * layer.intermediate_size
    # prefix keys make SDPA take an explicit mask: transformers then repeats k and v to n_q heads (use_gqa_in_sdpa
    # needs attention_mask None) and the memory-efficient kernel saves the mask as a float bias per call
    prefix_masked = ctx.attention == "sdpa" and ctx.kv_seq > ctx.seq
    if attn_core:
        total += attention_saved_bytes(ctx.batch, ctx.seq, ctx.kv_seq, layer.heads,
                                       layer.heads if prefix_masked else layer.kv_heads,
                                       layer.head_dim, c, ctx.attention,
                                       ctx.dropout and layer.attention_dropout > 0, layer.attn_softcap)
    if attn_core and prefix_masked:
        total += sdpa_mask_bias_saved_bytes(ctx.batch, ctx.seq, ctx.kv_seq, c)
    if attn_core and layer.fused_qkv_view and ctx.kv_cache_copies:
        total += fused_qkv_kept_bytes(T, layer.kv_width, c)
    if attn_core and layer.attn_bias:
        total += attention_bias_saved_bytes(layer.heads, ctx.seq, ctx.kv_seq, c, ctx.attention)
    if layer.cross_attention:
        total += attention_saved_bytes(ctx.batch, ctx.seq, ctx.kv_seq, layer.heads, layer.heads, layer.head_dim, c,
                                       ctx.attention, ctx.dropout and layer.attention_dropout > 0)
    if mlp_core:
        total += mlp_saved_bytes(T * moe_factor, layer.intermediate_size, ctx.mlp_bytes or c, layer.gated_mlp,
                                 layer.activation, ctx.autocast)
    if ctx.dropout and layer.hidden_dropout > 0:
        sublayers = 3 if layer.cross_attention else 2
        sublayers = sublayers if input_grad else [after_attn, after_mlp].count(True)
        total += sublayers * dropout_mask_bytes(T, h)
        if layer.mlp_dropout and mlp_core:  # T5: dropout between the activation and wo
            total += dropout_mask_bytes(T * moe_factor, layer.intermediate_size)
    shared_groups: set[str] = set()
    # which groups read a tensor that needs a gradient: dropout saves its mask only for those
    grad_in = {"attn_in": input_grad, "cross_q": input_grad, "attn_out": attn_core, "mlp_in": mlp_input,
               "mlp_out": mlp_core}
    for lin in lora:
        in_bytes = _adapter_copy_bytes(ctx)
        source_bytes = norm_out_bytes if lin.group in ("attn_in", "mlp_in", "cross_q") else c
        if not ctx.autocast and source_bytes == in_bytes and ctx.lora_dropout == 0:
            # x already has the adapter dtype: every adapter of the group saves the same storage
            if lin.group in shared_groups:
                total += in_bytes * T * ctx.lora_r
                continue
            shared_groups.add(lin.group)
        total += lora_saved_bytes(T, lin.d_in, ctx.lora_r, in_bytes,
                                  ctx.lora_dropout > 0 and grad_in.get(lin.group, True))
    for lin, is_ff in ia3:
        total += ia3_saved_bytes(T, lin.d_in if is_ff else lin.d_out, c, is_ff)
    if adapter_size:
        total += 2 * bottleneck_adapter_saved_bytes(T, h, adapter_size, c)
    return total


def attention_backward_workspace_bytes(layer: LayerShape, ctx: ActivationContext) -> int:
    """What a fused (flash / memory-efficient) attention backward allocates beyond dq, dk and dv: an fp32 dq
    accumulator (4*T*n_q*d), fp32 softmax_d (4*b*n_q*s) and, with GQA, dk/dv expanded to n_q heads (2*c*T*n_q*d)
    before they are summed over each group. 0 for eager attention. The tracer cannot see these buffers (the fake
    kernels allocate only the gradients) and adds this term.
    Source: flash-attention csrc flash_api.cpp mha_bwd (dq_accum, softmax_d, dk_expanded / dv_expanded).
    Example: Llama-3.1-8B, T=4096 (b=1), bf16: 4*4096*4096 + 4*32*4096 + 2*2*4096*4096
      = 67,108,864 + 524,288 + 67,108,864 = 134,742,016 B.
    """
    if ctx.attention == "eager":
        return 0
    T, c = ctx.tokens, ctx.compute_bytes
    workspace = 4 * T * layer.q_width + 4 * ctx.batch * layer.heads * ctx.seq
    if layer.kv_heads < layer.heads:
        workspace += 2 * c * T * layer.q_width
    return workspace


def cuda_softmax_backward_tmp_bytes(elements: int, grad_bytes: int) -> int:
    """The temporary PyTorch's CUDA softmax backward allocates before its kernel: `tmp = grad * output`, one tensor
    of the gradient's size and dtype, freed when the kernel returns. It sits beside the incoming gradient, the saved
    output and the input gradient, so in eager attention it adds a fourth [b, n_q, s, s_k] tensor to the backward's
    peak. The CPU kernel has no such temporary, so the tracer (which runs CPU kernels on fake tensors) adds it at
    every `_softmax_backward_data` (memplan.trace.tracker).
    Formula: g * E, E the softmax's elements (b*n_q*s*s_k for attention), g the gradient's bytes per element (4
    where transformers takes the softmax in fp32).
    Source: aten/src/ATen/native/cuda/SoftMax.cu `softmax_backward_cuda_out`; measured: profiles/
    lora-all-r16-llama8b-s4096-b2-eager allocated 4,096.0 MiB more in backward than the CPU trace, which is this
    term for b=2, n_q=32, s=s_k=4096, fp32.
    Example: b=2, n_q=32, s=s_k=4096, fp32 gradient: 4*2*32*4096*4096 = 4,294,967,296 B.
    """
    return grad_bytes * elements


def mlp_backward_transient_bytes(tokens: int, intermediate: int, compute_bytes: int, activation: str,
                                 autocast: bool) -> int:
    """The gradients transformers' python GELU (gelu_new) holds at once in backward under CUDA autocast, where
    its chain runs in fp32: the fp32 gradient of its output (the backward of the cast to c for the next linear),
    the two fp32 gradients of the product 0.5*x * (1 + tanh(...)) and the c-byte cast of the one for 0.5*x,
    (12 + c)*T*I, while the c-byte input the next linear saved (c*T*I) is already freed: net 12*T*I beyond the
    block's saved tensors. 0 for other activations (covered by block_backward_transient_bytes' flowing gradients).
    Source: activations.py NewGELUActivation; traced (phi-full-bf16, T=1024, I=10240: 140 MiB in the top block).
    Example: Phi-2, T=4096, I=10240, bf16: 12*4096*10240 = 503,316,480 B.
    """
    if activation in _FP32_CHAIN_GELUS and autocast and compute_bytes != 4:
        return 12 * tokens * intermediate
    return 0


@lru_cache(maxsize=256)
def _without_mlp(layer: LayerShape) -> LayerShape:
    """The block with no MLP and one norm fewer (block_mlp_saved_bytes); LayerShape is frozen, so cached."""
    return replace(layer, intermediate_size=0, mlp_dropout=False, norms=max(layer.norms - 1, 0),
                   linears=tuple(lin for lin in layer.linears if not lin.group.startswith("mlp")))


def block_mlp_saved_bytes(layer: LayerShape, ctx: ActivationContext, lora: tuple[LinearShape, ...] = (),
                          ia3: tuple[tuple[LinearShape, bool], ...] = (), adapter_size: int = 0,
                          input_grad: bool = True) -> int:
    """What the MLP side of a block saves (its norm, its intermediates, its linears' and adapters' inputs, its
    weights' autocast copies): freed once the MLP's backward is done, before the attention's backward runs. The block's bytes less those of the
    same block with no MLP and one norm fewer. Example: the Llama-3.1-8B full-fine-tuning block of the module
    docstring saves 4*T*h + 2*T*h (the norm) + 2*T*h + 2*T*I + 3*2*T*I (gate/up input, down input, SwiGLU)
    = 603,979,776 B on its MLP side."""
    attn_only = _without_mlp(layer)
    lora_attn = tuple(lin for lin in lora if not lin.group.startswith("mlp"))
    ia3_attn = tuple((lin, ff) for lin, ff in ia3 if not lin.group.startswith("mlp"))
    casts = ctx.weight_cast_bytes * sum(lin.d_in * lin.d_out for lin in layer.linears if lin.group.startswith("mlp"))
    return block_activation_bytes(layer, ctx, lora, ia3, adapter_size, input_grad) \
        - block_activation_bytes(attn_only, ctx, lora_attn, ia3_attn, adapter_size, input_grad) + casts


def block_backward_transient_bytes(layer: LayerShape, ctx: ActivationContext, mlp_saved: int = 0,
                                   mlp_out_adapter_saved: int = 0) -> int:
    """Bytes a block's backward holds beyond what the blocks saved: the larger of its two phases.
    - MLP phase: the gradients flowing through it, c*T*(2h + 2I) (hidden-state and MLP gradients in flight), or
      the MLP activation's own backward (`mlp_backward_transient_bytes`), which runs right after the output
      projection's, whose weight gradient (r bytes per weight) then exists when the base weights train.
    - attention phase: the hidden-state gradients, c*T*2h, and the attention backward's buffers: the fused
      kernels' workspace (`attention_backward_workspace_bytes`), or, for eager, at softmax's backward: the fp32
      gradient of the probabilities (the backward of their cast to c), softmax's fp32 input gradient and CUDA's
      fp32 `grad * output` temporary (`cuda_softmax_backward_tmp_bytes`), less the c-byte cast the matmul with v
      saved, released once that matmul's backward is done: (12 - c)*b*n_q*s*s_k. The MLP's
      `mlp_saved` bytes are freed by then, and when the base weights train, the weight gradients of the MLP and
      the attention output projection (r bytes per weight) exist.
    `mlp_out_adapter_saved`: what adapters on the MLP's output projection saved (`lora_saved_bytes`), freed before
    the activation's backward runs, so not held beside its gradients.
    Source: memory-mechanics.md A5; traced (tests/trace/test_crosscheck.py: llama-lora-mlp-eager peaks before the
    top block's attention backward, whose MLP tensors are gone).
    Example: Llama-3.1-8B, T=4096, bf16, sdpa, LoRA (frozen base): MLP phase 2*4096*(8192 + 28672)
      = 301,989,888 B; attention phase 2*4096*8192 + 134,742,016 (the workspace) = 201,850,880 B: 301,989,888 B.
    """
    T, c = ctx.tokens, ctx.compute_bytes
    inter = layer.intermediate_size * (layer.experts_per_token if layer.experts else 1)
    mlp = mlp_backward_transient_bytes(T, inter, c, layer.activation, ctx.autocast)
    if mlp and mlp_out_adapter_saved:
        # an adapted output projection's backward has freed what its adapter saved (traced: phi-lora-all-gc)
        mlp -= mlp_out_adapter_saved
    if mlp and ctx.base_trainable:
        mlp += sum(ctx.resid_bytes * lin.d_in * lin.d_out for lin in layer.linears if lin.group == "mlp_out")
    mlp_phase = max(c * T * (2 * layer.hidden + 2 * inter), mlp)
    attention = c * T * 2 * layer.hidden
    if ctx.base_trainable:
        attention += sum(ctx.resid_bytes * lin.d_in * lin.d_out for lin in layer.linears
                         if lin.group in ("mlp_in", "mlp_out", "attn_out"))
    if ctx.attention == "eager":
        scores = ctx.batch * layer.heads * ctx.seq * ctx.kv_seq
        attention += (8 - c) * scores + cuda_softmax_backward_tmp_bytes(scores, 4)
    else:
        attention += attention_backward_workspace_bytes(layer, ctx)
    return max(mlp_phase, attention - mlp_saved)


def merged_params_saved_bytes(numel: int, weight_bytes: int) -> int:
    """LoRA on a fused expert stack (PEFT ParamWrapper, `target_parameters`): each forward parametrizes the stack as
    W + s * B @ A, materialized whole by one baddbmm in W's dtype and cached for the forward
    (nn.utils.parametrize.cached); the expert matmuls save it for their input gradient, so every adapted block
    keeps a full copy of its expert stacks (and router weight) until its backward.

    Formula: numel(merged parameters of the block) * bytes(W).
    Source: peft/tuners/lora/layer.py ParamWrapper._activate_lora, _LoraFactorsProxy.forward (torch.baddbmm);
    traced (2 Qwen3-30B-A3B-shaped layers, LoRA all-linear: 1.21 GB of merged stacks per layer).
    Example: Qwen3-30B-A3B, one layer (gate_up 128 x 1536 x 2048 + down 128 x 2048 x 768 + router 128 x 2048),
      bf16: 2 * (402,653,184 + 201,326,592 + 262,144) = 1,208,483,840 B.
    """
    return numel * weight_bytes


def merged_params_backward_transient_bytes(numels_backward_order: list[int], weight_bytes: int) -> int:
    """The backward of LoRA on fused expert stacks: each expert matmul's backward makes the gradient of its whole
    merged stack ([E, out, in] in W's dtype) before baddbmm's backward turns it into the adapters' gradients; the
    merged stack it saved is freed after, so a later stack's gradient reuses the room of the ones done before it.

    Formula: max over stacks k (in backward order) of (numel_k - sum of numel_j done before k) * bytes(W), at least 0.
    Source: torch grouped_mm / baddbmm backward (autograd); peft ParamWrapper; traced (Qwen3-30B-A3B-shaped LoRA:
    down_proj's gradient then gate_up_proj's, net 403 MB at the peak).
    Example: Qwen3-30B-A3B (down 201,326,592, then gate_up 402,653,184), bf16:
      max(201,326,592, 402,653,184 - 201,326,592) * 2 = 402,653,184 B.
    """
    done, peak = 0, 0
    for n in numels_backward_order:
        peak = max(peak, n - done)
        done += n
    return peak * weight_bytes
