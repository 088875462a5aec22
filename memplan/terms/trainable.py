"""Trainable parameter counts of each fine-tuning method (exact, from the introspected shapes)."""

from __future__ import annotations


def lora_params(d_in: int, d_out: int, r: int) -> int:
    """LoRA on one linear: A is r x d_in, B is d_out x r, so r * (d_in + d_out) parameters.

    Source: Hu et al. 2021 (arXiv:2106.09685) eq. 3, W0 + BA with B in R^{d x r}, A in R^{r x k};
    peft/tuners/lora/layer.py update_layer (lora_A = Linear(in, r, bias=False), lora_B = Linear(r, out, bias=False)).
    Example: Llama-3.1-8B q_proj (4096 -> 4096) at r=16: 16 * 8192 = 131,072.
    """
    return r * (d_in + d_out)


def prompt_tuning_params(num_virtual_tokens: int, hidden: int, transformer_submodules: int = 1) -> int:
    """Prompt tuning: one learned embedding of width h per virtual token, per transformer stack that gets one.

    Source: Lester et al. 2021 (arXiv:2104.08691); peft/tuners/prompt_tuning/model.py PromptEmbedding
    (Embedding(num_virtual_tokens * num_transformer_submodules, token_dim)); encoder-decoders have 2 submodules.
    Example: 20 tokens on Llama-3.1-8B (h=4096): 81,920.
    """
    return num_virtual_tokens * transformer_submodules * hidden


def prefix_tuning_params(num_virtual_tokens: int, num_layers: int, kv_width: int, transformer_submodules: int = 1
                         ) -> int:
    """Prefix tuning without the reparametrization MLP: a key and a value vector per virtual token per layer.

    Formula: p * L * 2 * token_dim, with token_dim = n_kv * d_head for grouped-query models (peft #1901).
    Source: Li & Liang 2021 (arXiv:2101.00190); peft/tuners/prefix_tuning/model.py PrefixEncoder
    (Embedding(num_virtual_tokens, num_layers * 2 * token_dim)); peft/utils/other.py _prepare_prompt_learning_config.
    Example: 20 tokens on Llama-3.1-8B (L=32, n_kv*d_head = 8*128 = 1024): 20 * 32 * 2 * 1024 = 1,310,720.
    """
    return num_virtual_tokens * transformer_submodules * num_layers * 2 * kv_width


def ia3_params(scaled_output_features: int, scaled_input_features: int) -> int:
    """(IA)^3: one learned scale per output feature of each attention target and per input feature of each
    feed-forward target.

    Source: Liu et al. 2022 (arXiv:2205.05638) l_k, l_v, l_ff; peft/tuners/ia3/layer.py (ia3_l shape
    (out, 1) or (1, in) for feed-forward modules).
    Example: Llama-3.1-8B defaults (k_proj, v_proj, down_proj) per layer: 1024 + 1024 + 14336 = 16,384;
    32 layers: 524,288.
    """
    return scaled_output_features + scaled_input_features


def bottleneck_adapter_params(hidden: int, adapter_size: int, num_layers: int, adapters_per_layer: int = 2) -> int:
    """Houlsby bottleneck adapters: down h -> m and up m -> h with biases, two per layer (after attention, after MLP).

    Formula: L * n_a * (h*m + m + m*h + h). Source: Houlsby et al. 2019 (arXiv:1902.00751) section 2.1.
    Example: Llama-3.1-8B, m=64: 32 * 2 * (2*4096*64 + 64 + 4096) = 33,820,672.
    """
    return num_layers * adapters_per_layer * (2 * hidden * adapter_size + adapter_size + hidden)


def expert_lora_params(experts: int, out_features: int, in_features: int, r: int) -> int:
    """LoRA on a fused expert stack [E, out, in] (PEFT's ParamWrapper for `target_parameters`): a rank-r A and B per
    expert, stored as A [E * r, in] and B [out, r * E]; a 2-D parameter (the router's weight) is one expert.

    Formula: E * r * (in + out).
    Source: peft/tuners/lora/layer.py ParamWrapper.update_layer / get_delta_weight (reshape to E x r x in and
    out x r x E).
    Example: Qwen3-30B-A3B's gate_up_proj (128 experts of 1536 x 2048) at r 16, fused from gate and up so rank 32:
      128 * 32 * (1536 + 2048) = 14,680,064.
    """
    return experts * r * (in_features + out_features)
