"""The configurations the two engines are cross-checked on (tests/trace/test_crosscheck.py, bench/trace_crosscheck.py).

Small shapes: each architecture's catalog config with 2 layers (each layer is traced op by op, so fewer layers
trace faster) and an 8,192-token vocabulary, so that activations are a large share of the peak and a wrong
activation term shows. Real widths, heads and head dims are kept.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from memplan.catalog import MODELS_DIR

#: config keys that set the layer count, per spelling
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "num_decoder_layers")


def small_config(model_id: str, layers: int = 2, vocab: int = 8192) -> dict[str, Any]:
    raw = dict(json.loads((MODELS_DIR / f"{model_id}.json").read_text())["config"])
    for key in _LAYER_KEYS:
        if key in raw:
            raw[key] = layers
    if "layer_types" in raw:
        raw["layer_types"] = raw["layer_types"][:layers]
    raw["vocab_size"] = vocab
    for key in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
        if isinstance(raw.get(key), int) and raw[key] >= vocab:
            raw[key] = 0
    if raw.get("is_encoder_decoder"):  # T5's labels are shifted right from this token
        raw.setdefault("decoder_start_token_id", raw.get("pad_token_id", 0))
    return raw


GPT2, OPT, PYTHIA = "openai-community/gpt2", "facebook/opt-350m", "EleutherAI/pythia-410m"
LLAMA, QWEN, GEMMA2 = "meta-llama/Llama-3.2-1B", "Qwen/Qwen2.5-0.5B", "google/gemma-2-2b"
PHI, BERT, T5 = "microsoft/phi-2", "google-bert/bert-base-uncased", "google-t5/t5-small"
QWEN_MOE, DEEPSEEK_V2, MIXTRAL = "Qwen/Qwen3-30B-A3B", "deepseek-ai/DeepSeek-V2-Lite", "mistralai/Mixtral-8x7B-v0.1"


def _job(model: str, **fields: Any) -> dict[str, Any]:
    base = {"model_config": small_config(model), "seq_len": 512, "micro_batch_size": 2}
    return {**base, **fields}


#: DeepSeek-V3's attention and dense-MLP widths (multi-head latent attention: a 512-value latent and a 64-value
#: rotary key cached per token; 128 heads of 128 + 64 for queries and keys, 128 for values), 2 dense layers: no
#: catalog model has MLA yet, so the shape is written out (deepseek-ai/DeepSeek-V3 config.json values)
MLA_CONFIG = {"model_type": "deepseek_v3", "hidden_size": 7168, "num_hidden_layers": 2, "num_attention_heads": 128,
              "num_key_value_heads": 128, "kv_lora_rank": 512, "q_lora_rank": 1536, "qk_nope_head_dim": 128,
              "qk_rope_head_dim": 64, "v_head_dim": 128, "intermediate_size": 18432, "moe_intermediate_size": 2048,
              "n_routed_experts": 256, "num_experts_per_tok": 8, "first_k_dense_replace": 2, "vocab_size": 8192,
              "max_position_embeddings": 163840}


#: (name, job): at least 8 architectures; full, LoRA with several targets, QLoRA, prompt tuning, prefix tuning,
#: (IA)3; checkpointing on and off; eager and sdpa; AMP and pure bf16; AdamW, 8-bit AdamW, SGD, Adafactor
CONFIGS: list[tuple[str, dict[str, Any]]] = [
    # full fine-tuning
    ("gpt2-full-bf16", _job(GPT2, method="full")),
    ("gpt2-full-amp", _job(GPT2, method="full", weight_dtype="fp32")),
    ("gpt2-full-eager-gc", _job(GPT2, method="full", attention="eager", gradient_checkpointing=True)),
    ("opt-full-bf16", _job(OPT, method="full")),
    ("opt-full-amp-sgd", _job(OPT, method="full", weight_dtype="fp32", optimizer="sgd_momentum")),
    ("pythia-full-bf16", _job(PYTHIA, method="full")),
    ("pythia-full-gc", _job(PYTHIA, method="full", gradient_checkpointing=True)),
    ("llama-full-bf16", _job(LLAMA, method="full")),
    ("llama-full-eager", _job(LLAMA, method="full", attention="eager")),
    ("llama-full-gc-adafactor", _job(LLAMA, method="full", gradient_checkpointing=True, optimizer="adafactor")),
    ("llama-full-amp-adamw8bit", _job(LLAMA, method="full", weight_dtype="fp32", optimizer="adamw_8bit")),
    ("llama-full-foreach", _job(LLAMA, method="full", optimizer_impl="foreach")),
    ("qwen-full-bf16", _job(QWEN, method="full")),
    ("qwen-full-amp-gc", _job(QWEN, method="full", weight_dtype="fp32", gradient_checkpointing=True)),
    ("gemma2-full-eager", _job(GEMMA2, method="full", attention="eager")),
    ("phi-full-bf16", _job(PHI, method="full")),
    ("phi-full-gc-sgd", _job(PHI, method="full", gradient_checkpointing=True, optimizer="sgd")),
    ("bert-full-seqcls", _job(BERT, method="full")),
    ("bert-full-gc", _job(BERT, method="full", gradient_checkpointing=True)),
    ("t5-full-bf16", _job(T5, method="full", attention="eager")),
    # LoRA, several targets
    ("gpt2-lora-all", _job(GPT2)),
    ("opt-lora-qv", _job(OPT, lora={"r": 8, "target_modules": ["q_proj", "v_proj"]})),
    ("pythia-lora-qkv", _job(PYTHIA, lora={"r": 16, "target_modules": ["query_key_value"]})),
    ("llama-lora-all", _job(LLAMA)),
    ("llama-lora-all-gc", _job(LLAMA, gradient_checkpointing=True)),
    ("llama-lora-mlp-eager", _job(LLAMA, attention="eager", lora={"r": 32, "target_modules": ["gate_proj", "up_proj", "down_proj"]})),
    ("qwen-lora-attn-amp", _job(QWEN, weight_dtype="fp32", lora={"r": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]})),
    ("gemma2-lora-all", _job(GEMMA2)),
    ("phi-lora-all-gc", _job(PHI, gradient_checkpointing=True)),
    ("bert-lora-qv", _job(BERT, lora={"r": 8, "target_modules": ["query", "value"]})),
    ("t5-lora-qv", _job(T5, lora={"r": 8, "target_modules": ["q", "v"]})),
    # QLoRA
    ("llama-qlora-nf4", _job(LLAMA, method="qlora")),
    ("llama-qlora-nf4-gc", _job(LLAMA, method="qlora", gradient_checkpointing=True)),
    ("qwen-qlora-fp4-nodq", _job(QWEN, method="qlora", weight_dtype="fp4", double_quant=False)),
    ("phi-qlora-paged8bit-gc", _job(PHI, method="qlora", gradient_checkpointing=True, optimizer="paged_adamw_8bit")),
    # prompt tuning, prefix tuning, (IA)3
    ("llama-prompt", _job(LLAMA, method="prompt_tuning")),
    ("gpt2-prompt-gc", _job(GPT2, method="prompt_tuning", gradient_checkpointing=True)),
    ("qwen-prefix", _job(QWEN, method="prefix_tuning")),
    ("opt-prefix", _job(OPT, method="prefix_tuning")),
    ("llama-ia3", _job(LLAMA, method="ia3")),
    ("pythia-ia3", _job(PYTHIA, method="ia3")),
    ("t5-ia3", _job(T5, method="ia3", attention="eager")),
    # inference
    ("llama-infer-bf16", _job(LLAMA, task="inference", inference={"batch_size": 4, "prompt_len": 512, "max_new_tokens": 64})),
    ("qwen-infer-nf4", _job(QWEN, task="inference", weight_dtype="nf4", inference={"batch_size": 2, "prompt_len": 1024, "max_new_tokens": 32})),
    ("gemma2-infer-eager", _job(GEMMA2, task="inference", attention="eager", inference={"batch_size": 2, "prompt_len": 512, "max_new_tokens": 32})),
    ("mla-infer-bf16", {"model_config": MLA_CONFIG, "task": "inference",
                        "inference": {"batch_size": 2, "prompt_len": 1024, "max_new_tokens": 64}}),
    # mixture of experts (transformers 5's fused experts, grouped_mm); LoRA "all-linear" adapts the expert stacks as
    # parameters (PEFT's ParamWrapper), which needs lora_dropout 0
    ("qwen3moe-lora-all", _job(QWEN_MOE, lora={"dropout": 0.0})),
    ("mixtral-lora-all-gc", _job(MIXTRAL, lora={"dropout": 0.0}, gradient_checkpointing=True)),
    ("qwen3moe-infer-bf16", _job(QWEN_MOE, task="inference", inference={"batch_size": 2, "prompt_len": 512, "max_new_tokens": 32})),
    ("deepseekv2-infer-bf16", _job(DEEPSEEK_V2, task="inference", inference={"batch_size": 2, "prompt_len": 512, "max_new_tokens": 32})),
]


def compared_bytes(e: Any) -> int:
    """Peak allocated less the GPU-only terms both engines add from the same functions (the cuBLAS workspace,
    the fused attention backward's buffers): what the formula and the trace each model on their own."""
    shared = ("cublas_workspace", "attention_backward_workspace")
    return e.peak_allocated_bytes - sum(e.components.get(k, 0) for k in shared)


@functools.lru_cache(maxsize=None)
def traced(name: str) -> Any:
    """The trace engine's estimate of the configuration `name`, traced once per process (the cross-check and the
    golden files both read it)."""
    from memplan.estimate import estimate

    return estimate(dict(CONFIGS)[name], engine="trace")
