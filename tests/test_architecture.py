import time

import pytest

from memplan.architecture import ArchitectureError, introspect


def test_llama_8b_shapes():
    info = introspect("meta-llama/Llama-3.1-8B")
    assert (info.num_layers, info.hidden_size, info.num_heads, info.num_kv_heads, info.head_dim) == (32, 4096, 32, 8, 128)
    assert (info.intermediate_size, info.vocab_size) == (14336, 128_256)
    assert not info.tied_embeddings and info.output_modules == ("lm_head",)
    assert info.largest_module_params == 128_256 * 4096
    names = {(lin.name, lin.d_in, lin.d_out) for lin in info.layers[0].linears}
    assert ("self_attn.k_proj", 4096, 1024) in names and ("mlp.down_proj", 14336, 4096) in names
    # every decoder Linear is quantizable, the lm_head and embeddings are not (transformers get_keys_to_not_convert)
    quant = {p.module for p in info.params if p.quantizable}
    assert "lm_head" not in quant and len(quant) == 32 * 7


def test_encoder_decoder_and_encoder_heads():
    t5 = introspect("google/flan-t5-base")
    assert t5.head == "seq2seq_lm" and t5.num_encoder_layers == 12 and t5.num_layers == 12
    assert any(layer.cross_attention for layer in t5.layers)
    bert = introspect("google-bert/bert-base-uncased")
    assert bert.head == "sequence_classification" and bert.total_params == 109_482_240 + 768 * 2 + 2
    assert introspect("google-bert/bert-base-uncased", num_labels=5).total_params == 109_482_240 + 768 * 5 + 5


def test_gpt2_conv1d_is_linear():
    info = introspect("openai-community/gpt2")
    assert [lin.name for lin in info.layers[0].linears] == ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]
    assert info.layers[0].linears[0].d_in == 768 and info.layers[0].linears[0].d_out == 3 * 768
    assert info.tied_embeddings


def test_moe_experts():
    info = introspect("mistralai/Mixtral-8x7B-v0.1")
    assert info.num_experts == 8 and info.experts_per_token == 2
    assert info.active_params == 12_879_925_248


def test_inline_config_and_cache():
    cfg = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000}
    first = introspect(inline=cfg)
    start = time.perf_counter()
    again = introspect(inline=dict(cfg, transformers_version="9.9"))  # bookkeeping does not change the hash
    assert again is first
    assert time.perf_counter() - start < 1.0  # served from the cache, not rebuilt (generous bound)


def test_remote_code_and_unknown_types_are_refused():
    with pytest.raises(ArchitectureError, match="remote code"):
        introspect(inline={"model_type": "qwen", "auto_map": {"AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel"}})
    with pytest.raises(ArchitectureError, match="unknown model_type 'my_secret_arch'"):
        introspect(inline={"model_type": "my_secret_arch", "hidden_size": 8})


def test_residual_layout():
    """Where the gradient of an adapter-trained first block starts depends on the block's layout (the first-block
    rule of terms.activations.block_activation_bytes)."""
    llama = introspect("meta-llama/Llama-3.2-1B").layers[0]
    assert not llama.parallel_residual and not llama.post_norm
    assert introspect("EleutherAI/pythia-410m").layers[0].parallel_residual  # use_parallel_residual
    assert introspect("microsoft/phi-2").layers[0].parallel_residual
    assert introspect("google-bert/bert-base-uncased").layers[0].post_norm
    assert introspect("facebook/opt-350m").layers[0].post_norm  # do_layer_norm_before=False
    assert not introspect("facebook/opt-1.3b").layers[0].post_norm


def test_fused_qkv_views_and_outer_dropouts():
    """GPT-2's q, k and v stay views of c_attn's output (no rotary makes new ones); GPT-NeoX's fused projection
    is rotated into new tensors; separate projections are never views of one output. Dropouts outside the blocks:
    GPT-2's after the embeddings, BERT's (its classifier's dropout reads [b, h] and is not counted), T5's module
    applied twice per stack, none in OPT-350m or Llama."""
    gpt2 = introspect("openai-community/gpt2")
    assert gpt2.layers[0].fused_qkv_view and gpt2.outer_dropouts == 1
    assert not introspect("EleutherAI/pythia-410m").layers[0].fused_qkv_view
    assert not introspect("meta-llama/Llama-3.2-1B").layers[0].fused_qkv_view
    assert introspect("facebook/opt-350m").outer_dropouts == 0
    assert introspect("meta-llama/Llama-3.2-1B").outer_dropouts == 0
    assert introspect("google-bert/bert-base-uncased", head="sequence_classification").outer_dropouts == 1
    assert introspect("google-t5/t5-small").outer_dropouts == 2
