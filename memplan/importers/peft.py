"""PEFT adapter_config.json (as `PeftModel.save_pretrained` writes it) or a LoraConfig dict -> memplan job fields."""

from __future__ import annotations

from typing import Any

from memplan.importers._common import NOT_MODELLED, Collector

# peft.utils.peft_types.PeftType values memplan models -> method
PEFT_METHODS = {"LORA": "lora", "PROMPT_TUNING": "prompt_tuning", "PREFIX_TUNING": "prefix_tuning", "IA3": "ia3"}
# peft.utils.peft_types.TaskType -> memplan head (QUESTION_ANS / FEATURE_EXTRACTION have none)
TASK_HEADS = {"CAUSAL_LM": "causal_lm", "SEQ_2_SEQ_LM": "seq2seq_lm", "SEQ_CLS": "sequence_classification",
              "TOKEN_CLS": "token_classification"}
# LoraConfig defaults (peft/tuners/lora/config.py) for a dict that leaves them out
LORA_DEFAULTS = {"r": 8, "lora_alpha": 8, "lora_dropout": 0.0}

COMMON_KEYS = frozenset({"peft_type", "task_type", "base_model_name_or_path", "revision", "inference_mode",
                         "auto_mapping", "peft_version", "modules_to_save"})
LORA_KEYS = COMMON_KEYS | frozenset({
    # peft 0.21 LoraConfig fields
    "r", "target_modules", "exclude_modules", "lora_alpha", "lora_dropout", "fan_in_fan_out", "bias", "use_rslora",
    "init_lora_weights", "layers_to_transform", "layers_pattern", "rank_pattern", "alpha_pattern", "megatron_config",
    "megatron_core", "trainable_token_indices", "loftq_config", "eva_config", "corda_config", "use_dora", "use_qalora",
    "qalora_group_size", "layer_replication", "runtime_config", "lora_bias", "target_parameters",
    "alora_invocation_tokens", "arrow_config", "ensure_weight_tying", "kasa_config", "lora_ga_config",
    "monteclora_config", "use_bdlora", "velora_config",
})
PROMPT_KEYS = COMMON_KEYS | frozenset({
    "num_virtual_tokens", "token_dim", "num_transformer_submodules", "num_attention_heads", "num_layers",
    "prompt_tuning_init", "prompt_tuning_init_text", "tokenizer_name_or_path", "tokenizer_kwargs",
    "encoder_hidden_size", "prefix_projection", "init_weights",
})
IA3_KEYS = COMMON_KEYS | frozenset({"target_modules", "exclude_modules", "feedforward_modules", "fan_in_fan_out",
                                    "init_ia3_weights"})


def lora_targets(out: Collector, source: str, value: Any) -> None:
    """LoRA target_modules (peft LoraConfig): a list of module-name suffixes or "all-linear" -> lora.target_modules.
    A plain string other than "all-linear" is a regex to PEFT (full-match on module names): not modelled. Unset,
    PEFT picks the model type's default targets (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING: q_proj, v_proj
    for Llama), which is reported since memplan's default is all-linear."""
    if value is None:
        out.ignore(f"{source} (unset)", "PEFT then targets the model type's default modules (q_proj and v_proj for "
                                        "Llama); memplan's default is all-linear")
        return
    if isinstance(value, str):
        if value.strip().lower() == "all-linear":
            out.set("lora.target_modules", "all-linear", source, value)
        else:
            out.ignore(source, f"{NOT_MODELLED}: regex target_modules {value!r}; left to the job default")
        return
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
        raise out.error(source, f"expected a non-empty list of module names or 'all-linear', got {value!r}")
    if [v.lower() for v in value] == ["all-linear"]:
        out.set("lora.target_modules", "all-linear", source, value)
    else:
        out.set("lora.target_modules", list(value), source, value)


