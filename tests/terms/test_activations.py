"""Worked examples of memplan.terms.activations: Llama-3.1-8B shapes, b=1, s=4096, bf16."""

from memplan.terms import activations as a
from memplan.terms.shapes import LayerShape, LinearShape

T, H, HKV, I, NQ = 4096, 4096, 1024, 14336, 32

LLAMA8B_BLOCK = LayerShape(
    stack="decoder", index=0, hidden=H, heads=NQ, kv_heads=8, head_dim=128, intermediate_size=I, gated_mlp=True,
    activation="silu", norm_kind="rms", norms=2,
    linears=(LinearShape("self_attn.q_proj", "attn_in", H, H), LinearShape("self_attn.k_proj", "attn_in", H, HKV),
             LinearShape("self_attn.v_proj", "attn_in", H, HKV), LinearShape("self_attn.o_proj", "attn_out", H, H),
             LinearShape("mlp.gate_proj", "mlp_in", H, I), LinearShape("mlp.up_proj", "mlp_in", H, I),
             LinearShape("mlp.down_proj", "mlp_out", I, H)))


def ctx(**kw):
    base = dict(batch=1, seq=T, kv_seq=T, compute_bytes=2, resid_bytes=2, attention="sdpa", autocast=False,
                base_trainable=True, norms_trainable=True)
    base.update(kw)
    return a.ActivationContext(**base)


def test_pieces():
    assert a.norm_saved_bytes(T, H, "rms", 2, False, True) == 100_663_296
    assert a.linear_inputs_saved_bytes(T, H, 3, 2, 2, False) == 33_554_432
    assert a.linear_inputs_saved_bytes(T, H, 3, 4, 2, True) == 3 * 33_554_432  # autocast: one cast per linear
    assert a.attention_saved_bytes(1, T, T, NQ, 8, 128, 2, "sdpa") == 84_410_368
    assert a.mlp_saved_bytes(T, I, 2, True, "silu") == 352_321_536
    assert a.dropout_mask_bytes(1024, 768) == 786_432
    assert a.lora_saved_bytes(T, H, 16, 4, False) == 67_371_008
    assert a.ia3_saved_bytes(T, 1024, 2) == 8_388_608
    assert a.bottleneck_adapter_saved_bytes(T, H, 64, 2) == 34_603_008
    assert a.checkpoint_saved_bytes(T, H, 2) == 33_554_432
    assert a.activation_saved_tensors("gelu_new") == 4 and a.activation_saved_tensors("silu") == 1


def test_calibrated_pieces():
    """The docstring examples of the terms corrected by the H100 runs (profiles/, docs/accuracy.md)."""
    # gelu_new under autocast: pow runs in fp32 -> (12 + c)*T*I; without autocast 4 saved c-byte tensors
    assert a.mlp_saved_bytes(4096, 3072, 2, False, "gelu_new", autocast=True) == 14 * 4096 * 3072 == 176_160_768
    assert a.mlp_saved_bytes(4096, 3072, 2, False, "gelu_new") == 4 * 2 * 4096 * 3072
    # (IA)3 feed-forward targets save the input cast to the fp32 vector's dtype
    assert a.ia3_saved_bytes(T, 14336, 2, feedforward=True) == 234_881_024
    # Gemma 2's attention softcapping adds tanh's c-byte output to eager attention, nothing to sdpa
    eager = a.attention_saved_bytes(1, 1024, 1024, 8, 4, 256, 2, "eager")
    assert a.attention_saved_bytes(1, 1024, 1024, 8, 4, 256, 2, "eager", softcap=True) == eager + 2 * 8 * 1024 * 1024
    assert a.attention_saved_bytes(1, 1024, 1024, 8, 4, 256, 2, "sdpa", softcap=True) == \
        a.attention_saved_bytes(1, 1024, 1024, 8, 4, 256, 2, "sdpa")


