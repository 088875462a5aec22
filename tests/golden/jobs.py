"""The golden jobs: full Estimate JSON of each, stored in tests/golden/<engine>/<name>.json and compared byte for
byte (tests/golden/test_golden.py), so that a change of the code's layout provably changes no number.

Formula engine: real-size jobs over every method, optimizer and implementation, attention, gradient checkpointing
on and off, accumulation, DDP, ZeRO stages with offload, inference (bf16, quantized, fp8 / int8 KV caches, eager,
sliding windows), encoder-decoder, classifier and masked-LM heads, MoE, a custom GPU and an inline config.
Both engines: the 45 small cross-check shapes (tests/trace/crosscheck_configs.py), whose traces the cross-check
computes anyway (`traced`), so the trace engine's golden files cost CI no extra trace.

Regenerate (only when a number is meant to change, and say why in the commit):
    python3 -m tests.golden.regenerate
"""

from __future__ import annotations

from typing import Any

from tests.trace.crosscheck_configs import CONFIGS

L8, L70, Q7, M7 = "meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-70B", "Qwen/Qwen2.5-7B", "mistralai/Mistral-7B-v0.1"
GPT2, T5, BERT, G9 = "openai-community/gpt2", "google-t5/t5-base", "google-bert/bert-base-uncased", "google/gemma-2-9b"
PHI, MIX, OPT, FALCON = "microsoft/phi-2", "mistralai/Mixtral-8x7B-v0.1", "facebook/opt-1.3b", "tiiuae/falcon-7b"


def _train(model: str, **fields: Any) -> dict[str, Any]:
    return {"model": model, **fields}


def _infer(model: str, **inference: Any) -> dict[str, Any]:
    fields = {k: inference.pop(k) for k in list(inference) if k not in
              ("batch_size", "prompt_len", "max_new_tokens", "kv_cache_dtype")}
    return {"model": model, "task": "inference", "inference": inference, **fields}