def read(data: dict[str, Any], out: Collector) -> None:
    """Map a PEFT config (peft PeftConfig subclasses; peft_type from peft.utils.PeftType) onto the job:
    peft_type LORA -> method lora (made qlora later when another source loads the base in 4 bit), r -> lora.r,
    lora_alpha -> lora.alpha, lora_dropout -> lora.dropout, target_modules -> lora.target_modules;
    PROMPT_TUNING / PREFIX_TUNING -> num_virtual_tokens; IA3 -> ia3; task_type -> head;
    base_model_name_or_path -> model, used only when no other source names the model.
    A dict without peft_type is read as a LoraConfig (with LoraConfig's defaults: r 8, lora_alpha 8, dropout 0)."""
    peft_type = str(data.get("peft_type") or "LORA").upper()
    if peft_type not in PEFT_METHODS:
        raise out.error("peft_type", f"PEFT method {peft_type!r} is not modelled by memplan; allowed: "
                                     f"{', '.join(PEFT_METHODS)}")
    out.set("method", PEFT_METHODS[peft_type], "peft_type", data.get("peft_type", "LORA (no peft_type)"))
    if data.get("base_model_name_or_path"):
        out.set_weak("model", str(data["base_model_name_or_path"]), "base_model_name_or_path")
    task = data.get("task_type")
    if task is not None:
        name = str(task).upper()
        if name in TASK_HEADS:
            out.set("head", TASK_HEADS[name], "task_type", task)
        else:
            out.ignore("task_type", f"{NOT_MODELLED}: task {task!r} (memplan heads: causal_lm, seq2seq_lm, "
                                    "sequence_classification, token_classification)")
    if data.get("modules_to_save"):
        out.ignore("modules_to_save", f"{NOT_MODELLED}: fully trained module copies beside the adapter")
    if peft_type == "LORA":
        _lora(data, out)
    elif peft_type in ("PROMPT_TUNING", "PREFIX_TUNING"):
        out.check_keys(data, PROMPT_KEYS)
        if data.get("num_virtual_tokens") is not None:
            out.set("num_virtual_tokens", out.int_("num_virtual_tokens", data["num_virtual_tokens"]),
                    "num_virtual_tokens")
        if peft_type == "PREFIX_TUNING" and data.get("prefix_projection"):
            out.ignore("prefix_projection", f"{NOT_MODELLED}: the prefix reparametrization MLP "
                                            "(encoder_hidden_size); estimated without it")
    else:
        out.check_keys(data, IA3_KEYS)
        for key in ("target_modules", "feedforward_modules", "exclude_modules"):
            if data.get(key):
                out.ignore(key, f"{NOT_MODELLED}: custom (IA)3 modules; memplan uses PEFT's default (IA)3 targets for "
                                "the model type")


def _lora(data: dict[str, Any], out: Collector) -> None:
    """LoraConfig fields (peft/tuners/lora/config.py) that set or change LoRA's memory."""
    out.check_keys(data, LORA_KEYS)
    for key, job_field in (("r", "lora.r"), ("lora_alpha", "lora.alpha"), ("lora_dropout", "lora.dropout")):
        if data.get(key) is not None:
            value = out.int_(key, data[key]) if key == "r" else out.num_(key, data[key])
            out.set(job_field, value, key, data[key])
        elif "peft_type" not in data:
            out.set(job_field, LORA_DEFAULTS[key], f"{key} (LoraConfig default)")
    lora_targets(out, "target_modules", data.get("target_modules"))
    if data.get("use_dora"):
        out.ignore("use_dora", f"{NOT_MODELLED}: DoRA magnitude vectors and their extra activations (estimated as "
                               "LoRA)")
    if data.get("bias") not in (None, "none"):
        out.ignore("bias", f"{NOT_MODELLED}: trainable biases ({data['bias']!r})")
    for key in ("rank_pattern", "alpha_pattern"):
        if data.get(key):
            out.ignore(key, f"{NOT_MODELLED}: per-module ranks; estimated with r for every module")
    for key in ("layers_to_transform", "exclude_modules", "target_parameters", "trainable_token_indices",
                "layer_replication"):
        if data.get(key):
            out.ignore(key, f"{NOT_MODELLED}: estimated as if LoRA covered every matching module")
    if data.get("lora_bias"):
        out.ignore("lora_bias", f"{NOT_MODELLED}: bias on LoRA B")
