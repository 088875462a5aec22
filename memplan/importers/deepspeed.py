"""DeepSpeed config JSON (https://www.deepspeed.ai/docs/config-json/) -> memplan job fields.

"auto" values are the Hugging Face Trainer's convention (transformers/integrations/deepspeed.py
HfTrainerDeepSpeedConfig.trainer_config_process): the Trainer fills them from TrainingArguments. Here they are
recorded as deferred and resolved in `import_configs` from the trainer config when one is given.
"""

from __future__ import annotations

from typing import Any

from memplan.importers._common import NOT_MODELLED, Collector, is_auto

TOP_KEYS = frozenset({
    "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "optimizer", "scheduler",
    "fp16", "bf16", "bfloat16", "amp", "torch_autocast", "gradient_clipping", "prescale_gradients",
    "gradient_predivide_factor", "sparse_gradients", "zero_optimization", "zero_allow_untested_optimizer",
    "zero_force_ds_cpu_optimizer", "activation_checkpointing", "steps_per_print", "wall_clock_breakdown",
    "memory_breakdown", "dump_state", "flops_profiler", "tensorboard", "wandb", "csv_monitor", "comet",
    "comms_logger", "monitor_config", "aio", "nvme", "elasticity", "communication_data_type",
    "seq_parallel_communication_data_type", "data_types", "checkpoint", "data_efficiency", "curriculum_learning",
    "compression_training", "autotuning", "pipeline", "pld", "progressive_layer_drop", "eigenvalue",
    "quantize_training", "sparse_attention", "disable_allgather", "compile", "timers", "hybrid_engine",
    "weight_quantization", "use_data_before_expert_parallelism", "graph_harvesting", "tensor_parallel",
    "dataloader_drop_last", "gradient_allreduce_op", "disable_python_gc", "log_level", "load_universal",
    "use_node_local_storage", "legacy_fusion", "mics_shard_size", "mics_hierarchical_params_gather",
    "expert_parallel", "sequence_parallel_size", "zenflow",
})

ZERO_KEYS = frozenset({
    # deepspeed.runtime.zero.config.DeepSpeedZeroConfig fields, by their JSON names
    "stage", "contiguous_gradients", "reduce_scatter", "reduce_bucket_size", "use_multi_rank_bucket_allreduce",
    "allgather_partitions", "allgather_bucket_size", "overlap_comm", "compute_grad_norm", "load_from_fp32_weights",
    "elastic_checkpoint", "offload_param", "offload_optimizer", "zenflow", "sub_group_size", "cpu_offload_param",
    "cpu_offload_use_pin_memory", "cpu_offload", "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold",
    "stage3_model_persistence_threshold", "stage3_max_live_parameters", "stage3_max_reuse_distance",
    "stage3_gather_16bit_weights_on_model_save", "stage3_module_granularity_threshold",
    "stage3_use_all_reduce_for_fetch_params", "stage3_allgather_sequential", "stage3_gather_fp16_weights_on_model_save",
    "ignore_unused_parameters", "legacy_stage1", "round_robin_gradients", "parameter_alignment",
    "zero_hpz_partition_size", "zero_quantized_weights", "zero_quantized_nontrainable_weights",
    "zero_quantized_gradients", "memory_efficient_linear", "pipeline_loading_checkpoint", "override_module_apply",
    "log_trace_cache_warnings", "enable_sanity_checks", "save_muon_momentum_buffer_in_memory", "leaf_module",
    "mics_shard_size", "mics_hierarchical_params_gather", "prefetch_bucket_size", "param_persistence_threshold",
    "model_persistence_threshold", "max_live_parameters", "max_reuse_distance", "gather_16bit_weights_on_model_save",
    "module_granularity_threshold", "use_all_reduce_for_fetch_params", "allgather_sequential",
})
OFFLOAD_OPTIMIZER_KEYS = frozenset({"device", "nvme_path", "buffer_count", "pin_memory", "pipeline", "pipeline_read",
                                    "pipeline_write", "fast_init", "ratio", "super_offload", "cpuadam_cores_perc"})
OFFLOAD_PARAM_KEYS = frozenset({"device", "nvme_path", "buffer_count", "buffer_size", "max_in_cpu", "pin_memory"})
FP16_KEYS = frozenset({"enabled", "auto_cast", "loss_scale", "initial_scale_power", "loss_scale_window", "hysteresis",
                       "consecutive_hysteresis", "min_loss_scale", "fp16_master_weights_and_grads", "type"})
BF16_KEYS = frozenset({"enabled", "immediate_grad_update", "check_grad_overflow", "bf16_master_weights_and_grads",
                       "bf16_optimizer_states"})