def test_full_block_is_49_T_h():
    """memory-mechanics A1: T(20h + 4h_kv + 8I) + 4*T*n_q = 49.03*T*h for Llama-3-8B."""
    b = a.block_activation_bytes(LLAMA8B_BLOCK, ctx())
    assert b == T * (20 * H + 4 * HKV + 8 * I) + 4 * T * NQ == 822_607_872
    assert round(b / (T * H), 2) == 49.03


def test_lora_block_is_72_T_h():
    """memory-mechanics A1: LoRA r=16 on all 7 projections, fp32 adapters, no autocast: 72.1*T*h per layer."""
    c = ctx(base_trainable=False, norms_trainable=False, lora_r=16)
    b = a.block_activation_bytes(LLAMA8B_BLOCK, c, lora=LLAMA8B_BLOCK.linears)
    assert round(b / (T * H), 1) == 72.1


def test_eager_adds_s_squared():
    """Eager: T(24h + 8I) + 6*b*n_q*s^2 for the full block (memory-mechanics A1)."""
    b = a.block_activation_bytes(LLAMA8B_BLOCK, ctx(attention="eager"))
    assert b == T * (24 * H + 8 * I) + 6 * NQ * T * T


def test_backward_transient_example():
    lora = ctx(base_trainable=False, norms_trainable=False)
    assert a.block_backward_transient_bytes(LLAMA8B_BLOCK, lora) == 301_989_888  # the MLP phase
    # eager: the attention phase's probability gradients (fp32 grad, fp32 input grad, CUDA's fp32 grad * output,
    # less the bf16 probabilities freed by then: 12 - 2), net of the MLP side freed before it
    mlp_saved = a.block_mlp_saved_bytes(LLAMA8B_BLOCK, ctx())
    # the MLP's norm, gate/up input, down input, SwiGLU
    assert mlp_saved == 6 * T * H + 2 * T * H + 2 * T * I + 3 * 2 * T * I == 603_979_776
    mlp_and_o_grads = 2 * (3 * H * I + H * H)
    assert a.block_backward_transient_bytes(LLAMA8B_BLOCK, ctx(attention="eager"), mlp_saved) == \
        2 * T * 2 * H + mlp_and_o_grads + 10 * NQ * T * T - mlp_saved


def test_cuda_softmax_backward_tmp_example():
    """b=2, n_q=32, s=s_k=4096, fp32 gradient: the 4,096 MiB the H100 eager run held beyond the CPU trace."""
    assert a.cuda_softmax_backward_tmp_bytes(2 * 32 * 4096 * 4096, 4) == 4_294_967_296 == 4096 * 2**20


def test_attention_backward_workspace_example():
    """dq accumulator 4*T*n_q*d + softmax_d 4*b*n_q*s + GQA-expanded dk/dv 2*c*T*n_q*d (the docstring)."""
    assert a.attention_backward_workspace_bytes(LLAMA8B_BLOCK, ctx()) == 134_742_016
    assert a.attention_backward_workspace_bytes(LLAMA8B_BLOCK, ctx(attention="eager")) == 0


