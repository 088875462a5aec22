"""Hugging Face TrainingArguments / TRL SFTConfig (JSON or YAML, e.g. `TrainingArguments.to_json_string()` or a
`trl sft --config` file, which also holds TRL's ModelConfig fields) -> memplan job fields."""

from __future__ import annotations

import json
from typing import Any

from memplan.importers._common import (
    NOT_MODELLED, Collector, map_attention, map_bnb, map_fsdp, map_parallelism_config, map_torch_dtype,
    read_config_file, resolve_path,
)
from memplan.importers.peft import TASK_HEADS, lora_targets

# transformers TrainingArguments `optim` (training_args.OptimizerNames) -> (memplan optimizer, optimizer_impl).
# optimizer_impl is the torch implementation the Trainer ends up with on CUDA: `adamw_torch` passes no flag, so
# torch picks foreach (torch/optim/optimizer.py _default_to_fused_or_foreach); `adamw_torch_fused` passes
# fused=True; transformers' own AdamW (`adamw_hf`, removed in v4.5x) loops per parameter; apex FusedAdam is one
# multi-tensor kernel. bitsandbytes optimizers have no torch implementation (None: not set).
OPTIMS: dict[str, tuple[str, str | None]] = {
    "adamw_torch": ("adamw", "foreach"),
    "adamw_torch_fused": ("adamw", "fused"),
    "adamw_hf": ("adamw", "for_loop"),
    "adamw_apex_fused": ("adamw", "fused"),
    "adamw_bnb_8bit": ("adamw_8bit", None),
    "adamw_8bit": ("adamw_8bit", None),
    "paged_adamw_8bit": ("paged_adamw_8bit", None),
    "paged_adamw_32bit": ("paged_adamw_32bit", None),
    "sgd": ("sgd", "foreach"),
    "adafactor": ("adafactor", "for_loop"),
    "lion_32bit": ("lion", None),
}
# OptimizerNames memplan does not model (yet): named in the error so the user knows the value is real
UNMODELLED_OPTIMS = frozenset({
    "adamw_torch_xla", "adamw_torch_npu_fused", "adamw_anyprecision", "adamw_torch_4bit", "adamw_torch_8bit",
    "ademamix", "adagrad", "ademamix_8bit", "lion_8bit", "paged_ademamix_32bit", "paged_ademamix_8bit",
    "paged_lion_32bit", "paged_lion_8bit", "rmsprop", "rmsprop_bnb", "rmsprop_bnb_8bit", "rmsprop_bnb_32bit",
    "galore_adamw", "galore_adamw_8bit", "galore_adafactor", "galore_adamw_layerwise", "galore_adamw_8bit_layerwise",
    "galore_adafactor_layerwise", "lomo", "adalomo", "grokadamw", "schedule_free_radam", "schedule_free_adamw",
    "schedule_free_sgd", "apollo_adamw", "apollo_adamw_layerwise", "stable_adamw",
})