# Bucket / live-parameter sizes: memplan has no job field for them; it models the HF Trainer's "auto" values
# (reduce_bucket_size = hidden^2, stage3_prefetch_bucket_size = 0.9 hidden^2; memplan.terms.sharding).
BUCKET_KEYS = ("reduce_bucket_size", "allgather_bucket_size", "stage3_prefetch_bucket_size", "prefetch_bucket_size",
               "stage3_max_live_parameters", "max_live_parameters", "stage3_max_reuse_distance", "max_reuse_distance",
               "stage3_param_persistence_threshold", "param_persistence_threshold",
               "stage3_model_persistence_threshold", "model_persistence_threshold", "sub_group_size")

#: ZeRO-3 knobs memplan models (memplan.terms.sharding.zero3_prefetch_params) -> job fields
ZERO3_KNOBS = {"stage3_prefetch_bucket_size": "zero3_prefetch_bucket_size",
               "prefetch_bucket_size": "zero3_prefetch_bucket_size",
               "stage3_max_live_parameters": "zero3_max_live_parameters",
               "max_live_parameters": "zero3_max_live_parameters"}

BUCKET_NOTES = {
    "reduce_bucket_size": "; memplan assumes the HF Trainer's 'auto' value, hidden_size^2",
    "stage3_prefetch_bucket_size": "; memplan assumes the HF Trainer's 'auto' value, 0.9 * hidden_size^2",
    "prefetch_bucket_size": "; memplan assumes the HF Trainer's 'auto' value, 0.9 * hidden_size^2",
}

# deepspeed/runtime/config.py DEEPSPEED_OPTIMIZERS -> memplan optimizer ("adam" runs as AdamW: adam_w_mode
# defaults to true in deepspeed/runtime/engine.py _configure_basic_optimizer)
DS_OPTIMIZERS = {"adam": "adamw", "adamw": "adamw", "lion": "lion"}


