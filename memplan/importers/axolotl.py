"""axolotl training YAML (axolotl's AxolotlInputConfig, src/axolotl/utils/schemas/) -> memplan job fields."""

from __future__ import annotations

from typing import Any

from memplan.importers._common import NOT_MODELLED, Collector, is_auto, map_bnb, map_fsdp
from memplan.importers.peft import lora_targets
from memplan.importers.trainer import map_optim, parse_optim_args

HANDLED = frozenset({
    "base_model", "load_in_4bit", "load_in_8bit", "bnb_config_kwargs", "adapter", "lora_r", "lora_alpha",
    "lora_dropout", "lora_target_modules", "lora_target_linear", "lora_modules_to_save", "peft_use_dora",
    "lora_target_parameters", "peft_layers_to_transform", "sequence_len", "micro_batch_size",
    "gradient_accumulation_steps", "batch_size", "eval_batch_size", "gradient_checkpointing", "bf16", "fp16",
    "bfloat16", "float16", "float32", "flash_attention", "sdp_attention", "eager_attention", "xformers_attention",
    "flex_attention", "s2_attention", "optimizer", "optim_args", "deepspeed", "fsdp", "fsdp_config", "fsdp_version",
    "torch_compile", "plugins", "rl", "gptq", "unfrozen_parameters", "sequence_parallel_degree",
    "context_parallel_size", "tensor_parallel_size", "max_memory", "gpu_memory_limit", "activation_offloading",
    "val_set_size", "test_datasets", "auto_find_batch_size", "reward_model", "process_reward_model",
})
FLAGS_NOT_MODELLED = {
    "flash_attn_cross_entropy": "flash-attn's cross-entropy kernel", "flash_attn_rms_norm": "flash-attn RMSNorm",
    "flash_attn_fuse_qkv": "fused QKV projection", "flash_attn_fuse_mlp": "fused MLP",
    "unsloth_cross_entropy_loss": "Unsloth cross-entropy", "unsloth_lora_mlp": "Unsloth LoRA MLP kernel",
    "unsloth_lora_qkv": "Unsloth LoRA QKV kernel", "unsloth_lora_o": "Unsloth LoRA O kernel",
    "unsloth_rms_norm": "Unsloth RMSNorm", "unsloth_rope": "Unsloth RoPE", "lora_mlp_kernel": "LoRA MLP kernel",
    "lora_qkv_kernel": "LoRA QKV kernel", "lora_o_kernel": "LoRA O kernel",
    "liger_rope": "Liger RoPE", "liger_rms_norm": "Liger RMSNorm", "liger_glu_activation": "Liger GLU",
    "liger_layer_norm": "Liger LayerNorm", "liger_cross_entropy": "Liger cross-entropy",
    "liger_fused_linear_cross_entropy": "Liger fused linear cross-entropy (no full logits)",
    "cut_cross_entropy": "Cut Cross-Entropy (no full logits)", "chunked_cross_entropy": "chunked cross-entropy",
}
# axolotl options without an effect on the training step's GPU memory (data, logging, saving, schedules, hub)
NO_EFFECT = frozenset({
    "base_model_config", "base_model_ignore_patterns", "revision_of_model", "cls_model_config", "tokenizer_config",
    "tokenizer_use_fast", "tokenizer_legacy", "tokenizer_type", "tokenizer_use_mistral_common", "processor_type",
    "trust_remote_code", "model_type", "model_config_type", "model_kwargs", "is_llama_derived_model",
    "is_mistral_derived_model", "is_falcon_derived_model", "is_qwen_derived_model", "strict", "datasets",
    "dataset_prepared_path", "dataset_processes", "dataset_num_proc", "dataset_exact_deduplication",
    "dataset_keep_in_memory", "dataset_shard_num", "dataset_shard_idx", "shuffle_merged_datasets",
    "skip_prepare_dataset", "pretraining_dataset", "push_dataset_to_hub", "hf_use_auth_token", "chat_template",
    "chat_template_jinja", "default_system_message", "special_tokens", "tokens", "added_tokens_overrides",
    "output_dir", "hub_model_id", "hub_strategy", "save_safetensors", "lora_model_dir", "lora_fan_in_fan_out",
    "peft_use_rslora", "peft_init_lora_weights", "peft_layers_pattern", "peft_layer_replication", "peft",
    "loraplus_lr_ratio", "loraplus_lr_embedding", "merge_lora", "lora_on_cpu", "qlora_sharded_model_loading",
    "relora_steps", "relora_warmup_steps", "relora_anneal_steps", "relora_prune_ratio", "relora_cpu_offload",
    "sample_packing", "sample_packing_group_size", "sample_packing_bin_size", "sample_packing_sequentially",
    "eval_sample_packing", "pad_to_sequence_len", "curriculum_sampling", "multipack_real_batches",
    "pretraining_sample_concatenation", "batch_flattening", "min_sample_len", "max_prompt_len", "train_on_inputs",
    "group_by_length", "learning_rate", "embedding_lr", "embedding_lr_scale", "weight_decay", "optim_target_modules",
    "torchdistx_path", "lr_scheduler", "lr_scheduler_kwargs", "lr_quadratic_warmup", "cosine_min_lr_ratio",
    "cosine_constant_lr_ratio", "lr_div_factor", "lr_groups", "adam_epsilon", "adam_epsilon2", "adam_beta1",
    "adam_beta2", "adam_beta3", "max_grad_norm", "num_epochs", "max_steps", "warmup_steps", "warmup_ratio",
    "eval_steps", "evals_per_epoch", "eval_strategy", "save_steps", "saves_per_epoch", "save_strategy",
    "save_total_limit", "save_only_model", "logging_steps", "early_stopping_patience", "load_best_model_at_end",
    "metric_for_best_model", "greater_is_better", "use_tensorboard", "profiler_steps", "include_tokens_per_second",
    "neftune_noise_alpha", "eval_table_size", "eval_max_new_tokens", "do_causal_lm_eval", "eval_causal_lm_metrics",
    "do_bench_eval", "bench_dataset", "bench_split", "loss_watchdog_threshold", "loss_watchdog_patience", "gc_steps",
    "tf32", "gradient_checkpointing_kwargs", "resume_from_checkpoint", "auto_resume_from_checkpoints",
    "resize_token_embeddings_to_32x", "mean_resizing_embeddings", "shrink_embeddings", "local_rank", "world_size",
    "device", "device_map", "ddp", "seed", "ddp_timeout", "ddp_bucket_cap_mb", "ddp_broadcast_buffers",
    "ddp_find_unused_parameters", "dataloader_pin_memory", "dataloader_num_workers", "dataloader_prefetch_factor",
    "dataloader_drop_last", "accelerator_config", "remove_unused_columns", "debug", "low_cpu_mem_usage",
    "fix_untrained_tokens", "fsdp_final_state_dict_type", "torch_compile_backend", "torch_compile_mode",
    "wandb_project", "wandb_entity", "wandb_watch", "wandb_name", "wandb_run_id", "wandb_log_model", "wandb_mode",
    "mlflow_tracking_uri", "mlflow_experiment_name", "mlflow_run_name", "hf_mlflow_log_artifacts", "comet_api_key",
    "comet_workspace", "comet_project_name", "comet_experiment_key", "comet_mode", "comet_online",
    "comet_experiment_config", "use_wandb", "use_mlflow", "use_comet", "trl", "vllm", "dpo_beta", "rl_beta",
    "dpo_use_weighting", "dpo_use_logits_to_keep", "orpo_alpha", "rpo_alpha", "simpo_gamma", "cpo_alpha",
    "kto_desirable_weight", "kto_undesirable_weight", "num_labels", "heads_k_stride", "use_pose",
    "pose_split_on_token_ids", "pose_max_context_len", "pose_num_chunks", "pretrain_multipack_buffer_size",
    "pretrain_multipack_attn", "total_num_tokens", "total_supervised_tokens", "sample_packing_eff_est",
    "axolotl_config_path", "is_preprocess", "preprocess_iterable", "flash_optimum", "llama4_linearized_experts",
    "unsloth_rope", "gradio_title", "gradio_share", "gradio_server_name", "gradio_server_port",
    "gradio_max_new_tokens", "gradio_temperature", "lisa_n_layers", "lisa_step_interval", "lisa_layers_attribute",
    "ray_run_name", "ray_num_workers", "resources_per_worker", "use_ray", "eval_sample_packing", "dataset_shuffle",
}) | frozenset(FLAGS_NOT_MODELLED)