# TrainingArguments fields (transformers 4.3x-5.x) that do not change GPU memory, or only outside the training step
NO_EFFECT = frozenset({
    "output_dir", "overwrite_output_dir", "do_train", "do_eval", "do_predict", "eval_strategy", "evaluation_strategy",
    "prediction_loss_only", "per_gpu_eval_batch_size", "eval_delay", "learning_rate", "weight_decay",
    "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "num_train_epochs", "max_steps", "lr_scheduler_type",
    "lr_scheduler_kwargs", "warmup_ratio", "warmup_steps", "log_level", "log_level_replica", "log_on_each_node",
    "logging_dir", "logging_strategy", "logging_first_step", "logging_steps", "logging_nan_inf_filter",
    "save_strategy", "save_steps", "save_total_limit", "save_safetensors", "save_on_each_node", "save_only_model",
    "restore_callback_states_from_checkpoint", "seed", "data_seed", "jit_mode_eval", "use_ipex", "use_mps_device",
    "fp16_opt_level", "half_precision_backend", "bf16_full_eval", "fp16_full_eval", "tf32", "local_rank",
    "ddp_backend", "tpu_num_cores", "tpu_metrics_debug", "debug", "dataloader_drop_last", "eval_steps",
    "dataloader_num_workers", "dataloader_prefetch_factor", "past_index", "run_name", "disable_tqdm",
    "remove_unused_columns", "label_names", "load_best_model_at_end", "metric_for_best_model", "greater_is_better",
    "ignore_data_skip", "fsdp_min_num_params", "fsdp_transformer_layer_cls_to_wrap", "accelerator_config",
    "group_by_length", "length_column_name", "report_to", "ddp_find_unused_parameters", "ddp_broadcast_buffers",
    "ddp_static_graph", "ddp_timeout", "dataloader_pin_memory", "dataloader_persistent_workers",
    "dataloader_multiprocessing_context", "dataloader_in_order", "skip_memory_metrics", "use_legacy_prediction_loop",
    "push_to_hub", "resume_from_checkpoint", "hub_model_id", "hub_strategy", "hub_token", "hub_private_repo",
    "hub_always_push", "hub_revision", "gradient_checkpointing_kwargs", "activation_checkpointing_kwargs",
    "include_inputs_for_metrics", "include_for_metrics", "eval_do_concat_batches", "fp16_backend",
    "push_to_hub_model_id", "push_to_hub_organization", "push_to_hub_token", "mp_parameters", "full_determinism",
    "torchdynamo", "ray_scope", "torch_compile_backend", "torch_compile_mode", "dispatch_batches", "split_batches",
    "include_tokens_per_second", "include_num_input_tokens_seen", "neftune_noise_alpha", "optim_target_modules",
    "batch_eval_metrics", "eval_on_start", "eval_use_gather_object", "average_tokens_across_devices", "use_cache",
    "liger_kernel_config", "project", "trackio_space_id", "trackio_bucket_id", "trackio_static_space_id",
    "enable_jit_checkpoint", "train_sampling_strategy", "adam_beta3", "tp_size", "adam_kwargs",
    "torch_compile_kwargs", "sharded_ddp", "deepspeed_plugin", "bf16_full_eval", "use_liger",
    "adam_w_mode", "eval_accumulation_steps", "per_device_eval_batch_size",
    # TRL SFTConfig (data / loss options; packing and padding-free keep at most max_length tokens per row)
    "dataset_text_field", "dataset_kwargs", "dataset_num_proc", "eos_token", "pad_token", "packing", "padding_value",
    "packing_strategy", "padding_free", "pad_to_multiple_of", "eval_packing", "completion_only_loss",
    "assistant_only_loss", "chat_template_path", "truncation_mode", "shuffle_dataset", "dataset_batch_size",
    "num_of_sequences", "chars_per_token", "dataset_train_split", "dataset_test_split", "model_init_kwargs",
    # TRL ScriptArguments and ModelConfig fields without memory effect
    "dataset_name", "dataset_config", "dataset_streaming", "dataset_mixture", "datasets", "config",
    "gradient_checkpointing_use_reentrant", "ignore_bias_buffers", "model_revision", "base_model_revision",
    "model_code_revision", "trust_remote_code", "use_rslora", "lora_task_type",
})
HANDLED = frozenset({
    "per_device_train_batch_size", "per_gpu_train_batch_size", "gradient_accumulation_steps", "gradient_checkpointing",
    "activation_checkpointing", "bf16", "fp16", "optim", "optim_args", "adafactor", "max_seq_length", "max_length",
    "deepspeed", "fsdp", "fsdp_config", "torch_compile", "use_liger_kernel", "torch_empty_cache_steps",
    "auto_find_batch_size", "ddp_bucket_cap_mb", "use_cpu", "no_cuda", "label_smoothing_factor", "parallelism_config",
    "activation_offloading", "loss_type",
    "model_name_or_path", "dtype", "torch_dtype", "attn_implementation", "use_flash_attention_2", "use_peft", "lora_r",
    "lora_alpha", "lora_dropout", "lora_target_modules", "lora_modules_to_save", "lora_target_parameters", "use_dora",
    "load_in_4bit", "load_in_8bit", "bnb_4bit_quant_type", "use_bnb_nested_quant", "bnb_4bit_quant_storage",
})
MODEL_KWARGS_NO_EFFECT = frozenset({
    "device_map", "trust_remote_code", "revision", "use_cache", "low_cpu_mem_usage", "token", "cache_dir",
    "local_files_only", "subfolder", "use_safetensors", "variant", "output_router_logits", "code_revision",
})