def test_traced_transients():
    """Docstring examples of the transients the cross-check with the trace engine found (tests/trace)."""
    # LoRA on down_proj under autocast with dropout: x.to(fp32) and dropout's fp32 output, 8*T*d_in
    assert a.lora_forward_transient_bytes(T, I, 2, 4, True, True) == 8 * T * I == 469_762_048
    assert a.lora_forward_transient_bytes(T, I, 2, 4, False, False) == 0  # the fp32 cast is what lora_A saves
    # gelu_new's fp32 backward chain under autocast: 12*T*I net of the freed input of the next linear
    assert a.mlp_backward_transient_bytes(4096, 10240, 2, "gelu_new", True) == 503_316_480
    assert a.mlp_backward_transient_bytes(4096, 10240, 2, "gelu", True) == 0
    # an adapted output projection has freed its saved cast and mask: 12*T*I - (2 + 1)*T*I - 2*T*r
    saved = a.lora_saved_bytes(4096, 10240, 16, 2, True)
    phi = LayerShape(stack="decoder", index=0, hidden=2560, heads=32, kv_heads=32, head_dim=80,
                     intermediate_size=10240, gated_mlp=False, activation="gelu_new", norm_kind="layer", norms=1)
    c = ctx(autocast=True, base_trainable=False, norms_trainable=False, seq=4096)
    assert a.block_backward_transient_bytes(phi, c, 0, saved) == 503_316_480 - saved
    fc2 = (LinearShape("mlp.fc2", "mlp_out", 10240, 2560), LinearShape("mlp.fc1", "mlp_in", 2560, 10240))
    assert a.mlp_out_adapter_saved_bytes(fc2, ctx(autocast=True, lora_r=16, lora_dropout=0.05)) == 125_960_192
    assert a.linear_input_bytes(phi, "mlp_out", c) == 4  # the python GELU's output is fp32 under autocast
    # GPT-2's fused qkv output kept by q's view beside the cache's k, v copies, T=1024, h=768, bf16
    assert a.fused_qkv_kept_bytes(1024, 768, 2) == 3_145_728
    # prefix tuning's boolean mask as a saved bf16 bias, b=2, s=512, s_k=532
    assert a.sdpa_mask_bias_saved_bytes(2, 512, 532, 2) == 1_089_536
    # BERT-base's last block under LoRA q, v and AMP, T=1024: (4 + 2)*T*h + 3*4*T*h + 2*T*I
    bert = LayerShape(stack="encoder", index=11, hidden=768, heads=12, kv_heads=12, head_dim=64,
                      intermediate_size=3072, gated_mlp=False, activation="gelu", norm_kind="layer", norms=2,
                      post_norm=True)
    bert_ctx = ctx(batch=2, seq=512, kv_seq=512, autocast=True, base_trainable=False, norms_trainable=False)
    assert a.post_norm_block_end_bytes(bert, bert_ctx) == 20_447_232
    relu = LayerShape(stack="decoder", index=0, hidden=1024, heads=16, kv_heads=16, head_dim=64,
                      intermediate_size=4096, gated_mlp=False, activation="relu", norm_kind="layer", norms=2)
    assert a.activation_saves_output(relu) and not a.activation_saves_output(LLAMA8B_BLOCK)


def test_first_block_saves_from_its_first_adapter():
    """LoRA on the MLP only: the first block's input needs no gradient, so its norms and attention save nothing;
    the MLP (its norm's output feeds the adapters) saves as in any block."""
    c = ctx(base_trainable=False, norms_trainable=False, lora_r=16)
    mlp = tuple(lin for lin in LLAMA8B_BLOCK.linears if lin.group.startswith("mlp"))
    full = a.block_activation_bytes(LLAMA8B_BLOCK, c, lora=mlp)
    first = a.block_activation_bytes(LLAMA8B_BLOCK, c, lora=mlp, input_grad=False)
    assert full - first == 2 * a.norm_saved_bytes(T, H, "rms", 2, False, False) \
        + a.attention_saved_bytes(1, T, T, NQ, 8, 128, 2, "sdpa")
    # with LoRA dropout, an adapter whose input needs no gradient saves no mask: q_proj in the first block
    drop = ctx(base_trainable=False, norms_trainable=False, lora_r=16, lora_dropout=0.05)
    q = (LLAMA8B_BLOCK.linears[0],)
    assert a.block_activation_bytes(LLAMA8B_BLOCK, drop, lora=q) - a.block_activation_bytes(
        LLAMA8B_BLOCK, drop, lora=q, input_grad=False) == a.norm_saved_bytes(T, H, "rms", 2, False, False) + T * H
    # an adapter on q_proj starts the gradient before the attention: only the input norm is skipped
    q = (LLAMA8B_BLOCK.linears[0],)
    assert a.block_activation_bytes(LLAMA8B_BLOCK, c, lora=q) - \
        a.block_activation_bytes(LLAMA8B_BLOCK, c, lora=q, input_grad=False) == a.norm_saved_bytes(T, H, "rms", 2,
                                                                                                   False, False)