def read(data: dict[str, Any], out: Collector) -> None:
    """Map an axolotl config onto the job (axolotl docs "Config reference"; the model loader builds the bitsandbytes
    config as nf4 with double quant, overridable by bnb_config_kwargs):

    base_model -> model; adapter lora / qlora -> method (no adapter: full fine-tuning); load_in_4bit -> weight_dtype
    nf4 + double_quant, load_in_8bit -> int8; lora_r / lora_alpha / lora_dropout -> lora.*; lora_target_modules or
    lora_target_linear (all linear layers) -> lora.target_modules; sequence_len -> seq_len; micro_batch_size,
    gradient_accumulation_steps; gradient_checkpointing (true / "offload" / "unsloth"); bf16 / fp16 -> mixed_precision
    and, since axolotl loads the model in that dtype (torch_dtype = bf16 if bf16 else fp16 if fp16 else fp32), the
    weight_dtype of unquantized weights; flash_attention / sdp_attention / eager_attention -> attention; optimizer
    (transformers optim names) -> optimizer; deepspeed (path or dict) -> imported; fsdp / fsdp_config -> zero_stage.
    """
    out.check_keys(data, HANDLED | NO_EFFECT)
    if data.get("base_model") is not None:
        out.set("model", str(data["base_model"]), "base_model")
    quantized = _quantization(data, out)
    _adapter(data, out)
    for key, job_field in (("sequence_len", "seq_len"), ("micro_batch_size", "micro_batch_size"),
                           ("gradient_accumulation_steps", "gradient_accumulation_steps")):
        if data.get(key) is not None:
            out.set(job_field, out.int_(key, data[key]), key)
    if data.get("batch_size") is not None and data.get("gradient_accumulation_steps") is None:
        out.ignore("batch_size", "gradient_accumulation_steps = batch_size / micro_batch_size / number of GPUs "
                                 "(axolotl) needs the GPU count; left to the job default")
    gc = data.get("gradient_checkpointing")
    if gc is not None:
        if isinstance(gc, str) and gc.strip().lower() in ("offload", "unsloth"):
            out.set("gradient_checkpointing", True, "gradient_checkpointing", gc)
            out.ignore("gradient_checkpointing", f"{NOT_MODELLED}: {gc!r} offloads the checkpointed activations to the "
                                                 "CPU (estimated as plain gradient checkpointing)")
        else:
            out.set("gradient_checkpointing", out.bool_("gradient_checkpointing", gc), "gradient_checkpointing")
    _precision(data, out, quantized)
    _attention(data, out)
    if data.get("optimizer") is not None:
        map_optim(out, "optimizer", data["optimizer"], parse_optim_args(out, data.get("optim_args")))
    ds = data.get("deepspeed")
    if ds not in (None, "", {}):
        out.ref("deepspeed", ds if isinstance(ds, dict) else str(ds), "deepspeed")
    fsdp, cfg = data.get("fsdp"), data.get("fsdp_config")
    if fsdp or cfg:
        cfg = dict(out.dict_("fsdp_config", cfg or {}))
        if data.get("fsdp_version") is not None and "fsdp_version" not in cfg and "version" not in cfg:
            cfg["fsdp_version"] = data["fsdp_version"]
        if isinstance(fsdp, str):
            options = fsdp.split()
        elif isinstance(fsdp, list):
            options = [str(o) for o in fsdp]
        elif fsdp in (None, True, False):
            options = []
        else:
            raise out.error("fsdp", f"expected a list of FSDP options (full_shard, auto_wrap, offload ...), "
                                    f"got {fsdp!r}")
        map_fsdp(out, cfg, "fsdp_config.", options, "fsdp")
    _not_modelled(data, out)