def read(data: dict[str, Any], out: Collector) -> None:
    """Map TrainingArguments / SFTConfig fields (transformers training_args.py; TRL sft_config.py and
    model_config.py) onto the job:

    per_device_train_batch_size -> micro_batch_size, gradient_accumulation_steps, gradient_checkpointing (and
    transformers 5's alias activation_checkpointing), bf16 / fp16 -> mixed_precision, optim (+ optim_args for SGD
    momentum) -> optimizer + optimizer_impl, max_seq_length / max_length (SFTConfig) -> seq_len, deepspeed (a path or
    an inline dict) -> imported as a DeepSpeed config, fsdp / fsdp_config -> zero_stage + offload,
    model_init_kwargs (torch_dtype, attn_implementation, quantization_config) -> weight_dtype / attention, and TRL's
    ModelConfig (model_name_or_path, dtype, use_peft + lora_*, load_in_4bit ...) when the file holds them.
    """
    out.check_keys(data, NO_EFFECT | HANDLED)
    _batch(data, out)
    _precision(data, out)
    _optimizer(data, out)
    _seq_len(data, out)
    _distributed(data, out)
    kwargs = data.get("model_init_kwargs")
    if isinstance(kwargs, str):
        try:
            kwargs = json.loads(kwargs)
        except json.JSONDecodeError:
            raise out.error("model_init_kwargs", "expected a mapping (or a JSON object string)") from None
    if kwargs is not None:
        map_model_kwargs(out, out.dict_("model_init_kwargs", kwargs), "model_init_kwargs.")
    _trl_model_config(data, out)
    _not_modelled(data, out)


def _batch(data: dict[str, Any], out: Collector) -> None:
    """per_device_train_batch_size (per_gpu_train_batch_size before transformers 4.x renamed it) is the micro
    batch on each GPU; gradient_accumulation_steps as is; gradient_checkpointing / activation_checkpointing."""
    for key in ("per_device_train_batch_size", "per_gpu_train_batch_size"):
        if data.get(key) is not None:
            out.set("micro_batch_size", out.int_(key, data[key]), key, data[key])
    if data.get("gradient_accumulation_steps") is not None:
        out.set("gradient_accumulation_steps", out.int_("gradient_accumulation_steps",
                                                        data["gradient_accumulation_steps"]),
                "gradient_accumulation_steps")
    for key in ("gradient_checkpointing", "activation_checkpointing"):
        if data.get(key) is not None:
            out.set("gradient_checkpointing", out.bool_(key, data[key]), key)


def _precision(data: dict[str, Any], out: Collector) -> None:
    """TrainingArguments bf16 / fp16 (AMP autocast + grad scaler for fp16) -> mixed_precision bf16 / fp16; both
    false -> "no" (fp32). TrainingArguments refuses both true. One false and the other unset is class-dependent
    (TrainingArguments: fp32, TRL SFTConfig: bf16 unless fp16), so it is left to the job default."""
    bf16 = None if data.get("bf16") is None else out.bool_("bf16", data["bf16"])
    fp16 = None if data.get("fp16") is None else out.bool_("fp16", data["fp16"])
    if bf16 and fp16:
        raise out.error("bf16", "bf16 and fp16 are both true; TrainingArguments allows one")
    if bf16:
        out.set("mixed_precision", "bf16", "bf16", True)
    elif fp16:
        out.set("mixed_precision", "fp16", "fp16", True)
    elif bf16 is False and fp16 is False:
        out.set("mixed_precision", "no", "bf16 and fp16", False)
    elif bf16 is False or fp16 is False:
        key = "bf16" if bf16 is False else "fp16"
        out.ignore(key, "false with the other of bf16/fp16 unset: the precision then depends on the trainer class "
                        "(TrainingArguments: fp32, TRL SFTConfig: bf16); left to the job default")


