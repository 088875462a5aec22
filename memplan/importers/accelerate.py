"""accelerate config YAML (what `accelerate config` writes, e.g. ~/.cache/huggingface/accelerate/default_config.yaml)
-> memplan job fields."""

from __future__ import annotations

from typing import Any

from memplan.importers._common import NOT_MODELLED, Collector, map_fsdp, map_parallelism_config

# accelerate/commands/config/config_args.py ClusterConfig / SageMakerConfig fields without memory effect
NO_EFFECT = frozenset({
    "compute_environment", "debug", "machine_rank", "num_machines", "gpu_ids", "main_process_ip", "main_process_port",
    "rdzv_backend", "same_network", "main_training_function", "enable_cpu_affinity", "tpu_name", "tpu_zone",
    "tpu_use_cluster", "tpu_use_sudo", "command_file", "commands", "tpu_vm", "tpu_env", "downcast_bf16",
    "mpirun_config", "ipex_config", "megatron_lm_config", "fp8_config", "dynamo_config", "ec2_instance_type",
    "iam_role_name", "image_uri", "profile", "region", "base_job_name", "pytorch_version", "transformers_version",
    "py_version", "sagemaker_inputs_file", "sagemaker_metrics_file", "additional_args", "gpu_memory_limit",
})
HANDLED = frozenset({"distributed_type", "num_processes", "mixed_precision", "use_cpu", "fsdp_config",
                     "deepspeed_config", "parallelism_config"})
DEEPSPEED_KEYS = frozenset({
    # accelerate/commands/config/cluster.py deepspeed_config entries
    "deepspeed_config_file", "zero_stage", "offload_optimizer_device", "offload_param_device",
    "offload_optimizer_nvme_path", "offload_param_nvme_path", "gradient_accumulation_steps", "gradient_clipping",
    "zero3_init_flag", "zero3_save_16bit_model", "deepspeed_moe_layer_cls_names", "deepspeed_multinode_launcher",
    "deepspeed_hostfile", "deepspeed_exclusion_filter", "deepspeed_inclusion_filter"
})
GPU_TYPES = ("NO", "MULTI_GPU", "FSDP", "DEEPSPEED")


def read(data: dict[str, Any], out: Collector) -> None:
    """Map an accelerate config (accelerate/commands/config/config_args.py ClusterConfig) onto the job:
    num_processes (all processes over all machines) -> num_gpus; mixed_precision no/fp16/bf16 -> mixed_precision;
    distributed_type FSDP -> fsdp_config via FullyShardedDataParallelPlugin semantics (map_fsdp); DEEPSPEED ->
    deepspeed_config (zero_stage, offload_*_device, gradient_accumulation_steps, or deepspeed_config_file imported as
    a DeepSpeed config); MULTI_GPU -> plain DDP (no sharding job field to set)."""
    out.check_keys(data, NO_EFFECT | HANDLED)
    dist = str(data.get("distributed_type") or "NO").strip().upper()
    if data.get("use_cpu") is True:
        out.ignore("use_cpu", "training on the CPU: nothing of it is on a GPU")
    if dist not in GPU_TYPES:
        out.ignore("distributed_type", f"{NOT_MODELLED}: {dist} (memplan models NO, MULTI_GPU, FSDP, DEEPSPEED)")
    if data.get("num_processes") is not None:
        n = out.int_("num_processes", data["num_processes"], minimum=-1)
        if n >= 1:
            out.set("num_gpus", n, "num_processes")
        else:
            out.ignore("num_processes", f"{n}: set at launch time; left to the job default")
    mp = data.get("mixed_precision")
    if mp is not None:
        name = str(mp).strip().lower()
        if name in ("no", "bf16", "fp16"):
            out.set("mixed_precision", name, "mixed_precision", mp)
        elif name == "fp8":
            out.ignore("mixed_precision", f"{NOT_MODELLED}: fp8 training (TransformerEngine / torchao / MS-AMP)")
        else:
            raise out.error("mixed_precision", f"unknown mixed_precision {mp!r}; allowed: no, fp16, bf16, fp8")
    if dist == "FSDP":
        cfg = out.dict_("fsdp_config", data.get("fsdp_config") or {})
        map_fsdp(out, cfg, "fsdp_config.")
    if dist == "DEEPSPEED":
        read_deepspeed_plugin(out.dict_("deepspeed_config", data.get("deepspeed_config") or {}), out)
    if data.get("parallelism_config") is not None:
        map_parallelism_config(out, out.dict_("parallelism_config", data["parallelism_config"]),
                               "parallelism_config.")


def _offload_device(out: Collector, source: str, value: Any) -> bool:
    """accelerate deepspeed_config offload_optimizer_device / offload_param_device (none | cpu | nvme, as
    `accelerate config` asks) -> offloaded or not."""
    name = str(value).strip().lower()
    if name not in ("none", "cpu", "nvme"):
        raise out.error(source, f"unknown offload device {value!r}; allowed: none, cpu, nvme")
    if name == "nvme":
        out.ignore(source, "nvme: estimated like cpu offload (the GPU side is the same)")
    return name != "none"


def read_deepspeed_plugin(cfg: dict[str, Any], out: Collector) -> None:
    """accelerate's deepspeed_config block (accelerate DeepSpeedPlugin: zero_stage, offload_optimizer_device,
    offload_param_device none|cpu|nvme, gradient_accumulation_steps; or deepspeed_config_file, a full DeepSpeed
    config that replaces the other entries). Parameter offload applies to ZeRO-3 only."""
    prefix = "deepspeed_config."
    out.check_keys(cfg, DEEPSPEED_KEYS, prefix)
    if cfg.get("deepspeed_config_file"):
        out.ref("deepspeed", str(cfg["deepspeed_config_file"]), f"{prefix}deepspeed_config_file")
    stage = None
    if cfg.get("zero_stage") is not None:
        stage = out.int_(f"{prefix}zero_stage", cfg["zero_stage"], minimum=0)
        if stage > 3:
            raise out.error(f"{prefix}zero_stage", f"ZeRO stage {stage} does not exist; allowed: 0, 1, 2, 3")
        out.set("zero_stage", stage, f"{prefix}zero_stage")
    if cfg.get("offload_optimizer_device") is not None:
        src = f"{prefix}offload_optimizer_device"
        on = _offload_device(out, src, cfg["offload_optimizer_device"])
        if on and stage == 0:
            out.ignore(src, "optimizer offload needs ZeRO stage 1, 2 or 3; not used at stage 0")
        else:
            out.set("offload_optimizer", on, src, cfg["offload_optimizer_device"])
    if cfg.get("offload_param_device") is not None:
        src = f"{prefix}offload_param_device"
        on = _offload_device(out, src, cfg["offload_param_device"])
        if on and stage not in (3, None):
            out.ignore(src, f"parameter offload applies to ZeRO-3 only (DeepSpeed ignores it at stage {stage})")
        else:
            out.set("offload_params", on, src, cfg["offload_param_device"])
    if cfg.get("zero3_init_flag") is not None:
        src = f"{prefix}zero3_init_flag"
        flag = out.bool_(src, cfg["zero3_init_flag"])
        if stage == 3:
            out.set("zero3_init", flag, src, cfg["zero3_init_flag"])
        elif not flag or stage is not None:
            out.ignore(src, "deepspeed.zero.Init applies to ZeRO-3 only")
    if cfg.get("gradient_accumulation_steps") is not None:
        out.set("gradient_accumulation_steps", out.int_(f"{prefix}gradient_accumulation_steps",
                                                        cfg["gradient_accumulation_steps"]),
                f"{prefix}gradient_accumulation_steps")