def _quantization(data: dict[str, Any], out: Collector) -> bool:
    """load_in_4bit / load_in_8bit; axolotl's 4-bit BitsAndBytesConfig is nf4 with double quant unless
    bnb_config_kwargs overrides bnb_4bit_quant_type / bnb_4bit_use_double_quant."""
    four = data.get("load_in_4bit")
    eight = data.get("load_in_8bit")
    kw = out.dict_("bnb_config_kwargs", data.get("bnb_config_kwargs") or {})
    return map_bnb(out, four_bit=False if four is None else out.bool_("load_in_4bit", four), four_src="load_in_4bit",
                   eight_bit=False if eight is None else out.bool_("load_in_8bit", eight), eight_src="load_in_8bit",
                   quant_type=kw.get("bnb_4bit_quant_type"), quant_type_src="bnb_config_kwargs.bnb_4bit_quant_type",
                   quant_type_default="nf4", double=kw.get("bnb_4bit_use_double_quant"),
                   double_src="bnb_config_kwargs.bnb_4bit_use_double_quant", double_default=True,
                   storage=kw.get("bnb_4bit_quant_storage"), storage_src="bnb_config_kwargs.bnb_4bit_quant_storage")


def _adapter(data: dict[str, Any], out: Collector) -> None:
    """adapter: lora | qlora -> method; absent -> full fine-tuning (axolotl trains every weight without one)."""
    adapter = data.get("adapter")
    lora_keys = ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_target_linear")
    if adapter in (None, ""):
        out.set("method", "full", "adapter (unset: full fine-tuning)", None)
        for key in lora_keys:
            if data.get(key) not in (None, False, []):
                out.ignore(key, "no adapter: axolotl fine-tunes the full model, the LoRA settings are unused")
        return
    name = str(adapter).strip().lower()
    if name not in ("lora", "qlora"):
        raise out.error("adapter", f"adapter {adapter!r} is not modelled by memplan; allowed: lora, qlora (or no "
                                   "adapter for full fine-tuning)")
    out.set("method", name, "adapter", adapter)
    if data.get("lora_r") is not None:
        out.set("lora.r", out.int_("lora_r", data["lora_r"]), "lora_r")
    if data.get("lora_alpha") is not None:
        out.set("lora.alpha", out.num_("lora_alpha", data["lora_alpha"]), "lora_alpha")
    if data.get("lora_dropout") is not None:
        out.set("lora.dropout", out.num_("lora_dropout", data["lora_dropout"]), "lora_dropout")
    if data.get("lora_target_linear") is not None and out.bool_("lora_target_linear", data["lora_target_linear"]):
        # axolotl's find_all_linear_names: every Linear / Linear4bit / Linear8bitLt except the output head, which is
        # PEFT's "all-linear"; explicit lora_target_modules are added to that set, so all-linear covers them
        out.set("lora.target_modules", "all-linear", "lora_target_linear", True)
    else:
        lora_targets(out, "lora_target_modules", data.get("lora_target_modules") or None)
    if data.get("lora_modules_to_save"):
        out.ignore("lora_modules_to_save", f"{NOT_MODELLED}: fully trained module copies beside LoRA")
    if data.get("peft_use_dora"):
        out.ignore("peft_use_dora", f"{NOT_MODELLED}: DoRA magnitude vectors and their extra activations (estimated "
                                    "as LoRA)")
    for key in ("lora_target_parameters", "peft_layers_to_transform"):
        if data.get(key):
            out.ignore(key, f"{NOT_MODELLED}: estimated as if LoRA covered every matching module")