def parse_optim_args(out: Collector, value: Any) -> dict[str, str]:
    """TrainingArguments.optim_args: "key=value,key=value" (training_args.py `optim_args`, parsed by
    Trainer.get_optimizer_cls_and_kwargs)."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    pairs = {}
    for part in str(value).replace(" ", "").split(","):
        if part:
            key, _, val = part.partition("=")
            pairs[key] = val
    return pairs


def map_optim(out: Collector, source: str, value: Any, optim_args: dict[str, str] | None = None) -> None:
    """transformers TrainingArguments `optim` (OptimizerNames) -> optimizer + optimizer_impl (table OPTIMS);
    `sgd` with optim_args momentum > 0 -> sgd_momentum (the Trainer passes optim_args to torch.optim.SGD).
    An OptimizerNames value memplan does not model, or an unknown one, is an error naming the allowed values."""
    name = str(value).strip()
    allowed = ", ".join(OPTIMS)
    if name not in OPTIMS:
        if name in UNMODELLED_OPTIMS:
            raise out.error(source, f"optim {name!r} is a transformers optimizer memplan does not model yet; "
                                    f"allowed: {allowed}")
        raise out.error(source, f"unknown optim {name!r}; allowed: {allowed}")
    optimizer, impl = OPTIMS[name]
    if optimizer == "sgd" and optim_args:
        try:
            momentum = float(optim_args.get("momentum", "0") or 0)
        except ValueError:
            raise out.error("optim_args", f"momentum {optim_args.get('momentum')!r} is not a number") from None
        if momentum > 0:
            optimizer = "sgd_momentum"
    out.set("optimizer", optimizer, source, value)
    if impl is not None:
        out.set("optimizer_impl", impl, source, value)


def _optimizer(data: dict[str, Any], out: Collector) -> None:
    """`optim`, and transformers 4.x's deprecated `adafactor: true` flag (which the Trainer turns into optim
    "adafactor")."""
    args = parse_optim_args(out, data.get("optim_args"))
    if data.get("adafactor") is not None and out.bool_("adafactor", data["adafactor"]):
        map_optim(out, "adafactor", "adafactor")
    if data.get("optim") is not None:
        map_optim(out, "optim", data["optim"], args)


def _seq_len(data: dict[str, Any], out: Collector) -> None:
    """TRL SFTConfig max_length (max_seq_length before TRL 0.20): the longest tokenized row, the sequence length
    of packed rows -> seq_len. null means no truncation: the length then comes from the data."""
    for key in ("max_seq_length", "max_length"):
        if key not in data:
            continue
        if data[key] is None:
            if key == "max_length":
                out.ignore(key, "null: no truncation, the sequence length comes from the data; left to the job "
                                "default seq_len")
            continue
        out.set("seq_len", out.int_(key, data[key]), key)


def _distributed(data: dict[str, Any], out: Collector) -> None:
    """`deepspeed`: a DeepSpeed config path (or inline dict / JSON string) -> imported too; `fsdp` (true, or the
    legacy "full_shard auto_wrap offload" string / list) + `fsdp_config` (a dict or a JSON path) -> map_fsdp."""
    ds = data.get("deepspeed")
    if ds not in (None, "", {}):
        if isinstance(ds, str) and ds.strip().startswith("{"):
            try:
                ds = json.loads(ds)
            except json.JSONDecodeError:
                raise out.error("deepspeed", "is neither a path nor a valid JSON object") from None
        if not isinstance(ds, (str, dict)):
            raise out.error("deepspeed", f"expected a DeepSpeed config path or mapping, got {ds!r}")
        out.ref("deepspeed", ds, "deepspeed")
    fsdp = data.get("fsdp")
    if fsdp in (None, False, "", []):
        return
    options: list[str] = []
    if isinstance(fsdp, str):
        options = fsdp.split()
    elif isinstance(fsdp, list):
        options = [str(o) for o in fsdp]
    elif fsdp is not True:
        raise out.error("fsdp", f"expected true, a list of FSDP options or a string, got {fsdp!r}")
    cfg = data.get("fsdp_config") or {}
    if isinstance(cfg, str):
        path = resolve_path(cfg, out.base_dir)
        cfg = read_config_file(path)
    cfg = out.dict_("fsdp_config", cfg)
    map_fsdp(out, cfg, "fsdp_config.", options, "fsdp")


def map_model_kwargs(out: Collector, kw: dict[str, Any], prefix: str) -> None:
    """Keyword arguments of transformers `from_pretrained` (SFTConfig.model_init_kwargs): torch_dtype / dtype ->
    weight_dtype, attn_implementation -> attention, quantization_config (a BitsAndBytesConfig dict; also the
    deprecated load_in_4bit / load_in_8bit kwargs) -> weight_dtype nf4 / fp4 / int8 + double_quant."""
    out.check_keys(kw, MODEL_KWARGS_NO_EFFECT | {"torch_dtype", "dtype", "attn_implementation", "quantization_config",
                                                  "load_in_4bit", "load_in_8bit", "max_memory"}, prefix)
    quantized = False
    qc = kw.get("quantization_config")
    if qc is not None:
        qc = out.dict_(f"{prefix}quantization_config", qc)
        quantized = map_quantization_config(out, qc, f"{prefix}quantization_config.")
    elif kw.get("load_in_4bit") or kw.get("load_in_8bit"):
        quantized = map_bnb(out, four_bit=bool(kw.get("load_in_4bit")), four_src=f"{prefix}load_in_4bit",
                            eight_bit=bool(kw.get("load_in_8bit")), eight_src=f"{prefix}load_in_8bit",
                            quant_type=None, quant_type_src="bnb_4bit_quant_type", quant_type_default="fp4",
                            double=None, double_src="bnb_4bit_use_double_quant", double_default=False)
    for key in ("dtype", "torch_dtype"):
        if kw.get(key) is not None:
            if quantized:
                out.ignore(f"{prefix}{key}", "dtype of the modules left unquantized; weight_dtype comes from the "
                                             "quantization")
            else:
                map_torch_dtype(out, f"{prefix}{key}", kw[key])
    if kw.get("attn_implementation") is not None:
        map_attention(out, f"{prefix}attn_implementation", kw["attn_implementation"])
    if kw.get("max_memory") is not None:
        out.ignore(f"{prefix}max_memory", f"{NOT_MODELLED}: device_map memory caps")


def map_quantization_config(out: Collector, qc: dict[str, Any], prefix: str) -> bool:
    """transformers BitsAndBytesConfig.to_dict() (quant_method "bitsandbytes"; load_in_4bit or its private copy
    _load_in_4bit; bnb_4bit_quant_type default "fp4"; bnb_4bit_use_double_quant default false). Other quant methods
    (GPTQ, AWQ, ...) are serving formats memplan does not train: reported."""
    method = str(qc.get("quant_method", "bitsandbytes")).lower()
    if method not in ("bitsandbytes", "quantizationmethod.bits_and_bytes"):
        out.ignore(f"{prefix}quant_method", f"{NOT_MODELLED}: {method} quantization for training")
        return False
    four = qc.get("load_in_4bit", qc.get("_load_in_4bit"))
    eight = qc.get("load_in_8bit", qc.get("_load_in_8bit"))
    four = False if four is None else out.bool_(f"{prefix}load_in_4bit", four)
    eight = False if eight is None else out.bool_(f"{prefix}load_in_8bit", eight)
    return map_bnb(out, four_bit=four, four_src=f"{prefix}load_in_4bit", eight_bit=eight,
                   eight_src=f"{prefix}load_in_8bit", quant_type=qc.get("bnb_4bit_quant_type"),
                   quant_type_src=f"{prefix}bnb_4bit_quant_type", quant_type_default="fp4",
                   double=qc.get("bnb_4bit_use_double_quant"), double_src=f"{prefix}bnb_4bit_use_double_quant",
                   double_default=False, storage=qc.get("bnb_4bit_quant_storage"),
                   storage_src=f"{prefix}bnb_4bit_quant_storage")


def _trl_model_config(data: dict[str, Any], out: Collector) -> None:
    """TRL ModelConfig (trl/trainer/model_config.py), present in `trl sft --config` files: model_name_or_path ->
    model; dtype (torch_dtype before TRL 0.20) -> weight_dtype; attn_implementation (use_flash_attention_2 in old
    TRL) -> attention; load_in_4bit / load_in_8bit + bnb_4bit_quant_type (default nf4) + use_bnb_nested_quant
    (default false) -> weight_dtype / double_quant; use_peft -> method lora (full fine-tuning when false) with
    lora_r, lora_alpha, lora_dropout, lora_target_modules (get_peft_config builds the LoraConfig from them)."""
    if data.get("model_name_or_path") is not None:
        out.set("model", str(data["model_name_or_path"]), "model_name_or_path")
    four = data.get("load_in_4bit")
    eight = data.get("load_in_8bit")
    quantized = map_bnb(out, four_bit=False if four is None else out.bool_("load_in_4bit", four),
                        four_src="load_in_4bit", eight_bit=False if eight is None else out.bool_("load_in_8bit", eight),
                        eight_src="load_in_8bit", quant_type=data.get("bnb_4bit_quant_type"),
                        quant_type_src="bnb_4bit_quant_type", quant_type_default="nf4",
                        double=data.get("use_bnb_nested_quant"), double_src="use_bnb_nested_quant",
                        double_default=False, storage=data.get("bnb_4bit_quant_storage"))
    for key in ("dtype", "torch_dtype"):
        if data.get(key) is not None:
            if quantized:
                out.ignore(key, "dtype of the modules left unquantized; weight_dtype comes from the quantization")
            else:
                map_torch_dtype(out, key, data[key])
    if data.get("attn_implementation") is not None:
        map_attention(out, "attn_implementation", data["attn_implementation"])
    elif data.get("use_flash_attention_2") is not None and out.bool_("use_flash_attention_2",
                                                                     data["use_flash_attention_2"]):
        out.set("attention", "flash_attention_2", "use_flash_attention_2", True)
    lora_keys = [k for k in ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_modules_to_save",
                             "lora_target_parameters", "use_dora") if data.get(k) is not None]
    use_peft = data.get("use_peft")
    if use_peft is None or not out.bool_("use_peft", use_peft):
        if use_peft is not None:
            out.set("method", "full", "use_peft", False)
        for key in lora_keys:
            out.ignore(key, "use_peft is not true: TRL trains without LoRA, so the LoRA settings are unused")
        return
    out.set("method", "lora", "use_peft", True)
    if data.get("lora_r") is not None:
        out.set("lora.r", out.int_("lora_r", data["lora_r"]), "lora_r")
    if data.get("lora_alpha") is not None:
        out.set("lora.alpha", out.num_("lora_alpha", data["lora_alpha"]), "lora_alpha")
    if data.get("lora_dropout") is not None:
        out.set("lora.dropout", out.num_("lora_dropout", data["lora_dropout"]), "lora_dropout")
    lora_targets(out, "lora_target_modules", data.get("lora_target_modules"))
    if data.get("lora_task_type") is not None:
        task = str(data["lora_task_type"]).upper()
        if task in TASK_HEADS:
            out.set("head", TASK_HEADS[task], "lora_task_type", data["lora_task_type"])
    if data.get("lora_modules_to_save"):
        out.ignore("lora_modules_to_save", f"{NOT_MODELLED}: fully trained module copies beside LoRA")
    if data.get("lora_target_parameters"):
        out.ignore("lora_target_parameters", f"{NOT_MODELLED}: LoRA on parameters (MoE experts)")
    if data.get("use_dora") is not None and out.bool_("use_dora", data["use_dora"]):
        out.ignore("use_dora", f"{NOT_MODELLED}: DoRA magnitude vectors and their extra activations (estimated as "
                               "LoRA)")


def _not_modelled(data: dict[str, Any], out: Collector) -> None:
    """Fields that change memory but have no job field: reported only when they are switched on."""
    def on(key: str) -> bool:
        return data.get(key) is not None and data.get(key) is not False and data.get(key) != "" and \
            (not isinstance(data[key], bool) or data[key])

    if on("torch_compile"):
        out.ignore("torch_compile", f"{NOT_MODELLED}: torch.compile fuses kernels and changes activation memory")
    if on("use_liger_kernel"):
        out.ignore("use_liger_kernel", f"{NOT_MODELLED}: Liger kernels (fused linear cross-entropy keeps no full "
                                       "logits)")
    if on("torch_empty_cache_steps"):
        out.ignore("torch_empty_cache_steps", f"{NOT_MODELLED}: periodic empty_cache lowers reserved memory only")
    if on("auto_find_batch_size"):
        out.ignore("auto_find_batch_size", "the Trainer halves the batch after an OOM; estimated at "
                                           "per_device_train_batch_size")
    if on("ddp_bucket_cap_mb"):
        out.ignore("ddp_bucket_cap_mb", f"{NOT_MODELLED}: DDP bucket size (memplan counts DDP's buckets as one "
                                        "gradient copy)")
    for key in ("use_cpu", "no_cuda"):
        if on(key):
            out.ignore(key, "training on the CPU: nothing of it is on a GPU")
    ls = data.get("label_smoothing_factor")
    if isinstance(ls, (int, float)) and not isinstance(ls, bool) and ls > 0:
        out.ignore("label_smoothing_factor", f"{NOT_MODELLED}: the Trainer's LabelSmoother keeps fp32 log-probs over "
                                             "the vocabulary")
    if isinstance(data.get("parallelism_config"), dict):
        map_parallelism_config(out, data["parallelism_config"], "parallelism_config.")
    elif on("parallelism_config"):
        raise out.error("parallelism_config", "expected a mapping of accelerate ParallelismConfig fields (sp_size, "
                                              "sp_backend, cp_size, ...)")
    if on("activation_offloading"):
        out.ignore("activation_offloading", f"{NOT_MODELLED}: activations offloaded to the CPU")
    if data.get("loss_type") == "chunked_nll":
        out.ignore("loss_type", f"{NOT_MODELLED}: chunked loss (memplan assumes full logits)")
    strategy = data.get("eval_strategy", data.get("evaluation_strategy"))
    if data.get("per_device_eval_batch_size") is not None and strategy not in (None, "no", "NO"):
        out.ignore("per_device_eval_batch_size", "evaluation is not modelled: memplan estimates the training step "
                                                 "(evaluation keeps no gradients or optimizer step)")