#: (name, job) for the formula engine only
FORMULA_JOBS: list[tuple[str, dict[str, Any]]] = [
    # methods
    ("llama8b-full-bf16", _train(L8, method="full")),
    ("llama8b-full-amp-fp32", _train(L8, method="full", weight_dtype="fp32")),
    ("llama8b-full-amp-fp16", _train(L8, method="full", weight_dtype="fp32", mixed_precision="fp16")),
    ("llama8b-full-gc", _train(L8, method="full", gradient_checkpointing=True, micro_batch_size=4)),
    ("llama8b-full-fp32-noamp", _train(L8, method="full", weight_dtype="fp32", mixed_precision="no", seq_len=512)),
    ("llama8b-lora", _train(L8)),
    ("llama8b-lora-qv-r8-gc", _train(L8, lora={"r": 8, "target_modules": ["q_proj", "v_proj"]},
                                     gradient_checkpointing=True, micro_batch_size=8)),
    ("llama8b-lora-r64-mlp", _train(L8, lora={"r": 64, "dropout": 0.0,
                                               "target_modules": ["gate_proj", "up_proj", "down_proj"]})),
    ("llama8b-qlora-t4", _train(L8, method="qlora", optimizer="paged_adamw_8bit", gradient_checkpointing=True,
                                gpu="T4-16GB")),
    ("llama8b-qlora-fp4-nodq", _train(L8, method="qlora", weight_dtype="fp4", double_quant=False)),
    ("llama8b-qlora-nf4-amp-no", _train(L8, method="qlora", mixed_precision="no", seq_len=1024)),
    ("llama8b-lora-int8", _train(L8, method="lora", weight_dtype="int8")),
    ("llama8b-freeze", _train(L8, method="freeze")),
    ("llama8b-freeze-gc", _train(L8, method="freeze", gradient_checkpointing=True)),
    ("llama8b-prompt", _train(L8, method="prompt_tuning", num_virtual_tokens=32)),
    ("llama8b-prefix", _train(L8, method="prefix_tuning")),
    ("llama8b-ia3", _train(L8, method="ia3")),
    ("llama8b-adapter", _train(L8, method="adapter", adapter_size=128)),
    # optimizers and their implementations
    ("llama8b-full-adamw8bit", _train(L8, method="full", optimizer="adamw_8bit")),
    ("llama8b-full-paged32", _train(L8, method="full", optimizer="paged_adamw_32bit")),
    ("llama8b-full-sgd", _train(L8, method="full", optimizer="sgd")),
    ("llama8b-full-sgd-momentum", _train(L8, method="full", optimizer="sgd_momentum")),
    ("llama8b-full-adafactor", _train(L8, method="full", optimizer="adafactor")),
    ("llama8b-full-lion", _train(L8, method="full", optimizer="lion")),
    ("llama8b-full-none", _train(L8, method="full", optimizer="none")),
    ("llama8b-full-foreach", _train(L8, method="full", optimizer_impl="foreach")),
    ("llama8b-full-forloop", _train(L8, method="full", optimizer_impl="for_loop")),
    ("llama8b-lora-sgd-foreach", _train(L8, optimizer="sgd_momentum", optimizer_impl="foreach")),
    # attention, accumulation, batch
    ("llama8b-lora-eager", _train(L8, attention="eager", seq_len=4096, micro_batch_size=2)),
    ("llama8b-lora-flash", _train(L8, attention="flash_attention_2", seq_len=8192)),
    ("llama8b-lora-ga4", _train(L8, gradient_accumulation_steps=4, micro_batch_size=2)),
    ("llama8b-full-ga8-gc", _train(L8, method="full", gradient_accumulation_steps=8, gradient_checkpointing=True)),
    # data parallelism and ZeRO
    ("llama8b-full-ddp4", _train(L8, method="full", num_gpus=4)),
    ("llama8b-full-zero1-8", _train(L8, method="full", num_gpus=8, zero_stage=1)),
    ("llama8b-full-zero2-8", _train(L8, method="full", num_gpus=8, zero_stage=2)),
    ("llama8b-full-zero3-8", _train(L8, method="full", num_gpus=8, zero_stage=3, gradient_checkpointing=True)),
    ("llama8b-full-zero2-offload", _train(L8, method="full", num_gpus=2, zero_stage=2, offload_optimizer=True)),
    ("llama70b-full-zero3-offload", _train(L70, method="full", num_gpus=8, zero_stage=3, offload_optimizer=True,
                                           offload_params=True, gradient_checkpointing=True)),
    ("llama70b-lora-zero3", _train(L70, num_gpus=8, zero_stage=3, gradient_checkpointing=True)),
    ("llama70b-qlora-zero2", _train(L70, method="qlora", num_gpus=2, zero_stage=2, gradient_checkpointing=True)),
    ("llama8b-lora-zero2-4", _train(L8, num_gpus=4, zero_stage=2)),
    # other architectures and heads
    ("qwen7b-lora-gc", _train(Q7, gradient_checkpointing=True, micro_batch_size=4)),
    ("mistral7b-full-gc", _train(M7, method="full", gradient_checkpointing=True)),
    ("gpt2-full-fp16", _train(GPT2, method="full", weight_dtype="fp32", mixed_precision="fp16", seq_len=1024,
                              micro_batch_size=8)),
    ("gpt2-lora-eager", _train(GPT2, attention="eager", seq_len=1024)),
    ("gemma2-9b-lora-eager", _train(G9, attention="eager", seq_len=4096)),
    ("gemma2-9b-qlora", _train(G9, method="qlora", gradient_checkpointing=True)),
    ("phi2-lora-all", _train(PHI, micro_batch_size=4)),
    # PEFT adapts Mixtral's fused experts as parameters (ParamWrapper), which refuses lora dropout; QLoRA on fused
    # experts is refused (bitsandbytes leaves them unquantized and kbit preparation makes them fp32)
    ("mixtral-lora-gc", _train(MIX, method="lora", gradient_checkpointing=True, lora={"dropout": 0.0})),
    ("opt13b-full", _train(OPT, method="full", seq_len=2048)),
    ("falcon7b-lora", _train(FALCON)),
    ("t5base-full", _train(T5, method="full", seq_len=512, micro_batch_size=8)),
    ("t5base-lora-qv", _train(T5, lora={"r": 8, "target_modules": ["q", "v"]}, seq_len=512)),
    ("t5base-ia3-gc", _train(T5, method="ia3", gradient_checkpointing=True, seq_len=512)),
    ("bert-seqcls-full", _train(BERT, method="full", seq_len=512, micro_batch_size=16)),
    ("bert-tokcls-lora", _train(BERT, head="token_classification", num_labels=9, seq_len=256)),
    ("bert-mlm-full-gc", _train(BERT, head="masked_lm", method="full", gradient_checkpointing=True, seq_len=512)),
    ("llama8b-seqcls-lora", _train(L8, head="sequence_classification", num_labels=3, seq_len=1024)),
    # GPUs
    ("llama8b-lora-custom48", _train(L8, gpu={"memory_gib": 48})),
    ("llama8b-lora-a100-40", _train(L8, gpu="A100-SXM-40GB", micro_batch_size=4)),
    ("inline-config-lora", _train(None, model_config={"model_type": "llama", "hidden_size": 2048,
                                                      "intermediate_size": 5632, "num_hidden_layers": 22,
                                                      "num_attention_heads": 32, "num_key_value_heads": 4,
                                                      "vocab_size": 32000})),
    # inference
    ("llama8b-infer-bf16", _infer(L8, batch_size=8, prompt_len=2048, max_new_tokens=512)),
    ("llama8b-infer-nf4", _infer(L8, weight_dtype="nf4", batch_size=4)),
    ("llama8b-infer-int8", _infer(L8, weight_dtype="int8")),
    ("llama8b-infer-int4-fp8kv", _infer(L8, weight_dtype="int4", kv_cache_dtype="fp8", batch_size=32)),
    ("llama8b-infer-eager", _infer(L8, attention="eager", prompt_len=4096)),
    ("llama8b-infer-prefill-only", _infer(L8, max_new_tokens=0, batch_size=2)),
    ("mistral7b-infer-sliding", _infer(M7, prompt_len=8192, max_new_tokens=1024)),
    ("gemma2-9b-infer-eager", _infer(G9, attention="eager", prompt_len=2048)),
    ("llama70b-infer-4gpu", _infer(L70, num_gpus=4, batch_size=16, gpu="A100-SXM-80GB")),
    ("t5base-infer", _infer(T5, prompt_len=512, max_new_tokens=128)),
    ("bert-infer-seqcls", _infer(BERT, prompt_len=512, max_new_tokens=0, batch_size=64)),
]

#: (name, job) for both engines: the cross-check's small shapes
BOTH_JOBS: list[tuple[str, dict[str, Any]]] = list(CONFIGS)


def _inline(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if v is not None}


def cases() -> list[tuple[str, str, dict[str, Any]]]:
    """(engine, name, job) of every golden file."""
    out = [("formula", name, _inline(job)) for name, job in FORMULA_JOBS]
    for name, job in BOTH_JOBS:
        out += [("formula", name, job), ("trace", name, job)]
    return out