def _precision(data: dict[str, Any], out: Collector, quantized: bool) -> None:
    """bf16 (true | false | "auto", the default: bf16 when the GPU supports it) / fp16 -> mixed_precision;
    axolotl's torch_dtype follows them (bf16 or bfloat16 -> bf16, fp16 or float16 -> fp16, else fp32), the dtype
    of the loaded weights when not quantized."""
    bf16, fp16 = data.get("bf16"), data.get("fp16")
    if is_auto(bf16):
        out.ignore("bf16", "auto: axolotl uses bf16 when the GPU supports it (Ampere or newer); left to the job "
                           "default")
        bf16 = None
    bf16 = None if bf16 is None else out.bool_("bf16", bf16)
    fp16 = None if fp16 is None else out.bool_("fp16", fp16)
    if bf16 and fp16:
        raise out.error("bf16", "bf16 and fp16 are both true; axolotl allows one")
    dtype = None
    if bf16:
        out.set("mixed_precision", "bf16", "bf16", True)
        dtype = ("bf16", "bf16")
    elif fp16:
        out.set("mixed_precision", "fp16", "fp16", True)
        dtype = ("fp16", "fp16")
    elif bf16 is False:
        out.set("mixed_precision", "no", "bf16" if fp16 is None else "bf16 and fp16", False)
        dtype = ("fp32", "bf16")
    for key, name in (("bfloat16", "bf16"), ("float16", "fp16"), ("float32", "fp32")):
        if data.get(key) is not None and out.bool_(key, data[key]):
            dtype = (name, key)
    if dtype is not None and not quantized:  # quantized: the dtype of the modules left unquantized only
        out.set("weight_dtype", dtype[0], f"{dtype[1]} (axolotl loads the model in this dtype)", dtype[0])