def read(data: dict[str, Any], out: Collector) -> None:
    """Map a DeepSpeed config (DeepSpeed docs, config-json) onto the job.

    - train_micro_batch_size_per_gpu -> micro_batch_size; gradient_accumulation_steps -> gradient_accumulation_steps;
      train_batch_size (= micro * accumulation * world size, DeepSpeed's batch identity) -> num_gpus when the other
      two are numbers.
    - fp16.enabled / bf16.enabled (alias "bfloat16") -> mixed_precision; both false -> "no" (fp32).
    - optimizer.type Adam/AdamW/Lion -> optimizer (DeepSpeed's fused Adam is AdamW by default).
    - zero_optimization -> zero_stage, offload_optimizer, offload_params (see `read_zero`).
    "auto" values are deferred to the trainer config (HF Trainer convention).
    """
    out.check_keys(data, TOP_KEYS)
    mbs_key, gas_key = "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"
    numbers: dict[str, int] = {}
    for key, job_field in ((mbs_key, "micro_batch_size"), (gas_key, "gradient_accumulation_steps")):
        value = data.get(key)
        if value is None:
            continue
        if is_auto(value):
            out.auto(job_field, key)
        else:
            numbers[key] = out.int_(key, value)
            out.set(job_field, numbers[key], key)
    tbs = data.get("train_batch_size")
    if tbs is not None and not is_auto(tbs):
        total = out.int_("train_batch_size", tbs)
        if mbs_key in numbers and gas_key in numbers:
            per_step = numbers[mbs_key] * numbers[gas_key]
            if total % per_step:
                raise out.error("train_batch_size", f"{total} is not train_micro_batch_size_per_gpu * "
                                f"gradient_accumulation_steps * number of GPUs ({per_step} * N), as DeepSpeed requires")
            out.set("num_gpus", total // per_step, "train_batch_size", total)
        else:
            out.ignore("train_batch_size", "gives the number of GPUs only with numeric train_micro_batch_size_per_gpu "
                                           "and gradient_accumulation_steps; not used")
    read_precision(data, out)
    read_optimizer(data, out)
    read_zero(data, out)
    read_other(data, out)


def read_precision(data: dict[str, Any], out: Collector) -> None:
    """fp16 / bf16 sections (DeepSpeed config-json "FP16 training options", "BFLOAT16 training options"):
    `enabled` true -> mixed_precision fp16 / bf16, "auto" -> from the trainer's fp16 / bf16; both present and false
    -> "no". DeepSpeed refuses both enabled at once."""
    sections = []
    for key in ("fp16", "bf16", "bfloat16"):
        if data.get(key) is None:
            continue
        sec = out.dict_(key, data[key])
        out.check_keys(sec, FP16_KEYS if key == "fp16" else BF16_KEYS, f"{key}.")
        sections.append((key, sec))
        for flag in ("fp16_master_weights_and_grads", "bf16_master_weights_and_grads", "bf16_optimizer_states"):
            if flag in sec and sec[flag] is not None and out.bool_(f"{key}.{flag}", sec[flag]):
                out.ignore(f"{key}.{flag}", f"{NOT_MODELLED}: 16-bit master weights / optimizer states")
    enabled: list[tuple[str, str]] = []
    explicit_off: list[str] = []
    for key, sec in sections:
        value = sec.get("enabled", False)
        src = f"{key}.enabled"
        if is_auto(value):
            out.auto("mixed_precision", src)
        elif out.bool_(src, value):
            enabled.append(("fp16" if key == "fp16" else "bf16", src))
        else:
            explicit_off.append(src)
    if len(enabled) > 1 and {m for m, _ in enabled} == {"fp16", "bf16"}:
        raise out.error(enabled[0][1], f"{enabled[0][1]} and {enabled[1][1]} are both true; DeepSpeed allows one")
    if enabled:
        mode, src = enabled[0]
        out.set("mixed_precision", mode, src, True)
    elif explicit_off and not any(f == "mixed_precision" for f, _ in out.autos):
        out.set("mixed_precision", "no", " and ".join(explicit_off), False)
    for key in ("amp", "torch_autocast"):
        sec = data.get(key)
        if isinstance(sec, dict) and sec.get("enabled"):
            out.ignore(f"{key}.enabled", f"{NOT_MODELLED}: DeepSpeed {key} (use fp16 / bf16 sections)")


def read_optimizer(data: dict[str, Any], out: Collector) -> None:
    """optimizer.type (DeepSpeed config-json "Optimizer Parameters"; case-insensitive as DeepSpeed lowers it):
    Adam / AdamW -> adamw, Lion -> lion. Without an optimizer section the HF Trainer builds its own from `optim`."""
    sec = data.get("optimizer")
    if sec is None:
        return
    sec = out.dict_("optimizer", sec)
    kind = sec.get("type")
    if kind is None:
        return
    name = str(kind).strip().lower()
    if name not in DS_OPTIMIZERS:
        raise out.error("optimizer.type", f"DeepSpeed optimizer {kind!r} is not modelled by memplan; allowed: "
                                          "Adam, AdamW, Lion (or drop the section and set the trainer's optim)")
    out.set("optimizer", DS_OPTIMIZERS[name], "optimizer.type", kind)


def _device(out: Collector, source: str, value: Any) -> bool:
    """offload_optimizer.device / offload_param.device (DeepSpeedZeroOffloadOptimizerConfig /
    DeepSpeedZeroOffloadParamConfig `device`: none | cpu | nvme) -> offloaded or not."""
    name = str(value).strip().lower() if value is not None else "none"
    if name not in ("cpu", "nvme", "none"):
        raise out.error(source, f"unknown offload device {value!r}; allowed: cpu, nvme, none")
    if name == "nvme":
        out.ignore(source, "nvme: estimated like cpu offload (the GPU side is the same; NVMe swap buffers are host "
                           "memory)")
    return name != "none"


def read_zero(data: dict[str, Any], out: Collector) -> None:
    """zero_optimization (DeepSpeed config-json "ZeRO Optimizations for FP16 Training"; deepspeed.runtime.zero.config
    DeepSpeedZeroConfig): stage -> zero_stage (DeepSpeed's default 0); offload_optimizer.device cpu/nvme ->
    offload_optimizer (stages 1-3); offload_param.device cpu/nvme -> offload_params (ZeRO-3 only: DeepSpeed ignores
    it below); the deprecated booleans cpu_offload / cpu_offload_param likewise. Bucket and live-parameter sizes
    have no job field: reported as "not modelled yet" (memplan assumes the HF Trainer's "auto" values)."""
    sec = data.get("zero_optimization")
    if sec is None:
        return
    sec = out.dict_("zero_optimization", sec)
    out.check_keys(sec, ZERO_KEYS, "zero_optimization.")
    stage_value = sec.get("stage", 0)
    if is_auto(stage_value):
        raise out.error("zero_optimization.stage", "'auto' is not allowed for the ZeRO stage (the HF Trainer does not "
                                                   "fill it); use 0, 1, 2 or 3")
    stage = out.int_("zero_optimization.stage", stage_value, minimum=0)
    if stage > 3:
        raise out.error("zero_optimization.stage", f"ZeRO stage {stage} does not exist; allowed: 0, 1, 2, 3")
    out.set("zero_stage", stage, "zero_optimization.stage" if "stage" in sec else "zero_optimization.stage (default 0)")

    opt_on: tuple[bool, str] | None = None
    if sec.get("offload_optimizer") is not None:
        off = out.dict_("zero_optimization.offload_optimizer", sec["offload_optimizer"])
        out.check_keys(off, OFFLOAD_OPTIMIZER_KEYS, "zero_optimization.offload_optimizer.")
        src = "zero_optimization.offload_optimizer.device"
        opt_on = (_device(out, src, off.get("device")), src)
        ratio = off.get("ratio")
        if opt_on[0] and ratio is not None and out.float_("zero_optimization.offload_optimizer.ratio", ratio) < 1:
            out.ignore("zero_optimization.offload_optimizer.ratio", f"{NOT_MODELLED}: partial optimizer offload "
                                                                    "(estimated as fully offloaded)")
    elif sec.get("cpu_offload") is not None:
        opt_on = (out.bool_("zero_optimization.cpu_offload", sec["cpu_offload"]), "zero_optimization.cpu_offload")
    if opt_on is not None:
        if opt_on[0] and stage == 0:
            out.ignore(opt_on[1], "optimizer offload needs ZeRO stage 1, 2 or 3; not used at stage 0")
        else:
            out.set("offload_optimizer", opt_on[0], opt_on[1])

    par_on: tuple[bool, str] | None = None
    if sec.get("offload_param") is not None:
        off = out.dict_("zero_optimization.offload_param", sec["offload_param"])
        out.check_keys(off, OFFLOAD_PARAM_KEYS, "zero_optimization.offload_param.")
        src = "zero_optimization.offload_param.device"
        par_on = (_device(out, src, off.get("device")), src)
    elif sec.get("cpu_offload_param") is not None:
        par_on = (out.bool_("zero_optimization.cpu_offload_param", sec["cpu_offload_param"]),
                  "zero_optimization.cpu_offload_param")
    if par_on is not None:
        if stage == 3:
            out.set("offload_params", par_on[0], par_on[1])
        elif par_on[0]:
            out.ignore(par_on[1], f"parameter offload applies to ZeRO-3 only (DeepSpeed ignores it at stage {stage})")

    for key, job_field in ZERO3_KNOBS.items():
        value = sec.get(key)
        if value is None or is_auto(value):
            continue  # "auto": the HF Trainer's value, memplan's default
        if stage == 3:
            out.set(job_field, out.int_(f"zero_optimization.{key}", value, minimum=0), f"zero_optimization.{key}",
                    value)
        else:
            out.ignore(f"zero_optimization.{key}", f"a ZeRO-3 setting; stage {stage} does not use it")
    for key in BUCKET_KEYS:
        if sec.get(key) is None or key in ZERO3_KNOBS:
            continue
        value = sec[key]
        shown = "auto" if is_auto(value) else int(value) if isinstance(value, float) and value.is_integer() else value
        out.ignore(f"zero_optimization.{key}", f"{NOT_MODELLED} ({key}={shown!r}{BUCKET_NOTES.get(key, '')})")
    if stage in (1, 2) and sec.get("overlap_comm") is False:
        out.ignore("zero_optimization.overlap_comm", f"{NOT_MODELLED}: memplan assumes overlap_comm true (two "
                                                     "reduce buckets)")
    for key in ("zero_quantized_weights", "zero_quantized_gradients", "zero_quantized_nontrainable_weights"):
        if sec.get(key):
            out.ignore(f"zero_optimization.{key}", f"{NOT_MODELLED}: ZeRO++ quantized communication")
    hpz = sec.get("zero_hpz_partition_size")
    if hpz is not None and not isinstance(hpz, bool) and isinstance(hpz, (int, float)) and hpz > 1:
        out.ignore("zero_optimization.zero_hpz_partition_size", f"{NOT_MODELLED}: ZeRO++ hierarchical partitioning "
                                                                "(a secondary parameter copy per node)")
    if sec.get("mics_shard_size") not in (None, -1):
        out.ignore("zero_optimization.mics_shard_size", f"{NOT_MODELLED}: MiCS sharding groups")


def read_other(data: dict[str, Any], out: Collector) -> None:
    """Top-level sections that change memory but have no job field: activation_checkpointing (used only by models
    that call deepspeed.checkpointing; HF models checkpoint with torch.utils.checkpoint), data_types.grad_accum_dtype,
    pipeline / tensor parallelism."""
    ac = data.get("activation_checkpointing")
    if isinstance(ac, dict) and any(ac.get(k) for k in ("partition_activations", "cpu_checkpointing")):
        out.ignore("activation_checkpointing", "applies only to models that use deepspeed.checkpointing (HF models "
                                               "use gradient_checkpointing); not used")
    dt = data.get("data_types")
    if isinstance(dt, dict) and dt.get("grad_accum_dtype") is not None:
        out.ignore("data_types.grad_accum_dtype", f"{NOT_MODELLED}: gradient accumulation dtype")
    for key in ("tensor_parallel", "pipeline", "sequence_parallel_size"):
        if data.get(key) not in (None, {}, 1):
            out.ignore(key, f"{NOT_MODELLED}: only data parallelism (ZeRO / FSDP) is modelled")