def _attention(data: dict[str, Any], out: Collector) -> None:
    """flash_attention -> flash_attention_2, sdp_attention -> sdpa, eager_attention -> eager (axolotl sets
    attn_implementation from them); xformers / flex / s2 attention are not modelled."""
    for key, impl in (("flash_attention", "flash_attention_2"), ("sdp_attention", "sdpa"),
                      ("eager_attention", "eager")):
        if data.get(key) is not None and out.bool_(key, data[key]):
            out.set("attention", impl, key, True)
    for key in ("xformers_attention", "flex_attention", "s2_attention"):
        if data.get(key):
            out.ignore(key, f"{NOT_MODELLED}: {key.replace('_attention', '')} attention (memplan models eager, sdpa, "
                            "flash_attention_2)")


def _not_modelled(data: dict[str, Any], out: Collector) -> None:
    """Options that change memory without a job field: reported when switched on."""
    for key, what in FLAGS_NOT_MODELLED.items():
        if data.get(key):
            out.ignore(key, f"{NOT_MODELLED}: {what}")
    if data.get("plugins"):
        out.ignore("plugins", f"{NOT_MODELLED}: plugins ({', '.join(map(str, data['plugins']))}) can change "
                              "activation and logits memory")
    if data.get("torch_compile") not in (None, False):
        out.ignore("torch_compile", f"{NOT_MODELLED}: torch.compile fuses kernels and changes activation memory")
    for key in ("sequence_parallel_degree", "context_parallel_size", "tensor_parallel_size"):
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 1:
            # axolotl's sequence / context parallelism is ring-flash-attention's, not Ulysses or torch's
            out.ignore(key, f"{NOT_MODELLED}: " + ("tensor parallelism" if key.startswith("tensor") else
                                                   "axolotl's ring-flash-attention sequence parallelism (memplan "
                                                   "models Ulysses and torch context parallelism)"))
    if data.get("rl"):
        out.ignore("rl", f"{NOT_MODELLED}: {data['rl']} training (reference model, paired or generated sequences)")
    for key in ("reward_model", "process_reward_model"):
        if data.get(key):
            out.ignore(key, f"{NOT_MODELLED}: reward-model training")
    if data.get("gptq"):
        out.ignore("gptq", f"{NOT_MODELLED}: GPTQ base weights for training")
    if data.get("unfrozen_parameters"):
        out.ignore("unfrozen_parameters", f"{NOT_MODELLED}: training only the listed parameters")
    for key in ("max_memory", "gpu_memory_limit"):
        if data.get(key):
            out.ignore(key, f"{NOT_MODELLED}: device_map memory caps")
    if data.get("activation_offloading"):
        out.ignore("activation_offloading", f"{NOT_MODELLED}: activations offloaded to the CPU")
    if data.get("auto_find_batch_size"):
        out.ignore("auto_find_batch_size", "the Trainer halves the batch after an OOM; estimated at micro_batch_size")
    evaluating = bool(data.get("val_set_size")) or bool(data.get("test_datasets"))
    if data.get("eval_batch_size") is not None and evaluating:
        out.ignore("eval_batch_size", "evaluation is not modelled: memplan estimates the training step")
